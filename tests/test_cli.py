"""The command line: one table of commands, and errors told in one line.

Every class of user error is checked through the real program
(``python -m id2image_jax``, a subprocess): its exit code, one line
``id2image: error: ...`` naming what is wrong, and no traceback unless
``--debug`` or ``ID2IMAGE_DEBUG=1`` asks for it. An unexpected exception
keeps its traceback and says how to report it.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from id2image_jax import cli
from id2image_jax import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ['--generator', 'demo:demo-8', '--set', 'progress=False']


def _run(*argv, env=None, cwd=None):
  env = {**os.environ, 'ID2IMAGE_DEBUG': '', **(env or {})}
  return subprocess.run([sys.executable, '-m', 'id2image_jax', *argv],
                        capture_output=True, text=True, env=env, timeout=300,
                        cwd=cwd or ROOT, check=False)


def _one_line_error(done, code, pattern):
  assert done.returncode == code, (done.returncode, done.stderr)
  assert 'Traceback' not in done.stderr, done.stderr
  errors_said = [l for l in done.stderr.splitlines()
                 if l.startswith('id2image: error: ')]
  assert len(errors_said) == 1, done.stderr
  assert re.search(pattern, errors_said[0]), errors_said[0]
  return errors_said[0]


# --------------------------------------------------------------------------
# One table of commands.


def _usage_block(doc):
  """The indented lines after the first '::' of `doc`."""
  lines = doc.splitlines()
  start = next(i for i, l in enumerate(lines) if l.endswith('::')) + 2
  end = lines.index('', start)
  return [l[2:] for l in lines[start:end]]


def test_usage_docstring_is_the_table():
  assert _usage_block(cli.__doc__) == cli.usage_lines(), (
      'cli.py\'s usage docstring differs from COMMANDS; it should read:\n'
      + '\n'.join('  ' + l for l in cli.usage_lines()))


def test_every_job_has_a_command_and_every_command_a_job():
  jobs = {p.stem for p in (ROOT / 'id2image_jax' / 'jobs').glob('*.py')
          if p.stem not in ('__init__', 'common')}
  assert {c.module for c in cli.COMMANDS.values()} == jobs


def test_the_parser_comes_from_the_table():
  parser = cli.build_parser()
  for name, command in cli.COMMANDS.items():
    assert parser.parse_args([name]).config.endswith(
        f'{command.module}.py')
    for flag, field in command.shortcuts.items():
      args = parser.parse_args([name, '--' + flag.replace('_', '-'), 'x'])
      assert getattr(args, flag) == 'x', (name, flag, field)


def test_help_documents_the_exit_codes():
  done = _run('--help')
  assert done.returncode == 0
  for code, what in errors.EXIT_CODES.items():
    assert re.search(rf'^\s+{code}\s+{re.escape(what.split()[0])}',
                     done.stdout, re.M), (code, done.stdout)
  assert 'ID2IMAGE_DEBUG' in done.stdout


def test_main_raises_for_callers_in_python(tmp_path):
  # Tests and notebooks get the exception; only the program prints a line.
  with pytest.raises(errors.MissingInputError, match='missing.py'):
    cli.main(['invert', '--config', str(tmp_path / 'missing.py')])
  assert cli.entry(['invert', '--config', str(tmp_path / 'missing.py')]) == (
      errors.MissingInputError.exit_code)


# --------------------------------------------------------------------------
# Usage errors (2): the command line or the config is wrong.


@pytest.mark.parametrize('argv,pattern', [
    (['bogus'], r"invalid choice: 'bogus'"),  # argparse's own line
    (['invert', '--set', 'steps=abc'], r"steps='abc': expected an integer"),
    (['invert', '--set', 'no_such_field=1'],
     r"config has no field 'no_such_field' \(fields: .*steps"),
    (['invert', '--set', 'steps'], r"--set expects KEY=VALUE, got 'steps'"),
    (['invert', '--config', 'configs/invert.py:nope'],
     r"unknown variant 'nope'"),
    (['invert', '--generator', 'demo:bogus'],
     r"unknown demo generator variant 'bogus'"),
])
def test_usage_errors(argv, pattern):
  _one_line_error(_run(*argv), errors.UsageError.exit_code, pattern)


@pytest.mark.parametrize('argv,pattern', [
    (['invert', '--set', 'steps=-1'], r'steps must be >= 0'),
    (['invert', '--set', 'snapshot_steps=(5,-1)'],
     r'snapshot steps must lie in \[0, steps=\d+\], got \[-1\]'),
    (['invert', '--set', 'chunk_size=0'],
     r'chunk_size must be a positive multiple'),
    (['invert', '--set', 'learning_rate=-0.1'],
     r'learning_rate must be > 0, got -0.1'),
    (['invert', '--set', 'lr_schedule=linear'],
     r"lr_schedule must be 'constant' or 'cosine', got 'linear'"),
    (['invert', '--set', 'latent_space=q'], r"latent_space must be .*'q'"),
    (['invert', '--set', 'remat=most'], r"remat policy must be .*'most'"),
    (['evaluate', '--set', 'arms=lm'], r"arm 'lm' has no identity term"),
    (['evaluate', '--set', 'num_impostor_images=-1'],
     r'num_impostor_images must be >= 0'),
])
def test_values_out_of_range_are_usage_errors(argv, pattern, tmp_path,
                                              capsys):
  # Checked deep in the library (a ValueError there for Python callers):
  # the program still tells them in one line, exit 2, no traceback.
  out = tmp_path / 'run'
  code = cli.entry([argv[0], *TINY, *argv[1:], '--out', str(out)])
  err = capsys.readouterr().err
  assert code == errors.UsageError.exit_code, err
  assert 'Traceback' not in err and 'internal error' not in err, err
  said = [l for l in err.splitlines() if l.startswith('id2image: error: ')]
  assert len(said) == 1 and re.search(pattern, said[0]), err
  assert not out.exists()  # a job that failed before writing leaves nothing


def test_unknown_encoder_kind(tmp_path):
  _one_line_error(
      _run('invert', *TINY, '--encoder', 'vggfce', '--out',
           str(tmp_path / 'run')),
      errors.UsageError.exit_code,
      r"'vggfce' is not a known encoder kind \(kinds: dlib, vggface2")


# --------------------------------------------------------------------------
# Missing inputs (3), unusable inputs (4).


def test_missing_config_file(tmp_path):
  _one_line_error(_run('invert', '--config', str(tmp_path / 'nope.py')),
                  errors.MissingInputError.exit_code,
                  r'config file not found: .*nope\.py$')


def test_missing_targets_and_random_bytes_as_targets(tmp_path):
  _one_line_error(
      _run('invert', *TINY, '--targets', str(tmp_path / 'nope.npz'),
           '--out', str(tmp_path / 'a')),
      errors.MissingInputError.exit_code, r'targets not found: .*nope\.npz')
  path = tmp_path / 'random.npz'
  path.write_bytes(np.random.default_rng(0).bytes(600))
  done = _run('invert', *TINY, '--targets', str(path), '--out',
              str(tmp_path / 'b'))
  _one_line_error(done, errors.BadInputError.exit_code,
                  r'random\.npz: not a valid \.npy/\.npz file')
  assert 'pickle' not in done.stderr  # never a hint to load it unsafely


def test_a_folder_without_images(tmp_path):
  (tmp_path / 'empty').mkdir()
  _one_line_error(_run('align', '--data', str(tmp_path / 'empty'), '--out',
                       str(tmp_path / 'out')),
                  errors.BadInputError.exit_code, r'empty holds no images')


# --------------------------------------------------------------------------
# The traceback on request; the system's refusals (5); bugs (1); Ctrl-C.


@pytest.mark.parametrize('how', ['flag', 'environment'])
def test_debug_shows_the_traceback(how):
  argv, env = ['invert', '--set', 'steps=abc'], {}
  if how == 'flag':
    argv.append('--debug')
  else:
    env['ID2IMAGE_DEBUG'] = '1'
  done = _run(*argv, env=env)
  assert done.returncode == errors.UsageError.exit_code
  assert 'Traceback' in done.stderr and 'UsageError' in done.stderr
  assert done.stderr.rstrip().splitlines()[-1].startswith('id2image: error:')


def _config(tmp_path, body):
  path = tmp_path / 'config.py'
  path.write_text(f'def get_config():\n  {body}\n')
  return str(path)


def test_an_unexpected_error_keeps_its_traceback_and_asks_for_a_report(
    tmp_path):
  done = _run('invert', '--config',
              _config(tmp_path, "raise RuntimeError('boom')"))
  assert done.returncode == 1
  assert 'Traceback' in done.stderr and 'RuntimeError: boom' in done.stderr
  assert 'this is a bug' in done.stderr and 'report it' in done.stderr
  assert 'id2image: error:' not in done.stderr


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_a_full_disk_is_one_line(tmp_path):
  # /dev/full answers every write with ENOSPC, even to root.
  body = "open('/dev/full', 'wb').write(b'x' * 65536)"
  _one_line_error(_run('invert', '--config', _config(tmp_path, body)),
                  errors.SYSTEM_REFUSED, r'No space left on device')


def test_interrupted(tmp_path):
  done = _run('invert', '--config',
              _config(tmp_path, 'raise KeyboardInterrupt'))
  assert done.returncode == errors.INTERRUPTED
  assert done.stderr.strip() == 'id2image: interrupted'


# --------------------------------------------------------------------------
# One job per output folder.


def test_a_second_job_on_the_same_out_is_refused(tmp_path, capsys):
  from id2image_jax.jobs import common  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'run'
  argv = ['invert', *TINY, '--out', str(out)]
  with common.output_lock(str(out)):
    with pytest.raises(errors.OutputBusyError):
      cli.main(argv)
    assert cli.entry(argv) == errors.UsageError.exit_code
  said = capsys.readouterr().err.strip()
  assert said == (f'id2image: error: {out} is in use by another id2image '
                  f'job (process {os.getpid()}): wait for it to finish or '
                  'choose another --out')
  # embed's --out is a file pattern: nothing is locked.
  embed = cli.build_parser().parse_args(['embed'])
  assert cli.output_folder('embed', cli.load_config(embed.config)) is None


def test_a_killed_job_leaves_no_lock(tmp_path):
  from id2image_jax.jobs import common  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'run')
  read, write = os.pipe()
  pid = os.fork()  # a holder that only makes system calls (no JAX)
  if pid == 0:
    try:
      with common.output_lock(out):
        os.write(write, b'held')
        time.sleep(300)
    finally:
      os._exit(0)  # pylint: disable=protected-access
  try:
    assert os.read(read, 4) == b'held'
    with (pytest.raises(errors.OutputBusyError, match=f'process {pid}'),
          common.output_lock(out)):
      pass
  finally:
    os.kill(pid, signal.SIGKILL)  # no exit handler runs
    os.waitpid(pid, 0)
  with common.output_lock(out):  # the kernel released it
    pass


def test_a_job_that_failed_before_writing_leaves_no_folder(tmp_path):
  from id2image_jax.jobs import common  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'run'
  with pytest.raises(errors.BadInputError), common.output_lock(str(out)):
    raise errors.BadInputError('refused before any work')
  assert not out.exists()
  with common.output_lock(str(out)):
    (out / 'report.json').write_text('{}')
  assert sorted(p.name for p in out.iterdir()) == [common.LOCK_FILE,
                                                   'report.json']
