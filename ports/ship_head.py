"""Turns a trained head directory into the ``.npz`` form heads ship in.

  python ports/ship_head.py runs/regressor_msg/id_to_latent \\
      id2image_jax/weights/id2image/id_to_latent_mobilestylegan_dlib.npz

The file holds the parameters and the head config (read back with
``np.load(..., allow_pickle=False)`` by `id2image_jax.loading.load_head`)
and the source recorded when the head was trained.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from id2image_jax import checkpoints  # pylint: disable=g-import-not-at-top
from id2image_jax import loading  # pylint: disable=g-import-not-at-top


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('head_dir', help='directory written by save_head')
  parser.add_argument('out', help='.npz to write')
  parser.add_argument('--source', default=None,
                      help='provenance to record (default: the saved one)')
  args = parser.parse_args(argv)
  _, params, config = loading.load_head(args.head_dir)
  source = args.source or checkpoints.read_meta(args.head_dir).get('source')
  loading.save_head_npz(args.out, params, config, source=source or '')
  print(f'{args.head_dir} -> {args.out} '
        f'({os.path.getsize(args.out) / 1e6:.1f} MB)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
