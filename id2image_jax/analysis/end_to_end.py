"""The ID -> latent head trained end to end, through the frozen models.

The paper's regressor (4.1, `analysis.regressor`) learns the latent of
synthetic faces: it never sees a real descriptor and is never told how its
face scores. The learned attacks of the peers (NbNet, Vec2Face, Otroshi
Shahreza & Marcel 2023) train the template -> face mapping on what the face
scores. This module does the same for our head::

  loss = mean_b identity(E(G(head(d_b))), d_b)          real descriptors d_b
       + latent_weight * mean_s mse(head(d_s), w_s)     synthetic pairs

The identity term needs no latent labels, so it reads descriptors of real
photos; the latent term, on synthetic (descriptor, w) pairs, keeps the
predictions where the generator draws faces (an identity loss alone may
walk off into latents that fool the encoder with no face). G and E are
frozen: their variables enter every function as an argument (``frozen``),
so they are inputs of the compiled step, not constants folded into it, and
no gradient is taken for them.

The parts are callables, so this module knows no generator or encoder:
``descriptor_of(frozen, latent) -> [D]`` renders ONE latent and embeds the
face (`recipes.end_to_end` builds it from
`inversion.objective.generator_render` and `Encoder.descriptor_fn`,
rematerialised as the config says).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from id2image_jax import batching
from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax.analysis import train as train_lib

IDENTITY_LOSSES = ('cosine', 'l2')
DescriptorOf = Callable[[Any, jax.Array], jax.Array]


# ----------------------------------------------------------------------------
# Data.


def latent_targets(latents: np.ndarray, out_shape: tuple[int, ...]
                   ) -> np.ndarray:
  """Synthetic pair latents shaped like the head's output.

  A pair's face was drawn from ONE w; a W+ head (``out_shape`` (L, C)) is
  asked for that w on every layer.

  Args:
    latents: [N, C] w of each pair, or already [N, *out_shape].
    out_shape: the head's output shape, (C,) or (L, C).

  Returns:
    float32 [N, *out_shape].
  """
  latents = np.asarray(latents, np.float32)
  out_shape = tuple(int(s) for s in out_shape)
  if latents.shape[1:] == out_shape:
    return latents
  if len(out_shape) == 2 and latents.shape[1:] == out_shape[1:]:
    return np.repeat(latents[:, None], out_shape[0], axis=1)
  raise ValueError(f'synthetic latents of shape {latents.shape[1:]} cannot '
                   f'be targets of a head predicting {out_shape}')


def batch_rows(key: jax.Array, step: int, num_rows: int, size: int
               ) -> np.ndarray:
  """Rows of step `step`: `size` distinct of `num_rows`, a function of
  (key, step) only, so a resumed run draws what the first one would have.

  Returns:
    int [size], sorted.
  """
  if size > num_rows:
    raise ValueError(f'a batch of {size} rows from {num_rows} rows')
  rows = jax.random.choice(jax.random.fold_in(key, step), num_rows,
                           (size,), replace=False)
  return np.sort(np.asarray(rows))


# ----------------------------------------------------------------------------
# Loss and step.


def identity_term(model: nn.Module, params: Any, frozen: Any,
                  descriptors: chex.Array, *, descriptor_of: DescriptorOf,
                  identity: str = 'cosine') -> tuple[jax.Array, jax.Array]:
  """Identity loss of the rendered predictions, per example.

  Args:
    model: the head.
    params: its parameters.
    frozen: ``descriptor_of``'s model variables.
    descriptors: [B, D] target descriptors.
    descriptor_of: ``(frozen, latent) -> [D]`` for ONE latent.
    identity: 'cosine' (1 - cos) or 'l2' (squared L2, paper eq. 1).

  Returns:
    (loss [B], cosine [B]) of E(G(head(d))) against d.
  """
  if identity not in IDENTITY_LOSSES:
    raise ValueError(f'identity must be one of {IDENTITY_LOSSES}, got '
                     f'{identity!r}')
  chex.assert_rank(descriptors, 2)
  latents = model.apply({'params': params}, descriptors)
  rendered = jax.vmap(descriptor_of, in_axes=(None, 0))(frozen, latents)
  rendered = rendered.astype(jnp.float32)
  return (losses.identity_loss(rendered, descriptors, kind=identity),
          losses.cosine_similarity(rendered, descriptors))


def latent_term(model: nn.Module, params: Any, descriptors: chex.Array,
                latents: chex.Array) -> jax.Array:
  """Latent MSE of the head on synthetic pairs: [B, D], [B, ...] -> [B]."""
  return train_lib.mse_loss(model.apply({'params': params}, descriptors),
                            latents)


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              descriptor_of: DescriptorOf, identity: str = 'cosine',
              latent_weight: float = 1.0, micro_batch: int = 0):
  """One jitted, state-donating update of the head.

  ``step(state, frozen, real, synth_descriptors, synth_latents) -> (state,
  metrics)`` with ``real`` [B, D] real descriptors (identity term only) and
  the synthetic pairs [S, D], [S, *out_shape] (latent term only). The
  identity term renders B faces; with `micro_batch` m (a divisor of B) they
  are rendered m at a time in a `lax.scan` that sums the gradients, so the
  memory of the backward pass is that of m faces, not B (the update is the
  same).

  Args:
    model: the head.
    tx: its optimizer.
    descriptor_of: ``(frozen, latent) -> [D]`` for ONE latent.
    identity: see `identity_term`.
    latent_weight: weight of the latent MSE (0: identity only).
    micro_batch: faces rendered at once; 0 = all of the batch.

  Returns:
    The step; ``metrics`` holds the mean ``identity``, ``latent``,
    ``loss`` and ``id_cosine`` of the batch (before the update).
  """

  def identity_sum(params, frozen, chunk):
    value, cosine = identity_term(model, params, frozen, chunk,
                                  descriptor_of=descriptor_of,
                                  identity=identity)
    return value.sum(), cosine.sum()

  identity_grad = jax.value_and_grad(identity_sum, has_aux=True)

  def latent_mean(params, d, z):
    return latent_term(model, params, d, z).mean()

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: train_lib.TrainState, frozen, real, synth_d, synth_z):
    chex.assert_rank(real, 2)
    b = real.shape[0]
    m = micro_batch or b
    if b % m:
      raise ValueError(f'micro_batch {m} does not divide the batch {b}')
    chunks = real.reshape(b // m, m, real.shape[1])

    def body(carry, chunk):
      (value, cosine), grads = identity_grad(state.params, frozen, chunk)
      total, cos_total, acc = carry
      return (total + value, cos_total + cosine,
              jax.tree.map(jnp.add, acc, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (id_sum, cos_sum, id_grads), _ = jax.lax.scan(
        body, (jnp.zeros(()), jnp.zeros(()), zeros), chunks)
    id_value, id_grads = id_sum / b, jax.tree.map(lambda g: g / b, id_grads)
    lat_value, lat_grads = jax.value_and_grad(latent_mean)(
        state.params, synth_d, synth_z)
    grads = jax.tree.map(lambda a, c: a + latent_weight * c, id_grads,
                         lat_grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = train_lib.TrainState(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        opt_state=opt_state)
    return new, {'loss': id_value + latent_weight * lat_value,
                 'identity': id_value, 'latent': lat_value,
                 'id_cosine': cos_sum / b}

  return step


def start_state(params: Any, tx: optax.GradientTransformation
                ) -> train_lib.TrainState:
  """Step 0 of training from `params` (e.g. a warm start).

  The state holds copies: the step donates its state, and `params` stay
  usable (e.g. to score the start head).
  """
  params = jax.tree.map(jnp.array, params)
  return train_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params))


def warm_start(params: Any, start: Any) -> tuple[Any, list[str]]:
  """`params` with every leaf that `start` has (same path) taken from it.

  A W+ head with per-layer offsets (`heads.MLP.layer_rank`) starts from a
  W head this way: the shared layers are copied and the offsets, which the
  W head has not, keep their (zero) initialisation.

  Args:
    params: freshly initialised head parameters.
    start: parameters of a trained head of the same hidden layers.

  Returns:
    (params, paths of the leaves that kept their initialisation).

  Raises:
    ValueError: a leaf of `start` has no place in `params`, or another
      shape there (names it).
  """
  flat = {jax.tree_util.keystr(p): p for p, _ in
          jax.tree_util.tree_leaves_with_path(params)}
  given = {jax.tree_util.keystr(p): v for p, v in
           jax.tree_util.tree_leaves_with_path(start)}
  missing = sorted(set(given) - set(flat))
  if missing:
    raise ValueError(f'the start head has parameters the new head has not: '
                     f'{missing}')
  have = {jax.tree_util.keystr(p): v for p, v in
          jax.tree_util.tree_leaves_with_path(params)}
  for name, value in given.items():
    want = np.shape(have[name])
    if np.shape(value) != want:
      raise ValueError(f'start head parameter {name} has shape '
                       f'{np.shape(value)}, the new head {want}')
  out = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.asarray(given.get(jax.tree_util.keystr(p), v),
                               jnp.float32), params)
  return out, sorted(set(flat) - set(given))


# ----------------------------------------------------------------------------
# Loop.

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def train(state: train_lib.TrainState, step_fn: Callable[..., Any],
          frozen: Any, batch_of: Callable[[int], Batch], *, num_steps: int,
          history: list[dict[str, float]] | None = None,
          save: Callable[[train_lib.TrainState, list[dict[str, float]]],
                         None] | None = None,
          save_every: int = 0, progress: bool = False
          ) -> tuple[train_lib.TrainState, list[dict[str, float]]]:
  """Runs `step_fn` from ``state.step`` up to `num_steps`.

  Args:
    state: where to start (step 0, or a restored checkpoint).
    step_fn: from `make_step`.
    frozen: the models' variables, passed to every step.
    batch_of: ``batch_of(step) -> (real, synth_descriptors, synth_latents)``
      host arrays; must depend on the step only (so a resumed run sees the
      same batches).
    num_steps: the step count to reach.
    history: metrics of the steps before ``state.step`` (resuming).
    save: ``save(state, history)``, called every `save_every` steps and at
      the end.
    save_every: steps between saves (0: only at the end).
    progress: show a progress bar (with the running loss and cosine).

  Returns:
    (state, history: one dict of floats per step).

  Raises:
    train.TrainingDiverged: a loss stopped being finite (nothing is saved
      after it).
  """
  history = list(history or [])
  start = int(state.step)
  if len(history) != start:
    raise ValueError(f'history holds {len(history)} steps, the state is at '
                     f'step {start}')
  bar = tqdm.tqdm(total=num_steps, initial=min(start, num_steps),
                  disable=not progress, desc='end_to_end', unit='step')
  try:
    for t in range(start, num_steps):
      state, out = step_fn(state, frozen, *batch_of(t))
      out = {k: float(v) for k, v in out.items()}
      if not math.isfinite(out['loss']):
        raise train_lib.TrainingDiverged(
            f'end-to-end training: the loss became {out["loss"]} at step '
            f'{t + 1} ({out}); lower the learning rate')
      history.append(out)
      bar.update()
      bar.set_postfix(loss=f'{out["loss"]:.4f}',
                      cos=f'{out["id_cosine"]:.4f}')
      if save is not None and save_every and (t + 1) % save_every == 0:
        save(state, history)
  finally:
    bar.close()
  if save is not None and (not save_every or num_steps % save_every) and (
      int(state.step) > start):
    save(state, history)
  return state, history


# ----------------------------------------------------------------------------
# Held-out evaluation: one pass (descriptor -> head -> face), no steps.


def one_pass_cosines(
    model: nn.Module, params: Any, frozen: Any, descriptors: np.ndarray,
    scorers: Mapping[str, tuple[Callable[[Any, jax.Array], jax.Array],
                                np.ndarray]],
    *, render: Callable[[Any, jax.Array], jax.Array], batch: int = 8
) -> dict[str, np.ndarray]:
  """Cosine of each reconstruction to its photo, under each scorer.

  Args:
    model, params: the head.
    frozen: the models' variables, the first argument of `render` and of
      each scorer (jit inputs, not constants).
    descriptors: [N, D] held-out descriptors (the attacked encoder's) of N
      photos.
    scorers: name -> (``embed(frozen, images [B, H, W, 3]) -> [B, D']``,
      the descriptors [N, D'] of the same N photos under that encoder).
    render: ``render(frozen, latents [B, ...]) -> images [B, H, W, 3]``.
    batch: faces rendered per call (images never leave the device).

  Returns:
    name -> [N] cosines of E'(G(head(d_i))) to E'(photo_i).
  """
  descriptors = np.asarray(descriptors, np.float32)
  for name, (_, reference) in scorers.items():
    if len(reference) != len(descriptors):
      raise ValueError(f'scorer {name!r}: {len(reference)} reference '
                       f'descriptors for {len(descriptors)} photos')
  embeds = {name: fn for name, (fn, _) in scorers.items()}

  @jax.jit
  def reconstruct(params, frozen, d):
    images = render(frozen, model.apply({'params': params}, d))
    return {name: fn(frozen, images) for name, fn in embeds.items()}

  got = batching.batched_apply(
      functools.partial(reconstruct, params, frozen), descriptors, batch)
  return {name: np.asarray(metrics.cosine_similarity(
      got[name], np.asarray(reference, np.float32)))
          for name, (_, reference) in scorers.items()}
