"""Command line: parse, load the config, dispatch. Nothing else lives here.

Usage (every command also takes ``--config FILE.py[:ARG]``, ``--set
KEY=VALUE`` (repeatable) and ``--debug``; the flags below are shortcuts for
``--set``)::

  id2image invert [--generator G] [--encoder E] [--targets T] [--out O]
                  [--steps S] [--num-targets N]
  id2image embed [--encoder E] [--data D] [--out O]
  id2image leakage [--descriptors D] [--out O]
  id2image evaluate [--generator G] [--encoder E] [--eval-encoder E]
                    [--targets T] [--out O]
  id2image regressor [--generator G] [--encoder E] [--out O] [--steps S]
  id2image align [--data D] [--out O]
  id2image audit [--encoder E] [--data D] [--eval-encoder E] [--budget B]
                 [--generator G] [--out O] [--protect P] [--key-seed K]
  id2image protect [--encoder E] [--data D] [--schemes S] [--key-seed K]
                   [--eval-encoder E] [--generator G] [--out O]

Every job reads one ``ml_collections.ConfigDict`` from a Python config file
(``get_config(arg)``). ``--set a.b=1`` overrides any field (type-checked by
the locked ConfigDict); per-command shortcut flags such as ``--generator`` are
the same overrides under shorter names. `COMMANDS` is the one table of
commands: the parser, the dispatch and this usage text (checked by a test)
come from it.

`main(argv)` raises, for callers in Python (tests, notebooks); the
``id2image`` program (`entry`) turns a bad input (`errors.UserError`) into
one line, ``id2image: error: ...``, and an exit code (`errors.EXIT_CODES`);
``--debug`` or ``ID2IMAGE_DEBUG=1`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import errno
import importlib
import importlib.util
import os
import sys
import textwrap
import traceback
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import ml_collections

from id2image_jax import errors

PROG = 'id2image'
DEBUG_ENV = 'ID2IMAGE_DEBUG'


@dataclasses.dataclass(frozen=True)
class Command:
  """One ``id2image`` command.

  Attributes:
    module: ``id2image_jax.jobs.<module>``, whose ``run(config)`` it calls;
      its default config is ``configs/<module>.py``.
    help: one line for ``id2image --help``.
    shortcuts: flag -> config field (``--num-targets`` sets
      ``num_targets``).
    out_is_folder: ``--out`` names a folder that the job owns while it
      runs (`jobs.common.output_lock`); False for ``embed``, whose
      ``--out`` is a file-name pattern (one file per encoder and split).
  """
  module: str
  help: str
  shortcuts: Mapping[str, str]
  out_is_folder: bool = True


COMMANDS = {
    'invert': Command(
        'invert', 'invert descriptors (or images) to faces; with no inputs, '
        'runs the self-check on the embedded default models',
        {'generator': 'generator', 'encoder': 'encoder', 'targets': 'targets',
         'out': 'workdir', 'steps': 'steps', 'num_targets': 'num_targets'}),
    'embed': Command(
        'embed', 'embed a dataset with a face encoder (descriptors + labels)',
        {'encoder': 'encoder', 'data': 'data.source', 'out': 'out'},
        out_is_folder=False),
    'leakage': Command(
        'leakage', 'train heads on descriptors and write the Table-1 report',
        {'descriptors': 'descriptors', 'out': 'workdir'}),
    'evaluate': Command(
        'evaluate', 'ablation (ID / +landmarks / +histogram) and transfer '
        'evaluation with MSE/PSNR/SSIM, cosine and TMR@FMR',
        {'generator': 'generator', 'encoder': 'encoder',
         'eval_encoder': 'eval_encoder', 'targets': 'targets',
         'out': 'workdir'}),
    'regressor': Command(
        'regressor', 'train the ID->latent network on synthetic pairs (it '
        'initialises the inversion: invert --set init=...)',
        {'generator': 'generator', 'encoder': 'encoder', 'out': 'workdir',
         'steps': 'steps'}),
    'align': Command(
        'align', 'an FFHQ-aligned copy of a folder of faces, with their 68 '
        'landmarks (dlib)',
        {'data': 'source', 'out': 'out'}),
    'audit': Command(
        'audit', 'one self-contained HTML report of what an encoder\'s '
        'templates leak: attributes, geometry, colour, identity (white- and '
        'black-box reconstruction)',
        {'encoder': 'encoder', 'data': 'data', 'eval_encoder': 'eval_encoder',
         'budget': 'budget', 'generator': 'generator', 'out': 'workdir',
         'protect': 'protect', 'key_seed': 'key_seed'}),
    'protect': Command(
        'protect', 'template protection schemes measured: utility, '
        'leakage, reconstruction and unlinkability of protected templates',
        {'encoder': 'encoder', 'data': 'data', 'schemes': 'schemes',
         'key_seed': 'key_seed', 'eval_encoder': 'eval_encoder',
         'generator': 'generator', 'out': 'workdir'}),
}


def _flag(name: str) -> str:
  return '--' + name.replace('_', '-')


def usage_lines() -> list[str]:
  """The usage lines of the module docstring, made from `COMMANDS`."""
  lines = []
  for name, command in COMMANDS.items():
    line = f'{PROG} {name}'
    indent = ' ' * len(line)
    for flag in command.shortcuts:
      word = f'[{_flag(flag)} {flag[0].upper()}]'
      if len(line) + 1 + len(word) > 76:
        lines.append(line)
        line = indent
      line += ' ' + word
    lines.append(line)
  return lines


def _job(command: str) -> Callable[[ml_collections.ConfigDict], Any]:
  # Imported here so `id2image --help` starts fast and without JAX.
  if command not in COMMANDS:
    raise errors.UsageError(f'unknown command {command!r} (commands: '
                            f'{", ".join(COMMANDS)})')
  return importlib.import_module(
      f'id2image_jax.jobs.{COMMANDS[command].module}').run


def output_folder(command: str, config: ml_collections.ConfigDict
                  ) -> str | None:
  """The folder that `command` writes (its ``--out`` field), to be locked
  while it runs; None when there is none to lock."""
  field = COMMANDS[command].shortcuts.get('out')
  # Multi-host runs share their folder between the hosts' processes.
  if (not field or not COMMANDS[command].out_is_folder
      or config.get('distributed')):
    return None
  value = config
  for part in field.split('.'):
    value = value.get(part) if value is not None else None
  return str(value) if value else None


def _run_job(command: str, config: ml_collections.ConfigDict) -> None:
  """Runs the job, holding its output folder's lock (README, "Errors and
  exit codes": a second job on the same --out is refused)."""
  job = _job(command)
  folder = output_folder(command, config)
  if folder is None:
    job(config)
    return
  # pylint: disable-next=g-import-not-at-top
  from id2image_jax.jobs import common
  try:
    with common.output_lock(folder):
      job(config)
  except OSError as e:
    # A write that fails half way (PNG, .npz) names no file: the folder
    # is where to make room.
    if e.errno in _SYSTEM_REFUSED and not e.filename:
      raise OSError(e.errno, e.strerror, folder) from e
    raise


