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

`run` reads as these phases, each a function below it in call order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from id2image_jax import loading
from id2image_jax import protocols
from id2image_jax.evaluation import arms as arms_lib
from id2image_jax.evaluation import scores
from id2image_jax.evaluation import targets as targets_lib
from id2image_jax.inversion import blackbox
from id2image_jax.jobs import common
from id2image_jax.recipes import inversion as recipe
from id2image_jax.reports import evaluation as report
from id2image_jax.reports import inversion as inversion_report
from id2image_jax.reports import outputs


def run(config: Any) -> dict[str, Any]:
  """Runs the evaluate job; returns the report it also writes as JSON."""
  started = time.time()
  common.start_distributed(config)
  models = _load_models(config)
  _say_models(models)
  requested_init = config.init
  # The run's config: 'auto' resolved (the report says which init ran).
  config = common.with_fields(config, init=common.resolve_init(
      config.init, models.generator, models.attacked))
  setup = _prepare(config, models)
  arms, inversions = _run_arms(config, models, setup)
  transfer = _transfer(config, models, setup, inversions, requested_init)
  report_ = _report(config, models, setup, arms, transfer,
                    seconds=time.time() - started)
  if jax.process_index() == 0:
    report_['files'] = report.write(
        config.workdir, report_, sources=setup.data.targets.sources,
        images={k: v.images for k, v in inversions.items()},
        second_photos=setup.data.second_photos(),
        grid_rows=config.grid_rows)
    common.say(report.console_summary(report_))
  return outputs.json_safe(report_)


def arm_config(config: Any, weights: dict[str, float], workdir: str, *,
               init: str | None = None) -> ml_collections.ConfigDict:
  """The invert config of one arm: the same run, other weights and workdir
  (and `init`, when given)."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  for term, value in weights.items():
    cfg.weights[term] = float(value)
  cfg.workdir = workdir
  if init is not None:
    cfg.init = init
  return cfg


@dataclasses.dataclass(frozen=True)
class _Models:
  """The models of one evaluation, loaded once (`_load_models`).

  Attributes:
    generator: the generator every arm inverts through.
    attacked: the encoder whose descriptors are inverted.
    eval_spec: the evaluation encoder's spec.
    evaluator: the evaluation encoder (`attacked` when the same spec).
    transfer: spec -> encoder, the encoders of the transfer table.
  """
  generator: protocols.Generator
  attacked: protocols.Encoder
  eval_spec: str
  evaluator: protocols.Encoder
  transfer: dict[str, protocols.Encoder]

  @property
  def independent(self) -> bool:
    return self.evaluator is not self.attacked


def _load_models(config: Any) -> _Models:
  """Loads every model first, so a missing file fails before any
  inversion; errors name the config field."""
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed)
  encoders = common.Encoders(config.encoder_crop)
  attacked = encoders.get(config.encoder, 'encoder', attacked=True)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  evaluator = encoders.get(eval_spec, 'eval_encoder',
                           attacked=eval_spec == config.encoder)
  transfer_specs = list(dict.fromkeys(
      list(config.transfer_encoders) or [config.encoder, eval_spec]))
  transfer = {s: encoders.get(s, 'transfer_encoders',
                              attacked=s == config.encoder)
              for s in transfer_specs}
  return _Models(generator, attacked, eval_spec, evaluator, transfer)


def _say_models(models: _Models) -> None:
  attacked, evaluator = models.attacked, models.evaluator
  common.say(f'generator:      {models.generator.source}')
  common.say(f'attacked:       {attacked.kind} ({attacked.dim}-d), '
             f'{attacked.source}')
  common.say(f'evaluation:     {evaluator.kind} ({evaluator.dim}-d), '
             f'{evaluator.source}'
             + ('' if models.independent
                else '  [the SAME encoder: not independent]'))


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What the arms and the transfer table share (`_prepare`).

  Attributes:
    heads: the configured heads and the init's regressor.
    data: the targets and the pool of originals.
    aux: landmark / histogram targets: term -> where they came from (or
      why they are unavailable).
    plans: what each requested arm becomes.
    pools: descriptors and impostor pairs of the pool, per encoder.
    fmrs: the false-match rates.
    descriptor_check: how a descriptor file's rows compare with the
      attacked encoder's descriptors of real faces (None: not a file).
  """
  heads: common.Heads
  data: targets_lib.EvalTargets
  aux: dict[str, dict]
  plans: list[arms_lib.ArmPlan]
  pools: scores.Pools
  fmrs: tuple[float, ...]
  descriptor_check: dict[str, Any] | None = None


