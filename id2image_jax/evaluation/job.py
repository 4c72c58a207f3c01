"""The ``id2image evaluate`` job: paper 4.4 / Table 2, and transfer attacks.

Data flow (one direction)::

  config -> generator, attacked encoder, evaluation encoder,
            transfer encoders (registry)                     load (fail early)
         -> targets + pool of originals, landmark/histogram
            targets (heads | measured | file)               targets.py
         -> arms (ID / +LM / +hist) -> which run, and why not  arms.py
         -> per arm: invert (inversion.job.invert_targets)  same targets,
                                                            same init and seed
         -> per arm: MSE/PSNR/SSIM, histogram EMD, landmark NME, identity
            cosine and TMR@FMR under the attacked and the evaluation
            encoder                                          scores.py
         -> transfer: invert with A, score with B, every pair
         -> workdir: report.json, report.md, grid.png, similarity.png,
            arms/<arm>/ and transfer/<encoder>/ (the invert job's outputs)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax.evaluation import arms as arms_lib
from id2image_jax.evaluation import report as report_lib
from id2image_jax.evaluation import scores
from id2image_jax.evaluation import targets as targets_lib
from id2image_jax.inversion import job as job_lib
from id2image_jax.inversion import outputs
from id2image_jax.models import registry


def _say(text: str) -> None:
  if jax.process_index() == 0:
    print(text, flush=True)


def encoder_label(spec: str) -> str:
  """A short name for an encoder spec: 'dlib', 'iresnet:backbone.pth'."""
  kind, sep, path = spec.partition(':')
  if not sep:
    kind, path = '', spec
  name = os.path.basename(os.path.normpath(path)) if path else ''
  return f'{kind}:{name}' if kind and name else kind or name or spec


def encoder_labels(specs: Sequence[str]) -> dict[str, str]:
  """`encoder_label` of each spec, made unique with '#2', '#3', ..."""
  out, used = {}, {}
  for spec in specs:
    label = encoder_label(spec)
    used[label] = used.get(label, 0) + 1
    out[spec] = label if used[label] == 1 else f'{label}#{used[label]}'
  return out


class Encoders:
  """Loads each encoder spec once; errors name the config field."""

  def __init__(self, crop: Sequence[float] = ()):
    self._crop = tuple(crop) or None
    self._loaded: dict[str, registry.Encoder] = {}

  def get(self, spec: str, field: str, *, attacked: bool = False
          ) -> registry.Encoder:
    """The encoder of `spec`; `field` names where it was configured."""
    if spec not in self._loaded:
      try:
        self._loaded[spec] = registry.load_encoder(
            spec, crop=self._crop if attacked else None)
      except FileNotFoundError as e:
        raise FileNotFoundError(f'{field}={spec!r}: {e}') from None
      except ValueError as e:
        raise ValueError(f'{field}={spec!r}: {e}') from None
    return self._loaded[spec]


def arm_config(config: Any, weights: dict[str, float],
               workdir: str) -> ml_collections.ConfigDict:
  """The invert config of one arm: the same run, other weights and workdir."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  for term, value in weights.items():
    cfg.weights[term] = float(value)
  cfg.workdir = workdir
  return cfg


