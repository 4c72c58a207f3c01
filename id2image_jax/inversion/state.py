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
  """
  step: jax.Array
  latents: Any
  opt_state: Any
  active: jax.Array
  key: jax.Array | None
  history: Mapping[str, jax.Array]

  @property
  def num_targets(self) -> int:
    return self.active.shape[0]


def history_steps(steps: int, every: int) -> list[int]:
  """The step recorded in each history slot: 0, every, 2 * every, ..."""
  if steps < 1 or every < 1:
    raise ValueError(f'steps and history_every must be >= 1, got {steps}, '
                     f'{every}')
  return list(range(0, steps, every))


def history_length(steps: int, every: int) -> int:
  """Number of history slots T for `steps` steps recorded every `every`."""
  return len(history_steps(steps, every))


def init_state(tx: optax.GradientTransformation, latents: Any, *,
               active: chex.Array, key: jax.Array | None,
               history_names: Sequence[str],
               history_len: int) -> InversionState:
  """A fresh state for a chunk of N targets (jit-able).

  Args:
    tx: the optimiser; initialised once per target with ``jax.vmap``.
    latents: pytree of [N, ...] arrays, cast to float32.
    active: [N] bool, False for padding rows.
    key: [N] typed keys or None.
    history_names: names of the recorded scalars (``'loss'`` + aux terms).
    history_len: number of recorded steps T.

  Returns:
    An `InversionState` at step 0 with zeroed history.
  """
  # Copies: the step donates the state, which must not own the caller's
  # buffers (inside jit the copies cost nothing).
  latents = jax.tree.map(lambda x: jnp.array(x, jnp.float32), latents)
  key = None if key is None else jnp.array(key)
  n = jnp.shape(active)[0]
  chex.assert_tree_shape_prefix(latents, (n,))
  return InversionState(
      step=jnp.zeros((), jnp.int32),
      latents=latents,
      opt_state=jax.vmap(tx.init)(latents),
      active=jnp.array(active, bool),
      key=key,
      history={name: jnp.zeros((n, history_len), jnp.float32)
               for name in history_names},
  )
