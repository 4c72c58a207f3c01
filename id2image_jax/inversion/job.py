"""The ``id2image invert`` job: descriptors in, faces (and a report) out.

Data flow (one direction)::

  config -> generator, encoder, heads (registry)            load
         -> targets: descriptors (+ landmarks, histogram)    read / self-check
         -> init latents (w_avg | random | ID->latent head)
         -> engine.invert (jit(vmap) steps, sharded, resumable)
         -> renders, their descriptors, metrics              evaluate
         -> workdir: PNGs, grid, npz, loss plot, summary.json

Targets come from ``config.targets``:

* ``''`` (the default): the **self-check**. Descriptors of images generated
  from known latents are inverted, so how well the inversion works is
  measurable: identity similarity reached (cosine between the target
  descriptor and the reconstruction's descriptor) and pixel PSNR/SSIM
  against the known source image.
* a ``.npy`` ([N, D] descriptors) or ``.npz`` (``descriptor`` [N, D] plus
  optional ``names`` [N], ``landmarks`` [N, 68, 2], ``histogram``
  [N, 3, bins]);
* a folder of face images (FFHQ-aligned, like the generator's output): each
  is embedded with the encoder, and kept as the source image for metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from id2image_jax import metrics
from id2image_jax.analysis import train as train_lib
from id2image_jax.inversion import engine
from id2image_jax.inversion import objective as objective_lib
from id2image_jax.inversion import outputs
from id2image_jax.models import registry
from id2image_jax.preprocess import uint8_to_unit_range

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


@dataclasses.dataclass
class Targets:
  """What to invert, row-aligned.

  Attributes:
    descriptors: [N, D] float32 (NaN rows are reported and skipped).
    names: [N] row names (file names or row numbers).
    sources: [N, H, W, 3] known source images in [-1, 1], or None.
    landmarks: [N, 68, 2] target landmarks (normalised), or None.
    histogram: [N, 3, bins] target histograms, or None.
    skipped: row -> reason for rows that could not even be read.
    source_latents: [N, num_ws, w_dim] known latents (self-check only).
  """
  descriptors: np.ndarray
  names: list[str]
  sources: np.ndarray | None = None
  landmarks: np.ndarray | None = None
  histogram: np.ndarray | None = None
  skipped: dict[int, str] = dataclasses.field(default_factory=dict)
  source_latents: np.ndarray | None = None


def _render_batch(generator: registry.Generator, ws: np.ndarray, *,
                  batch_size: int) -> np.ndarray:
  render = jax.jit(lambda v, w: generator.module.apply(
      v, w, method='synthesis', noise_mode='const'))
  return np.concatenate([
      np.asarray(render(generator.variables, ws[i:i + batch_size]))
      for i in range(0, len(ws), batch_size)])


def self_check_targets(generator: registry.Generator,
                       encoder: registry.Encoder, *, num_targets: int,
                       seed: int, truncation_psi: float) -> Targets:
  """Targets from images of known latents (see module docstring)."""
  if num_targets < 1:
    raise ValueError(f'num_targets must be >= 1, got {num_targets}')
  z = jax.random.normal(jax.random.key(seed),
                        (num_targets, generator.config.z_dim))
  ws = np.asarray(jax.jit(lambda v, z: generator.module.apply(
      v, z, method='mapping', truncation_psi=truncation_psi))(
          generator.variables, z))
  sources = _render_batch(generator, ws, batch_size=16)
  return Targets(descriptors=encoder.embed(sources),
                 names=[f'selfcheck_{i:04d}' for i in range(num_targets)],
                 sources=sources, source_latents=ws)


def read_descriptor_file(path: str, *, dim: int) -> Targets:
  """Reads a .npy / .npz of descriptors; checks their size against `dim`."""
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'cannot read descriptors from {path}: {e}') from None
  extras = {}
  if isinstance(data, np.lib.npyio.NpzFile):
    with data:
      key = next((k for k in ('descriptor', 'descriptors') if k in data),
                 None)
      if key is None:
        raise ValueError(f'{path} has no "descriptor" array (has: '
                         f'{sorted(data.files)})')
      descriptors = data[key]
      extras = {k: data[k] for k in ('names', 'landmarks', 'histogram')
                if k in data}
  else:
    descriptors = data
  descriptors = np.asarray(descriptors)
  if descriptors.ndim == 1:
    descriptors = descriptors[None]
  if descriptors.ndim != 2 or descriptors.shape[0] == 0:
    raise ValueError(f'{path}: expected [N, D] descriptors with N >= 1, got '
                     f'shape {descriptors.shape}')
  if descriptors.shape[1] != dim:
    raise ValueError(
        f'{path}: descriptors have {descriptors.shape[1]} dimensions but the '
        f'encoder produces {dim}: invert with the encoder that made them')
  n = len(descriptors)
  names = ([str(s) for s in extras['names']] if 'names' in extras else
           [f'row_{i:06d}' for i in range(n)])
  for name in ('landmarks', 'histogram'):
    if name in extras and len(extras[name]) != n:
      raise ValueError(f'{path}: {name} has {len(extras[name])} rows, '
                       f'descriptors {n}')
  return Targets(descriptors=descriptors.astype(np.float32), names=names,
                 landmarks=extras.get('landmarks'),
                 histogram=extras.get('histogram'))


def read_image_folder(path: str, *, resolution: int,
                      encoder: registry.Encoder) -> Targets:
  """Embeds every readable image of a folder; unreadable ones are skipped.

  Images are taken as FFHQ-aligned faces (like generator output), resized
  to the generator's resolution so that the encoder sees the same crop of
  sources and reconstructions.
  """
  files = sorted(f for f in os.listdir(path)
                 if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise ValueError(f'{path} holds no images ({", ".join(IMAGE_SUFFIXES)})')
  images = np.full((len(files), resolution, resolution, 3), np.nan,
                   np.float32)
  skipped = {}
  for i, name in enumerate(files):
    try:
      with Image.open(os.path.join(path, name)) as im:
        im = im.convert('RGB').resize((resolution, resolution),
                                      Image.Resampling.LANCZOS)
        images[i] = np.asarray(uint8_to_unit_range(np.asarray(im)))
    except (OSError, ValueError) as e:
      skipped[i] = f'unreadable image {name}: {e}'
  good = np.flatnonzero(np.isfinite(images).all(axis=(1, 2, 3)))
  if not good.size:
    raise ValueError(f'no readable image in {path}: '
                     + '; '.join(skipped.values()))
  descriptors = np.full((len(files), encoder.dim), np.nan, np.float32)
  descriptors[good] = encoder.embed(images[good])
  return Targets(descriptors=descriptors, names=files, sources=images,
                 skipped=skipped)


def load_targets(config: Any, generator: registry.Generator,
                 encoder: registry.Encoder) -> Targets:
  """Dispatches on ``config.targets`` (see module docstring)."""
  spec = config.targets
  if not spec:
    return self_check_targets(generator, encoder,
                              num_targets=config.num_targets,
                              seed=config.seed + 1,
                              truncation_psi=config.self_check_truncation)
  if not os.path.exists(spec):
    raise FileNotFoundError(f'targets not found: {spec} (a .npy/.npz of '
                            'descriptors or a folder of face images)')
  if os.path.isdir(spec):
    return read_image_folder(spec, resolution=generator.config.resolution,
                             encoder=encoder)
  return read_descriptor_file(spec, dim=encoder.dim)


def load_head(path: str, what: str):
  """(model, params, config) of a head saved by `id2image leakage`.

  Raises:
    FileNotFoundError: `path` is not a head directory; says how to make one.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'{what} head not found at {path}: train it with `id2image leakage` '
        '(it saves heads under <workdir>/heads/)')
  return train_lib.load_head(path)


