"""The ID2image inversion of a set of targets, as an invert config says.

One function, `invert_targets`, serves the invert job, every ablation arm
and transfer run of the evaluate job, and the audit: objective (paper eq. 4
with the configured weights), initialisation (w_avg, random, or the ID ->
latent regressor of paper 4.1, passed in as a callable), Adam schedule and
latent space from the config; then the engine; then the final latents
rendered and embedded. Models and heads arrive loaded: this module reads no
file. (It was ``inversion/recipe.py``: glue over `inversion`, `data` and
the metrics, so it sits a floor above them; see `id2image_jax.recipes`.)

Config fields used: ``latent_space``, ``noise_mode``, ``optimize_noise``,
``init`` ('w_avg' | 'random' | a regressor, passed in loaded),
``steps``, ``learning_rate``, ``lr_schedule``, ``chunk_size``,
``compute_dtype``, ``remat``, ``identity_loss``, ``weights``,
``landmark_pixel_scale``, ``render_resolution``, ``seed``, ``workdir``,
``resume``, ``checkpoint_every``, ``checkpoint_seconds``,
``history_every``, ``snapshot_steps``,
``progress``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from id2image_jax import batching
from id2image_jax import errors
from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax import protocols
from id2image_jax.data.targets import Targets
from id2image_jax.data.targets import safe_descriptors
from id2image_jax.inversion import blackbox
from id2image_jax.inversion import engine
from id2image_jax.inversion import objective as objective_lib


@dataclasses.dataclass
class Inversion:
  """One inversion of `Targets` with one objective, and what it produced.

  Attributes:
    result: the engine's result (latents, history, done, ...).
    images: [N, H, W, 3] renders of the final latents in [-1, 1] (NaN rows
      where not done).
    descriptors: [N, D] their descriptors under the inverting encoder.
    init: the initial-latent function or arrays the engine started from.
    engine_targets: the per-row targets the objective saw.
    render: ``render(generator_variables, latent) -> image`` for one row.
  """
  result: engine.InversionResult
  images: np.ndarray
  descriptors: np.ndarray
  init: Any
  engine_targets: dict[str, np.ndarray]
  render: Any


def _with_noise(noise, key, target, *, init):
  return {**init(key, target), 'noise': list(noise)}


# A trained ID -> latent head: descriptors [N, D] -> latents [N, ...].
Regressor = Callable[[np.ndarray], Any]


def make_init(config: Any, generator: protocols.Generator, targets: Targets,
              *, regressor: Regressor | None = None) -> Any:
  """Per-target initial latents for ``config.init`` (+ noise if optimised).

  Args:
    config: the invert config.
    generator: the loaded generator.
    targets: what is inverted.
    regressor: the loaded ID->latent head's prediction, ``regressor(
      descriptors [N, D]) -> [N, w_dim]`` or ``[N, num_ws, w_dim]`` (or
      ``[N, z_dim]``), when ``config.init`` names one.

  Returns:
    What `engine.invert` takes as ``init``: [N, ...] arrays or a per-target
    init function.
  """
  init = _initial_latent(config, generator, targets, regressor)
  if not config.optimize_noise:
    return init
  if not generator.noise_maps:
    raise errors.UsageError(
        f'optimize_noise: the {generator.kind} generator has no '
        'noise inputs')
  # The generator's fixed noise maps become per-target variables, starting
  # from what noise_mode='const' renders.
  noise = [jnp.asarray(m) for m in generator.noise_maps]
  if callable(init):
    return jax.tree_util.Partial(
        functools.partial(_with_noise, init=init), noise)
  n = len(targets.descriptors)
  return {**init, 'noise': [np.broadcast_to(np.asarray(m), (n,) + m.shape)
                            for m in noise]}


def _initial_latent(config, generator, targets, regressor):
  space = config.latent_space
  want = generator.latent_shape(space)
  if config.init in ('w_avg', 'random'):
    like = ({'z': jnp.zeros(want, jnp.float32)} if space == 'z' else
            objective_lib.initial_latent(generator.w_avg, latent_space=space,
                                         num_ws=generator.num_ws))
    return (engine.broadcast_init(like) if config.init == 'w_avg' else
            engine.random_init(like))
  # Otherwise a trained ID->latent regressor (paper 4.1).
  if regressor is None:
    raise ValueError(f'init={config.init!r} names an ID->latent head: load '
                     'it and pass it as `regressor`')
  pred = np.asarray(regressor(safe_descriptors(targets)), np.float32)
  predicts = pred.shape[1:]
  n, num_ws, w_dim = len(pred), generator.num_ws, generator.w_dim
  if space == 'w+' and pred.shape[1:] == (w_dim,):
    pred = np.broadcast_to(pred[:, None], (n, num_ws, w_dim)).copy()
  elif space == 'w' and pred.shape[1:] == (num_ws, w_dim):
    pred = pred.mean(axis=1)
  if pred.shape[1:] != want:
    raise errors.BadInputError(
        f'the ID->latent head at {config.init} predicts {predicts}, but '
        f'latent space {space!r} needs {want}')
  return {'z' if space == 'z' else 'w': pred}


def schedule(config: Any) -> optax.Schedule | float:
  """The learning rate or schedule of ``config.lr_schedule``."""
  # A negative rate would climb the loss without a word.
  if not config.learning_rate > 0:
    raise errors.UsageError(
        f'learning_rate must be > 0, got {config.learning_rate}')
  if config.lr_schedule == 'constant':
    return config.learning_rate
  if config.lr_schedule == 'cosine':
    # Zero steps (the initialisation alone) take no update: any positive
    # decay length gives the same (unused) schedule.
    return optax.cosine_decay_schedule(config.learning_rate,
                                       max(config.steps, 1), alpha=0.05)
  raise errors.UsageError(
      f"lr_schedule must be 'constant' or 'cosine', got "
      f'{config.lr_schedule!r}')


def render_fn(config: Any, generator: protocols.Generator):
  """``render(variables, latent) -> image`` at the configured resolution."""
  return objective_lib.generator_render(
      generator, latent_space=config.latent_space,
      noise_mode=config.noise_mode,
      resolution=config.render_resolution or None)


def _active(config: Any, targets: Targets, term: str) -> bool:
  """True if the `term` of `losses.AUX_TERMS` is optimised: its targets
  exist and its weight is not 0."""
  return getattr(targets, term) is not None and bool(config.weights[term])


def build_objective(config: Any, generator: protocols.Generator,
                    encoder: protocols.Encoder, targets: Targets, *,
                    landmark_net: protocols.LandmarkNet | None = None):
  """(loss_fn, params, render) for the engine, from the config's weights.

  The terms are those of `losses.TERMS`; the identity term measures with
  `encoder`, the landmark term with `landmark_net` (needed when landmark
  targets are given and weighted), a model-free term with its own measure.
  """
  render = render_fn(config, generator)
  landmarks_fn, params = None, {'generator': generator.variables,
                                'encoder': encoder.variables}
  if _active(config, targets, 'landmarks'):
    if landmark_net is None:
      raise errors.UsageError(
          'landmark targets need an image->landmark network: '
          'set heads.image_landmarks')
    scale = config.landmark_pixel_scale

    def landmarks_fn(variables, image):
      # Both sides in pixels of a `scale`-pixel image, as the paper's
      # regressors were trained, so the 0.0006 weight keeps its meaning.
      return landmark_net.apply(variables, image[None])[0] * scale
    params['landmarks'] = landmark_net.variables
  weights = objective_lib.Weights(**dict(config.weights))
  # Memory, not maths: the generator and the encoder are recomputed in the
  # backward pass as `remat` says (the returned `render` stays plain).
  loss_fn = objective_lib.make_id2image_objective(
      objective_lib.rematerialize(render, config.remat),
      objective_lib.rematerialize(
          _identity_embed(encoder, config.identity_loss), config.remat),
      landmarks_fn=landmarks_fn, weights=weights)
  return loss_fn, params, render


def _identity_embed(encoder: protocols.Encoder, kind: str):
  embed = encoder.descriptor_fn()
  if kind == 'l2':
    return embed
  if kind == 'cosine':
    # Squared L2 between unit vectors = 2 - 2 cos: the cosine variant of
    # eq. 1 through the same loss.
    def unit(variables, image):
      d = embed(variables, image)
      return d / jnp.maximum(jnp.linalg.norm(d), 1e-8)
    return unit
  raise errors.UsageError(
      f"identity_loss must be 'l2' or 'cosine', got {kind!r}")


def engine_targets(config: Any, targets: Targets) -> dict[str, np.ndarray]:
  """The per-row arrays the objective compares with (active terms only),
  keyed as `losses.TERMS` says (``'descriptor'``, ``'landmarks'``, ...)."""
  out = {'descriptor': targets.descriptors}
  if config.identity_loss == 'cosine':
    norm = np.linalg.norm(out['descriptor'], axis=1, keepdims=True)
    out['descriptor'] = out['descriptor'] / np.maximum(norm, 1e-8)
  for term in losses.TERMS:
    if term.name in losses.AUX_TERMS and _active(config, targets, term.name):
      value = np.asarray(getattr(targets, term.name), np.float32)
      if term.name == 'landmarks':  # in pixels, as `build_objective` says
        value = value * config.landmark_pixel_scale
      out[term.target] = value
  return out


def options(config: Any, num_targets: int) -> engine.InvertOptions:
  """Engine options of the config (one device: chunk at most N)."""
  dtype = None if config.compute_dtype == 'float32' else jnp.dtype(
      config.compute_dtype)
  chunk = (min(config.chunk_size, num_targets) if jax.device_count() == 1
           else config.chunk_size)
  return engine.InvertOptions(
      steps=config.steps, chunk_size=chunk, tx=optax.adam(schedule(config)),
      compute_dtype=dtype, history_every=config.history_every,
      checkpoint_every=config.checkpoint_every or None,
      checkpoint_seconds=checkpoint_seconds(config),
      progress=config.progress,
      snapshot_steps=tuple(config.get('snapshot_steps', ())))


def checkpoint_seconds(config: Any) -> float | None:
  """The engine's ``checkpoint_seconds``: None when the config resumes
  nothing (``resume=False``) or sets 0 (off)."""
  seconds = config.get('checkpoint_seconds', 0)
  return float(seconds) if config.resume and seconds > 0 else None


# The config fields that change what an inversion computes. Only these are
# compared when a run resumes from its work directory: a field added to the
# configs later, or a different output folder or progress setting, must not
# make a long interrupted run (a whole test set) start again.
RESULT_FIELDS = (
    'generator', 'generator_seed', 'encoder', 'encoder_crop',
    'latent_space', 'noise_mode', 'optimize_noise', 'init', 'steps',
    'learning_rate', 'lr_schedule', 'compute_dtype', 'remat',
    'identity_loss', 'render_resolution', 'weights', 'heads',
    'landmark_pixel_scale', 'seed', 'history_every')


def result_config(config: Any) -> dict[str, Any]:
  """The `RESULT_FIELDS` of `config`, as compared on resume (a head or
  regressor file by name: where it is installed changes nothing)."""
  out = {}
  for name in RESULT_FIELDS:
    value = config.get(name)
    if hasattr(value, 'to_dict'):
      value = value.to_dict()
    if name == 'init' and isinstance(value, str) and os.sep in value:
      value = os.path.basename(os.path.normpath(value))
    out[name] = value
  return out


def invert_targets(config: Any, generator: protocols.Generator,
                   encoder: protocols.Encoder, targets: Targets, *,
                   landmark_net: protocols.LandmarkNet | None = None,
                   regressor: Regressor | None = None
                   ) -> Inversion:
  """Inverts `targets` with the objective that `config` describes.

  Finished chunks are checkpointed under ``config.workdir/state`` when
  ``config.resume``. The final latents are rendered and embedded.
  """
  n = len(targets.descriptors)
  valid = np.ones(n, bool)
  valid[list(targets.skipped)] = False
  loss_fn, params, render = build_objective(config, generator, encoder,
                                            targets,
                                            landmark_net=landmark_net)
  init = make_init(config, generator, targets, regressor=regressor)
  per_row = engine_targets(config, targets)
  result = engine.invert(
      jax.random.key(config.seed), loss_fn, params, per_row, init=init,
      options=options(config, n), valid=valid,
      workdir=os.path.join(config.workdir, 'state') if config.resume
      else None, run_config=result_config(config))
  # The job knows why it excluded a row (e.g. an unreadable file); the
  # engine only knows that it was excluded.
  result.skipped.update(targets.skipped)
  rows = np.flatnonzero(result.done)
  latents = jax.tree.map(lambda x: np.asarray(x)[rows], result.latents)
  images, descriptors = reconstructions(render, generator, encoder, latents,
                                        rows, n)
  return Inversion(result=result, images=images, descriptors=descriptors,
                   init=init, engine_targets=per_row, render=render)


def invert_targets_by_scores(config: Any, generator: protocols.Generator,
                             encoder: protocols.Encoder, targets: Targets, *,
                             population: int, sigma: float,
                             regressor: Regressor | None = None,
                             run_options: engine.InvertOptions | None = None
                             ) -> Inversion:
  """The score-only attacker (`inversion.blackbox`, NES) on `targets`.

  The same start as `invert_targets` (``config.init``) and the same
  engine (chunks, resume, snapshots), but the system is only queried for
  the similarity of a face to the stored template: ``2 * population + 1``
  queries per target and step, no gradients.

  Args:
    config: the invert config (latent space, init, steps, optimiser, ...).
    generator: the generator.
    encoder: the attacked system (queried for cosine similarities only).
    targets: the stored templates to attack.
    population: antithetic NES pairs per step.
    sigma: perturbation scale in latent units.
    regressor: the ID -> latent head when ``config.init`` names one.
    run_options: engine options (default: `options` of the config).

  Returns:
    An `Inversion`; its history holds ``score`` (the queried similarity)
    and ``queries`` per step.
  """
  n = len(targets.descriptors)
  valid = np.ones(n, bool)
  valid[list(targets.skipped)] = False
  render = render_fn(config, generator)
  objective = blackbox.nes_objective(
      # query_fn: descriptor_fn itself, or ONNX Runtime for a black box.
      blackbox.cosine_score(encoder.query_fn()), render,
      population=population, sigma=sigma)
  init = make_init(config, generator, targets, regressor=regressor)
  per_row = {'descriptor': targets.descriptors}
  result = engine.invert(
      jax.random.key(config.seed), objective,
      {'generator': generator.variables, 'encoder': encoder.variables},
      per_row, init=init, valid=valid,
      options=dataclasses.replace(run_options or options(config, n),
                                  stochastic=True),
      workdir=os.path.join(config.workdir, 'state') if config.resume
      else None,
      run_config={**result_config(config), 'attacker': 'scores (NES)',
                  'population': population, 'sigma': sigma})
  result.skipped.update(targets.skipped)
  rows = np.flatnonzero(result.done)
  latents = jax.tree.map(lambda x: np.asarray(x)[rows], result.latents)
  images, descriptors = reconstructions(render, generator, encoder, latents,
                                        rows, n)
  return Inversion(result=result, images=images, descriptors=descriptors,
                   init=init, engine_targets=per_row, render=render)


def reconstructions(render, generator: protocols.Generator,
                    encoder: protocols.Encoder, latents: Any,
                    rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Renders and embeds `latents` of `rows`; [N, ...] arrays, NaN elsewhere.

  Returns:
    (images [N, R, R, 3], descriptors [N, D]).
  """
  images = descriptors = None
  if rows.size:
    got = engine.map_targets(render, generator.variables, latents,
                             chunk_size=min(16, rows.size))
    descriptors = np.full((n, encoder.dim), np.nan, np.float32)
    descriptors[rows] = encoder.embed(got)
    if rows.size == n:  # every row: no second copy of the renders
      images = got
    else:
      images = np.full((n,) + got.shape[1:], np.nan, np.float32)
      images[rows] = got
  else:
    r = generator.resolution
    images = np.full((n, r, r, 3), np.nan, np.float32)
    descriptors = np.full((n, encoder.dim), np.nan, np.float32)
  return images, descriptors