def _prepare(config: Any, models: _Models) -> _Setup:
  """Targets, their landmark / histogram terms and the arms' plans."""
  heads = common.load_heads(dict(config.heads), init=config.init)
  data = targets_lib.load(config, models.generator, models.attacked)
  aux = targets_lib.attach_aux(config, data.targets,
                               predictors=heads.predictors,
                               landmark_net=heads.landmark_net)
  unavailable = {t: v['unavailable'] for t, v in aux.items()
                 if 'unavailable' in v}
  plans = arms_lib.plan_arms(list(config.arms), dict(config.weights),
                             unavailable)
  _say_targets(config, data, aux, plans)
  return _Setup(heads, data, aux, plans,
                pools=scores.Pools(data, models.attacked),
                fmrs=tuple(float(f) for f in config.fmrs),
                descriptor_check=common.check_descriptors(
                    config.targets, data.targets, models.attacked))


def _say_targets(config: Any, data: targets_lib.EvalTargets,
                 aux: dict[str, dict], plans: list[arms_lib.ArmPlan]) -> None:
  common.say(f'targets:        {len(data.targets.descriptors)} '
             f'({"self-check" if not config.targets else config.targets}); '
             f'pool of originals: '
             f'{0 if data.pool_images is None else len(data.pool_images)}')
  for term, info in aux.items():
    common.say(f'  {term} targets: ' + info.get(
        'source', 'UNAVAILABLE: ' + info.get('unavailable', '')))
  for plan in plans:
    if plan.skipped:
      common.say(f'  arm {plan.requested}: SKIPPED, {plan.skipped}')
    elif plan.dropped:
      common.say(f'  arm {plan.requested}: runs as {plan.name} (dropped '
                 + '; '.join(f'{t}: {r}' for t, r in plan.dropped.items())
                 + ')')


def _run_arms(config: Any, models: _Models, setup: _Setup
              ) -> tuple[dict[str, Any], dict[str, Any]]:
  """Inverts the targets once per arm that runs, and scores each.

  Returns:
    (arm name -> its scores, arm name -> its `recipe.Inversion`).
  """
  attribute_nets = [loading.load_attribute_net(n)
                    for n in config.attribute_nets]
  results, inversions = {}, {}
  for plan in setup.plans:
    if not plan.runs:
      continue
    common.say(f'arm {plan.name}: weights {plan.weights}'
               + (' (scores only: NES)' if plan.scores_only else ''))
    arm_dir = os.path.join(config.workdir, 'arms', common.slug(plan.name))
    inversion = _invert_arm(plan, arm_config(config, plan.weights, arm_dir),
                            models, setup)
    inversions[plan.name] = inversion
    inversion_report.write_outputs(
        arm_dir, inversion.result, images=inversion.images,
        sources=setup.data.targets.sources,
        descriptors=inversion.descriptors,
        extra={'arm': plan.name, 'weights': plan.weights})
    results[plan.name] = _score_arm(plan, inversion, models, setup,
                                    attribute_nets, steps=config.steps,
                                    progress=config.progress)
    if plan.scores_only:
      # Every step and the final evaluation each query 2P + 1 faces.
      results[plan.name]['queries_per_target'] = (config.steps + 1) * (
          blackbox.queries_per_step(config.nes_population))
  return results, inversions


def _invert_arm(plan: arms_lib.ArmPlan, config: Any, models: _Models,
                setup: _Setup):
  """The arm's inversion: by gradients of its terms, or by score queries."""
  if plan.scores_only:
    return recipe.invert_targets_by_scores(
        config, models.generator, models.attacked, setup.data.targets,
        population=config.nes_population, sigma=config.nes_sigma,
        regressor=setup.heads.regressor)
  return recipe.invert_targets(
      config, models.generator, models.attacked, setup.data.targets,
      landmark_net=setup.heads.landmark_net,
      regressor=setup.heads.regressor)


