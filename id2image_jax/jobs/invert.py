"""``id2image invert``: descriptors in, faces (and a report) out.

Data flow (one direction)::

  config -> generator, encoder, heads (loading)               load
         -> targets: descriptors (+ landmarks, histogram)      data.targets
         -> init latents (w_avg | random | ID->latent head)
         -> recipes.inversion.invert_targets (jit(vmap) steps,
            sharded, resumable)
         -> renders, their descriptors, metrics               recipe.quality
         -> workdir: PNGs, grid, npz, loss plot, summary.json reports
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax

from id2image_jax import loading
from id2image_jax.data import targets as targets_lib
from id2image_jax.jobs import common
from id2image_jax.recipes import inversion as recipe
from id2image_jax.reports import inversion as report


def run(config: Any) -> dict[str, Any]:
  """Runs the invert job; returns the summary it also writes as JSON."""
  started = time.time()
  common.start_distributed(config)
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed)
  encoder = loading.load_encoder(
      config.encoder, crop=tuple(config.encoder_crop) or None,
      input_overrides=common.encoder_input(config))
  # The run's config: 'auto' resolved (the summary says which init ran).
  config = common.with_fields(
      config, init=common.resolve_init(config.init, generator, encoder))
  heads = common.load_heads(dict(config.heads), init=config.init)
  common.say(f'generator: {generator.source}')
  common.say(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  targets = targets_lib.load_targets(
      config.targets, generator, encoder, num_targets=config.num_targets,
      seed=config.seed + 1, truncation_psi=config.self_check_truncation,
      align=config.align_faces)
  targets_lib.predict_from_descriptors(targets, heads.predictors)
  common.say(f'targets:   {len(targets.descriptors)} '
             f'({config.targets or "self-check"})')
  descriptor_check = common.check_descriptors(config.targets, targets,
                                              encoder)

  inversion = recipe.invert_targets(
      config, generator, encoder, targets, landmark_net=heads.landmark_net,
      regressor=heads.regressor)
  result = inversion.result
  quality = recipe.quality(targets, inversion.descriptors, inversion.images,
                           result.done)
  initial = recipe.initial_quality(config, inversion, generator, encoder,
                                   targets)
  evaluator = _independent_encoder(config)
  if evaluator is not None and targets.sources is not None:
    quality['independent'] = recipe.identity_under(
        evaluator, targets.sources, inversion.images, result.done)
  extra = {
      'generator': generator.source,
      'encoder': f'{encoder.kind}: {encoder.source}',
      'targets': config.targets or 'self-check (images of known latents)',
      'names': targets.names,
      'descriptor_check': descriptor_check,
      'quality': quality,
      'quality_at_init': initial,
      'device': str(jax.devices()[0].device_kind),
      'num_devices': jax.device_count(),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  paths = report.write_outputs(config.workdir, result,
                               images=inversion.images,
                               sources=targets.sources,
                               descriptors=inversion.descriptors, extra=extra)
  if jax.process_index() == 0 and result.done.any():
    report.plot_history(os.path.join(config.workdir, 'loss.png'), result)
  _print_report(quality, initial, result, config.workdir, generator,
                targets.names)
  with open(paths.get('summary', os.devnull)) as f:
    return json.load(f) if paths else {}


def _independent_encoder(config: Any):
  """The encoder that checks identity independently, or None (not
  configured, the attacked one, or its weights cannot be had: said)."""
  spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  if not config.eval_encoder or spec == config.encoder:
    return None
  try:
    return loading.load_encoder(spec)
  except (OSError, ValueError) as e:
    if config.eval_encoder != 'auto':
      raise
    common.say(f'independent identity check skipped: {spec} unavailable '
               f'({e})')
    return None


def _print_report(quality, initial, result, workdir, generator,
                  names) -> None:
  mean = quality.get('mean', {})
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
  other = quality.get('independent')
  if other and other['mean'] is not None:
    lines.append(f'  {"identity cosine under " + other["encoder"]:34s} '
                 f'{other["mean"]:.4f}  (independent encoder: source vs '
                 'recon)')
  if generator.is_demo:
    lines.append(f'  note: the generator is {loading.DEMO_GENERATOR!r}, a '
                 'randomly initialised StyleGAN2, not a face model (see '
                 'README)')
  lines.append(f'results: {workdir} (grid.png, loss.png, summary.json)')
  common.say('\n'.join(lines))
