"""The vmapped inversion step: equals per-target runs, masks, dtypes, traces."""

import chex
import inversion_toy as toy
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from id2image_jax import inversion
from id2image_jax.inversion import state as state_lib

N = 5
STEPS = 15


def _setup(n=N):
  params = toy.make_params()
  targets, _ = toy.make_targets(n, params=params)
  return params, targets, toy.init_latents(n)


def _state(tx, latents, active=None, key=None, names=('loss', 'id', 'prior'),
           steps=STEPS):
  n = jax.tree.leaves(latents)[0].shape[0]
  active = np.ones(n, bool) if active is None else active
  return inversion.init_state(tx, latents, active=active, key=key,
                              history_names=names, history_len=steps)


def _row(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def _loop_reference(tx, params, targets, latents, steps):
  """Each target alone: plain optax on one unbatched latent."""
  @jax.jit
  def update(latent, opt, target):
    (loss, _), g = jax.value_and_grad(toy.objective, argnums=1,
                                      has_aux=True)(params, latent, target)
    updates, opt = tx.update(g, opt, latent)
    return optax.apply_updates(latent, updates), opt, loss

  out, losses = [], []
  for i in range(jax.tree.leaves(targets)[0].shape[0]):
    latent = jax.tree.map(jnp.asarray, _row(latents, i))
    target = jax.tree.map(jnp.asarray, _row(targets, i))
    opt = tx.init(latent)
    trace = []
    for _ in range(steps):
      latent, opt, loss = update(latent, opt, target)
      trace.append(loss)
    out.append(latent)
    losses.append(trace)
  return jax.tree.map(lambda *x: np.stack(x), *out), np.asarray(losses)


# Global-norm clipping and a schedule are exactly where one optimiser over
# the stacked latents would couple the targets; vmapped states must not.
@pytest.mark.parametrize('tx', [
    optax.adam(0.05),
    optax.chain(optax.clip_by_global_norm(0.05),
                optax.adam(optax.exponential_decay(0.05, 5, 0.5))),
], ids=['adam', 'clip+schedule'])
def test_vmapped_step_equals_loop_over_single_targets(tx):
  params, targets, latents = _setup()
  step = inversion.make_step(toy.objective, tx)
  st = _state(tx, latents)
  for _ in range(STEPS):
    st, _ = step(st, params, targets)
  want_latents, want_loss = _loop_reference(tx, params, targets, latents,
                                            STEPS)
  # Batched vs single convs/matmuls may sum in another order: float32 noise.
  chex.assert_trees_all_close(jax.device_get(st.latents), want_latents,
                              rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(st.history['loss'], want_loss, rtol=1e-5,
                             atol=1e-6)
  assert int(st.step) == STEPS
  # One optimiser per target: its own step count.
  counts = [x for x in jax.tree.leaves(st.opt_state) if x.dtype == jnp.int32]
  assert counts and all(c.shape == (N,) for c in counts)


def test_inactive_rows_are_untouched_and_nonfinite_rows_freeze():
  params, targets, latents = _setup()
  targets['descriptor'][3] = np.nan      # diverges at the first step
  active = np.array([True, False, True, True, True])
  tx = optax.adam(0.05)
  step = inversion.make_step(toy.objective, tx)
  st = _state(tx, latents, active)
  opt0 = jax.device_get(st.opt_state)
  for _ in range(3):
    st, metrics = step(st, params, targets)
  for row in (1, 3):
    np.testing.assert_array_equal(st.latents['w'][row], latents['w'][row])
    jax.tree.map(lambda a, b, r=row: np.testing.assert_array_equal(a[r],
                                                                   b[r]),
                 jax.device_get(st.opt_state), opt0)
  assert np.all(np.isfinite(st.latents['w']))
  np.testing.assert_array_equal(st.active, [True, False, True, False, True])
  assert not np.allclose(st.latents['w'][0], latents['w'][0])
  assert metrics['loss'].shape == (N,) and set(metrics) == {'loss', 'id',
                                                           'prior'}


def test_bf16_compute_keeps_f32_latents_and_still_descends():
  params, targets, latents = _setup()
  seen = []

  def objective(params, latent, target):
    seen.append((latent['w'].dtype,
                 jax.tree.leaves(params)[0].dtype))
    return toy.objective(params, latent, target)

  tx = optax.adam(0.05)
  step = inversion.make_step(objective, tx, compute_dtype=jnp.bfloat16)
  st = _state(tx, latents)
  for _ in range(STEPS):
    st, _ = step(st, params, targets)
  assert seen == [(jnp.bfloat16, jnp.bfloat16)]
  assert st.latents['w'].dtype == jnp.float32
  assert all(x.dtype in (jnp.float32, jnp.int32)
             for x in jax.tree.leaves(st.opt_state))
  loss = np.asarray(st.history['loss'])
  assert np.all(loss[:, -1] < 0.9 * loss[:, 0])


def test_history_every_subsamples_the_full_history():
  params, targets, latents = _setup()
  tx = optax.adam(0.05)
  full, sub = _state(tx, latents), _state(tx, latents, steps=4)
  step1 = inversion.make_step(toy.objective, tx)
  step4 = inversion.make_step(toy.objective, tx, history_every=4)
  for _ in range(STEPS):
    full, _ = step1(full, params, targets)
    sub, _ = step4(sub, params, targets)
  assert state_lib.history_steps(STEPS, 4) == [0, 4, 8, 12]
  np.testing.assert_array_equal(sub.history['id'],
                                np.asarray(full.history['id'])[:, ::4])


def test_stochastic_objective_uses_per_target_step_keys():
  params, targets, latents = _setup()
  tx = optax.adam(0.05)
  keys = jax.random.split(jax.random.key(3), N)
  step = inversion.make_step(toy.noisy_objective, tx, stochastic=True)
  st = _state(tx, latents, key=keys)
  st, m1 = step(st, params, targets)
  st, m2 = step(st, params, targets)
  # Same key data in, yet a new step key each step: noise changes.
  assert not np.allclose(m1['loss'], m2['loss'])
  # A target's randomness is its own: reordering targets permutes results.
  perm = np.array([4, 2, 0, 1, 3])
  st_p = _state(tx, jax.tree.map(lambda x: x[perm], latents),
                key=keys[perm])
  st_p, m1_p = step(st_p, params, jax.tree.map(lambda x: x[perm], targets))
  np.testing.assert_allclose(m1_p['loss'], np.asarray(m1['loss'])[perm],
                             rtol=1e-6)


def test_step_traces_once_and_eval_matches_next_loss():
  chex.clear_trace_counter()
  params, targets, latents = _setup()
  tx = optax.adam(0.05)
  step = inversion.jit_step(chex.assert_max_traces(
      inversion.make_step_fn(toy.objective, tx), n=1))
  st = _state(tx, latents)
  for _ in range(4):
    st, _ = step(st, params, targets)
  evaluate = inversion.make_eval_fn(toy.objective)
  final = evaluate(st, params, targets)
  st, metrics = step(st, params, targets)
  np.testing.assert_allclose(final['loss'], metrics['loss'], rtol=1e-6)
  # Compilation can be timed apart from running (benchmarks do this).
  assert step.lower(st, params, targets).compile() is not None


def test_objective_contract_errors():
  params, targets, latents = _setup()
  tx = optax.adam(0.05)

  def vector_aux(params, latent, target):
    loss, _ = toy.objective(params, latent, target)
    return loss, {'per_dim': latent['w']}

  with pytest.raises(ValueError, match='per_dim'):
    inversion.make_step(vector_aux, tx)(_state(tx, latents), params, targets)
  with pytest.raises(ValueError, match="'loss'"):
    inversion.history_names(
        lambda p, l, t: (0.0 * l['w'].sum(), {'loss': 0.0}), params,
        {'w': latents['w'][0]}, {'descriptor': targets['descriptor'][0]})
