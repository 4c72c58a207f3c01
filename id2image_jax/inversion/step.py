"""The inversion step: one jit boundary, vmapped over independent targets.

An objective is written for ONE target::

  loss_fn(params, latent, target) -> (loss [], aux {name: []})
  loss_fn(key, params, latent, target) -> ...          # stochastic=True

``params`` are the shared model variables (generator, encoder, ...). They are
an argument rather than a closure so that jit sees them as inputs, not as
constants baked into the compiled program, and so they can be replicated
across devices and cast to bfloat16 once. ``latent`` and ``target`` are the
unbatched pytrees of one target; ``aux`` holds the loss terms to record.

The step vmaps ``value_and_grad(loss_fn)`` over the leading target axis and
gives every target its own optimiser state (``jax.vmap(tx.init)``,
``jax.vmap(tx.update)``), so each target follows exactly the trajectory it
would follow if inverted alone, whatever else shares its batch: clipping,
schedules and per-target hyper-parameters (``optax.inject_hyperparams``)
stay per target (STYLE.md, note on batched inversion).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from id2image_jax.inversion import sharding
from id2image_jax.inversion import state as state_lib
from id2image_jax.inversion.state import InversionState

LossFn = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]
StepFn = Callable[[InversionState, Any, Any],
                  tuple[InversionState, dict[str, jax.Array]]]


def cast_floating(tree: Any, dtype) -> Any:
  """Casts the floating-point leaves of `tree` to `dtype` (None: unchanged)."""
  if dtype is None:
    return tree
  def cast(x):
    x = jnp.asarray(x)
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree.map(cast, tree)


def per_target_loss(loss_fn: LossFn, *, stochastic: bool = False,
                    compute_dtype=None) -> Callable[..., Any]:
  """Adapts an objective to ``f(latent, params, target, key, step)``.

  The latent (float32, what the optimiser holds) and the model variables are
  cast to `compute_dtype` on the way in; the loss and aux terms come back as
  float32, so gradients reach the float32 latent through the cast. Targets
  are passed as given: the objective decides the precision of its
  comparisons with them.

  Args:
    loss_fn: the per-target objective (see module docstring).
    stochastic: whether `loss_fn` takes a key first. Its key for a step is
      ``fold_in(target_key, step)``.
    compute_dtype: e.g. ``jnp.bfloat16``; None computes in float32.

  Returns:
    ``f(latent, params, target, key, step) -> (loss [] f32, aux {name: []})``.
  """
  def f(latent, params, target, key, step):
    latent = cast_floating(latent, compute_dtype)
    params = cast_floating(params, compute_dtype)
    if stochastic:
      loss, aux = loss_fn(jax.random.fold_in(key, step), params, latent,
                          target)
    else:
      loss, aux = loss_fn(params, latent, target)
    chex.assert_shape(loss, ())
    if not isinstance(aux, Mapping):
      raise TypeError(f'the objective must return (loss, aux dict), got aux '
                      f'of type {type(aux).__name__}')
    for name, value in aux.items():
      if jnp.shape(value) != ():
        raise ValueError(f'aux term {name!r} must be a per-target scalar, got '
                         f'shape {jnp.shape(value)}')
    return (jnp.asarray(loss, jnp.float32),
            {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()})
  return f


def history_names(loss_fn: LossFn, params: Any, latent: Any, target: Any, *,
                  stochastic: bool = False) -> tuple[str, ...]:
  """``('loss', *aux names)``: what the step records, found by tracing once.

  Args:
    loss_fn: the per-target objective.
    params: model variables (arrays or ``ShapeDtypeStruct``).
    latent: ONE target's latent (no leading axis).
    target: ONE target (no leading axis).
    stochastic: whether `loss_fn` takes a key first.
  """
  f = per_target_loss(loss_fn, stochastic=stochastic)
  key = jax.random.key(0) if stochastic else None
  _, aux = jax.eval_shape(f, latent, params, target, key, 0)
  if 'loss' in aux:
    raise ValueError("aux may not contain a term named 'loss' (reserved for "
                     'the total)')
  return ('loss', *aux)


def _rows_all_finite(tree: Any, n: int) -> jax.Array:
  ok = jnp.ones((n,), bool)
  for x in jax.tree.leaves(tree):
    ok &= jnp.all(jnp.isfinite(x.reshape(n, -1)), axis=1)
  return ok


def _select_rows(keep: jax.Array, new: Any, old: Any) -> Any:
  """Per target: `new` where `keep` [N], else `old`."""
  def sel(a, b):
    return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(sel, new, old)


def make_step_fn(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                 stochastic: bool = False, compute_dtype=None,
                 history_every: int = 1, mesh: Mesh | None = None,
                 snapshot_steps: tuple[int, ...] = ()) -> StepFn:
  """Builds the (un-jitted) step; `make_step` jits it.

  Args:
    loss_fn: per-target objective (module docstring).
    tx: optimiser, e.g. ``optax.adam(1e-3)`` or with a schedule.
    stochastic: `loss_fn` takes a key first (per target, per step).
    compute_dtype: dtype of the objective's compute (e.g. bfloat16); latents
      and optimiser state stay float32.
    history_every: record loss/aux every this many steps.
    mesh: if given, outputs are pinned to the target sharding on `mesh`.
    snapshot_steps: step counts after which the latents are copied into
      ``state.snapshots`` (the state must have been made with the same).

  Returns:
    ``step(state, params, targets) -> (state, metrics)``: `targets` is the
    chunk's target pytree (leaves [N, ...]); `metrics` maps ``'loss'`` and
    each aux name to [N] float32 values at the latents *before* the update.
    Inactive targets (padding, diverged) keep latents and optimiser state;
    a target whose loss or gradient is non-finite is deactivated instead of
    updated.
  """
  f = per_target_loss(loss_fn, stochastic=stochastic,
                      compute_dtype=compute_dtype)
  grad_fn = jax.vmap(jax.value_and_grad(f, has_aux=True),
                     in_axes=(0, None, 0, 0, None))

  def step(state: InversionState, params: Any, targets: Any):
    n = state.num_targets
    chex.assert_tree_shape_prefix(targets, (n,))
    (loss, aux), grads = grad_fn(state.latents, params, targets, state.key,
                                 state.step)
    updates, opt_state = jax.vmap(tx.update)(grads, state.opt_state,
                                             state.latents)
    latents = optax.apply_updates(state.latents, updates)
    ok = state.active & jnp.isfinite(loss) & _rows_all_finite(grads, n)
    metrics = {'loss': loss, **aux}
    # Record without a host sync: write into the on-device history buffer.
    slot = state.step // history_every
    record = state.step % history_every == 0
    history = {name: h.at[:, slot].set(jnp.where(record, metrics[name],
                                                 h[:, slot]))
               for name, h in state.history.items()}
    latents = _select_rows(ok, latents, state.latents)
    new_state = state.replace(
        step=state.step + 1,
        latents=latents,
        snapshots=state_lib.take_snapshots(state.snapshots, latents,
                                           snapshot_steps, state.step + 1),
        opt_state=_select_rows(ok, opt_state, state.opt_state),
        active=ok,
        history=history)
    return (sharding.constrain(new_state, mesh),
            sharding.constrain(metrics, mesh))

  return step


def jit_step(step_fn: StepFn, *, donate: bool = True):
  """The single jit boundary; the state argument is donated (updated in place).

  Benchmarks can time compilation apart from steady state with
  ``jit_step(fn).lower(state, params, targets).compile()``.
  """
  return jax.jit(step_fn, donate_argnums=(0,) if donate else ())


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation,
              **kwargs) -> Callable[..., Any]:
  """``jit_step(make_step_fn(loss_fn, tx, **kwargs))``."""
  return jit_step(make_step_fn(loss_fn, tx, **kwargs))


def make_eval_fn(loss_fn: LossFn, *, stochastic: bool = False,
                 compute_dtype=None, mesh: Mesh | None = None):
  """Loss and aux terms at the current latents, without updating (jitted).

  Returns:
    ``evaluate(state, params, targets) -> {'loss': [N], aux...: [N]}``; the
    key of a stochastic objective is the one the next step would use.
  """
  f = jax.vmap(per_target_loss(loss_fn, stochastic=stochastic,
                               compute_dtype=compute_dtype),
               in_axes=(0, None, 0, 0, None))

  def evaluate(state: InversionState, params: Any, targets: Any):
    loss, aux = f(state.latents, params, targets, state.key, state.step)
    return sharding.constrain({'loss': loss, **aux}, mesh)
  return jax.jit(evaluate)


def default_optimizer(*, learning_rate: float | optax.Schedule = 1e-3
                      ) -> optax.GradientTransformation:
  """Adam as in the paper (lr 1e-3); `learning_rate` may be a schedule.

  A schedule is evaluated at each target's own step count.
  """
  return optax.adam(learning_rate)