def _score_arm(plan: arms_lib.ArmPlan, inversion, models: _Models,
               setup: _Setup, attribute_nets, *, steps: int,
               progress: bool) -> dict[str, Any]:
  """One arm's report entry: appearance, attributes and identity."""
  result = inversion.result
  sources = setup.data.targets.sources
  rows = np.flatnonzero(result.done)
  heads = setup.heads
  landmark_model = heads.landmark_net.predict if heads.landmark_net else None

  def identity(encoder):
    return scores.score_under(encoder, inversion, rows, setup.pools,
                              setup.data, setup.fmrs,
                              attacked=models.attacked)
  out = {
      'requested': plan.requested,
      'weights': plan.weights,
      'dropped': plan.dropped,
      'num_done': int(rows.size),
      'skipped_rows': {int(r): w for r, w in result.skipped.items()},
      'diverged_rows': np.flatnonzero(result.diverged).tolist(),
      'final_loss': {k: scores.summarize(v[rows])
                     for k, v in result.final.items()},
      # Of a run resumed across sessions, `seconds_all_runs` is the cost.
      'inversion': {k: result.stats.get(k) for k in (
          'seconds', 'seconds_all_runs', 'chunks_run', 'chunks_restored')},
  }
  # Each stage is minutes on a whole test set at 1024 px on a CPU.
  out.update(_run_stages(f'scoring arm {plan.name}', {
      'appearance': lambda: scores.appearance_metrics(
          sources, inversion.images, rows, landmark_model=landmark_model),
      'attributes': lambda: scores.attribute_preservation(
          attribute_nets, sources, inversion.images, rows),
      'attacked': lambda: identity(models.attacked),
      'evaluation': lambda: identity(models.evaluator),
  }, progress=progress))
  if result.snapshots:
    out['snapshots'] = _score_snapshots(inversion, rows, models, setup,
                                        scored=out, steps=steps,
                                        progress=progress)
  return out


def _run_stages(desc: str, stages: dict[str, Any], *, progress: bool
                ) -> dict[str, Any]:
  """``{name: stage()}``, in order, under one progress bar."""
  out = {}
  with tqdm.tqdm(total=len(stages), desc=desc, unit='stage',
                 disable=not progress or jax.process_index() != 0) as bar:
    for name, stage in stages.items():
      bar.set_postfix_str(name)
      out[name] = stage()
      bar.update()
  return out


def _score_snapshots(inversion, rows: np.ndarray, models: _Models,
                     setup: _Setup, *, scored: dict[str, Any], steps: int,
                     progress: bool) -> dict[str, Any]:
  """Attack vs compute: the same run scored after each snapshot step (the
  last step's scores are the arm's own, `scored`)."""
  roles = {'attacked': models.attacked}
  if models.independent:
    roles['evaluation'] = models.evaluator
  return scores.score_snapshots(
      inversion.result.snapshots, inversion.render, models.generator, roles,
      rows, setup.pools, setup.data, setup.fmrs,
      final=(steps, {r: scored[r] for r in roles}),
      progress=progress and jax.process_index() == 0)


def _transfer(config: Any, models: _Models, setup: _Setup,
              inversions: dict[str, Any],
              requested_init: str = 'auto') -> dict[str, Any]:
  """Inverts with each encoder A and scores with each encoder B.

  A == the attacked encoder reuses that arm's inversion; any other A inverts
  again (its own descriptors of the same originals, same arm and settings).

  Returns:
    ``{'arm', 'encoders': [labels], 'attack': {A: note}, 'table': {A: {B:
    {'cosine', 'tmr'}}}}``.
  """
  # The score-only arm is not a term set another encoder could invert with.
  running = [p for p in setup.plans if p.runs and not p.scores_only]
  wanted = config.transfer_arm or (running[-1].requested if running else '')
  plan = next((p for p in running if wanted in (p.requested, p.name)), None)
  labels = common.encoder_labels(list(models.transfer))
  out = {'arm': None, 'encoders': list(labels.values()), 'attack': {},
         'table': {}}
  if plan is None:
    out['note'] = f'transfer arm {wanted!r} did not run'
    return out
  out['arm'] = plan.name
  for spec_a, enc_a in models.transfer.items():
    label_a = labels[spec_a]
    if enc_a is models.attacked:
      inversion = inversions[plan.name]
      out['attack'][label_a] = f'reuses arm {plan.name}'
    elif setup.data.pool_images is None:
      out['attack'][label_a] = ('not run: transfer needs original images to '
                                'embed with this encoder')
      continue
    else:
      inversion, out['attack'][label_a] = _transfer_inversion(
          config, models, setup, plan, enc_a, label_a, requested_init)
    out['table'][label_a] = _transfer_row(inversion, enc_a, models, setup,
                                          labels)
  return out


