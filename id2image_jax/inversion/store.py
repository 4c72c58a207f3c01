"""Resume files of one inversion run: checkpoints in a work directory.

Layout::

  run.json        what the run is (sizes, hashes); resuming checks it
  chunks/<k>/     results of finished chunk k (numpy, rows without padding)
  state/<i>/      the running chunk's state (latest only) + {chunk, step}

The checkpoints are `checkpoints.StepCheckpoints` (orbax, which writes
each under a temporary name and renames it when complete), so a chunk
listed in ``chunks/`` is finished, whatever killed the previous run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from id2image_jax import checkpoints
from id2image_jax import errors
from id2image_jax.inversion import state as state_lib

_RUN_FILE = 'run.json'


class ResumeMismatchError(errors.UsageError):
  """A work directory holds a different run than the one asked for."""


def sha1(tree: Any) -> str:
  """Digest of a pytree's arrays (dtypes, shapes, bytes), for run.json."""
  h = hashlib.sha1()
  for x in jax.tree.leaves(tree):
    x = np.ascontiguousarray(x)
    h.update(f'{x.dtype}{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def _differences(have: Mapping[str, Any], want: Mapping[str, Any],
                 prefix: str = '') -> list[str]:
  """Dotted names of the fields that differ, nested dicts opened."""
  out = []
  for k in sorted(set(have) | set(want)):
    a, b = have.get(k), want.get(k)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += _differences(a, b, f'{prefix}{k}.')
    elif a != b:
      out.append(prefix + k)
  return out


class Store:
  """The checkpoints of one run in `workdir` (module docstring)."""

  def __init__(self, workdir: str, fingerprint: Mapping[str, Any]):
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    self._check_run(workdir, dict(fingerprint))
    self._chunks = checkpoints.StepCheckpoints(
        os.path.join(workdir, 'chunks'))
    self._state = checkpoints.StepCheckpoints(
        os.path.join(workdir, 'state'), max_to_keep=1)
    self._steps_per_chunk = int(fingerprint['steps']) + 1

  @staticmethod
  def _check_run(workdir, fingerprint):
    path = os.path.join(workdir, _RUN_FILE)
    want = json.loads(json.dumps(fingerprint))
    if os.path.exists(path):
      with open(path) as f:
        have = json.load(f)
      if have != want:
        diff = _differences(have, want)
        raise ResumeMismatchError(
            f'{workdir} holds a different run (differs in: '
            f'{", ".join(diff)}); use a new workdir or delete this one')
    elif jax.process_index() == 0:
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(want, f, indent=2, sort_keys=True)
      os.replace(tmp, path)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('id2image_jax.inversion.run_json')

  def finished(self) -> set[int]:
    return self._chunks.steps()

  def load_chunk(self, k: int) -> dict[str, Any]:
    return self._chunks.restore(k)

  def save_chunk(self, k: int, result: dict[str, Any]) -> None:
    # Asynchronous: the next chunk computes while this one is written.
    self._chunks.save(k, result)

  def save_state(self, k: int, step: int, st: state_lib.InversionState, *,
                 seconds: float | None = None):
    """Chunk k's running state after `step` steps, and the `seconds` of
    optimisation it took so far (across resumed runs; None: unknown)."""
    # A state of chunk k may only exist once chunk k-1's results are on
    # disk: state checkpoint ids then only grow, and a resumed run never
    # finds a later chunk's state while an earlier chunk is unfinished.
    self._chunks.wait()
    self._state.save_items(
        k * self._steps_per_chunk + step, arrays={'state': st},
        documents={'meta': {'chunk': k, 'step': step, 'seconds': seconds}})

  def load_state(self, k: int, abstract
                 ) -> tuple[state_lib.InversionState, float | None] | None:
    """Chunk k's saved running state and the seconds spent reaching it
    (None when a version that did not record them saved it), or None."""
    latest = self._state.latest_step()
    if latest is None or latest // self._steps_per_chunk != k:
      return None
    got = self._state.restore_items(latest, arrays={'state': abstract},
                                    documents=('meta',))
    assert got['meta']['chunk'] == k, got['meta']
    return got['state'], got['meta'].get('seconds')

  def close(self):
    for saved in (self._chunks, self._state):
      saved.close()
