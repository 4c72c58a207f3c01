"""Finished parts of a long job as files, so that a rerun skips them.

Each part is one JSON file (plus an ``.npz`` of its arrays) named
``<name>-<tag>.json`` in one folder, where the tag digests the settings the
part depends on and a format number. A rerun with the same settings reads
the part back; a changed setting, or a format bumped because a part gained
or lost fields, gives another tag, so the part is redone rather than read
back half-filled. Files are written under a temporary name and renamed, so
a part on disk is complete.

Files in, files out: the job decides what a part holds and when to redo it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from id2image_jax.reports import outputs


def tag(settings: dict[str, Any], version: int) -> str:
  """The 12 hex digits that name the parts of these settings."""
  text = json.dumps({**settings, 'format': version}, sort_keys=True,
                    default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


class Parts:
  """The finished parts of one run (module docstring).

  Attributes:
    reused: names of the parts read back from an earlier run, in order.
  """

  def __init__(self, directory: str, settings: dict[str, Any], *,
               version: int):
    """Opens (creates) `directory` for parts of `settings`.

    Args:
      directory: where the part files go.
      settings: JSON-able values the parts depend on (others: ``str``).
      version: the caller's format number of its parts.
    """
    self._dir = directory
    os.makedirs(self._dir, exist_ok=True)
    self._tag = tag(settings, version)
    self.reused: list[str] = []

  def _path(self, name: str, ext: str) -> str:
    return os.path.join(self._dir, f'{name}-{self._tag}.{ext}')

  def get(self, name: str) -> dict[str, Any] | None:
    """Part `name` from an earlier run (its arrays under ``'_arrays'``), or
    None if there is none for these settings."""
    path = self._path(name, 'json')
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      value = json.load(f)
    self.reused.append(name)
    arrays = self._path(name, 'npz')
    if os.path.isfile(arrays):
      with np.load(arrays) as z:
        value['_arrays'] = {k: z[k] for k in z.files}
    return value

  def put(self, name: str, value: dict[str, Any], *,
          arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Stores part `name` (JSON values, numpy arrays apart).

    Returns:
      `value` with `arrays` under ``'_arrays'``, as `get` returns it.
    """
    if arrays:
      np.savez(self._path(name, 'tmp.npz'), **arrays)
      os.replace(self._path(name, 'tmp.npz'), self._path(name, 'npz'))
    with open(self._path(name, 'json.tmp'), 'w') as f:
      json.dump(outputs.json_safe(value), f)
    os.replace(self._path(name, 'json.tmp'), self._path(name, 'json'))
    return {**value, '_arrays': arrays or {}}
