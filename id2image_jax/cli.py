"""Command line: parse, load the config, dispatch. Nothing else lives here.

Usage::

  id2image invert   [--config configs/invert.py[:arg]] [--set key=value ...]
  id2image embed    --config configs/embed.py ...
  id2image leakage  --config configs/leakage.py ...
  id2image evaluate --config configs/evaluate.py ...
  id2image regressor [--generator ...] [--encoder ...]

Every job reads one ``ml_collections.ConfigDict`` from a Python config file
(``get_config(arg)``). ``--set a.b=1`` overrides any field (type-checked by
the locked ConfigDict); per-command shortcut flags such as ``--generator`` are
the same overrides under shorter names.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import ml_collections

# command -> (default config file, shortcut flag -> config field, job)
_SHORTCUTS = {
    'invert': {'generator': 'generator', 'encoder': 'encoder',
               'targets': 'targets', 'out': 'workdir', 'steps': 'steps',
               'num_targets': 'num_targets'},
    'embed': {'encoder': 'encoder', 'data': 'data.source', 'out': 'out'},
    'leakage': {'descriptors': 'descriptors', 'out': 'workdir'},
    'evaluate': {'generator': 'generator', 'encoder': 'encoder',
                 'eval_encoder': 'eval_encoder', 'targets': 'targets',
                 'out': 'workdir'},
    'regressor': {'generator': 'generator', 'encoder': 'encoder',
                  'out': 'workdir', 'steps': 'steps'},
    'align': {'data': 'source', 'out': 'out'},
    'audit': {'encoder': 'encoder', 'data': 'data',
              'eval_encoder': 'eval_encoder', 'budget': 'budget',
              'generator': 'generator', 'out': 'workdir',
              'protect': 'protect', 'key_seed': 'key_seed'},
    'protect': {'encoder': 'encoder', 'data': 'data', 'schemes': 'schemes',
                'key_seed': 'key_seed', 'eval_encoder': 'eval_encoder',
                'generator': 'generator', 'out': 'workdir'},
}


def _job(command: str) -> Callable[[ml_collections.ConfigDict], Any]:
  # Imported here so `id2image --help` starts fast and without JAX.
  # pylint: disable=g-import-not-at-top
  from id2image_jax.jobs import align
  from id2image_jax.jobs import audit
  from id2image_jax.jobs import embed
  from id2image_jax.jobs import evaluate
  from id2image_jax.jobs import invert
  from id2image_jax.jobs import leakage
  from id2image_jax.jobs import protect
  from id2image_jax.jobs import regressor
  # pylint: enable=g-import-not-at-top
  jobs = {'invert': invert, 'embed': embed, 'leakage': leakage,
          'regressor': regressor, 'evaluate': evaluate, 'align': align,
          'audit': audit, 'protect': protect}
  if command not in jobs:
    raise ValueError(f'unknown command {command!r}')
  return jobs[command].run


def config_dir() -> str:
  """Where the shipped ``configs/*.py`` are (package data when installed)."""
  spec = importlib.util.find_spec('id2image_jax.configs')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('id2image_jax.configs is not installed: '
                            'reinstall the package')
  return list(spec.submodule_search_locations)[0]


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file not found: {path}')
  module_spec = importlib.util.spec_from_file_location('_id2image_config',
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise AttributeError(f'{path} defines no get_config()')
  return module.get_config(arg) if arg else module.get_config()


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # plain strings need no quotes on the command line


def apply_override(config: ml_collections.ConfigDict, key: str,
                   value: Any) -> None:
  """Sets a dotted field; unknown fields and wrong types are errors."""
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    if p not in node:
      raise KeyError(f'config has no field {key!r}')
    node = node[p]
  if leaf not in node:
    raise KeyError(f'config has no field {key!r} (fields: '
                   f'{", ".join(sorted(node.keys()))})')
  current = node[leaf]
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and not isinstance(value, tuple):
    # `--set arms=id` or `--set arms=id,id+lm`: a tuple of plain words.
    value = (tuple(v.strip() for v in value.split(',') if v.strip())
             if isinstance(value, str) else (value,))
  if current is not None and value is not None and isinstance(
      current, str) and not isinstance(value, str):
    value = str(value)
  node[leaf] = value


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='id2image',
      description='Invert face descriptors to images and measure non-ID '
      'leakage (ID2image in JAX).')
  sub = parser.add_subparsers(dest='command', required=True)
  helps = {
      'invert': 'invert descriptors (or images) to faces; with no inputs, '
                'runs the self-check on the embedded default models',
      'embed': 'embed a dataset with a face encoder (descriptors + labels)',
      'leakage': 'train heads on descriptors and write the Table-1 report',
      'evaluate': 'ablation (ID / +landmarks / +histogram) and transfer '
                  'evaluation with MSE/PSNR/SSIM, cosine and TMR@FMR',
      'regressor': 'train the ID->latent network on synthetic pairs (it '
                   'initialises the inversion: invert --set init=...)',
      'align': 'an FFHQ-aligned copy of a folder of faces, with their 68 '
               'landmarks (dlib)',
      'audit': 'one self-contained HTML report of what an encoder\'s '
               'templates leak: attributes, geometry, colour, identity '
               '(white- and black-box reconstruction)',
      'protect': 'what protecting stored templates buys: utility, leakage, '
                 'reconstruction and unlinkability per scheme',
  }
  for command, shortcuts in _SHORTCUTS.items():
    p = sub.add_parser(command, help=helps[command])
    p.add_argument('--config',
                   default=os.path.join(config_dir(), f'{command}.py'),
                   help='config file, optionally path.py:arg')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config field (repeatable)')
    for flag, field in shortcuts.items():
      p.add_argument(f'--{flag.replace("_", "-")}', dest=flag, default=None,
                     help=f'same as --set {field}=...')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  config = load_config(args.config)
  for flag, field in _SHORTCUTS[args.command].items():
    value = getattr(args, flag)
    if value is not None:
      apply_override(config, field, _parse_value(value))
  for item in args.set:
    key, sep, value = item.partition('=')
    if not sep:
      raise SystemExit(f'--set expects KEY=VALUE, got {item!r}')
    apply_override(config, key.strip(), _parse_value(value))
  _job(args.command)(config)
  return 0


if __name__ == '__main__':
  sys.exit(main())
