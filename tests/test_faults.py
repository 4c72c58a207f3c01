"""Faults a long run survives (README, "Interruptions, full disks, two jobs
on one folder"): a full disk mid-run is one line and keeps what was
finished; a job SIGKILLed at a chosen point and rerun writes the report an
uninterrupted run writes.

The kill tests run the real program (``python -m id2image_jax``) on tiny
settings, three times each (uninterrupted; killed; rerun), sharing one
persistent XLA compilation cache so that only the first run compiles.
The kill point is chosen, not timed: the moment a given checkpoint first
appears on disk (polled), so that a loaded CI machine kills at the same
stage of the run.
"""

import errno
import glob
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import inversion_toy as toy
import numpy as np
import optax
import pytest
import test_audit
import test_leakage
from fake_data import write_fake_celeba

from id2image_jax import cli
from id2image_jax import errors
from id2image_jax.jobs import embed as embed_job

N, STEPS = 10, 3


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MB tmpfs (needs root, as in CI); skipped where mount is refused."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  if shutil.which('mount') is None:
    pytest.skip('no mount command: the full-disk test needs a small tmpfs')
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs',
                         str(disk)], capture_output=True, text=True,
                        check=False)
  if done.returncode:
    pytest.skip('mounting a tmpfs is not permitted here (needs root): '
                + done.stderr.strip())
  yield disk
  subprocess.run(['umount', '-l', str(disk)], check=False)


def _fill(disk, leave_bytes):
  """Fills `disk` but `leave_bytes`; returns the filler file."""
  free = shutil.disk_usage(disk).free
  filler = disk / 'filler'
  filler.write_bytes(b'\0' * (free - leave_bytes))
  return filler


def _invert(workdir=None):
  params = toy.make_params()
  targets, _ = toy.make_targets(N, params=params)
  return toy.invert(toy.objective, params, targets, init=toy.init_latents(N),
                    steps=STEPS, chunk_size=1, tx=optax.adam(0.05),
                    progress=False, workdir=workdir)


def test_a_full_disk_is_one_line_and_finished_chunks_resume(
    small_disk, caplog, capfd):
  whole = _invert()
  # ~60 kB a chunk (orbax files on tmpfs): room for a few chunks, not ten.
  filler = _fill(small_disk, 300_000)
  workdir = small_disk / 'run'
  with caplog.at_level(logging.INFO), pytest.raises(OSError) as raised:
    _invert(workdir)
  error = raised.value
  assert error.errno == errno.ENOSPC
  assert error.filename.startswith(str(workdir))
  # The program's line (exit code 5), not orbax's kilobytes of tensorstore
  # spec; and orbax's threads log no traceback of it either.
  message, code = cli._one_line(error)  # pylint: disable=protected-access
  assert code == errors.SYSTEM_REFUSED
  assert message == f'No space left on device: {error.filename}'
  assert 'Traceback' not in capfd.readouterr().err
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
  # Space freed, the same run resumes from the chunks it finished.
  filler.unlink()
  got = _invert(workdir)
  assert 0 < got.stats['chunks_restored'] < N
  chex.assert_trees_all_equal(got.latents, whole.latents)
  chex.assert_trees_all_equal(got.final, whole.final)
  np.testing.assert_array_equal(got.done, whole.done)


# ---------------------------------------------------------------------------
# SIGKILL at a chosen point, then the same command again.

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Report fields that differ between runs by design: wall time and what is
# derived from it (the audit's white-box score at the black-box's wall
# time), and what a resumed run did itself (chunks or parts read back
# rather than computed).
_RUN_FIELDS = re.compile(r'seconds|^chunks_(restored|run)$|^steps_run$|'
                         r'^targets_run$|^reused_parts$')


@pytest.fixture(scope='module')
def xla_cache(tmp_path_factory):
  """Environment of the job processes: one compilation cache for all."""
  cache = tmp_path_factory.mktemp('xla_cache')
  return {**os.environ, 'ID2IMAGE_DEBUG': '',
          'JAX_COMPILATION_CACHE_DIR': str(cache),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


def _checkpoint_exists(pattern):
  """A test of whether a finished orbax checkpoint matches `pattern` (a
  glob under the output folder; temporary folders do not count)."""
  def exists(out):
    return any(not p.endswith('-tmp') and '.orbax-checkpoint-tmp' not in p
               for p in glob.glob(os.path.join(out, pattern)))
  return exists


def _job(argv, out, env, *, kill_when=None, timeout=300):
  """Runs ``id2image ARGV --out OUT``; with `kill_when`, SIGKILLs it as
  soon as ``kill_when(out)`` holds (asserting that it was still running).
  """
  with open(f'{out}.stderr', 'w') as stderr:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'id2image_jax', *argv, '--out', str(out)],
        stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while kill_when is not None and proc.poll() is None and not kill_when(
        str(out)) and time.monotonic() < deadline:
      time.sleep(0.01)
    if kill_when is not None:
      proc.send_signal(signal.SIGKILL)
    code = proc.wait(timeout=max(1, deadline - time.monotonic()))
  said = pathlib.Path(f'{out}.stderr').read_text()
  want = -signal.SIGKILL if kill_when is not None else 0
  assert code == want, f'exit {code}, not {want}:\n{said[-3000:]}'


