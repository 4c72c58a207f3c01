"""Measures the Flax FaceRes port on CelebA identity pairs, beside dlib.

For docs/face_models.md ("FaceRes identity"): ROC AUC of the cosine of
genuine vs impostor pairs for `loading.load_encoder('faceres')` (the 'hse'
input convention, the default, and 'human', Human's) and for dlib's ResNet
(`load_encoder('dlib')`) on the same pairs, plus the port's float32
difference from TF.js (``ports/faceres_reference.py``, pure-JS CPU
backend) on the first ``--parity`` images.

Pairs: the first ``--pairs`` identities (by their first image's name) with
two or more images in the folder give a genuine pair each (their first two
images); impostor pairs are (first image of identity i, second image of
identity i + 1), as many. Images: an FFHQ-aligned CelebA-layout folder
(``id2image align``: ``img_align_celeba/*.jpg`` at 256 px and
``identity_CelebA.txt``), cut by each encoder's own `input_spec`.
Development data only; never a test fixture::

  PYTHONPATH=. python docs/make_faceres_auc.py \
      --celeba /work/runs/celeba-10k-ffhq
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os

import numpy as np
import PIL.Image

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.models import faceres
from id2image_jax.porting import faceres as faceres_port


def pairs(celeba: str, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(image names, genuine [n, 2], impostor [n, 2] indices into them)."""
  have = set(os.listdir(os.path.join(celeba, 'img_align_celeba')))
  people = collections.defaultdict(list)
  with open(os.path.join(celeba, 'identity_CelebA.txt')) as f:
    for line in f:
      name, person = line.split()
      if name in have:
        people[person].append(name)
  firsts = sorted(sorted(v)[:2] for v in people.values() if len(v) >= 2)
  firsts = firsts[:n + 1]
  names = [x for two in firsts for x in two]
  genuine = np.array([(2 * i, 2 * i + 1) for i in range(n)])
  impostor = np.array([(2 * i, 2 * i + 3) for i in range(n)])
  return names, genuine, impostor


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
  """P(genuine score > impostor score), ties counted half."""
  diff = genuine[:, None] - impostor[None, :]
  return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def cosines(desc: np.ndarray, idx: np.ndarray) -> np.ndarray:
  d = desc / np.linalg.norm(desc, axis=-1, keepdims=True)
  return np.sum(d[idx[:, 0]] * d[idx[:, 1]], axis=-1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--celeba', required=True)
  parser.add_argument('--pairs', type=int, default=300)
  parser.add_argument('--parity', type=int, default=8)
  args = parser.parse_args()
  names, genuine, impostor = pairs(args.celeba, args.pairs)
  images = np.stack([np.asarray(PIL.Image.open(os.path.join(
      args.celeba, 'img_align_celeba', x)).convert('RGB')) for x in names])
  images = preprocess.uint8_to_unit_range(images)
  print(f'{len(genuine)} genuine + {len(impostor)} impostor pairs, '
        f'{len(names)} images {images.shape[1:3]}')
  hse = loading.load_encoder('faceres')
  human_config = faceres.get_config('human')
  human = dataclasses.replace(
      hse, config=human_config, module=faceres.build(human_config),
      spec=faceres.input_spec(human_config))
  encoders = {'faceres (hse)': hse, 'faceres (human)': human,
              'dlib': loading.load_encoder('dlib')}
  for name, encoder in encoders.items():
    desc = encoder.embed(images, batch_size=16)
    g, i = cosines(desc, genuine), cosines(desc, impostor)
    print(f'{name}: genuine {g.mean():.3f} +- {g.std():.3f}, impostor '
          f'{i.mean():.3f} +- {i.std():.3f}, ROC AUC {roc_auc(g, i):.3f}')
  if args.parity:
    from ports import faceres_reference  # pylint: disable=g-import-not-at-top
    x = np.asarray(preprocess.to_encoder_input(images[:args.parity],
                                               hse.spec))
    got, inter = hse.module.apply(hse.variables, x)
    want, want_inter = faceres_reference.reference(
        faceres_port.default_files()['model'], x)
    for what, a, b in (('descriptor', got, want),
                       ('age_probs', inter['age_probs'],
                        want_inter['age_probs']),
                       ('male_prob', inter['male_prob'],
                        want_inter['male_prob'])):
      err = np.abs(np.asarray(a, np.float64) - b)
      print(f'TF.js parity, {args.parity} faces, {what}: max |err| '
            f'{err.max():.2g}, / max |ref| {err.max() / np.abs(b).max():.2g}'
            f' (scale {np.abs(b).max():.3g})')


if __name__ == '__main__':
  main()
