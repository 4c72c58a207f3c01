r"""Measures each shipped encoder's descriptors on real faces (issue 23).

Writes, per encoder kind, ``id2image_jax/weights/id2image/
descriptor_reference_<kind>.json``: the L2 norm's range, the mean
descriptor and the range of the cosine to it on real photos, which `data.off_distribution` compares target
descriptors against, and prints how well that check separates real
descriptors from (a) rescaled ones, (b) descriptors of another network of
the same size (the same architecture with random weights; the real
descriptors with their dimensions shuffled), (c) Gaussian vectors with the
real descriptors' norm.

Photos: the first ``--num`` images (sorted by name) of an FFHQ-aligned copy
of CelebA (``id2image align --data ../shared/data/celeba-10k --out
data/celeba-10k-ffhq``, 256 px) make the reference; the next ``--held_out``
images measure how many real descriptors the check flags. Development data
only; never a test fixture::

  PYTHONPATH=. nice python docs/make_descriptor_reference.py \
      --images data/celeba-10k-ffhq/img_align_celeba
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

from id2image_jax import loading
from id2image_jax.data import off_distribution
from id2image_jax.porting import dlib_resnet as dlib_resnet_port

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'id2image_jax', 'weights', 'id2image')


def read_images(folder: str, names: list[str]) -> np.ndarray:
  """[N, H, W, 3] images in [-1, 1] (the generator's range)."""
  return np.stack([
      np.asarray(PIL.Image.open(os.path.join(folder, n)).convert('RGB'),
                 np.float32) / 127.5 - 1.0 for n in names])


def random_weight_encoder(encoder, seed: int = 1):
  """The same architecture with freshly initialised weights."""
  example = jnp.zeros((1, *encoder.spec.size, 3))
  return dataclasses.replace(
      encoder, variables=encoder.module.init(jax.random.key(seed), example))


def dlib_library_descriptors(folder: str, names: list[str]) -> np.ndarray:
  """dlib's own pipeline (its detector, 5 landmarks, 150 px chip, its
  ResNet): what a user's dlib descriptors are; rows where dlib finds no
  face are left out."""
  import dlib  # pylint: disable=g-import-not-at-top
  resnet = os.fspath(dlib_resnet_port.default_path())
  detector = dlib.get_frontal_face_detector()
  shapes = dlib.shape_predictor(
      os.path.join(os.path.dirname(resnet),
                   'shape_predictor_5_face_landmarks.dat'))
  net = dlib.face_recognition_model_v1(resnet)
  out = []
  for name in names:
    rgb = np.asarray(PIL.Image.open(os.path.join(folder, name)).convert(
        'RGB'))
    faces = detector(rgb, 1)
    if faces:
      chip = dlib.get_face_chip(rgb, shapes(rgb, faces[0]), size=150)
      out.append(np.asarray(net.compute_face_descriptor(chip)))
  return np.stack(out)


def flagged(descriptors: np.ndarray, reference) -> float:
  """Fraction of rows the check flags."""
  return len(off_distribution.check(descriptors, reference)) / len(
      descriptors)


def separation(real, held_out, others, reference) -> dict:
  """Fraction flagged per kind of input, and the statistics behind it."""
  rng = np.random.default_rng(0)
  norm = np.linalg.norm(real, axis=1).mean()
  gaussian = rng.standard_normal(held_out.shape)
  gaussian *= norm / np.linalg.norm(gaussian, axis=1, keepdims=True)
  shuffled = held_out[:, rng.permutation(held_out.shape[1])]
  cases = {
      'real_held_out': held_out,
      'scaled_x0.5': held_out * 0.5, 'scaled_x2': held_out * 2.0,
      'unit_normalised': held_out / np.linalg.norm(
          held_out, axis=1, keepdims=True),
      'random_weight_same_architecture': others,
      'dimensions_shuffled': shuffled,
      'gaussian_same_norm': gaussian,
  }
  out = {}
  for name, rows in cases.items():
    stats = off_distribution.statistics(rows, reference)
    norm, cosine = stats['norm'], stats['cosine_to_mean']
    out[name] = {'flagged': round(flagged(rows, reference), 4), **{
        k: float(f'{v:.4g}') for k, v in (
            ('norm_min', norm.min()), ('norm_p50', np.median(norm)),
            ('norm_max', norm.max()), ('cosine_to_mean_min', cosine.min()),
            ('cosine_to_mean_p50', np.median(cosine)),
            ('cosine_to_mean_max', cosine.max()))}}
  return out


def embeddings(kind: str, folder: str, names: list[str], held: list[str],
               cache: str) -> dict[str, np.ndarray]:
  """Real, held-out and random-weight descriptors (kept in `cache`, if
  given, so that the statistics can be remade without the encoder)."""
  path = cache and os.path.join(cache, f'{kind}.npz')
  if path and os.path.isfile(path):
    with np.load(path) as f:
      return dict(f)
  encoder = loading.load_encoder(kind)
  out = {
      'real': encoder.embed(read_images(folder, names)),
      'held_out': encoder.embed(read_images(folder, held)),
      'others': random_weight_encoder(encoder).embed(
          read_images(folder, held)),
  }
  if path:
    np.savez(path, **out)
  return out


def measure(kind: str, folder: str, names: list[str], held: list[str],
            cache: str = '') -> dict:
  found = embeddings(kind, folder, names, held, cache)
  real, held_out, others = found['real'], found['held_out'], found['others']
  reference = off_distribution.measure_reference(
      real, source=(f'{len(names)} FFHQ-aligned CelebA photos '
                    f'({names[0]}..{names[-1]} of celeba-10k, `id2image '
                    'align`), docs/make_descriptor_reference.py'),
      kind=kind)
  result = reference.to_json()
  result['separation'] = separation(real, held_out, others, reference)
  if kind == 'dlib':
    native = dlib_library_descriptors(folder, held)
    result['separation'][f'dlib_library_{len(native)}_photos'] = {
        'flagged': round(flagged(native, reference), 4)}
  result['separation_on'] = f'{len(held)} other photos ({held[0]}..{held[-1]})'
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--images', required=True,
                      help='folder of FFHQ-aligned 256 px face photos')
  parser.add_argument('--encoders', default='dlib,mobilefacenet,faceres')
  parser.add_argument('--num', type=int, default=400)
  parser.add_argument('--held_out', type=int, default=200)
  parser.add_argument('--out', default=OUT)
  parser.add_argument('--cache', default='',
                      help='folder to keep the descriptors in (reruns)')
  args = parser.parse_args()
  files = sorted(f for f in os.listdir(args.images) if f.endswith('.jpg'))
  names = files[:args.num]
  held = files[args.num:args.num + args.held_out]
  for kind in args.encoders.split(','):
    result = measure(kind, args.images, names, held, args.cache)
    path = os.path.join(args.out, f'descriptor_reference_{kind}.json')
    with open(path, 'w') as f:
      json.dump(result, f, indent=1)
      f.write('\n')
    summary = {k: v for k, v in result.items() if k != 'mean_descriptor'}
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == '__main__':
  main()
