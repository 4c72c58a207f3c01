"""``id2image evaluate``: paper 4.4 / Table 2, and transfer attacks.

Data flow (one direction)::

  config -> generator, attacked encoder, evaluation encoder,
            transfer encoders, heads (loading)               load (fail early)
         -> targets + pool of originals, landmark/histogram
            targets (heads | measured | file)               evaluation.targets
         -> arms (ID / +LM / +hist) -> which run, and why not  evaluation.arms
         -> per arm: invert (recipes.inversion.invert_targets) same targets,
                                                              same init, seed
         -> per arm: MSE/PSNR/SSIM, histogram EMD, landmark NME, identity
            cosine and TMR@FMR under the attacked and the evaluation
            encoder                                          evaluation.scores
         -> transfer: invert with A, score with B, every pair
         -> workdir: report.json, report.md, grid.png, similarity.png,
            arms/<arm>/ and transfer/<encoder>/ (the invert outputs)
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from id2image_jax import loading
from id2image_jax.evaluation import arms as arms_lib
from id2image_jax.evaluation import scores
from id2image_jax.evaluation import targets as targets_lib
from id2image_jax.jobs import common
from id2image_jax.recipes import inversion as recipe
from id2image_jax.reports import evaluation as report
from id2image_jax.reports import inversion as inversion_report


def arm_config(config: Any, weights: dict[str, float],
               workdir: str) -> ml_collections.ConfigDict:
  """The invert config of one arm: the same run, other weights and workdir."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  for term, value in weights.items():
    cfg.weights[term] = float(value)
  cfg.workdir = workdir
  return cfg