def _mean(x: np.ndarray) -> float | None:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else None


def quality(targets: Targets, descriptors: np.ndarray,
            images: np.ndarray, done: np.ndarray) -> dict[str, Any]:
  """Identity and pixel measures of the reconstructions (done rows only).

  Returns:
    per-row lists and means: ``id_cosine`` (target vs reconstruction
    descriptor), ``id_l2``, and, when sources are known, ``psnr`` / ``ssim``
    (images in [-1, 1]) and ``mse`` (on the [0, 1] scale).
  """
  rows = np.flatnonzero(done)
  out: dict[str, Any] = {'rows': rows.tolist()}
  if not rows.size:
    return out
  t, d = targets.descriptors[rows], descriptors[rows]
  out['id_cosine'] = np.asarray(metrics.cosine_similarity(t, d)).tolist()
  out['id_l2'] = np.linalg.norm(t - d, axis=1).tolist()
  if targets.sources is not None:
    out.update({k: v.tolist() for k, v in batching.map_row_blocks(
        metrics.pixel_measures, (targets.sources, images), rows,
        batching.IMAGE_ROW_BLOCK).items()})
  out['mean'] = {k: _mean(v) for k, v in out.items() if k != 'rows'}
  return out


def identity_under(encoder: protocols.Encoder, sources: np.ndarray,
                   images: np.ndarray, done: np.ndarray) -> dict[str, Any]:
  """Identity cosine of source vs reconstruction under another encoder
  (done rows only): ``{'encoder', 'id_cosine': [per row], 'mean'}``."""
  rows = np.flatnonzero(done)
  cos = (batching.map_row_blocks(
      lambda s, r: metrics.cosine_similarity(encoder.embed(s),
                                             encoder.embed(r)),
      (sources, images), rows, batching.EMBED_ROW_BLOCK).tolist()
         if rows.size else [])
  return {'encoder': encoder.kind, 'id_cosine': cos, 'mean': _mean(cos)}


def initial_quality(config: Any, inversion: Inversion,
                    generator: protocols.Generator,
                    encoder: protocols.Encoder, targets: Targets
                    ) -> dict[str, Any]:
  """`quality` means at the starting latents, for comparison."""
  done = inversion.result.done
  rows = np.flatnonzero(done)
  if not rows.size:
    return {}
  start = engine.initial_latents(jax.random.key(config.seed), inversion.init,
                                 inversion.engine_targets, rows)
  images, descriptors = reconstructions(
      inversion.render, generator, encoder, start, rows,
      len(targets.descriptors))
  return quality(targets, descriptors, images, done).get('mean', {})