def _transfer_inversion(config: Any, models: _Models, setup: _Setup,
                        plan: arms_lib.ArmPlan, enc_a: protocols.Encoder,
                        label_a: str, requested_init: str):
  """The transfer arm inverted with encoder A; (inversion, note)."""
  t, dropped = targets_lib.transfer_targets(setup.data, enc_a, setup.aux)
  weights = {k: 0.0 if k in dropped else v for k, v in plan.weights.items()}
  common.say(f'transfer: inverting with {label_a} (arm {plan.name}'
             + (f', without {dropped}' if dropped else '') + ')')
  # An ID->latent head reads one encoder's descriptors: A gets its own
  # ('auto'), or w_avg where the configured head is the attacked one's.
  init = common.resolve_init(
      requested_init if requested_init in ('auto', 'w_avg', 'random')
      else 'w_avg', models.generator, enc_a)
  cfg = arm_config(config, weights, os.path.join(
      config.workdir, 'transfer', common.slug(label_a)), init=init)
  inversion = recipe.invert_targets(
      cfg, models.generator, enc_a, t,
      landmark_net=setup.heads.landmark_net,
      regressor=common.load_heads({}, init=init).regressor)
  note = (f'inverted with arm {plan.name}, init {os.path.basename(init)}'
          + (f' without {dropped} (those targets came from the attacked '
             'encoder)' if dropped else ''))
  return inversion, note


def _transfer_row(inversion, enc_a: protocols.Encoder, models: _Models,
                  setup: _Setup, labels: dict[str, str]) -> dict[str, Any]:
  """Encoder A's reconstructions scored by every encoder B."""
  rows = np.flatnonzero(inversion.result.done)
  row = {}
  for spec_b, enc_b in models.transfer.items():
    scored = scores.score_under(enc_b, inversion, rows, setup.pools,
                                setup.data, setup.fmrs, attacked=enc_a)
    row[labels[spec_b]] = {k: scored[k] for k in
                           ('cosine', 'tmr', 'num_impostor_pairs',
                            'unavailable') if k in scored}
  return row


def _report(config: Any, models: _Models, setup: _Setup,
            arms: dict[str, Any], transfer: dict[str, Any], *,
            seconds: float) -> dict[str, Any]:
  """What ``report.json`` holds (the files written are added later)."""
  data, pools = setup.data, setup.pools
  attacked, evaluator = models.attacked, models.evaluator
  return {
      'generator': models.generator.source,
      'generator_is_demo': models.generator.is_demo,
      'encoder': {'spec': config.encoder, 'kind': attacked.kind,
                  'source': attacked.source},
      'eval_encoder': {'spec': models.eval_spec, 'kind': evaluator.kind,
                       'source': evaluator.source,
                       'independent': models.independent},
      'targets': config.targets or 'self-check (images of known latents)',
      'names': data.targets.names,
      'num_targets': len(data.targets.descriptors),
      'targets_detail': data.notes,
      'descriptor_check': setup.descriptor_check,
      'pool': {'num_originals': len(data.pool_labels),
               'has_images': data.pool_images is not None,
               'has_second_photos': data.second_photos() is not None,
               'num_impostor_pairs': len(pools.get(evaluator)[1])
               if pools.available(evaluator) else None,
               'num_impostor_pairs_attacked': len(pools.get(attacked)[1])},
      'aux_targets': setup.aux,
      'plans': [{'requested': p.requested, 'runs_as': p.name if p.runs
                 else None, 'weights': p.weights, 'dropped': p.dropped,
                 'skipped': p.skipped} for p in setup.plans],
      'arms': arms,
      'transfer': transfer,
      'fmrs': list(setup.fmrs),
      'device': str(jax.devices()[0].device_kind),
      'seconds': seconds,
      'config': config.to_dict(),
  }