def attach_head_targets(targets: Targets, heads: Mapping[str, str]) -> None:
  """Fills landmark / histogram targets predicted from the descriptors."""
  finite = np.isfinite(targets.descriptors).all(axis=1)
  safe = np.where(finite[:, None], targets.descriptors, 0.0)
  for name, field in (('landmarks', 'landmarks'), ('histogram', 'histogram')):
    if heads.get(name) and getattr(targets, field) is None:
      model, params, _ = load_head(heads[name], name)
      setattr(targets, field, train_lib.predict(model, params, safe))


def make_init(config: Any, generator: registry.Generator,
              targets: Targets) -> Any:
  """Per-target initial latents for ``config.init`` (+ noise if optimised).

  Returns what `engine.invert` takes as ``init``: [N, ...] arrays or a
  per-target init function.
  """
  init = _initial_latent(config, generator, targets)
  if not config.get('optimize_noise', False):
    return init
  # The generator's fixed noise maps become per-target variables, starting
  # from what noise_mode='const' renders.
  from id2image_jax.models import stylegan2  # pylint: disable=g-import-not-at-top
  noise = [jnp.asarray(m) for m in stylegan2.const_noise(
      generator.config, generator.variables)]
  if callable(init):
    return jax.tree_util.Partial(
        functools.partial(_with_noise, init=init), noise)
  n = len(targets.descriptors)
  return {**init, 'noise': [np.broadcast_to(np.asarray(m), (n,) + m.shape)
                            for m in noise]}


