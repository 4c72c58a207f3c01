"""Converts a public face-encoder checkpoint to an id2image_jax directory.

Reads the file with the restricted loader (no code from the file runs),
detects its kind from its keys (or takes ``KIND:PATH``), ports it with the
kind's strict rule table and saves variables + config with orbax, so later
jobs load it without re-parsing the original::

  python ports/convert_encoder.py resnet50_ft_weight.pkl checkpoints/vggface2
  python ports/convert_encoder.py iresnet:backbone.pth checkpoints/arcface_r100
  python ports/convert_encoder.py vgg_face_dag.pth checkpoints/vggface
  python ports/convert_encoder.py dlib checkpoints/dlib

Pass the directory wherever an encoder is expected (``--encoder``).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from id2image_jax import checkpoints  # pylint: disable=g-import-not-at-top
from id2image_jax import loading  # pylint: disable=g-import-not-at-top
from id2image_jax import protocols  # pylint: disable=g-import-not-at-top


def convert(spec: str, out_dir: str) -> protocols.Encoder:
  """Loads `spec` (see `loading.load_encoder`) and saves it to `out_dir`."""
  encoder = loading.load_encoder(spec)
  checkpoints.save(out_dir, encoder.variables, kind=encoder.kind,
                   config=encoder.config, source=encoder.source)
  return encoder


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('checkpoint', help="file, KIND:PATH, or 'dlib'")
  parser.add_argument('out_dir', help='directory to write')
  args = parser.parse_args(argv)
  encoder = convert(args.checkpoint, args.out_dir)
  print(f'{encoder.kind} ({encoder.dim}-d) from {encoder.source} -> '
        f'{os.path.abspath(args.out_dir)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
