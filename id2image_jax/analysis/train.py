"""Training the heads with optax: one jit boundary per step, donated state.

`fit` runs epochs over any batch iterator (descriptor arrays via
`array_batches`, or image batches from a `Source`); `train_head` is the
descriptor case end to end; `train_id_to_latent` trains the ID -> latent
regressor on pairs sampled on device by a jittable ``sample_fn``. Heads are
saved and restored by `id2image_jax.loading` (`save_head`, `load_head`).

Losses are per example and unreduced (``[B, ...] -> [B]``); the step
averages them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from id2image_jax import batching
from id2image_jax.models import heads

# ----------------------------------------------------------------------------
# Per-example losses on the heads' pre-activation outputs.


def attribute_loss(logits: chex.Array, labels: chex.Array) -> jax.Array:
  """Binary cross-entropy, averaged over attributes: [B, A] -> [B]."""
  chex.assert_equal_shape([logits, labels])
  return optax.sigmoid_binary_cross_entropy(
      logits, jnp.asarray(labels, logits.dtype)).mean(axis=-1)


def histogram_loss(logits: chex.Array, target: chex.Array) -> jax.Array:
  """MSE between softmax(logits) per channel and target: [B, C, N] -> [B]."""
  chex.assert_equal_shape([logits, target])
  pred = jax.nn.softmax(logits, axis=-1)
  return jnp.mean(jnp.square(pred - target), axis=(-2, -1))


def mse_loss(pred: chex.Array, target: chex.Array) -> jax.Array:
  """Mean squared error over all but the batch axis: [B, ...] -> [B]."""
  chex.assert_equal_shape([pred, target])
  return jnp.mean(jnp.square(pred - target).reshape(pred.shape[0], -1),
                  axis=-1)


def scaled(loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
           scale: float) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`loss_fn` on predictions and targets both multiplied by `scale`.

  Landmarks are predicted in normalised [0, 1] coordinates; the paper
  regressed pixel coordinates of 224-pixel images with SGD at 1e-3. Scaling
  by 224 measures the loss in those pixels; together with a head whose last
  layer works in pixels (``output_scale``) the paper's learning rate keeps
  its meaning.
  """
  if scale == 1.0:
    return loss_fn
  return lambda pred, target: loss_fn(pred * scale, target * scale)


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'attribute': attribute_loss,
    'attribute_cnn': attribute_loss,
    'histogram': histogram_loss,
    'landmarks': mse_loss,
    'landmarks_cnn': mse_loss,
    'id_to_latent': mse_loss,
}


# Memoised: optax transformations are pure, so one object per setting is
# shared, and the train steps jitted for it (`make_train_step`) are reused
# by every head trained with that setting (the audit trains ~80).
@functools.lru_cache(maxsize=64)
def optimizer(name: str, learning_rate: float, **kwargs: Any
              ) -> optax.GradientTransformation:
  """``optax.<name>(learning_rate, **kwargs)``, e.g. ``('adam', 1e-3)``."""
  if not hasattr(optax, name):
    raise ValueError(f'optax has no optimizer {name!r}')
  return getattr(optax, name)(learning_rate, **kwargs)


# ----------------------------------------------------------------------------
# State and step.


class TrainState(flax.struct.PyTreeNode):
  """Everything a step changes; donated to the step so buffers are reused."""
  step: jax.Array
  params: Any
  opt_state: Any


def init_state(key: jax.Array, model: nn.Module,
               example: jax.ShapeDtypeStruct | chex.Array,
               tx: optax.GradientTransformation) -> TrainState:
  """Initialises parameters (from `key`) and the optimizer state."""
  params = _init_params(model, key, jax.ShapeDtypeStruct(example.shape,
                                                         example.dtype))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_params(model: nn.Module, key: jax.Array,
                 example: jax.ShapeDtypeStruct) -> Any:
  # Jitted (one compile per head shape, not one dispatch per op): the same
  # values as eager `init`, as the random bits do not depend on it.
  return model.init(key, jnp.zeros(example.shape, example.dtype))['params']


@functools.lru_cache(maxsize=64)
def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    loss_fn: Callable[[jax.Array, jax.Array], jax.Array]):
  """``step(state, inputs, targets) -> (state, loss)``, jitted, state donated.

  Args:
    model: a head; called with ``logits=True``.
    tx: the optimizer.
    loss_fn: per-example loss on (logits [B, ...], targets [B, ...]) -> [B].

  Returns:
    The jitted step. It traces once per input shape/dtype; equal
    (model, tx, loss_fn) share one step (modules compare by value).
  """

  def loss(params, inputs, targets):
    out = model.apply({'params': params}, inputs, logits=True)
    per_example = loss_fn(out, targets)
    chex.assert_rank(per_example, 1)
    return per_example.mean()

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, inputs, targets):
    value, grads = jax.value_and_grad(loss)(state.params, inputs, targets)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(step=state.step + 1,
                      params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state), value

  return step


# ----------------------------------------------------------------------------
# Loops.

Batch = tuple[Any, Any]