def _with_noise(noise, key, target, *, init):
  return {**init(key, target), 'noise': list(noise)}


def _initial_latent(config: Any, generator: registry.Generator,
                    targets: Targets) -> Any:
  n = len(targets.descriptors)
  num_ws, w_dim = generator.config.num_ws, generator.config.w_dim
  space = config.latent_space
  if config.init == 'w_avg':
    if space == 'z':
      return engine.broadcast_init(
          {'z': jnp.zeros((generator.config.z_dim,), jnp.float32)})
    return engine.broadcast_init(objective_lib.initial_latent(
        generator.w_avg, latent_space=space, num_ws=num_ws))
  if config.init == 'random':
    like = ({'z': jnp.zeros((generator.config.z_dim,))} if space == 'z' else
            objective_lib.initial_latent(generator.w_avg, latent_space=space,
                                         num_ws=num_ws))
    return engine.random_init(like)
  # Otherwise: the directory of a trained ID->latent regressor (paper 4.1).
  model, params, head_config = load_head(config.init, 'ID->latent')
  finite = np.isfinite(targets.descriptors).all(axis=1)
  safe = np.where(finite[:, None], targets.descriptors, 0.0)
  pred = np.asarray(train_lib.predict(model, params, safe), np.float32)
  key = 'z' if space == 'z' else 'w'
  if space == 'w+' and pred.shape[1:] == (w_dim,):
    pred = np.broadcast_to(pred[:, None], (n, num_ws, w_dim)).copy()
  elif space == 'w' and pred.shape[1:] == (num_ws, w_dim):
    pred = pred.mean(axis=1)
  want = {'z': (generator.config.z_dim,), 'w': (w_dim,),
          'w+': (num_ws, w_dim)}[space]
  if pred.shape[1:] != want:
    raise ValueError(
        f'the ID->latent head at {config.init} predicts '
        f'{head_config.get("out_shape")}, but latent space {space!r} needs '
        f'{want}')
  return {key: pred}


def _schedule(config: Any) -> optax.Schedule | float:
  if config.lr_schedule == 'constant':
    return config.learning_rate
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate, config.steps,
                                       alpha=0.05)
  raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                   f'{config.lr_schedule!r}')


def build_objective(config: Any, generator: registry.Generator,
                    encoder: registry.Encoder, targets: Targets):
  """(loss_fn, params, render) for the engine, from the config's weights."""
  render = objective_lib.stylegan2_render(
      generator.module, latent_space=config.latent_space,
      num_ws=generator.config.num_ws, noise_mode=config.noise_mode)
  remat = config.get('remat', 'none')
  landmarks_fn, params = None, {'generator': generator.variables,
                                'encoder': encoder.variables}
  if targets.landmarks is not None and config.weights.landmarks:
    if not config.heads.image_landmarks:
      raise ValueError('landmark targets need an image->landmark CNN: set '
                       'heads.image_landmarks (trained by id2image leakage)')
    model, lm_params, _ = load_head(config.heads.image_landmarks,
                                     'image->landmark')
    scale = config.landmark_pixel_scale

    def landmarks_fn(variables, image):
      # Both sides in pixels of a `scale`-pixel image, as the paper's
      # regressors were trained, so the 0.0006 weight keeps its meaning.
      return model.apply({'params': variables}, image[None])[0] * scale
    params['landmarks'] = lm_params
  weights = objective_lib.Weights(**dict(config.weights))
  # Memory, not maths: the generator and the encoder are recomputed in the
  # backward pass as `remat` says (the returned `render` stays plain).
  loss_fn = objective_lib.make_id2image_objective(
      objective_lib.rematerialize(render, remat),
      objective_lib.rematerialize(
          _identity_embed(encoder, config.identity_loss), remat),
      landmarks_fn=landmarks_fn, weights=weights)
  return loss_fn, params, render


