"""Faults a long run survives (README, "Interruptions, full disks, two jobs
on one folder"): a full disk mid-run is one line and keeps what was
finished."""

import errno
import logging
import shutil
import subprocess

import chex
import inversion_toy as toy
import numpy as np
import optax
import pytest

from id2image_jax import cli
from id2image_jax import errors

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
  filler = _fill(small_disk, 200_000)  # room for a few chunks, not ten
  workdir = small_disk / 'run'
  with caplog.at_level(logging.INFO):
    with pytest.raises(OSError) as raised:
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