def _report(path, out):
  """The JSON report at `path`, its output folder written as '<out>' and
  `_RUN_FIELDS` left out."""
  def drop(x):
    if isinstance(x, dict):
      return {k: drop(v) for k, v in x.items() if not _RUN_FIELDS.search(k)}
    if isinstance(x, list):
      return [drop(v) for v in x]
    return x
  return drop(json.loads(path.read_text().replace(str(out), '<out>')))


def _killed_and_rerun_equals_whole(tmp_path, env, argv, report, kill_when):
  """Runs `argv` whole, and killed then rerun; the reports must be equal.

  Returns:
    The two reports as written (whole, rerun).
  """
  whole, again = tmp_path / 'whole', tmp_path / 'again'
  _job(argv, whole, env)
  _job(argv, again, env, kill_when=kill_when)
  assert not (again / report).exists()  # killed before the end
  _job(argv, again, env)
  assert _report(again / report, again) == _report(whole / report, whole)
  return (json.loads((whole / report).read_text()),
          json.loads((again / report).read_text()))


TINY_INVERSION = ['--generator', 'demo:demo-8', '--set', 'progress=False',
                  '--set', 'eval_encoder=', '--set', 'checkpoint_seconds=1e-9']


@pytest.mark.slow
def test_invert_killed_mid_chunk_then_rerun(tmp_path, xla_cache):
  # Saved after every step (checkpoint_seconds ~0); killed as soon as the
  # first running-chunk state is on disk: the rerun resumes there.
  whole, rerun = _killed_and_rerun_equals_whole(
      tmp_path, xla_cache,
      ['invert', *TINY_INVERSION, '--set', 'chunk_size=2',
       '--num-targets', '4', '--steps', '4'],
      'summary.json', _checkpoint_exists('state/state/*'))
  assert rerun['stats']['steps_run'] < whole['stats']['steps_run']


@pytest.mark.slow
def test_evaluate_killed_in_its_second_arm_then_rerun(tmp_path, xla_cache):
  # Killed once the second arm saved its running chunk: the rerun takes
  # the first arm's finished chunks and the second's state from disk.
  whole, rerun = _killed_and_rerun_equals_whole(
      tmp_path, xla_cache,
      ['evaluate', *TINY_INVERSION, '--set', 'eval_encoder=dlib',
       '--set', 'num_targets=2', '--set', 'num_impostor_images=3',
       '--set', 'steps=2', '--set', "arms=('id','id+lm')",
       '--set', 'attribute_nets=()'],
      'report.json', _checkpoint_exists('arms/id+lm/state/state/*'))
  assert whole['arms'].keys() == rerun['arms'].keys() == {'id', 'id+lm'}


@pytest.mark.slow
def test_audit_killed_in_its_white_box_attack_then_rerun(tmp_path,
                                                         xla_cache):
  # Killed once the white-box inversion saved its running chunk: the
  # leakage part is read back, the inversion resumes from its state.
  faces = tmp_path / 'faces'
  test_audit._aligned_flat_folder(faces, 12)
  _, rerun = _killed_and_rerun_equals_whole(
      tmp_path, xla_cache,
      ['audit', '--encoder', 'dlib', '--data', str(faces), *test_audit.TINY,
       '--set', 'checkpoint_seconds=1e-9'],
      'audit.json', _checkpoint_exists('inversion/state/state/*'))
  assert rerun['facts']['reused_parts'] == ['leakage']


@pytest.mark.slow
def test_leakage_killed_after_its_first_head_then_rerun(tmp_path,
                                                        xla_cache):
  # leakage keeps no partial results: the rerun trains every head again,
  # from the same seeds, to the same report.
  pattern = str(tmp_path / 'desc' / '{encoder}_{split}.npz')
  cfg = test_leakage._config('embed')
  cfg.encoder_name = 'toy'
  celeba = str(tmp_path / 'celeba')
  write_fake_celeba(celeba, num=24, size=test_leakage.SMALL)
  cfg.data.manual_dir = celeba
  cfg.data.data_dir = os.path.join(celeba, 'no_tfds')
  cfg.out, cfg.batch_size, cfg.progress = pattern, 4, False
  embed_job.run(cfg, embed_fn=test_leakage.toy_embed,
                landmarker=test_leakage.ToyLandmarker())
  tiny = [f'{head}.{field}={value}' for head in ('attributes', 'histogram',
                                                 'landmarks')
          for field, value in (('hidden', '(8,)'), ('batch_size', 4),
                               ('num_epochs', 1))]
  _killed_and_rerun_equals_whole(
      tmp_path, xla_cache,
      ['leakage', '--config', f'{cli.config_dir()}/leakage.py:quick',
       '--descriptors', pattern, '--set', 'encoders=toy',
       '--set', 'progress=False', '--set', 'image_baseline.enabled=False',
       '--set', 'attributes.names=Smiling,Eyeglasses',
       '--set', f'data.manual_dir={celeba}',
       *[a for t in tiny for a in ('--set', t)]],
      'leakage.json', lambda out: bool(glob.glob(f'{out}/heads/toy/*/*')))
