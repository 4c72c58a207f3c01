"""The end-to-end training of the ID -> latent head, wired to loaded models.

`analysis.end_to_end` knows no generator or encoder: its step takes
``descriptor_of(frozen, latent)``, its held-out measure a renderer and
scorers, all as callables. This recipe builds them from a loaded generator
and encoders, as ``id2image regressor --config
configs/regressor.py:end_to_end`` trains (config fields used: see each
function). It reads no file: the job loads the models, descriptor files,
start head and checkpoints, and passes them in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from id2image_jax import protocols
from id2image_jax.analysis import end_to_end
from id2image_jax.inversion import objective
from id2image_jax.models import heads

# Config fields that change what training computes (a resumed run must
# match them; `steps` is not one: a longer run continues a shorter one; nor
# are `micro_batch` and `remat`, which change memory, not the update,
# beyond float rounding).
FINGERPRINT_FIELDS = (
    'generator', 'generator_seed', 'encoder', 'encoder_crop', 'latent_space',
    'truncation_psi', 'layer_rank', 'pairs', 'batch_size', 'learning_rate',
    'seed', 'identity_loss', 'latent_weight', 'real_batch', 'compute_dtype')

# The latent spaces a head is trained in end to end.
LATENT_SPACES = ('w', 'w+')


def digest(*arrays: Any) -> str:
  """SHA-1 of the leaves of `arrays`, their dtypes and shapes included."""
  h = hashlib.sha1()
  for x in jax.tree.leaves(arrays):
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{x.dtype}{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def fingerprint(config: Any, *, real: np.ndarray,
                synth_descriptors: np.ndarray, synth_latents: np.ndarray,
                start_params: Any) -> dict[str, Any]:
  """What a run's checkpoints must match to be resumed.

  Args:
    config: the regressor config (`FINGERPRINT_FIELDS` are read).
    real: [R, D] real descriptors.
    synth_descriptors: [S, D] synthetic pair descriptors.
    synth_latents: [S, C] their w.
    start_params: the head's parameters at step 0.

  Returns:
    The config fields and digests of the data and the start head.
  """
  out = {k: config[k] for k in FINGERPRINT_FIELDS}
  out['real_descriptors'] = digest(real)
  out['pairs_sha1'] = digest(synth_descriptors, synth_latents)
  out['start'] = digest(start_params)
  return out


class Keys(NamedTuple):
  """The PRNG keys of one run (`run_keys`)."""
  pairs: jax.Array  # the synthetic pairs, drawn once
  real: jax.Array   # each step's real descriptors
  synth: jax.Array  # each step's synthetic pairs


def run_keys(key: jax.Array) -> Keys:
  """The run's keys from its seed's key."""
  return Keys(*jax.random.split(key, 3))


class Head(NamedTuple):
  """A head to train: module, parameters and `heads.head_config` dict."""
  model: nn.Module
  params: Any
  config: dict[str, Any]


def start_head(key: jax.Array, start: Any, *, input_dim: int,
               out_shape: tuple[int, ...], hidden: tuple[int, ...],
               layer_rank: int = 0) -> tuple[Head, list[str]]:
  """The head training starts from, shaped for `out_shape`.

  Args:
    key: initialises what `start` does not give.
    start: parameters of a trained head (a W head starts a W+ one), or None
      to start fresh.
    input_dim: the descriptor size.
    out_shape: the latent shape, (C,) or (L, C).
    hidden: the hidden layers (the start head's, when there is one).
    layer_rank: rank of the per-layer offsets of a W+ head (0: none; a W
      head, `out_shape` (C,), has none).

  Returns:
    (the head, paths of the parameters `start` did not give).
  """
  config = heads.head_config(
      'id_to_latent', hidden=tuple(hidden), input_dim=input_dim,
      out_shape=tuple(out_shape),
      layer_rank=layer_rank if len(out_shape) == 2 else 0)
  model = heads.build(config)
  params = model.init(key, jnp.zeros((1, input_dim)))['params']
  fresh = []
  if start is not None:
    params, fresh = end_to_end.warm_start(params, start)
  return Head(model, params, config), fresh


def batch_fn(keys: Keys, real: np.ndarray,
             synth_descriptors: np.ndarray, synth_latents: np.ndarray, *,
             real_batch: int, batch_size: int
             ) -> Callable[[int], end_to_end.Batch]:
  """``batch_of(step) -> (real [B, D], synth [S, D], latents [S, ...])``,
  a function of the step only (a resumed run sees the same batches)."""

  def batch_of(t: int) -> end_to_end.Batch:
    rows = end_to_end.batch_rows(keys.real, t, len(real), real_batch)
    pairs = end_to_end.batch_rows(keys.synth, t, len(synth_descriptors),
                                  batch_size)
    return real[rows], synth_descriptors[pairs], synth_latents[pairs]

  return batch_of


def frozen(generator: protocols.Generator,
           encoder: protocols.Encoder) -> dict[str, Any]:
  """The frozen models' variables, the step's ``frozen`` argument."""
  return {'generator': generator.variables, 'encoder': encoder.variables}


def make_step(model: nn.Module, tx: optax.GradientTransformation,
              generator: protocols.Generator, encoder: protocols.Encoder,
              config: Any):
  """`end_to_end.make_step` through this generator and encoder.

  Args:
    model: the head.
    tx: its optimizer.
    generator: renders the predicted latents.
    encoder: the attacked encoder.
    config: reads ``latent_space``, ``remat``, ``identity_loss``,
      ``latent_weight`` and ``micro_batch``.

  Returns:
    ``step(state, frozen, real, synth_descriptors, synth_latents)``, with
    `frozen` as `frozen` returns it.
  """
  render = objective.generator_render(generator,
                                      latent_space=config.latent_space)
  embed = encoder.descriptor_fn()

  def descriptor_of(variables, latent):
    image = render(variables['generator'], {'w': latent})
    return embed(variables['encoder'], image)

  return end_to_end.make_step(
      model, tx,
      descriptor_of=objective.rematerialize(descriptor_of, config.remat),
      identity=config.identity_loss, latent_weight=config.latent_weight,
      micro_batch=config.micro_batch)


class HeldOut(NamedTuple):
  """The same held-out photos under both encoders."""
  attacked: np.ndarray   # [N, D] the attacked encoder's descriptors
  reference: np.ndarray  # [N, D'] the judge's
  keys: list[str]        # [N] the photos


def held_out_scorer(model: nn.Module, generator: protocols.Generator,
                    encoder: protocols.Encoder, judge: protocols.Encoder,
                    held_out: HeldOut, *, latent_space: str, batch: int
                    ) -> Callable[[Any], dict[str, Any]]:
  """``score(params)``: the one-pass cosine of the held-out photos.

  The attacked encoder scores each reconstruction against the input
  descriptor, the judge against the same photo's own descriptor.

  Args:
    model: the head.
    generator: renders its predictions.
    encoder: the attacked encoder.
    judge: an independent encoder.
    held_out: the photos' descriptors.
    latent_space: the head's, 'w' or 'w+'.
    batch: faces rendered at once.

  Returns:
    ``score(params) -> {'attacked' | 'judge': {'mean', 'median',
    'per_photo'}}``.
  """
  variables = {**frozen(generator, encoder), 'judge': judge.variables}
  attacked_batch, judge_batch = encoder.batch_fn(), judge.batch_fn()
  scorers = {
      'attacked': (lambda f, x: attacked_batch(f['encoder'], x),
                   held_out.attacked),
      'judge': (lambda f, x: judge_batch(f['judge'], x), held_out.reference)}
  render_one = objective.generator_render(generator,
                                          latent_space=latent_space)
  render = jax.vmap(lambda v, w: render_one(v['generator'], {'w': w}),
                    in_axes=(None, 0))

  def score(params: Any) -> dict[str, Any]:
    cos = end_to_end.one_pass_cosines(model, params, variables,
                                      held_out.attacked, scorers,
                                      render=render, batch=batch)
    return {name: {'mean': float(np.mean(c)), 'median': float(np.median(c)),
                   'per_photo': [round(float(x), 5) for x in c]}
            for name, c in cos.items()}

  return score


class TimedStep:
  """A step that notes when each call starts, in wall and CPU time.

  `end_to_end.train` reads each step's metrics before the next call, so
  the time between calls is a whole step (the first one compiles). CPU
  time of the process (all threads) says what a step costs on a shared
  machine, where wall time says how busy the others are.
  """

  def __init__(self, step: Callable[..., Any]):
    self._step = step
    self._wall: list[float] = []
    self._cpu: list[float] = []

  def __call__(self, *args: Any) -> Any:
    self._wall.append(time.perf_counter())
    self._cpu.append(time.process_time())
    return self._step(*args)

  def seconds(self) -> dict[str, float | None]:
    """Of the steps so far, the last ending now: the first one's wall
    time (it compiles), and the median wall and CPU time of the rest."""
    wall = np.diff(self._wall + [time.perf_counter()]).tolist()
    cpu = np.diff(self._cpu + [time.process_time()]).tolist()
    return {
        'first': wall[0] if wall else None,
        'median_of_rest': (float(np.median(wall[1:])) if len(wall) > 1
                           else None),
        'cpu_median_of_rest': (float(np.median(cpu[1:])) if len(cpu) > 1
                               else None)}
