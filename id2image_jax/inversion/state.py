"""What one chunk of targets carries from one inversion step to the next."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

from id2image_jax import errors


@flax.struct.dataclass
class InversionState:
  """Per-chunk optimisation state; every array leaf but `step` is per target.

  Attributes:
    step: [] int32, optimisation steps taken so far in this chunk.
    latents: pytree of float32 arrays, each [N, ...]: the variables being
      optimised, e.g. ``{'w': [N, num_ws, w_dim]}`` (+ ``'noise'``).
    opt_state: the optax state of `jax.vmap(tx.init)(latents)`: one
      independent optimiser per target (own moments and step count), leaves
      [N, ...].
    active: [N] bool. False for padding rows and for targets whose loss or
      gradient became non-finite; those never change again.
    key: [N] typed PRNG keys, one per target (``fold_in(key, step)`` gives
      the key of a step), or None for deterministic objectives.
    history: name -> [N, T] float32: ``'loss'`` and every aux term of the
      objective, recorded every ``history_every`` steps, kept on device and
      fetched once per chunk.
    snapshots: pytree like `latents` with leaves [N, S, ...]: the latents
      after each of S requested step counts (``snapshot_steps``; 0 = the
      start), or None. Kept in the state so that a checkpointed chunk
      resumes with the snapshots it already took.
  """
  step: jax.Array
  latents: Any
  opt_state: Any
  active: jax.Array
  key: jax.Array | None
  history: Mapping[str, jax.Array]
  snapshots: Any = None

  @property
  def num_targets(self) -> int:
    return self.active.shape[0]


def history_steps(steps: int, every: int) -> list[int]:
  """The step recorded in each history slot: 0, every, 2 * every, ...

  Zero steps (the initialisation alone) record nothing.
  """
  if steps < 0 or every < 1:
    raise errors.UsageError(
        f'steps must be >= 0 and history_every >= 1, got '
        f'{steps}, {every}')
  return list(range(0, steps, every))


def check_snapshot_steps(snapshot_steps, steps: int) -> tuple[int, ...]:
  """The step counts at which latents are kept, sorted, each in [0, steps].

  Raises:
    ValueError: a step count outside [0, steps], or repeated.
  """
  out = tuple(int(t) for t in snapshot_steps)
  bad = [t for t in out if not 0 <= t <= steps]
  if bad:
    raise errors.UsageError(
        f'snapshot steps must lie in [0, steps={steps}], got '
        f'{bad}')
  if len(set(out)) != len(out) or list(out) != sorted(out):
    raise errors.UsageError(
        f'snapshot steps must be increasing, got {list(out)}')
  return out


def take_snapshots(snapshots: Any, latents: Any, snapshot_steps,
                   step: jax.Array) -> Any:
  """`snapshots` with slot i set to `latents` where ``step`` equals
  ``snapshot_steps[i]`` (jit-able; `step` counts updates done)."""
  if snapshots is None:
    return None
  def put(snap, x):
    for i, t in enumerate(snapshot_steps):
      snap = snap.at[:, i].set(jnp.where(step == t, x, snap[:, i]))
    return snap
  return jax.tree.map(put, snapshots, latents)


def history_length(steps: int, every: int) -> int:
  """Number of history slots T for `steps` steps recorded every `every`."""
  return len(history_steps(steps, every))


def init_state(tx: optax.GradientTransformation, latents: Any, *,
               active: chex.Array, key: jax.Array | None,
               history_names: Sequence[str],
               history_len: int,
               snapshot_steps: Sequence[int] = ()) -> InversionState:
  """A fresh state for a chunk of N targets (jit-able).

  Args:
    tx: the optimiser; initialised once per target with ``jax.vmap``.
    latents: pytree of [N, ...] arrays, cast to float32.
    active: [N] bool, False for padding rows.
    key: [N] typed keys or None.
    history_names: names of the recorded scalars (``'loss'`` + aux terms).
    history_len: number of recorded steps T.
    snapshot_steps: step counts at which to keep the latents (0 is taken
      here).

  Returns:
    An `InversionState` at step 0 with zeroed history.
  """
  # Copies: the step donates the state, which must not own the caller's
  # buffers (inside jit the copies cost nothing).
  latents = jax.tree.map(lambda x: jnp.array(x, jnp.float32), latents)
  key = None if key is None else jnp.array(key)
  n = jnp.shape(active)[0]
  chex.assert_tree_shape_prefix(latents, (n,))
  snapshots = None
  if snapshot_steps:
    snapshots = take_snapshots(jax.tree.map(
        lambda x: jnp.zeros((n, len(snapshot_steps)) + x.shape[1:], x.dtype),
        latents), latents, snapshot_steps, jnp.zeros((), jnp.int32))
  return InversionState(
      step=jnp.zeros((), jnp.int32),
      latents=latents,
      opt_state=jax.vmap(tx.init)(latents),
      active=jnp.array(active, bool),
      key=key,
      history={name: jnp.zeros((n, history_len), jnp.float32)
               for name in history_names},
      snapshots=snapshots,
  )