def _slug(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', name)


def identity_metrics(reconstructed: np.ndarray, rows: np.ndarray,
                     pool_descriptors: np.ndarray, pool_labels: np.ndarray,
                     impostor_pairs: np.ndarray,
                     fmrs: Sequence[float]) -> dict[str, Any]:
  """Identity cosine and TMR@FMR of reconstructions under one encoder.

  Args:
    reconstructed: [N, D] descriptors of the reconstructions of `rows`.
    rows: [N] their target rows (= their originals' labels).
    pool_descriptors: [M, D] the originals' descriptors, same encoder.
    pool_labels: [M] their labels.
    impostor_pairs: [P] `scores.impostor_pair_scores` of the pool.
    fmrs: false match rates.

  Returns:
    ``genuine`` (per row), ``cosine`` (summary of genuine), ``attack_impostor``
    (summary of reconstruction vs other originals), ``tmr``
    (`scores.tmr_report`), ``num_impostor_pairs``.
  """
  if not len(rows):
    return {'genuine': [], 'cosine': scores.summarize([]), 'tmr': {},
            'num_impostor_pairs': len(impostor_pairs)}
  genuine, impostor = scores.attack_scores(reconstructed, rows,
                                           pool_descriptors, pool_labels)
  return {'genuine': genuine.tolist(),
          'attack_impostor_scores': impostor.tolist(),
          'cosine': scores.summarize(genuine),
          'attack_impostor': scores.summarize(impostor),
          'tmr': scores.tmr_report(genuine, impostor_pairs, fmrs),
          'num_impostor_pairs': len(impostor_pairs)}


def appearance_metrics(sources: np.ndarray | None, images: np.ndarray,
                       rows: np.ndarray, *, landmark_model=None
                       ) -> dict[str, Any]:
  """Pixel, histogram and landmark agreement of reconstructions and sources.

  Args:
    sources: [N, H, W, 3] originals in [-1, 1], or None.
    images: [N, H', W', 3] reconstructions in [-1, 1].
    rows: the rows to score.
    landmark_model: optional ``fn(images) -> [K, 68, 2]`` (the
      image->landmark CNN); then landmark NME (recon vs original, both
      measured by the same CNN) is added.

  Returns:
    ``{name: summary}`` for mse ([0, 1] scale), psnr (dB), ssim,
    histogram_emd (10-bin, bins, summed over R, G, B) and landmark_nme;
    {} without sources.
  """
  if sources is None or not len(rows):
    return {}
  src, rec = np.asarray(sources)[rows], np.asarray(images)[rows]
  if src.shape != rec.shape:
    src = np.asarray(jax.image.resize(src, rec.shape, 'linear',
                                      antialias=True))
  out = {
      'mse': np.asarray(metrics.mse((src + 1) / 2, (rec + 1) / 2)),
      'psnr': np.asarray(metrics.psnr(src, rec, value_range=(-1, 1))),
      'ssim': np.asarray(metrics.ssim(src, rec, value_range=(-1, 1))),
      'histogram_emd': np.asarray(metrics.histogram_emd(
          losses.image_histogram(rec, value_range=(-1, 1)),
          losses.image_histogram(src, value_range=(-1, 1)),
          channel_reduction='sum')),
  }
  if landmark_model is not None:
    out['landmark_nme'] = np.asarray(metrics.landmark_nme(
        landmark_model(rec), landmark_model(src)))
  return {k: {**scores.summarize(v), 'values': v.tolist()}
          for k, v in out.items()}


class _Pools:
  """Descriptors and impostor pairs of the originals, per encoder."""

  def __init__(self, data: targets_lib.EvalTargets,
               attacked: registry.Encoder):
    self._data = data
    self._cache = {id(attacked): self._pairs(data.pool_descriptors)}

  def _pairs(self, descriptors):
    return descriptors, scores.impostor_pair_scores(descriptors,
                                                    self._data.pool_labels)

  def available(self, encoder: registry.Encoder) -> bool:
    return id(encoder) in self._cache or self._data.pool_images is not None

  def get(self, encoder: registry.Encoder):
    if id(encoder) not in self._cache:
      self._cache[id(encoder)] = self._pairs(
          encoder.embed(self._data.pool_images))
    return self._cache[id(encoder)]


def _score_under(encoder, inversion, rows, pools, data, fmrs,
                 attacked=None) -> dict[str, Any]:
  if not pools.available(encoder):
    return {'unavailable': 'no original images to embed with this encoder '
            '(targets are descriptors only)'}
  descriptors, pairs = pools.get(encoder)
  recon = (inversion.descriptors[rows] if encoder is attacked
           else encoder.embed(inversion.images[rows]) if len(rows) else
           np.zeros((0, encoder.dim), np.float32))
  return identity_metrics(recon, rows, descriptors, data.pool_labels, pairs,
                          fmrs)


def _landmark_model(config):
  """``fn(images [K, H, W, 3]) -> [K, 68, 2]`` from heads.image_landmarks."""
  path = config.heads.image_landmarks
  if not path:
    return None
  model, params, _ = job_lib.load_head(path, 'image->landmark')
  # One jitted function for every call (train.predict compiles per call).
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))

  def landmarks(images, batch=32):
    images = np.asarray(images, np.float32)
    out = []
    for start in range(0, len(images), batch):
      chunk = images[start:start + batch]
      m = len(chunk)
      if m < batch and len(images) > batch:  # pad: one compiled shape
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - m, 0)])
      out.append(np.asarray(apply(params, chunk))[:m])
    return np.concatenate(out)
  return landmarks