def _identity_embed(encoder: registry.Encoder, kind: str):
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
  raise ValueError(f"identity_loss must be 'l2' or 'cosine', got {kind!r}")


def _engine_targets(config: Any, targets: Targets) -> dict[str, np.ndarray]:
  out = {'descriptor': targets.descriptors}
  if config.identity_loss == 'cosine':
    norm = np.linalg.norm(out['descriptor'], axis=1, keepdims=True)
    out['descriptor'] = out['descriptor'] / np.maximum(norm, 1e-8)
  if targets.landmarks is not None and config.weights.landmarks:
    out['landmarks'] = (np.asarray(targets.landmarks, np.float32)
                        * config.landmark_pixel_scale)
  if targets.histogram is not None and config.weights.histogram:
    out['histogram'] = np.asarray(targets.histogram, np.float32)
  return out


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
    src, rec = targets.sources[rows], images[rows]
    if src.shape != rec.shape:
      src = np.asarray(jax.image.resize(src, rec.shape, 'linear',
                                        antialias=True))
    out['psnr'] = np.asarray(metrics.psnr(src, rec, value_range=(-1, 1))
                             ).tolist()
    out['ssim'] = np.asarray(metrics.ssim(src, rec, value_range=(-1, 1))
                             ).tolist()
    out['mse'] = np.asarray(metrics.mse((src + 1) / 2, (rec + 1) / 2)
                            ).tolist()
  out['mean'] = {k: _mean(v) for k, v in out.items() if k != 'rows'}
  return out