def array_batches(key: jax.Array, inputs: np.ndarray, targets: np.ndarray,
                  batch_size: int) -> Iterator[Batch]:
  """Shuffled (inputs, targets) batches of one epoch; drops the remainder.

  Dropping keeps one compiled shape; with a fresh permutation per epoch no
  example is left out for good.

  Args:
    key: permutation key.
    inputs: [N, ...] host array.
    targets: [N, ...] host array.
    batch_size: examples per batch (must be <= N).

  Yields:
    (inputs [batch_size, ...], targets [batch_size, ...]) numpy pairs.
  """
  n = len(inputs)
  if len(targets) != n:
    raise ValueError(f'{n} inputs but {len(targets)} targets')
  if batch_size > n:
    raise ValueError(f'batch_size={batch_size} > {n} examples')
  order = np.asarray(jax.random.permutation(key, n))
  for i in range(n // batch_size):
    idx = np.sort(order[i * batch_size:(i + 1) * batch_size])
    yield inputs[idx], targets[idx]


@dataclasses.dataclass
class History:
  """Mean training loss per epoch (or per logging interval)."""
  loss: list[float] = dataclasses.field(default_factory=list)
  eval: list[dict[str, float]] = dataclasses.field(default_factory=list)


class TrainingDiverged(FloatingPointError):
  """The training loss stopped being finite (the weights are lost)."""


def fit(key: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
        loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
        epoch_batches: Callable[[jax.Array, int], Iterable[Batch]], *,
        example: jax.ShapeDtypeStruct, num_epochs: int,
        on_epoch: Callable[[int, Any], Mapping[str, float]] | None = None,
        progress: bool = False, desc: str = 'train') -> tuple[Any, History]:
  """Trains `model` from scratch.

  Args:
    key: initialisation and shuffling key.
    model: a head (called with ``logits=True``).
    tx: the optimizer.
    loss_fn: per-example loss (see `LOSSES`).
    epoch_batches: ``epoch_batches(key, epoch)`` iterates one epoch of
      (inputs, targets) batches of a fixed size.
    example: input shape/dtype for initialisation.
    num_epochs: epochs.
    on_epoch: optional ``on_epoch(epoch, params) -> metrics`` after each
      epoch (e.g. validation), recorded in the history.
    progress: show a progress bar over epochs.
    desc: progress bar label.

  Returns:
    (params, history).

  Raises:
    TrainingDiverged: an epoch's mean loss is NaN or infinite.
  """
  init_key, data_key = jax.random.split(key)
  state = init_state(init_key, model, example, tx)
  step = make_train_step(model, tx, loss_fn)
  epoch_keys = _fold_in_each(data_key, num_epochs)
  history = History()
  pending = []  # epoch losses still on the device
  for epoch in tqdm.trange(num_epochs, disable=not progress, desc=desc):
    losses = []
    for inputs, targets in epoch_batches(epoch_keys[epoch], epoch):
      state, value = step(state, inputs, targets)
      losses.append(value)
    if not losses:
      raise ValueError('an epoch yielded no batches (batch size larger than '
                       'the data?)')
    pending.append(losses[0] if len(losses) == 1 else
                   jnp.mean(jnp.stack(losses)))
    # Reading a loss waits for its step: read them in blocks (a head of
    # one batch per epoch would otherwise wait after every step).
    if (on_epoch is not None or len(pending) == _LOSS_BLOCK
        or epoch == num_epochs - 1):
      _record_losses(history, pending, desc, num_epochs)
      pending = []
    if on_epoch is not None:
      history.eval.append(dict(on_epoch(epoch, state.params)))
  return state.params, history


_LOSS_BLOCK = 64


@functools.partial(jax.jit, static_argnums=1)
def _fold_in_each(key: jax.Array, num: int) -> tuple[jax.Array, ...]:
  """``[fold_in(key, i) for i in range(num)]`` in one call (as separate
  arrays: indexing one array per epoch would cost a dispatch each)."""
  return tuple(jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(num)))


def _record_losses(history: History, pending: list[jax.Array], desc: str,
                   num_epochs: int) -> None:
  """Appends the epochs' mean losses; raises at the first non-finite one."""
  for value in np.asarray(jax.device_get(pending), np.float64).tolist():
    history.loss.append(value)
    if not np.isfinite(value):
      raise TrainingDiverged(
          f'{desc}: the training loss became {value} in epoch '
          f'{len(history.loss)} of {num_epochs} (losses so far: '
          f'{[round(v, 4) for v in history.loss[:-1]]}); lower the learning '
          'rate or use Adam')