def run(config: Any) -> dict[str, Any]:
  """Runs the evaluate job; returns the report it also writes as JSON."""
  started = time.time()
  if config.distributed:
    from id2image_jax.inversion import sharding  # pylint: disable=g-import-not-at-top
    sharding.initialize_distributed()
  workdir = config.workdir
  fmrs = tuple(float(f) for f in config.fmrs)
  generator = registry.load_generator(config.generator,
                                      seed=config.generator_seed)
  # Load every encoder first, so a missing file fails before any inversion.
  encoders = Encoders(config.encoder_crop)
  attacked = encoders.get(config.encoder, 'encoder', attacked=True)
  eval_spec = config.eval_encoder or config.encoder
  evaluator = encoders.get(eval_spec, 'eval_encoder',
                           attacked=eval_spec == config.encoder)
  independent = evaluator is not attacked
  transfer_specs = list(dict.fromkeys(
      list(config.transfer_encoders) or [config.encoder, eval_spec]))
  transfer = {s: encoders.get(s, 'transfer_encoders',
                              attacked=s == config.encoder)
              for s in transfer_specs}
  _say(f'generator:      {generator.source}')
  _say(f'attacked:       {attacked.kind} ({attacked.dim}-d), '
       f'{attacked.source}')
  _say(f'evaluation:     {evaluator.kind} ({evaluator.dim}-d), '
       f'{evaluator.source}'
       + ('' if independent else '  [the SAME encoder: not independent]'))

  data = targets_lib.load(config, generator, attacked)
  targets = data.targets
  aux = targets_lib.attach_aux(config, targets)
  unavailable = {t: v['unavailable'] for t, v in aux.items()
                 if 'unavailable' in v}
  plans = arms_lib.plan_arms(list(config.arms), dict(config.weights),
                             unavailable)
  n = len(targets.descriptors)
  _say(f'targets:        {n} '
       f'({"self-check" if not config.targets else config.targets}); '
       f'pool of originals: '
       f'{0 if data.pool_images is None else len(data.pool_images)}')
  for term, info in aux.items():
    _say(f'  {term} targets: '
         + info.get('source', 'UNAVAILABLE: ' + info.get('unavailable', '')))
  for plan in plans:
    if plan.skipped:
      _say(f'  arm {plan.requested}: SKIPPED, {plan.skipped}')
    elif plan.dropped:
      _say(f'  arm {plan.requested}: runs as {plan.name} (dropped '
           + '; '.join(f'{t}: {r}' for t, r in plan.dropped.items()) + ')')

  pools = _Pools(data, attacked)
  landmark_model = _landmark_model(config)
  arm_results, inversions = {}, {}
  for plan in plans:
    if not plan.runs:
      continue
    _say(f'arm {plan.name}: weights {plan.weights}')
    arm_dir = os.path.join(workdir, 'arms', _slug(plan.name))
    cfg = arm_config(config, plan.weights, arm_dir)
    inversion = job_lib.invert_targets(cfg, generator, attacked, targets)
    inversions[plan.name] = inversion
    result = inversion.result
    outputs.write_outputs(arm_dir, result, images=inversion.images,
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
        'appearance': appearance_metrics(targets.sources, inversion.images,
                                         rows, landmark_model=landmark_model),
        'attacked': _score_under(attacked, inversion, rows, pools, data,
                                 fmrs, attacked),
        'evaluation': _score_under(evaluator, inversion, rows, pools, data,
                                   fmrs, attacked),
    }

  transfer_report = run_transfer(
      config, generator=generator, attacked=attacked, encoders=transfer,
      data=data, aux=aux, plans=plans, inversions=inversions, pools=pools,
      fmrs=fmrs)

  report = {
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
      'pool': {'num_originals': len(data.pool_labels),
               'has_images': data.pool_images is not None,
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
    paths = report_lib.write(workdir, report, sources=targets.sources,
                             images={k: v.images for k, v in
                                     inversions.items()},
                             grid_rows=config.grid_rows)
    report['files'] = paths
    _say(report_lib.console_summary(report))
  return report_lib.json_safe(report)


def run_transfer(config: Any, *, generator, attacked, encoders, data, aux,
                 plans, inversions, pools, fmrs) -> dict[str, Any]:
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
  labels = encoder_labels(list(encoders))
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
      _say(f'transfer: inverting with {label_a} (arm {plan.name}'
           + (f', without {dropped}' if dropped else '') + ')')
      cfg = arm_config(config, weights, os.path.join(
          config.workdir, 'transfer', _slug(label_a)))
      inversion = job_lib.invert_targets(cfg, generator, enc_a, t)
      out['attack'][label_a] = (f'inverted with arm {plan.name}'
                                + (f' without {dropped} (those targets came '
                                   'from the attacked encoder)'
                                   if dropped else ''))
    rows = np.flatnonzero(inversion.result.done)
    row = {}
    for spec_b, enc_b in encoders.items():
      scored = _score_under(enc_b, inversion, rows, pools, data, fmrs,
                            enc_a)
      row[labels[spec_b]] = {k: scored[k] for k in
                             ('cosine', 'tmr', 'num_impostor_pairs',
                              'unavailable') if k in scored}
    out['table'][label_a] = row
  return out
