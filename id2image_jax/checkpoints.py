"""Everything the package writes with orbax: models, and numbered steps.

The only module that imports orbax (tests/test_architecture.py keeps it
so). It sits on the library's lowest floor, beside `models`, so that the
inversion's resume store (`inversion.store`) can use it too.

**Models.** A converted model lives in one directory::

  <dir>/meta.json     {"kind": "stylegan2", "config": {...}, "source": ...}
  <dir>/variables/    orbax checkpoint of the variables pytree

Restoring goes against the abstract tree from ``jax.eval_shape(model.init)``
so a checkpoint of the wrong model or size fails with a clear error instead of
loading half a tree.

**Numbered steps.** `StepCheckpoints` keeps checkpoints numbered by a step
in one directory (``<dir>/<step>/``), each holding named items: trees of
arrays and small JSON documents. Orbax writes each under a temporary name
and renames it when complete, so a listed step is whole, whatever killed
the process that wrote it.

`TrainCheckpoints` keeps the latest states of a training
run (e.g. the end-to-end ID -> latent head) so that it resumes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from id2image_jax import errors

META_FILE = 'meta.json'
_VARIABLES = 'variables'
FORMAT_VERSION = 1


class CheckpointMismatchError(errors.BadInputError):
  """A saved checkpoint does not match the model asked for."""


def save(directory: str | os.PathLike, variables: Any, *, kind: str,
         config: Mapping[str, Any] | None = None,
         source: str | None = None) -> str:
  """Writes `variables` (any pytree of arrays) and metadata to `directory`.

  Args:
    directory: created if missing; an existing checkpoint there is replaced.
    variables: pytree of arrays (e.g. ``{'params': ..., 'batch_stats': ...}``).
    kind: model family, e.g. ``'stylegan2'``, ``'vggface2'``, ``'dlib'``.
    config: JSON-serialisable model config needed to rebuild the module.
    source: where the weights came from (shown to users; no paths required).

  Returns:
    The absolute directory path.
  """
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, _VARIABLES), variables, force=True)
  meta = {'format_version': FORMAT_VERSION, 'kind': kind,
          'config': dict(config or {}), 'source': source}
  tmp = os.path.join(directory, META_FILE + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(meta, f, indent=2, sort_keys=True, default=_json_default)
  os.replace(tmp, os.path.join(directory, META_FILE))
  return directory


def _json_default(obj):
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  if isinstance(obj, (tuple, np.ndarray)):
    return list(np.asarray(obj).tolist())
  raise TypeError(f'{type(obj).__name__} is not JSON serialisable')


def read_meta(directory: str | os.PathLike) -> dict:
  """Reads ``meta.json``; raises FileNotFoundError naming what is missing."""
  directory = os.path.abspath(os.fspath(directory))
  path = os.path.join(directory, META_FILE)
  if not os.path.isfile(path):
    raise errors.MissingInputError(
        f'no converted checkpoint at {directory} (missing {META_FILE}); convert '
        'the original weights first (see README: "Using real checkpoints")')
  with open(path) as f:
    return json.load(f)


def restore(directory: str | os.PathLike, abstract: Any, *,
            kind: str | None = None) -> Any:
  """Restores variables saved by `save` against an abstract tree.

  Args:
    directory: a directory written by `save`.
    abstract: pytree of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` output).
    kind: if given, the saved kind must equal it.

  Raises:
    FileNotFoundError: nothing saved there.
    CheckpointMismatchError: wrong kind, or tree structure / shapes differ;
      the message names the first offending leaves.
  """
  directory = os.path.abspath(os.fspath(directory))
  meta = read_meta(directory)
  if kind is not None and meta.get('kind') != kind:
    raise CheckpointMismatchError(
        f'{directory} holds a {meta.get("kind")!r} checkpoint, not {kind!r}')
  with ocp.StandardCheckpointer() as ckptr:
    saved = ckptr.metadata(os.path.join(directory, _VARIABLES))
    saved_tree = getattr(saved, 'item_metadata', saved)
    check_same_tree(saved_tree, abstract, directory)
    return ckptr.restore(os.path.join(directory, _VARIABLES), abstract)


def check_same_tree(saved: Any, abstract: Any, directory: str) -> None:
  """Raises `CheckpointMismatchError` naming leaves missing, unexpected or
  of another shape in `saved` against `abstract`."""
  flat_saved = {jax.tree_util.keystr(p): v for p, v in
                jax.tree_util.tree_leaves_with_path(saved)}
  flat_want = {jax.tree_util.keystr(p): v for p, v in
               jax.tree_util.tree_leaves_with_path(abstract)}
  problems = [f'missing {k}' for k in sorted(set(flat_want) - set(flat_saved))]
  problems += [f'unexpected {k}' for k in sorted(set(flat_saved) -
                                                 set(flat_want))]
  problems += [
      f'{k}: saved {tuple(flat_saved[k].shape)}, model expects '
      f'{tuple(flat_want[k].shape)}'
      for k in sorted(set(flat_saved) & set(flat_want))
      if tuple(flat_saved[k].shape) != tuple(flat_want[k].shape)]
  if problems:
    shown = '; '.join(problems[:10])
    more = f' ... and {len(problems) - 10} more' if len(problems) > 10 else ''
    raise CheckpointMismatchError(
        f'checkpoint {directory} does not match the model: {shown}{more}')


def _is_no_space(error: BaseException | None) -> bool:
  """A full disk, as the OS or as tensorstore (under orbax) says it."""
  if error is None:
    return False
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                    errno.EDQUOT):
    return True
  text = str(error)
  return 'No space left on device' in text or "os_error_code='28'" in text


class _QuietFullDisk(logging.Filter):
  """Drops orbax's logged tracebacks of a full disk: its background threads
  log each failed write, and `_writing` tells it once, in one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    said = record.getMessage()
    return not (record.levelno >= logging.ERROR and (
        _is_no_space(error) or 'No space left on device' in said))


logging.getLogger('absl').addFilter(_QuietFullDisk())


@contextlib.contextmanager
def _writing(directory: str) -> Iterator[None]:
  """Tells a full disk as ``OSError(ENOSPC, ..., directory)``.

  Orbax writes in background threads through tensorstore, whose errors
  arrive later as a ValueError of a few kilobytes; the command line tells
  an OSError like this one in one line (exit code 5).
  """
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if not _is_no_space(e):
      raise
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                  directory) from e


# The name orbax gives the one item of a checkpoint saved without names.
_DEFAULT_ITEM = 'default'


class StepCheckpoints:
  """Checkpoints numbered by step in one directory (module docstring).

  A checkpoint holds either one unnamed tree (`save` / `restore`) or named
  items (`save_items` / `restore_items`): trees of arrays and JSON
  documents. Saving is asynchronous: the caller computes on while orbax
  writes; `wait` blocks until every save is on disk.
  """

  def __init__(self, directory: str | os.PathLike, *,
               max_to_keep: int | None = None):
    """Opens (creating) `directory`.

    Args:
      directory: where the numbered checkpoints live.
      max_to_keep: keep only the newest this many (None: all).
    """
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def steps(self) -> set[int]:
    """The steps saved completely."""
    return set(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest step saved, or None."""
    return self._manager.latest_step()

  def save(self, step: int, tree: Any) -> None:
    """Saves one tree of arrays as checkpoint `step`."""
    # Saving first waits for the previous save, whose error surfaces here.
    with _writing(self.directory):
      self._manager.save(step, args=ocp.args.StandardSave(tree))

  def restore(self, step: int, *, abstract: Any = None) -> Any:
    """The tree `save` wrote at `step` (against `abstract` when given)."""
    return self._manager.restore(step,
                                 args=ocp.args.StandardRestore(abstract))

  def save_items(self, step: int, *, arrays: Mapping[str, Any],
                 documents: Mapping[str, Any]) -> None:
    """Saves named items as checkpoint `step`.

    Args:
      step: the checkpoint's number.
      arrays: item name -> tree of arrays.
      documents: item name -> JSON-serialisable value.
    """
    clash = sorted(set(arrays) & set(documents))
    if clash or _DEFAULT_ITEM in {*arrays, *documents}:
      raise ValueError(f'item names must differ and not be {_DEFAULT_ITEM!r}'
                       f': {clash or _DEFAULT_ITEM}')
    with _writing(self.directory):
      self._manager.save(step, args=ocp.args.Composite(
          **{k: ocp.args.StandardSave(v) for k, v in arrays.items()},
          **{k: ocp.args.JsonSave(v) for k, v in documents.items()}))

  def restore_items(self, step: int, *, arrays: Mapping[str, Any],
                    documents: Iterable[str]) -> dict[str, Any]:
    """The items `save_items` wrote at `step`.

    Args:
      step: the checkpoint's number.
      arrays: item name -> abstract tree it is restored against.
      documents: names of the JSON items.

    Returns:
      item name -> restored tree or JSON value.
    """
    got = self._manager.restore(step, args=ocp.args.Composite(
        **{k: ocp.args.StandardRestore(v) for k, v in arrays.items()},
        **{k: ocp.args.JsonRestore() for k in documents}))
    return {k: got[k] for k in (*arrays, *documents)}

  def wait(self) -> None:
    """Blocks until every save is on disk."""
    with _writing(self.directory):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the directory."""
    with _writing(self.directory):
      self._manager.wait_until_finished()
    self._manager.close()


# ---------------------------------------------------------------------------
# Training runs that resume.

_RUN_FILE = 'run.json'


def _flat(tree: Any) -> dict[str, Any]:
  """{'a/b/0': leaf}: dataclass, named-tuple and dict nodes alike, so the
  saved tree and its metadata compare leaf by leaf with any abstract tree."""
  def name(key):
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {'/'.join(name(k) for k in path): leaf for path, leaf in
          jax.tree_util.tree_leaves_with_path(tree)}


class TrainCheckpoints:
  """The latest states of one training run in `directory`, so it resumes.

  Layout::

    <directory>/run.json   the fingerprint: what the run is (settings that
                           change its results); resuming checks it
    <directory>/<step>/    orbax: the state pytree + a JSON sidecar

  Orbax writes a checkpoint under a temporary name and renames it when
  complete, so an interrupted save leaves the previous step to resume from.
  """

  def __init__(self, directory: str | os.PathLike,
               fingerprint: Mapping[str, Any], *, keep: int = 2):
    """Opens (or starts) the run in `directory`.

    Raises:
      CheckpointMismatchError: `directory` holds another run (names the
        differing fields).
    """
    self.directory = os.path.abspath(os.fspath(directory))
    os.makedirs(self.directory, exist_ok=True)
    want = json.loads(json.dumps(dict(fingerprint), default=_json_default))
    path = os.path.join(self.directory, _RUN_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        have = json.load(f)
      if have != want:
        differ = sorted(k for k in set(have) | set(want)
                        if have.get(k) != want.get(k))
        raise CheckpointMismatchError(
            f'{self.directory} holds another training run (differs in: '
            f'{", ".join(differ)}); use another directory or delete it')
    else:
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(want, f, indent=2, sort_keys=True)
      os.replace(tmp, path)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    """Writes `state` (a pytree of arrays) and `meta` (JSON) as `step`."""
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(_flat(state)),
        meta=ocp.args.JsonSave(dict(meta))))

  def restore(self, abstract: Any) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint, or None.

    Args:
      abstract: the state's tree of ``jax.ShapeDtypeStruct`` (e.g.
        ``jax.eval_shape`` of its initialisation).

    Raises:
      CheckpointMismatchError: the saved state does not fit `abstract`
        (names the leaves).
    """
    step = self.latest_step()
    if step is None:
      return None
    self._manager.wait_until_finished()
    want = _flat(abstract)
    saved = self._manager.item_metadata(step)['state']
    check_same_tree(getattr(saved, 'tree', saved), want,
                    os.path.join(self.directory, str(step)))
    got = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(want), meta=ocp.args.JsonRestore()))
    state = jax.tree.unflatten(jax.tree.structure(abstract),
                               [got['state'][k] for k in want])
    return step, state, dict(got['meta'])

  def close(self) -> None:
    """Waits for pending saves and closes."""
    self._manager.wait_until_finished()
    self._manager.close()