def train_head(key: jax.Array, config: Mapping[str, Any], inputs: np.ndarray,
               targets: np.ndarray, *, tx: optax.GradientTransformation,
               batch_size: int, num_epochs: int,
               loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None
               = None, progress: bool = False
               ) -> tuple[nn.Module, Any, History]:
  """Trains a descriptor head from a `heads.head_config`.

  Args:
    key: a ``jax.random.key``.
    config: head config; its ``kind`` picks the loss from `LOSSES`.
    inputs: [N, D] descriptors (host array).
    targets: [N, *out_shape] float targets.
    tx: the optimizer.
    batch_size: examples per step.
    num_epochs: passes over the data.
    loss_fn: per-example loss; default ``LOSSES[config['kind']]``.
    progress: show a progress bar.

  Returns:
    (module, params, history).
  """
  model = heads.build(config)
  inputs = np.asarray(inputs, np.float32)
  targets = np.asarray(targets, np.float32)
  chex.assert_shape(targets, (len(inputs), *config['out_shape']))
  batch_size = min(batch_size, len(inputs))
  params, history = fit(
      key, model, tx, loss_fn or LOSSES[config['kind']],
      lambda k, _: array_batches(k, inputs, targets, batch_size),
      example=jax.ShapeDtypeStruct((batch_size, inputs.shape[1]),
                                   jnp.float32),
      num_epochs=num_epochs, progress=progress, desc=config['kind'])
  return model, params, history


def predict(model: nn.Module, params: Any, inputs: np.ndarray, *,
            batch_size: int = 1024) -> np.ndarray:
  """Predictions for every row of `inputs` in fixed-size jitted batches.

  Args:
    model: a head.
    params: its parameters.
    inputs: [N, ...] host array.
    batch_size: rows per call; the last batch is padded (one compile).

  Returns:
    [N, *out_shape] numpy predictions (after the output activation).
  """
  return batching.batched_apply(functools.partial(_apply, model, params),
                                inputs, batch_size)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: nn.Module, params: Any, inputs: jax.Array) -> jax.Array:
  # The parameters are an argument, not baked in: one compile serves every
  # head of the same shape.
  return model.apply({'params': params}, inputs)


# ----------------------------------------------------------------------------
# ID -> latent regressor on synthetic pairs (paper 4.1).

SampleFn = Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]


def train_id_to_latent(key: jax.Array, sample_fn: SampleFn, *,
                       config: Mapping[str, Any] | None = None,
                       num_steps: int, batch_size: int = 32,
                       tx: optax.GradientTransformation | None = None,
                       log_every: int = 100, progress: bool = False
                       ) -> tuple[nn.Module, Any, dict[str, Any], History]:
  """Trains the descriptor -> latent MLP on pairs sampled on the fly.

  Each step draws ``(descriptors, latents) = sample_fn(key, batch_size)``
  (e.g. z ~ N(0, I) -> G(z) -> encoder(G(z)) -> (descriptor, z)), then takes
  one optimizer step; sampling and update are one jitted, state-donating
  function, so the generator and encoder run on device without host
  round trips.

  Args:
    key: a ``jax.random.key``; step t samples with ``fold_in(key, t)``.
    sample_fn: jittable ``(key, batch) -> (descriptors [B, D], latents
      [B, *latent_shape])``; pass large arrays it needs (model weights) as
      the arguments of a `jax.tree_util.Partial` so they are not compiled
      in as constants.
    config: head config; default ``head_config('id_to_latent')`` with
      ``input_dim`` and ``out_shape`` taken from one sample.
    num_steps: optimizer steps.
    batch_size: pairs per step.
    tx: optimizer; default Adam 1e-4.
    log_every: record the mean loss every this many steps.
    progress: show a progress bar.

  Returns:
    (module, params, config, history) where history.loss holds the mean
    loss of each logging interval.
  """
  init_key, sample_key = jax.random.split(key)
  descriptors, latents = jax.eval_shape(
      lambda k: sample_fn(k, batch_size), sample_key)
  chex.assert_rank(descriptors, 2)
  if config is None:
    config = heads.head_config('id_to_latent',
                               input_dim=int(descriptors.shape[1]),
                               out_shape=tuple(latents.shape[1:]))
  config = dict(config)
  if tuple(config['out_shape']) != tuple(latents.shape[1:]):
    raise ValueError(f'config out_shape {config["out_shape"]} does not match '
                     f'sampled latents {latents.shape[1:]}')
  model = heads.build(config)
  tx = tx or optax.adam(1e-4)
  state = init_state(init_key, model, descriptors, tx)

  def loss(params, d, z):
    return mse_loss(model.apply({'params': params}, d, logits=True),
                    z).mean()

  # The sampler travels as an argument so that the arrays it holds (e.g.
  # generator and encoder weights in a `jax.tree_util.Partial`) are inputs
  # of the compiled step, not constants baked into it.
  if not isinstance(sample_fn, jax.tree_util.Partial):
    sample_fn = jax.tree_util.Partial(sample_fn)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state: TrainState, sample_fn):
    d, z = sample_fn(jax.random.fold_in(sample_key, state.step), batch_size)
    # The regressor learns from the encoder; it must not train it.
    d, z = jax.lax.stop_gradient(d), jax.lax.stop_gradient(z)
    value, grads = jax.value_and_grad(loss)(state.params, d, z)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(step=state.step + 1,
                      params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state), value

  history = History()
  window = []
  for t in tqdm.trange(num_steps, disable=not progress, desc='id_to_latent'):
    state, value = step(state, sample_fn)
    window.append(value)
    if len(window) == log_every or t == num_steps - 1:
      history.loss.append(float(jnp.mean(jnp.stack(window))))
      window = []
  return model, state.params, config, history