def plot_history(path: str, result: engine.InversionResult) -> None:
  """Mean (and per-target) loss curves, log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [n for n in result.history if n != 'loss'] or ['loss']
  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3),
                           squeeze=False)
  rows = np.flatnonzero(result.done)
  for ax, name in zip(axes[0], names):
    values = result.history[name][rows]
    for v in values[:32]:
      ax.plot(result.history_steps, v, color='0.8', lw=0.6)
    ax.plot(result.history_steps, np.nanmean(values, axis=0), color='C0',
            lw=2, label='mean')
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_title(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


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


def invert_targets(config: Any, generator: registry.Generator,
                   encoder: registry.Encoder, targets: Targets) -> Inversion:
  """Inverts `targets` with the objective that `config` describes.

  Weights, initialisation, schedule and latent space come from `config`;
  finished chunks are checkpointed under ``config.workdir/state`` when
  ``config.resume``. The final latents are rendered and embedded.
  """
  n = len(targets.descriptors)
  valid = np.ones(n, bool)
  valid[list(targets.skipped)] = False
  dtype = None if config.compute_dtype == 'float32' else config.compute_dtype
  loss_fn, params, render = build_objective(config, generator, encoder,
                                            targets)
  init = make_init(config, generator, targets)
  tx = optax.adam(_schedule(config))
  engine_targets = _engine_targets(config, targets)
  result = engine.invert(
      loss_fn, params, engine_targets, init=init,
      steps=config.steps, chunk_size=min(config.chunk_size, n)
      if jax.device_count() == 1 else config.chunk_size,
      key=jax.random.key(config.seed), tx=tx,
      compute_dtype=None if dtype is None else jnp.dtype(dtype),
      valid=valid, workdir=os.path.join(config.workdir, 'state')
      if config.resume else None,
      checkpoint_every=config.checkpoint_every or None,
      history_every=config.history_every, progress=config.progress,
      run_config=config.to_dict())
  # The job knows why it excluded a row (e.g. an unreadable file); the
  # engine only knows that it was excluded.
  result.skipped.update(targets.skipped)

  images, descriptors = _reconstructions(result, render, generator, encoder)
  return Inversion(result=result, images=images, descriptors=descriptors,
                   init=init, engine_targets=engine_targets, render=render)


def run(config: Any) -> dict[str, Any]:
  """Runs the invert job; returns the summary it also writes as JSON."""
  started = time.time()
  if config.distributed:
    from id2image_jax.inversion import sharding  # pylint: disable=g-import-not-at-top
    sharding.initialize_distributed()
  generator = registry.load_generator(config.generator,
                                      seed=config.generator_seed)
  encoder = registry.load_encoder(config.encoder,
                                  crop=tuple(config.encoder_crop) or None)
  _say(f'generator: {generator.source}')
  _say(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  targets = load_targets(config, generator, encoder)
  attach_head_targets(targets, dict(config.heads))
  n = len(targets.descriptors)
  _say(f'targets:   {n} ({"self-check" if not config.targets else config.targets})')

  inversion = invert_targets(config, generator, encoder, targets)
  result, images, descriptors = (inversion.result, inversion.images,
                                 inversion.descriptors)
  report = quality(targets, descriptors, images, result.done)
  initial = _initial_quality(config, inversion.init, inversion.render,
                             generator, encoder, targets,
                             inversion.engine_targets, result.done)
  summary_extra = {
      'generator': generator.source,
      'encoder': f'{encoder.kind}: {encoder.source}',
      'targets': config.targets or 'self-check (images of known latents)',
      'names': targets.names,
      'quality': report,
      'quality_at_init': initial,
      'device': str(jax.devices()[0].device_kind),
      'num_devices': jax.device_count(),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  paths = outputs.write_outputs(config.workdir, result, images=images,
                                sources=targets.sources,
                                descriptors=descriptors, extra=summary_extra)
  if jax.process_index() == 0 and result.done.any():
    plot_history(os.path.join(config.workdir, 'loss.png'), result)
  _print_report(report, initial, result, config.workdir, generator,
                targets.names)
  with open(paths.get('summary', os.devnull)) as f:
    return json.load(f) if paths else {}


def _reconstructions(result, render, generator, encoder):
  n = len(result.done)
  h = generator.config.resolution
  images = np.full((n, h, h, 3), np.nan, np.float32)
  descriptors = np.full((n, encoder.dim), np.nan, np.float32)
  rows = np.flatnonzero(result.done)
  if rows.size:
    latents = jax.tree.map(lambda x: np.asarray(x)[rows], result.latents)
    images[rows] = engine.map_targets(render, generator.variables, latents,
                                      chunk_size=min(16, rows.size))
    descriptors[rows] = encoder.embed(images[rows])
  return images, descriptors


def _initial_quality(config, init, render, generator, encoder, targets,
                     engine_targets, done):
  """The same measures at the starting latents, for comparison."""
  rows = np.flatnonzero(done)
  if not rows.size:
    return {}
  start = engine.initial_latents(init, engine_targets, rows,
                                 key=jax.random.key(config.seed))
  images = engine.map_targets(render, generator.variables, start,
                              chunk_size=min(16, rows.size))
  n = len(targets.descriptors)
  full_images = np.full((n,) + images.shape[1:], np.nan, np.float32)
  full_images[rows] = images
  desc = np.full((n, encoder.dim), np.nan, np.float32)
  desc[rows] = encoder.embed(images)
  return quality(targets, desc, full_images, done).get('mean', {})


def _say(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def _print_report(report, initial, result, workdir, generator,
                  names) -> None:
  if jax.process_index() != 0:
    return
  mean = report.get('mean', {})
  lines = [f'inverted {int(result.done.sum())} target(s); '
           f'skipped {len(result.skipped)}; diverged '
           f'{int(result.diverged.sum())}']
  for row, reason in sorted(result.skipped.items()):
    lines.append(f'  skipped row {row} ({names[row]}): {reason}')
  for key, label in (('id_cosine', 'identity cosine (target vs recon)'),
                     ('id_l2', 'descriptor L2 distance'),
                     ('psnr', 'PSNR vs source [dB]'),
                     ('ssim', 'SSIM vs source')):
    if mean.get(key) is not None:
      before = initial.get(key)
      start = f'  (at init {before:.4f})' if before is not None else ''
      lines.append(f'  {label:34s} {mean[key]:.4f}{start}')
  if generator.is_demo:
    lines.append('  note: the generator is the randomly initialised demo '
                 'StyleGAN2, not a face model (see README)')
  lines.append(f'results: {workdir} (grid.png, loss.png, summary.json)')
  print('\n'.join(lines), flush=True)
