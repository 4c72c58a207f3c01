"""Draws docs/mobilestylegan_samples.png: 8 fixed-seed faces from the Flax
port of random-face's MobileStyleGAN (truncation 0.7), with the OpenVINO
runtime's image of the same w next to the first, and their difference.

  python docs/make_mobilestylegan_samples.py docs/mobilestylegan_samples.png

Top two rows: the 8 JAX faces (z from numpy seed 0, psi 0.7 towards the
port's w_avg). Third row, face 0: JAX float32 | OpenVINO (when installed) |
2000 x |JAX - OpenVINO| (max over each cell pixel's block) | JAX bfloat16. Cells are the 1024 px images
box-downsampled.
"""

import argparse
import os
import sys

import jax
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from id2image_jax.models import mobilestylegan as msg
from id2image_jax.porting import mobilestylegan as pm
from ports import mobilestylegan_openvino as ovref

# pylint: enable=g-import-not-at-top,wrong-import-position


def to_uint8(img: np.ndarray, size: int, *, pool=np.mean) -> np.ndarray:
  """[-1, 1] float HWC -> uint8 HWC, downsampled to `size` by `pool` over
  blocks (box filter; np.max keeps isolated error pixels visible)."""
  f = img.shape[0] // size
  img = pool(img.reshape(size, f, size, f, 3), axis=(1, 3))
  return np.round((np.clip(img, -1, 1) + 1) * 127.5).astype(np.uint8)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('out', help='PNG to write')
  parser.add_argument('--cell', type=int, default=128, help='cell size (px)')
  parser.add_argument('--psi', type=float, default=0.7)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  files = pm.default_files()
  config, variables = pm.convert(*files)
  gen = msg.build(config)
  z = np.random.default_rng(args.seed).standard_normal(
      (8, config['z_dim'])).astype(np.float32)
  mapping = jax.jit(lambda v, z: gen.apply(v, z, truncation_psi=args.psi,
                                           method='mapping'))
  synthesis = jax.jit(lambda v, w: gen.apply(v, w, method='synthesis'))
  gen16 = msg.build(config, dtype='bfloat16')
  synthesis16 = jax.jit(lambda v, w: gen16.apply(v, w, method='synthesis'))
  ws = np.asarray(mapping(variables, z))
  images = [np.asarray(synthesis(variables, ws[i:i + 1]))[0]
            for i in range(8)]
  cells = [to_uint8(img, args.cell) for img in images]
  rows = [np.concatenate(cells[:4], 1), np.concatenate(cells[4:], 1)]
  bf16 = np.asarray(synthesis16(variables, ws[:1]))[0]
  print(f'face 0: mean |bfloat16 - float32| = '
        f'{np.abs(bf16 - images[0]).mean():.2e}')
  blank = np.full((args.cell, args.cell, 3), 255, np.uint8)
  ref_cell = diff_cell = blank
  if ovref.have_openvino():
    ref = ovref.OpenVINOReference(*files).synthesis(ws[:1, 0])[0]
    diff = np.abs(images[0] - ref)
    print(f'face 0: max |JAX - OpenVINO| = {diff.max():.2e}')
    ref_cell = to_uint8(ref, args.cell)
    diff_cell = to_uint8(np.clip(diff * 2000, 0, 2) - 1, args.cell,
                         pool=np.max)
  rows.append(np.concatenate([cells[0], ref_cell, diff_cell,
                              to_uint8(bf16, args.cell)], 1))
  Image.fromarray(np.concatenate(rows, 0)).save(args.out, optimize=True)
  print(f'wrote {args.out} ({os.path.getsize(args.out)} bytes)')


if __name__ == '__main__':
  main()