def config_dir() -> str:
  """Where the shipped ``configs/*.py`` are (package data when installed)."""
  spec = importlib.util.find_spec('id2image_jax.configs')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('id2image_jax.configs is not installed: '
                            'reinstall the package')
  return list(spec.submodule_search_locations)[0]


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``.

  Raises:
    errors.MissingInputError: no such file.
    errors.BadInputError: the file defines no ``get_config()``.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.MissingInputError(f'config file not found: {path}')
  module_spec = importlib.util.spec_from_file_location('_id2image_config',
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise errors.BadInputError(f'{path} defines no get_config()')
  return module.get_config(arg) if arg else module.get_config()


_TYPE_WORDS = {int: 'an integer', float: 'a number', bool: 'True or False',
               str: 'text', tuple: 'comma-separated words'}


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # plain strings need no quotes on the command line


def apply_override(config: ml_collections.ConfigDict, key: str,
                   value: Any) -> None:
  """Sets a dotted field.

  Raises:
    errors.UsageError: no such field, or a value of the wrong type.
  """
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise errors.UsageError(f'config has no field {key!r}')
    node = node[p]
  if leaf not in node:
    raise errors.UsageError(f'config has no field {key!r} (fields: '
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
  try:
    node[leaf] = value
  except TypeError:
    # The locked ConfigDict refuses another type: a bad --set value.
    want = _TYPE_WORDS.get(type(current), type(current).__name__)
    raise errors.UsageError(f'{key}={value!r}: expected {want}, like '
                            f'{current!r}') from None


def build_parser() -> argparse.ArgumentParser:
  """The ``id2image`` argument parser (one sub-parser per `COMMANDS` row)."""
  codes = '\n'.join(textwrap.fill(f'{code:>3}  {what}', width=76,
                                  initial_indent='  ',
                                  subsequent_indent=' ' * 7)
                    for code, what in errors.EXIT_CODES.items())
  parser = argparse.ArgumentParser(
      prog=PROG,
      description='Invert face descriptors to images and measure non-ID '
      'leakage (ID2image in JAX).',
      epilog=f'exit codes:\n{codes}\n\n' + textwrap.fill(
          f'A bad input prints one line, "{PROG}: error: ..."; --debug (or '
          f'{DEBUG_ENV}=1) prints the traceback too.', width=78),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  debug = argparse.ArgumentParser(add_help=False)
  debug.add_argument('--debug', action='store_true',
                     default=argparse.SUPPRESS,
                     help='print the traceback of an error too')
  parser.add_argument('--debug', action='store_true', default=False,
                      help='print the traceback of an error too')
  sub = parser.add_subparsers(dest='command', required=True)
  for name, command in COMMANDS.items():
    p = sub.add_parser(name, help=command.help, parents=[debug])
    p.add_argument('--config',
                   default=os.path.join(config_dir(), f'{command.module}.py'),
                   help='config file, optionally path.py:arg')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config field (repeatable)')
    for flag, field in command.shortcuts.items():
      p.add_argument(_flag(flag), dest=flag, default=None,
                     help=f'same as --set {field}=...')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Parses `argv`, loads the config and runs the job; raises on errors.

  Returns:
    0 (the job ran).
  """
  args = build_parser().parse_args(argv)
  config = load_config(args.config)
  for flag, field in COMMANDS[args.command].shortcuts.items():
    value = getattr(args, flag)
    if value is not None:
      apply_override(config, field, _parse_value(value))
  for item in args.set:
    key, sep, value = item.partition('=')
    if not sep:
      raise errors.UsageError(f'--set expects KEY=VALUE, got {item!r}')
    apply_override(config, key.strip(), _parse_value(value))
  _run_job(args.command, config)
  return 0


# OS errors that are never a bug of ours: the system refused a file
# operation. (A bare FileNotFoundError may be one, e.g. a path built wrong,
# so it keeps its traceback; missing inputs raise MissingInputError.)
_SYSTEM_REFUSED = (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS,
                   errno.EDQUOT)


def _version() -> str:
  # pylint: disable-next=g-import-not-at-top
  from id2image_jax import __version__
  return f'{PROG}_jax {__version__}, Python {sys.version.split()[0]}'


def _one_line(error: BaseException) -> tuple[str, int] | None:
  """(message, exit code) for an error the user can act on, else None."""
  if isinstance(error, errors.UserError):
    text = error.args[0] if len(error.args) == 1 else str(error)
    return str(text), error.exit_code
  if isinstance(error, OSError) and error.errno in _SYSTEM_REFUSED:
    where = f': {error.filename}' if error.filename else ''
    return f'{error.strerror}{where}', errors.SYSTEM_REFUSED
  return None


def entry(argv: Sequence[str] | None = None) -> int:
  """The ``id2image`` program: `main`, with errors told as the module
  docstring says.

  Returns:
    The exit code (`errors.EXIT_CODES`).
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = '--debug' in argv or os.environ.get(DEBUG_ENV, '') not in ('',
                                                                    '0')
  try:
    return main(argv)
  except KeyboardInterrupt:
    if debug:
      traceback.print_exc()
    print(f'{PROG}: interrupted', file=sys.stderr)
    return errors.INTERRUPTED
  except Exception as e:  # pylint: disable=broad-except
    told = _one_line(e)
    if told is None or debug:
      traceback.print_exc()
    if told is None:
      print(f'{PROG}: internal error ({type(e).__name__}): this is a bug. '
            'Please report it with the command line, the traceback above '
            f'and the version ({_version()}); see README, "Errors and '
            'exit codes".', file=sys.stderr)
      return 1
    message, code = told
    # One line, even where a message quotes several lines of a file.
    message = ' '.join(message.split())
    print(f'{PROG}: error: {message}', file=sys.stderr)
    return code


if __name__ == '__main__':
  sys.exit(entry())
