"""Converts a StyleGAN2 checkpoint (.pkl / .pt) to an id2image_jax directory.

Reads an NVIDIA stylegan2-ada-pytorch network pickle (its ``G_ema``) or a
rosinality/stylegan2-pytorch ``.pt`` (its ``g_ema`` and ``latent_avg``)
without torch and without running anything stored in the file, infers the
architecture, ports the weights with a strict rule table
(`id2image_jax.porting.stylegan2`) and saves them with orbax::

  python ports/convert_stylegan2.py ffhq.pkl checkpoints/stylegan2-ffhq
  python ports/convert_stylegan2.py stylegan2-ffhq-config-f.pt \\
      checkpoints/stylegan2-ffhq

Load the result with ``id2image_jax.porting.stylegan2.load(dir)``, which
returns ``(StyleGAN2Config, variables)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from id2image_jax import checkpoints  # pylint: disable=g-import-not-at-top
from id2image_jax.porting import stylegan2 as pstylegan2  # pylint: disable=g-import-not-at-top


def convert_to_dir(path: str, out_dir: str, *,
                   dtype: str | None = None) -> str:
  """Converts `path` and saves it under `out_dir`; returns the directory.

  Args:
    path: .pkl or .pt checkpoint.
    out_dir: output directory (created; an existing checkpoint is replaced).
    dtype: optional compute dtype recorded in the config ('float32' or
      'bfloat16'); parameters are always stored in float32.
  """
  config, variables = pstylegan2.convert(path)
  if dtype is not None:
    config = dataclasses.asdict(dataclasses.replace(
        pstylegan2.stylegan2.as_config(config), dtype=dtype))
  return checkpoints.save(out_dir, variables, kind=pstylegan2.KIND,
                          config=config, source=os.path.basename(path))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('checkpoint', help='.pkl (NVIDIA) or .pt (rosinality)')
  parser.add_argument('out_dir', help='output directory')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'),
                      default=None, help='compute dtype stored in the config')
  args = parser.parse_args(argv)
  out = convert_to_dir(args.checkpoint, args.out_dir, dtype=args.dtype)
  config = checkpoints.read_meta(out)['config']
  print(f'converted {args.checkpoint} -> {out}')
  print('config: ' + ', '.join(f'{k}={v}' for k, v in config.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