def run(config: Any) -> dict[str, Any]:
  """Runs the evaluate job; returns the report it also writes as JSON."""
  started = time.time()
  common.start_distributed(config)
  workdir = config.workdir
  fmrs = tuple(float(f) for f in config.fmrs)
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed)
  # Load every encoder first, so a missing file fails before any inversion.
  encoders = common.Encoders(config.encoder_crop)
  attacked = encoders.get(config.encoder, 'encoder', attacked=True)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  evaluator = encoders.get(eval_spec, 'eval_encoder',
                           attacked=eval_spec == config.encoder)
  independent = evaluator is not attacked
  transfer_specs = list(dict.fromkeys(
      list(config.transfer_encoders) or [config.encoder, eval_spec]))
  transfer = {s: encoders.get(s, 'transfer_encoders',
                              attacked=s == config.encoder)
              for s in transfer_specs}
  common.say(f'generator:      {generator.source}')
  common.say(f'attacked:       {attacked.kind} ({attacked.dim}-d), '
       f'{attacked.source}')
  common.say(f'evaluation:     {evaluator.kind} ({evaluator.dim}-d), '
       f'{evaluator.source}'
       + ('' if independent else '  [the SAME encoder: not independent]'))

  requested_init = config.init
  config.init = common.resolve_init(config.init, generator, attacked)
  heads = common.load_heads(dict(config.heads), init=config.init)
  data = targets_lib.load(config, generator, attacked)
  targets = data.targets
  aux = targets_lib.attach_aux(config, targets, predictors=heads.predictors,
                               landmark_net=heads.landmark_net)
  unavailable = {t: v['unavailable'] for t, v in aux.items()
                 if 'unavailable' in v}
  plans = arms_lib.plan_arms(list(config.arms), dict(config.weights),
                             unavailable)
  n = len(targets.descriptors)
  common.say(f'targets:        {n} '
       f'({"self-check" if not config.targets else config.targets}); '
       f'pool of originals: '
       f'{0 if data.pool_images is None else len(data.pool_images)}')
  for term, info in aux.items():
    common.say(f'  {term} targets: '
         + info.get('source', 'UNAVAILABLE: ' + info.get('unavailable', '')))
  for plan in plans:
    if plan.skipped:
      common.say(f'  arm {plan.requested}: SKIPPED, {plan.skipped}')
    elif plan.dropped:
      common.say(f'  arm {plan.requested}: runs as {plan.name} (dropped '
           + '; '.join(f'{t}: {r}' for t, r in plan.dropped.items()) + ')')

  attribute_nets = [loading.load_attribute_net(n)
                    for n in config.attribute_nets]
  pools = scores.Pools(data, attacked)
  landmark_model = (heads.landmark_net.predict if heads.landmark_net
                    else None)
  arm_results, inversions = {}, {}
  for plan in plans:
    if not plan.runs:
      continue
    common.say(f'arm {plan.name}: weights {plan.weights}')
    arm_dir = os.path.join(workdir, 'arms', common.slug(plan.name))
    cfg = arm_config(config, plan.weights, arm_dir)
    inversion = recipe.invert_targets(cfg, generator, attacked, targets,
                                      landmark_net=heads.landmark_net,
                                      regressor=heads.regressor)
    inversions[plan.name] = inversion
    result = inversion.result
    inversion_report.write_outputs(arm_dir, result, images=inversion.images,
                          sources=targets.sources,
                          descriptors=inversion.descriptors,
                          extra={'arm': plan.name, 'weights': plan.weights})
    rows = np.flatnonzero(result.done)
    arm_results[plan.name] = {
        'requested': plan.requested,
        'weights': plan.weights,
        'dropped': plan.dropped,
        'num_done': int(rows.size),
        'skipped_rows': {int(r): w for r, w in result.skipped.items()},
        'diverged_rows': np.flatnonzero(result.diverged).tolist(),
        'final_loss': {k: scores.summarize(v[rows])
                       for k, v in result.final.items()},
        'appearance': scores.appearance_metrics(
            targets.sources, inversion.images, rows,
            landmark_model=landmark_model),
        'attributes': scores.attribute_preservation(
            attribute_nets, targets.sources, inversion.images, rows),
        'attacked': scores.score_under(attacked, inversion, rows, pools, data,
                                 fmrs, attacked=attacked),
        'evaluation': scores.score_under(evaluator, inversion, rows, pools, data,
                                   fmrs, attacked=attacked),
    }
    if result.snapshots:
      # Attack vs compute: the same run scored after each snapshot step.
      roles = {'attacked': attacked}
      if independent:
        roles['evaluation'] = evaluator
      arm_results[plan.name]['snapshots'] = scores.score_snapshots(
          result.snapshots, inversion.render, generator, roles, rows, pools,
          data, fmrs)

  transfer_report = run_transfer(
      config, generator=generator, attacked=attacked, encoders=transfer,
      data=data, aux=aux, plans=plans, inversions=inversions, pools=pools,
      fmrs=fmrs, heads=heads, requested_init=requested_init)

  second_photos = data.second_photos()
  report_ = {
      'generator': generator.source,
      'generator_is_demo': generator.is_demo,
      'encoder': {'spec': config.encoder, 'kind': attacked.kind,
                  'source': attacked.source},
      'eval_encoder': {'spec': eval_spec, 'kind': evaluator.kind,
                       'source': evaluator.source,
                       'independent': independent},
      'targets': config.targets or 'self-check (images of known latents)',
      'names': targets.names,
      'num_targets': n,
      'targets_detail': data.notes,
      'pool': {'num_originals': len(data.pool_labels),
               'has_images': data.pool_images is not None,
               'has_second_photos': second_photos is not None,
               'num_impostor_pairs': len(pools.get(evaluator)[1])
               if pools.available(evaluator) else None,
               'num_impostor_pairs_attacked': len(pools.get(attacked)[1])},
      'aux_targets': aux,
      'plans': [{'requested': p.requested, 'runs_as': p.name if p.runs
                 else None, 'weights': p.weights, 'dropped': p.dropped,
                 'skipped': p.skipped} for p in plans],
      'arms': arm_results,
      'transfer': transfer_report,
      'fmrs': list(fmrs),
      'device': str(jax.devices()[0].device_kind),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  if jax.process_index() == 0:
    paths = report.write(workdir, report_, sources=targets.sources,
                             images={k: v.images for k, v in
                                     inversions.items()},
                             second_photos=second_photos,
                             grid_rows=config.grid_rows)
    report_['files'] = paths
    common.say(report.console_summary(report_))
  return inversion_report.json_safe(report_)


def run_transfer(config: Any, *, generator, attacked, encoders, data, aux,
                 plans, inversions, pools, fmrs, heads,
                 requested_init: str = 'auto') -> dict[str, Any]:
  """Inverts with each encoder A and scores with each encoder B.

  A == the attacked encoder reuses that arm's inversion; any other A inverts
  again (its own descriptors of the same originals, same arm and settings).

  Returns:
    ``{'arm', 'encoders': [labels], 'attack': {A: note}, 'table': {A: {B:
    {'cosine', 'tmr'}}}}``.
  """
  running = [p for p in plans if p.runs]
  wanted = config.transfer_arm or (running[-1].requested if running else '')
  plan = next((p for p in running if wanted in (p.requested, p.name)), None)
  labels = common.encoder_labels(list(encoders))
  out = {'arm': None, 'encoders': list(labels.values()), 'attack': {},
         'table': {}}
  if plan is None:
    out['note'] = f'transfer arm {wanted!r} did not run'
    return out
  out['arm'] = plan.name
  for spec_a, enc_a in encoders.items():
    label_a = labels[spec_a]
    if enc_a is attacked:
      inversion = inversions[plan.name]
      out['attack'][label_a] = f'reuses arm {plan.name}'
    elif data.pool_images is None:
      out['attack'][label_a] = ('not run: transfer needs original images to '
                                'embed with this encoder')
      continue
    else:
      t, dropped = targets_lib.transfer_targets(data, enc_a, aux)
      weights = {k: 0.0 if k in dropped else v
                 for k, v in plan.weights.items()}
      common.say(f'transfer: inverting with {label_a} (arm {plan.name}'
           + (f', without {dropped}' if dropped else '') + ')')
      cfg = arm_config(config, weights, os.path.join(
          config.workdir, 'transfer', common.slug(label_a)))
      # An ID->latent head reads one encoder's descriptors: A gets its own
      # ('auto'), or w_avg where the configured head is the attacked one's.
      cfg.init = common.resolve_init(
          requested_init if requested_init in ('auto', 'w_avg', 'random')
          else 'w_avg', generator, enc_a)
      inversion = recipe.invert_targets(
          cfg, generator, enc_a, t, landmark_net=heads.landmark_net,
          regressor=common.load_heads({}, init=cfg.init).regressor)
      out['attack'][label_a] = (f'inverted with arm {plan.name}, init '
                                f'{os.path.basename(cfg.init)}'
                                + (f' without {dropped} (those targets came '
                                   'from the attacked encoder)'
                                   if dropped else ''))
    rows = np.flatnonzero(inversion.result.done)
    row = {}
    for spec_b, enc_b in encoders.items():
      scored = scores.score_under(enc_b, inversion, rows, pools, data, fmrs,
                            attacked=enc_a)
      row[labels[spec_b]] = {k: scored[k] for k in
                             ('cosine', 'tmr', 'num_impostor_pairs',
                              'unavailable') if k in scored}
    out['table'][label_a] = row
  return out
