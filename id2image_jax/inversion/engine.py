"""Streams a whole test set through one compiled inversion step, in chunks.

``invert`` splits the N targets into chunks of ``chunk_size`` (the last one
padded and masked, so it reuses the same compiled step), shards every chunk
over all devices along the target axis, runs ``steps`` optimiser steps on it,
and keeps the results on the host. With a ``workdir`` it checkpoints with
orbax: each finished chunk's results, and the running chunk's state every
``checkpoint_every`` steps and/or once ``checkpoint_seconds`` of wall time
passed since its last save, so that a run interrupted at any point resumes
without redoing or losing finished targets, and with the same results as a
run that was never interrupted. `invert` reads as its phases, each a
function below it in call order: check the inputs, place the parameters,
plan the chunks, open the store, restore finished chunks, run the rest,
finish.

Bad rows: a row whose target holds a NaN/inf (or whose given initial latent
does), or that the caller marks ``valid=False``, is never optimised. It is
reported in ``InversionResult.skipped`` with its row index and reason, its
outputs are NaN, and every other row is inverted as usual. Filtering happens
here so that row indices in every output refer to the caller's rows.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh

from id2image_jax import batching
from id2image_jax import errors
from id2image_jax.inversion import sharding
from id2image_jax.inversion import state as state_lib
from id2image_jax.inversion import step as step_lib
from id2image_jax.inversion import store as store_lib

InitFn = Callable[[jax.Array, Any], Any]


@dataclasses.dataclass(frozen=True)
class InvertOptions:
  """How `invert` runs; the same options compile the same step.

  Attributes:
    steps: optimiser steps per target.
    chunk_size: targets per compiled step; a multiple of the device count.
    tx: optimiser (default ``optax.adam(1e-3)``); one state per target.
    stochastic: the objective takes a key first.
    compute_dtype: e.g. ``jnp.bfloat16`` for the objective's compute;
      latents and optimiser state stay float32.
    history_every: record loss and aux terms every this many steps.
    log_every: progress-bar / callback period in steps (one host sync each;
      default: 20 updates per chunk).
    checkpoint_every: also checkpoint the running chunk every this many
      steps (needs a workdir).
    checkpoint_seconds: also checkpoint the running chunk after a step once
      this much wall time passed since its start or last save (0: after
      every step; None: never; needs a workdir). What a kill can lose is
      then bounded in time, whatever a step costs.
    max_chunks: compute at most this many chunks in this call, then return
      (the rest stay not `done`; a later call with the same workdir
      resumes).
    progress: show a tqdm progress bar (process 0 only).
    snapshot_steps: also keep the latents after these step counts (0: the
      initialisation), e.g. ``(0, 5, 10, 30)``: how good the attack is
      after each, from one run (`InversionResult.snapshots`).
  """
  steps: int
  chunk_size: int
  tx: optax.GradientTransformation | None = None
  stochastic: bool = False
  compute_dtype: Any = None
  history_every: int = 1
  log_every: int | None = None
  checkpoint_every: int | None = None
  checkpoint_seconds: float | None = None
  max_chunks: int | None = None
  progress: bool = True
  snapshot_steps: tuple[int, ...] = ()

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return step_lib.default_optimizer() if self.tx is None else self.tx


@dataclasses.dataclass(frozen=True)
class Progress:
  """Passed to `invert`'s callback at log points and after each chunk.

  Attributes:
    chunk: index of the chunk being run.
    num_chunks: number of chunks in the whole run.
    step: steps done in this chunk.
    steps: steps per chunk.
    rows: [c] the caller's row indices in this chunk (no padding).
    loss: [c] loss of each row at the last step (host numpy).
    chunk_done: True once the chunk's results are stored.
  """
  chunk: int
  num_chunks: int
  step: int
  steps: int
  rows: np.ndarray
  loss: np.ndarray
  chunk_done: bool


@dataclasses.dataclass
class InversionResult:
  """Everything `invert` found, as host numpy, indexed by the caller's rows.

  Attributes:
    latents: pytree like the latents, leaves [N, ...]; NaN where not done.
    history: name -> [N, T]: ``'loss'`` and each aux term at the steps in
      `history_steps` (values before that step's update).
    history_steps: [T] step index of each history column.
    final: name -> [N]: loss and aux terms at the returned latents.
    done: [N] bool, results present (False for skipped rows and for chunks
      not reached when stopped early with ``max_chunks``).
    diverged: [N] bool, the loss or gradient became non-finite; the row was
      frozen at that point.
    skipped: row -> reason, for rows that were never optimised.
    stats: run statistics: chunks run / restored, steps run, ``seconds``
      (this call) and ``seconds_all_runs`` (optimising every finished
      chunk, in this and the earlier runs it resumed; None when a chunk
      was stored by a version that did not record its time).
    snapshots: step count -> pytree like `latents` ([N, ...]; NaN where not
      done): the latents after that many steps, for each of
      ``options.snapshot_steps``.
  """
  latents: Any
  history: dict[str, np.ndarray]
  history_steps: np.ndarray
  final: dict[str, np.ndarray]
  done: np.ndarray
  diverged: np.ndarray
  skipped: dict[int, str]
  stats: dict[str, Any]
  snapshots: dict[int, Any] = dataclasses.field(default_factory=dict)


def _broadcast(latent, key, target):
  del key, target
  return latent


def broadcast_init(latent: Any) -> InitFn:
  """Every target starts from the same latent (e.g. ``{'w': w_avg}``)."""
  return jax.tree_util.Partial(_broadcast, latent)


@dataclasses.dataclass(frozen=True)
class _RandomInit:
  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  scale: float

  def __call__(self, key, target):
    del target
    keys = jax.random.split(key, len(self.shapes))
    return jax.tree.unflatten(self.treedef, [
        self.scale * jax.random.normal(k, s, jnp.float32)
        for k, s in zip(keys, self.shapes)])


def random_init(like: Any, *, scale: float = 1.0) -> InitFn:
  """Every target starts from its own N(0, scale^2) draw of shape `like`.

  Args:
    like: pytree of arrays or ``jax.ShapeDtypeStruct`` giving ONE target's
      latent shapes (e.g. ``{'z': jax.ShapeDtypeStruct((512,), jnp.float32)}``).
    scale: standard deviation.
  """
  leaves, treedef = jax.tree.flatten(like)
  # Hashable, so repeated calls reuse the compiled initialisation.
  return _RandomInit(treedef, tuple(tuple(jnp.shape(x)) for x in leaves),
                     float(scale))


def initial_latents(key: jax.Array, init: InitFn | Any, targets: Any,
                    rows: np.ndarray) -> Any:
  """The latents `invert` starts `rows` from (same keys), as host numpy.

  Args:
    key: the key passed to `invert`.
    init: as for `invert`.
    targets: as for `invert` (leaves [N, ...]).
    rows: [K] row indices.

  Returns:
    Pytree of [K, ...] numpy leaves.
  """
  rows = np.asarray(rows)
  if not callable(init):
    return jax.tree.map(lambda x: np.asarray(x)[rows], init)
  init_key, _ = jax.random.split(key)
  fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  picked = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[rows]), targets)
  return jax.tree.map(np.asarray, jax.vmap(init)(
      fold(init_key, jnp.asarray(rows)), picked))


def invert(key: jax.Array, objective: step_lib.LossFn, params: Any,
           targets: Any, *, init: InitFn | Any, options: InvertOptions,
           valid: np.ndarray | None = None, mesh: Mesh | None = None,
           workdir: str | os.PathLike | None = None,
           callback: Callable[[Progress], None] | None = None,
           step_fn: Callable[..., Any] | None = None,
           run_config: Mapping[str, Any] | None = None) -> InversionResult:
  """Inverts N targets with one compiled, sharded step, chunk by chunk.

  Args:
    key: typed PRNG key for initialisation and stochastic objectives; each
      target's keys derive from ``fold_in(key, row)`` so they do not depend
      on chunking.
    objective: per-target ``loss_fn(params, latent, target) -> (loss, aux)``
      (``loss_fn(key, params, latent, target)`` if ``options.stochastic``);
      see `step.py`. ``aux`` is a dict of per-target scalars, all recorded.
    params: model variables shared by all targets (replicated on devices).
    targets: pytree of host arrays, leaves [N, ...] (e.g.
      ``{'descriptor': [N, D], 'landmarks': [N, 68, 2]}``).
    init: where each target starts: a pytree of arrays with leaves [N, ...]
      (one latent per target), or a function ``init(key, target) -> latent``
      for ONE target (see `broadcast_init`, `random_init`; an ID->latent
      regressor goes here). Pass a function's large arrays through
      ``jax.tree_util.Partial(fn, variables)`` so they become inputs of the
      compiled program, not constants in it.
    options: steps, chunk size, optimiser, dtype, logging (`InvertOptions`).
    valid: optional [N] bool; False rows are skipped (as are rows with
      non-finite targets or initial latents).
    mesh: 1-D device mesh with axis ``'targets'`` (default: all devices).
    workdir: where to checkpoint and resume (None: no checkpoints).
    callback: called with a `Progress` at every log point and after every
      finished chunk; an exception raised there aborts the run after
      pending checkpoints are written.
    step_fn: a pre-built jitted step (`step.make_step` with the same
      objective, optimiser and options); default builds one.
    run_config: JSON-able settings stored in ``run.json`` and compared on
      resume (e.g. loss weights, learning rate), so a changed setting cannot
      silently resume an old run.

  Returns:
    An `InversionResult`.
  """
  started = time.perf_counter()
  targets = jax.tree.map(np.asarray, targets)
  n = _check_inputs(targets, options, workdir)
  placed = _setup(key, objective, params, options, mesh)
  if step_fn is not None:
    placed = placed._replace(step=step_fn)
  plan = _plan(objective, placed, targets, n, init=init, valid=valid,
               options=options)
  out = _empty_result(plan, options)
  store = None if workdir is None else store_lib.Store(
      workdir, _fingerprint(plan, targets, options, run_config))
  stats = {'chunks_total': len(plan.chunks), 'chunks_restored': 0,
           'chunks_run': 0, 'steps_run': 0, 'targets_run': 0,
           'seconds_all_runs': 0.0}
  run = None
  try:
    todo = _restore_finished(out, store, plan, options, stats)
    run = _make_run(objective, placed, targets, plan, options, store=store,
                    callback=callback, num_steps=len(todo) * options.steps)
    _run_chunks(run, todo, out, stats)
  finally:
    if run is not None:
      run.bar.close()
    if store is not None:
      store.close()
  stats['seconds'] = time.perf_counter() - started
  out.stats = stats
  return out


def _check_inputs(targets: Any, options: InvertOptions,
                  workdir: str | os.PathLike | None) -> int:
  """N, the number of targets; errors for what no run can start from."""
  n = batching.num_rows(targets, what='targets')
  if n == 0:
    raise errors.BadInputError('no targets to invert')
  for name in ('checkpoint_every', 'checkpoint_seconds'):
    if getattr(options, name) is not None and workdir is None:
      raise ValueError(f'{name} needs a workdir')
  return n


# The compiled functions are cached across `invert` calls with the same
# objective, optimiser and options (and shapes), so inverting several test
# sets in one process compiles once.
_cached_step = functools.lru_cache(maxsize=16)(step_lib.make_step)
_cached_eval = functools.lru_cache(maxsize=16)(step_lib.make_eval_fn)


class _Placed(NamedTuple):
  """The set-up `invert` and `prepare_chunk` share (`_setup`)."""
  mesh: Mesh
  params: Any  # cast to the compute dtype once and replicated
  init_key: jax.Array
  loss_key: jax.Array | None  # None if the objective is not stochastic
  step: Callable[..., Any]  # the (cached) jitted step


def _setup(key, objective, params, options: InvertOptions, mesh) -> _Placed:
  """Checks the chunk size; places `params` on the mesh; splits `key`."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_chunk_size(options.chunk_size, mesh)
  init_key, loss_key = jax.random.split(key)
  params = sharding.to_global(
      step_lib.cast_floating(params, options.compute_dtype), mesh,
      replicate=True)
  step = _cached_step(objective, options.optimizer,
                      stochastic=options.stochastic,
                      compute_dtype=options.compute_dtype,
                      history_every=options.history_every, mesh=mesh,
                      snapshot_steps=options.snapshot_steps)
  return _Placed(mesh, params, init_key,
                 loss_key if options.stochastic else None, step)


def _check_chunk_size(chunk_size: int, mesh: Mesh) -> None:
  if chunk_size < 1 or chunk_size % mesh.size:
    lower = max(mesh.size, chunk_size // mesh.size * mesh.size)
    raise errors.UsageError(
        f'chunk_size must be a positive multiple of the number of devices '
        f'({mesh.size}) so every device holds the same number of targets; '
        f'got {chunk_size} (try {lower} or {lower + mesh.size})')


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What one `invert` call will do, decided before any step runs.

  Attributes:
    num_targets: N, the caller's rows.
    skipped: row -> reason, rows never optimised (`_check_rows`).
    chunks: the rows of each chunk, in order (skipped rows left out).
    given_latents: [N, ...] per-target initial latents, or None.
    init_fn: the per-target init function (a `Partial`), or None.
    one_latent: one target's latent (arrays, or shapes from `init_fn`).
    names: the recorded history names (``'loss'`` and the aux terms).
    hist_len: history columns per chunk.
    snapshot_steps: the checked ``options.snapshot_steps``.
  """
  num_targets: int
  skipped: dict[int, str]
  chunks: list[np.ndarray]
  given_latents: Any
  init_fn: Any
  one_latent: Any
  names: tuple[str, ...]
  hist_len: int
  snapshot_steps: tuple[int, ...]


def _plan(objective, placed: _Placed, targets, n: int, *, init, valid,
          options: InvertOptions) -> _Plan:
  """Checks the rows and splits the rest into chunks (`_Plan`)."""
  given_latents = _given_latents(init, n)
  skipped = _check_rows(targets, n, valid, given_latents)
  schedule = np.asarray([r for r in range(n) if r not in skipped], np.int64)
  chunks = [schedule[i:i + options.chunk_size]
            for i in range(0, len(schedule), options.chunk_size)]
  init_fn = None
  if given_latents is None:
    init_fn = (init if isinstance(init, jax.tree_util.Partial)
               else jax.tree_util.Partial(init))
  one_target = _take(targets, 0)
  one_latent = (_take(given_latents, 0) if given_latents is not None else
                jax.eval_shape(init_fn, placed.init_key, one_target))
  names = step_lib.history_names(objective, placed.params, one_latent,
                                 one_target, stochastic=options.stochastic)
  return _Plan(
      num_targets=n, skipped=skipped, chunks=chunks,
      given_latents=given_latents, init_fn=init_fn, one_latent=one_latent,
      names=names,
      hist_len=state_lib.history_length(options.steps,
                                        options.history_every),
      snapshot_steps=state_lib.check_snapshot_steps(options.snapshot_steps,
                                                    options.steps))


def _given_latents(init: InitFn | Any, n: int) -> Any:
  """`init` as float32 host arrays with N rows, or None for a function."""
  if callable(init):
    return None
  given = jax.tree.map(lambda x: np.asarray(x, np.float32), init)
  if batching.num_rows(given, what='init') != n:
    raise ValueError(f'per-target init latents must have {n} rows (one '
                     'latent for all targets: use broadcast_init)')
  return given


def _check_rows(targets, n, valid, given_latents) -> dict[int, str]:
  """row -> why it is never optimised (masked by the caller, or a NaN/inf
  in its target or its given start), in row order."""
  skipped = {}
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != (n,):
      raise ValueError(f'valid must have shape ({n},), got {valid.shape}')
    for r in np.flatnonzero(~valid):
      skipped[int(r)] = 'excluded by the caller (valid=False)'
  for r, names in _nonfinite_rows(targets, n).items():
    skipped.setdefault(r, f'non-finite target values in {", ".join(names)}')
  if given_latents is not None:
    for r, names in _nonfinite_rows(given_latents, n).items():
      skipped.setdefault(r, 'non-finite initial latent in ' + ', '.join(names))
  return dict(sorted(skipped.items()))


def _nonfinite_rows(tree: Any, n: int) -> dict[int, list[str]]:
  """row -> names of the leaves holding a NaN/inf in that row."""
  bad = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.inexact):
      continue
    rows = np.flatnonzero(~np.isfinite(x.reshape(n, -1)).all(axis=1))
    for r in rows:
      bad.setdefault(int(r), []).append(jax.tree_util.keystr(path) or 'value')
  return bad


def _take(tree: Any, index) -> Any:
  return jax.tree.map(lambda x: x[index], tree)


def _fingerprint(plan: _Plan, targets: Any, options: InvertOptions,
                 run_config: Mapping[str, Any] | None) -> dict[str, Any]:
  """What ``run.json`` records: a resumed run must match it field by field.

  A long run may resume from a work directory written earlier: a field
  added here, or a value written differently, makes it start again.
  """
  given = plan.given_latents
  return {
      'format': 1, 'num_targets': plan.num_targets,
      'chunk_size': options.chunk_size,
      'steps': options.steps, 'history_every': options.history_every,
      'history_names': list(plan.names), 'skipped': sorted(plan.skipped),
      'targets_sha1': store_lib.sha1(targets),
      'init': ('per-target latents ' + store_lib.sha1(given)
               if given is not None else 'function'),
      'latent_shapes': jax.tree.map(lambda x: list(np.shape(x)),
                                    plan.one_latent),
      'stochastic': options.stochastic,
      'compute_dtype': None if options.compute_dtype is None
                       else jnp.dtype(options.compute_dtype).name,
      'run_config': dict(run_config or {}),
      # Only when asked for, so runs without snapshots keep resuming from
      # work directories written before snapshots existed.
      **({'snapshot_steps': list(plan.snapshot_steps)}
         if plan.snapshot_steps else {})}


def _empty_result(plan: _Plan, options: InvertOptions) -> InversionResult:
  """All-NaN host arrays for N rows, filled chunk by chunk by `_merge`."""
  n = plan.num_targets

  def nan_latents():
    return jax.tree.map(
        lambda x: np.full((n,) + tuple(np.shape(x)), np.nan, np.float32),
        plan.one_latent)
  return InversionResult(
      latents=nan_latents(),
      snapshots={t: nan_latents() for t in plan.snapshot_steps},
      history={k: np.full((n, plan.hist_len), np.nan, np.float32)
               for k in plan.names},
      history_steps=np.asarray(state_lib.history_steps(
          options.steps, options.history_every)),
      final={k: np.full((n,), np.nan, np.float32) for k in plan.names},
      done=np.zeros((n,), bool), diverged=np.zeros((n,), bool),
      skipped=plan.skipped, stats={})


def _restore_finished(out: InversionResult, store: store_lib.Store | None,
                      plan: _Plan, options: InvertOptions,
                      stats: dict[str, Any]) -> list[int]:
  """Merges the chunks a previous run finished; the chunks left to run
  now (at most ``options.max_chunks``)."""
  finished = store.finished() if store else set()
  for k in sorted(finished & set(range(len(plan.chunks)))):
    res = store.load_chunk(k)
    _merge(out, res)
    stats['chunks_restored'] += 1
    _add_seconds(stats, res.get('seconds'))
  todo = [k for k in range(len(plan.chunks)) if k not in finished]
  if options.max_chunks is not None:
    todo = todo[:options.max_chunks]
  return todo


def _add_seconds(stats: dict[str, Any], seconds: Any) -> None:
  """Adds a chunk's optimisation time to ``seconds_all_runs``, which
  becomes None (unknown) once one chunk's time is."""
  if seconds is None or not np.isfinite(seconds):
    stats['seconds_all_runs'] = None
  elif stats['seconds_all_runs'] is not None:
    stats['seconds_all_runs'] += float(seconds)


def _merge(out: InversionResult, res: Mapping[str, Any]) -> None:
  """Writes one chunk's results (rows without padding) into `out`."""
  rows = np.asarray(res['rows'])

  def put(dst, src):
    dst[rows] = src
  jax.tree.map(put, out.latents, res['latents'])
  for i, t in enumerate(sorted(out.snapshots)):
    # Stored [rows, S, ...]: slot i is snapshot step t.
    jax.tree.map(lambda dst, src, i=i: put(dst, src[:, i]),
                 out.snapshots[t], res['snapshots'])
  for k in out.history:
    if 'history' in res:
      out.history[k][rows] = res['history'][k]
    out.final[k][rows] = res['final'][k]
  out.diverged[rows] = ~np.asarray(res['active'], bool)
  out.done[rows] = True


def _make_run(objective, placed: _Placed, targets, plan: _Plan,
              options: InvertOptions, *, store, callback,
              num_steps: int) -> _Run:
  """What every chunk shares: compiled functions, store, progress bar."""
  evaluate = _cached_eval(objective, stochastic=options.stochastic,
                          compute_dtype=options.compute_dtype,
                          mesh=placed.mesh)
  start = functools.partial(
      _start_chunk, init_key=placed.init_key, loss_key=placed.loss_key,
      tx=options.optimizer, names=plan.names, hist_len=plan.hist_len,
      mesh=placed.mesh, snapshot_steps=plan.snapshot_steps)
  # Made last: nothing after it can fail before `invert` closes it.
  bar = tqdm.tqdm(total=num_steps, unit='step', disable=(
      not options.progress or jax.process_index() != 0))
  return _Run(options=options, plan=plan, mesh=placed.mesh,
              params=placed.params, targets=targets, start=start,
              step_fn=placed.step, evaluate=evaluate, store=store,
              callback=callback, bar=bar)


@functools.partial(jax.jit,
                   static_argnames=('tx', 'names', 'hist_len', 'mesh',
                                    'snapshot_steps'))
def _start_chunk(init_fn, latents, targets, rows, active, *, init_key,
                 loss_key, tx, names, hist_len, mesh, snapshot_steps=()):
  """The initial state of a chunk; per-target keys from the global rows."""
  fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
  if latents is None:
    latents = jax.vmap(init_fn)(fold(init_key, rows), targets)
  st = state_lib.init_state(
      tx, latents, active=active,
      key=None if loss_key is None else fold(loss_key, rows),
      history_names=names, history_len=hist_len,
      snapshot_steps=snapshot_steps)
  return sharding.constrain(st, mesh)


@dataclasses.dataclass
class _Run:
  """What every chunk of one `invert` call shares."""
  options: InvertOptions
  plan: _Plan
  mesh: Mesh
  params: Any
  targets: Any
  start: Callable[..., state_lib.InversionState]
  step_fn: Callable[..., Any]
  evaluate: Callable[..., Any]
  store: store_lib.Store | None
  callback: Callable[[Progress], None] | None
  bar: Any

  def inputs(self, rows: np.ndarray):
    """Chunk inputs on the mesh: rows padded to the chunk size (masked)."""
    padded, active = batching.pad_rows(rows, self.options.chunk_size)
    latents = None
    if self.plan.given_latents is not None:
      latents = sharding.to_global(_take(self.plan.given_latents, padded),
                                   self.mesh)
    return (latents, sharding.to_global(_take(self.targets, padded),
                                        self.mesh),
            sharding.to_global(padded.astype(np.int32), self.mesh),
            sharding.to_global(active, self.mesh))

  def resumed_state(self, k, latents, targets, rows_dev, active):
    """Chunk k's checkpointed running state and the seconds spent reaching
    it (None: unknown), or None."""
    # Looked for whatever the checkpoint settings are now: a state saved
    # by an earlier run under other settings resumes to the same results.
    if self.store is None:
      return None
    abstract = jax.eval_shape(self.start, self.plan.init_fn, latents, targets,
                              rows_dev, active)
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(
            s.shape, s.dtype,
            sharding=sharding.target_sharding(self.mesh, len(s.shape))),
        abstract)
    return self.store.load_state(k, abstract)


def _run_chunks(run: _Run, todo: list[int], out: InversionResult,
                stats: dict[str, Any]) -> None:
  """Runs the chunks in `todo`; each is merged and stored when done."""
  steps = run.options.steps
  for k in todo:
    rows = run.plan.chunks[k]
    res, steps_run = _run_chunk(run, k, rows)
    _merge(out, res)
    if run.store is not None:
      run.store.save_chunk(k, res)
    stats['chunks_run'] += 1
    stats['steps_run'] += steps_run
    stats['targets_run'] += len(rows)
    _add_seconds(stats, res['seconds'])
    if run.callback is not None:
      run.callback(Progress(k, len(run.plan.chunks), steps, steps, rows,
                            res['final']['loss'], True))


def _run_chunk(run: _Run, k: int, rows: np.ndarray
               ) -> tuple[dict[str, Any], int]:
  """Optimises chunk k from its start (or its checkpoint) to the end.

  Returns:
    The chunk's host results (rows without padding), as `Store` saves them,
    and the number of steps run now.
  """
  latents, targets, rows_dev, active = run.inputs(rows)
  resumed = run.resumed_state(k, latents, targets, rows_dev, active)
  if resumed is None:
    st = run.start(run.plan.init_fn, latents, targets, rows_dev, active)
    resumed_at, seconds_before = 0, 0.0
  else:
    st, seconds_before = resumed
    resumed_at = int(st.step)
    run.bar.update(resumed_at)
  clock = _ChunkClock(seconds_before)
  st = _optimise(run, k, rows, st, targets, first=resumed_at, clock=clock)
  res = _chunk_results(run, st, targets, rows)
  res['seconds'] = np.float64(np.nan if clock.total() is None
                              else clock.total())
  return res, run.options.steps - resumed_at


class _ChunkClock:
  """Seconds spent on one chunk: in earlier runs (None: unknown) + now."""

  _now = staticmethod(time.perf_counter)  # a fake clock in tests

  def __init__(self, before: float | None):
    self._before = before
    self._started = self._now()

  def total(self) -> float | None:
    if self._before is None:
      return None
    return self._before + self._now() - self._started


def _optimise(run: _Run, k: int, rows: np.ndarray, st, targets, *,
              first: int, clock: _ChunkClock):
  """Steps chunk k's state from step `first` to ``options.steps``,
  checkpointing and reporting progress on the way."""
  opts = run.options
  steps = opts.steps
  log_every = opts.log_every or max(1, steps // 20)
  s = first
  saved_at = time.monotonic()
  while s < steps:
    st, metrics = run.step_fn(st, run.params, targets)
    s += 1
    if _checkpoint_due(opts, s, time.monotonic() - saved_at):
      run.store.save_state(k, s, st, seconds=clock.total())
      saved_at = time.monotonic()
    if s % log_every == 0 or s == steps:
      # The only host sync inside a chunk: a few bytes per log point.
      loss = sharding.to_host(metrics['loss'])[:len(rows)]
      run.bar.set_postfix(chunk=f'{k + 1}/{len(run.plan.chunks)}',
                          loss=f'{np.nanmean(loss):.4g}', refresh=False)
      if run.callback is not None:
        run.callback(Progress(k, len(run.plan.chunks), s, steps, rows, loss,
                              False))
    run.bar.update(1)
  return st


def _checkpoint_due(options: InvertOptions, step: int,
                    seconds_since_save: float) -> bool:
  """Whether to save the running chunk's state after `step` steps.

  Never after the last step: the chunk's results are saved then. When is
  decided on the host, so it cannot change what is computed.
  """
  if step >= options.steps:
    return False
  every = options.checkpoint_every
  if every and step % every == 0:
    return True
  return (options.checkpoint_seconds is not None
          and seconds_since_save >= options.checkpoint_seconds)


def _chunk_results(run: _Run, st, targets, rows: np.ndarray
                   ) -> dict[str, Any]:
  """A finished chunk's results on the host, padding rows dropped."""
  final = run.evaluate(st, run.params, targets)
  saved = {'latents': st.latents, 'final': final, 'active': st.active}
  if run.options.steps:  # zero steps record no history (orbax: no empties)
    saved['history'] = st.history
  if st.snapshots is not None:
    saved['snapshots'] = st.snapshots
  host = sharding.to_host(saved)
  res = _take(host, slice(len(rows)))
  res['rows'] = rows
  return res


def prepare_chunk(key: jax.Array, objective: step_lib.LossFn, params: Any,
                  targets: Any, latents: Any, *, options: InvertOptions,
                  mesh: Mesh | None = None):
  """One chunk exactly as `invert` runs it, for benchmarks and profiling.

  Example::

    step, state, params, targets = prepare_chunk(key, obj, variables,
                                                 targets, latents,
                                                 options=options)
    compiled = step.lower(state, params, targets).compile()  # compile time
    state, metrics = compiled(state, params, targets)        # steady state

  Args:
    key, objective, params, mesh: as in `invert`.
    targets: pytree of host arrays, leaves [C, ...]; C must equal
      ``options.chunk_size`` (a multiple of the device count).
    latents: pytree of initial latents, leaves [C, ...].
    options: as in `invert`; ``options.steps`` sizes the history.

  Returns:
    ``(step, state, params, targets)``: the jitted step (state donated),
    the initial state and the inputs placed on `mesh`.
  """
  c = batching.num_rows(targets, what='targets')
  if c != options.chunk_size:
    raise ValueError(f'prepare_chunk needs chunk_size ({options.chunk_size})'
                     f' targets, got {c}')
  # The same set-up, hence the same keys for rows 0..C-1, as `invert`.
  mesh, params, init_key, loss_key, step = _setup(key, objective, params,
                                                  options, mesh)
  latents = jax.tree.map(lambda x: np.asarray(x, np.float32), latents)
  names = step_lib.history_names(objective, params, _take(latents, 0),
                                 _take(targets, 0),
                                 stochastic=options.stochastic)
  targets = sharding.to_global(targets, mesh)
  st = _start_chunk(
      None, sharding.to_global(latents, mesh), targets,
      sharding.to_global(np.arange(c, dtype=np.int32), mesh),
      sharding.to_global(np.ones(c, bool), mesh), init_key=init_key,
      loss_key=loss_key, tx=options.optimizer, names=names,
      hist_len=state_lib.history_length(options.steps,
                                        options.history_every), mesh=mesh,
      snapshot_steps=state_lib.check_snapshot_steps(options.snapshot_steps,
                                                    options.steps))
  return step, st, params, targets


def map_targets(fn: Callable[[Any, Any], Any], params: Any, inputs: Any, *,
                chunk_size: int, mesh: Mesh | None = None,
                compute_dtype=None) -> Any:
  """Applies a per-target ``fn(params, x)`` to N inputs, sharded, chunked.

  For the work around an inversion, e.g. rendering the final latents and
  embedding the renders: ``images = map_targets(render, g_vars, latents,
  chunk_size=64)``.

  Args:
    fn: function of ONE input (no leading axis).
    params: shared variables (replicated; cast to `compute_dtype`).
    inputs: pytree of host arrays, leaves [N, ...].
    chunk_size: inputs per compiled call (a multiple of the device count).
    mesh: as in `invert`.
    compute_dtype: optional dtype for `params` and floating inputs.

  Returns:
    ``fn``'s outputs stacked on a leading axis N, as host numpy.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_chunk_size(chunk_size, mesh)
  params = sharding.to_global(step_lib.cast_floating(params, compute_dtype),
                              mesh, replicate=True)

  def apply(x):
    y = _apply(params, sharding.to_global(x, mesh), fn=fn,
               compute_dtype=compute_dtype, mesh=mesh)
    return sharding.to_host(y)
  return batching.batched_apply(apply, inputs, chunk_size, pad_small=True)


@functools.partial(jax.jit, static_argnames=('fn', 'compute_dtype', 'mesh'))
def _apply(params, x, *, fn, compute_dtype, mesh):
  x = step_lib.cast_floating(x, compute_dtype)
  return sharding.constrain(jax.vmap(fn, in_axes=(None, 0))(params, x), mesh)
