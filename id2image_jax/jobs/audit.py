"""``id2image audit``: one report on what a face encoder's templates leak.

Data flow (one direction)::

  config -> encoder, independent verifier, generator, attribute nets  load
         -> faces: align the folder once (cached), read them          data
         -> leakage (Table 1 for this encoder)           evaluation.audit
         -> white-box reconstruction attack, type I / II TMR@FMR, grid
         -> black-box attacker (scores only), queries counted
         -> workdir: audit.html (self-contained), audit.json     reports

Each part is stored under ``workdir/parts/`` when done (`reports.parts`),
so a rerun with the same settings skips it (and a changed setting redoes
it). `run` reads as these phases, each a function below it in call order.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from id2image_jax import errors
from id2image_jax import loading
from id2image_jax import protection
from id2image_jax import protocols
from id2image_jax.configs import audit as audit_config
from id2image_jax.configs import invert as invert_config
from id2image_jax.data import align
from id2image_jax.data import faces as faces_lib
from id2image_jax.data import materialise
from id2image_jax.evaluation import audit
from id2image_jax.evaluation import protection as protect_measures
from id2image_jax.evaluation import scores
from id2image_jax.jobs import common
from id2image_jax.reports import audit as report
from id2image_jax.reports import evaluation as evaluation_report
from id2image_jax.reports import parts as parts_lib


def run(config: Any) -> dict[str, Any]:
  """Runs the audit; returns the results written to ``audit.json``."""
  started = time.time()
  job = _prepare(config)
  leak = _leakage(job)
  attacker = _attacker(job)
  if job.encoder.differentiable:
    attack = _whitebox(job, attacker)
    bb = _blackbox(job, attacker, attack)
    results = _results(job, leak, attack, bb,
                       seconds=time.time() - started)
    grid = _grid(job.faces, attacker.targets, attack['_arrays']['images'])
  else:
    # An ONNX file whose ops only ONNX Runtime runs: queried, never
    # differentiated, so only the score-only attacker can run.
    bb = _blackbox_only(job, attacker)
    results = _results(job, leak, {}, bb, seconds=time.time() - started)
    results['attack_not_run'] = _why_no_whitebox(job.encoder)
    rows = attacker.targets.rows[:len(bb['final_score'])]
    grid = _grid(job.faces, dataclasses.replace(
        attacker.targets, rows=rows, why_no_type2='black box'),
                 bb['_arrays']['images'], label='black-box reconstruction')
  if job.protect:
    results['protection'] = _protection(job, attacker)
  paths = report.write(config.workdir, results, grid=grid)
  common.say(f'audit: {paths["html"]} ({time.time() - started:.0f} s)')
  for v in report.verdicts(results):
    common.say(f'  {v["risk"]}: {v["level"]}')
  return results


@dataclasses.dataclass(frozen=True)
class _Audit:
  """What every part of one audit reads: made by `_prepare`, never changed.

  Attributes:
    config: the audit config.
    budget: the budget's sizes, with the config's own values applied.
    encoder: the audited (attacked) encoder.
    evaluator: the verifier (the encoder itself when none is independent).
    generator: the attacker's generator.
    nets: attribute networks (pseudo labels, attribute preservation).
    faces: the aligned faces.
    parts: the finished parts of this run and earlier ones.
    protect: template protection schemes to compare (``--protect``).
  """
  config: Any
  budget: dict[str, int]
  encoder: protocols.Encoder
  evaluator: protocols.Encoder
  generator: protocols.Generator
  nets: list[protocols.AttributeNet]
  faces: faces_lib.Faces
  parts: parts_lib.Parts
  protect: list[Any] = dataclasses.field(default_factory=list)


def _budget(config: Any) -> dict[str, int]:
  if config.budget not in audit_config.BUDGETS:
    raise errors.UsageError(
        f'budget must be one of {sorted(audit_config.BUDGETS)}, got '
        f'{config.budget!r}')
  return {k: int(config[k] or v)
          for k, v in audit_config.BUDGETS[config.budget].items()}


# Bumped when a part gains or loses fields, so older parts are redone, not
# read back half-filled (2: the white-box history and the equal budgets;
# 3: every rate with its interval and the thresholds' bootstrap; 4: leakage
# heads chosen on validation people, MLP vs linear probe).
_PARTS_FORMAT = 4


def _prepare(config: Any) -> _Audit:
  """Loads the models (unknown ones fail before any work), reads the faces
  and opens the parts store."""
  budget = _budget(config)
  # An ONNX file whose ops only ONNX Runtime runs loads as a black box.
  overrides = common.encoder_input(config)
  encoder = loading.load_encoder(config.encoder, input_overrides=overrides,
                                 allow_blackbox=True)
  # Bad schemes, parameters or a missing key seed fail before any work.
  protect = protection.parse(config.protect) if config.protect else []
  protection.check_all(protect, encoder.dim, key_seed=config.key_seed)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  evaluator = (encoder if eval_spec == config.encoder
               else loading.load_encoder(eval_spec))
  generator = loading.load_generator(config.generator, seed=config.seed)
  nets = [loading.load_attribute_net(n) for n in config.attribute_nets]
  faces = faces_lib.read_aligned(_aligned_folder(config, budget['images']),
                                 max_images=budget['images'],
                                 seed=config.seed)
  if len(faces) < 4:
    raise errors.BadInputError(
        f'only {len(faces)} usable face(s) in {config.data}: an audit needs '
        'at least 4 (2 people, train and test)')
  if faces.attributes:  # else the nets name them, once they have run
    _check_attributes(config.attributes, faces.attributes)
  common.say(f'{len(faces)} faces; encoder {encoder.kind}; verifier '
             f'{evaluator.kind}; generator {generator.kind}')
  common.say(f'encoder: {encoder.source}')
  # What every part depends on: a change here redoes the parts.
  settings = {
      'encoder': config.encoder, 'eval': eval_spec, 'data': config.data,
      'generator': config.generator, 'budget': budget, 'seed': config.seed,
      'keys': faces.keys, 'nets': list(config.attribute_nets),
      # Only when set, so parts of earlier runs keep their tags.
      **({'encoder_input': overrides} if overrides else {}),
      **({'attributes': common.names(config.attributes)}
         if config.attributes else {})}
  parts = parts_lib.Parts(os.path.join(config.workdir, 'parts'), settings,
                          version=_PARTS_FORMAT)
  return _Audit(config, budget, encoder, evaluator, generator, nets, faces,
                parts, protect)


def _aligned_folder(config: Any, num_images: int) -> str:
  """The faces as an aligned folder (aligned once into the workdir); with
  a budget of `num_images` (0: all), only a few more than that are aligned
  (some photos have no detectable face)."""
  spec = config.data
  if not spec:
    raise errors.UsageError(
        'set --data: a folder of face photos, a CelebA-layout folder, an '
        'aligned copy (id2image align) or tfds:lfw')
  if spec.startswith('tfds:'):
    spec = materialise.tfds_folder(spec[len('tfds:'):],
                                   os.path.join(config.workdir, 'tfds'))
  if not os.path.isdir(spec):
    raise errors.MissingInputError(f'--data {spec}: no such folder')
  if os.path.isfile(os.path.join(spec, align.LANDMARK_FILE)):
    return spec
  out = os.path.join(config.workdir, 'aligned')
  names = (faces_lib.choose(spec, num_images + num_images // 4 + 2,
                            seed=config.seed) if num_images else None)
  counts = align.align_folder(spec, out, names=names,
                              progress=config.progress)
  common.say(f'aligned {counts["aligned"] + counts["reused"]} photo(s); '
             f'{counts["skipped"]} without a detectable face')
  return out


def _leakage(job: _Audit) -> dict[str, Any]:
  """Table 1 for this encoder on these faces (the part, or computed)."""
  leak = job.parts.get('leakage')
  if leak is not None:
    return leak
  descriptors = job.encoder.embed(job.faces.images)
  attributes, source = _labels(job)
  leak = audit.leakage(jax.random.key(job.config.seed), job.faces,
                       descriptors, attributes, epochs=job.budget['epochs'],
                       progress=job.config.progress)
  gains = [r['accuracy'] - r['baseline'] for r in leak['attributes'].values()]
  return job.parts.put('leakage', {
      **leak, 'label_source': source,
      'max_attribute_gain': max(gains, default=0.0)})


def _labels(job: _Audit) -> tuple[dict[str, np.ndarray], str]:
  """The attributes to audit (``config.attributes``, or all) and where
  they come from (in words)."""
  attributes, source = audit.labels(job.faces, job.nets)
  _check_attributes(job.config.attributes, attributes)
  wanted = common.names(job.config.attributes)
  return ({n: attributes[n] for n in wanted} if wanted else attributes,
          source)


def _check_attributes(wanted: str, known: Mapping[str, Any]) -> None:
  """Raises `errors.UsageError` naming `wanted` attributes not `known`."""
  unknown = [n for n in common.names(wanted) if n not in known]
  if unknown:
    raise errors.UsageError(
        f'attributes={wanted!r}: no attribute '
        f'{", ".join(map(repr, unknown))} in these faces (known: '
        f'{", ".join(known)})')


@dataclasses.dataclass(frozen=True)
class _Attacker:
  """What both attacks share: the invert config, the ID -> latent head it
  names (or None) and who is attacked."""
  config: ml_collections.ConfigDict
  regressor: Callable[[np.ndarray], np.ndarray] | None
  targets: audit.AttackSet


def _attacker(job: _Audit) -> _Attacker:
  """The attacks' invert config, head and targets."""
  config = _inversion_config(job.config, job.budget, job.generator,
                             job.encoder)
  return _Attacker(config,
                   common.load_heads({}, init=config.init).regressor,
                   audit.attack_targets(job.faces, job.budget['targets']))


def _inversion_config(config: Any, budget: dict[str, int],
                      generator: protocols.Generator,
                      encoder: protocols.Encoder
                      ) -> ml_collections.ConfigDict:
  """The invert config of the attacks (a new one: `config` is read only)."""
  c = invert_config.get_config()
  with c.unlocked():
    c.steps = budget['steps']
    c.workdir = os.path.join(config.workdir, 'inversion')
    c.resume = True
    c.checkpoint_seconds = config.checkpoint_seconds
    c.progress = config.progress
    c.seed = config.seed
    c.init = common.resolve_init(c.init, generator, encoder)
  return c


def _whitebox(job: _Audit, attacker: _Attacker) -> dict[str, Any]:
  """The white-box reconstruction attack, scored (the part, or run)."""
  attack = job.parts.get('attack')
  if attack is not None:
    return attack
  targets = attacker.targets
  t0 = time.time()
  inversion = audit.invert(attacker.config, job.generator, job.encoder,
                           job.faces, targets.rows,
                           regressor=attacker.regressor)
  whitebox_seconds = time.time() - t0
  images = inversion.images
  attack = {
      'num_targets': int(len(targets.rows)), 'steps': job.budget['steps'],
      'why_no_type2': targets.why_no_type2,
      'attacked_encoder': job.encoder.kind,
      'evaluation_encoder': job.evaluator.kind,
      'attacked': audit.score_attack(job.encoder, images, job.faces, targets,
                                     job.config.fmrs),
      'attributes': scores.attribute_preservation(
          job.nets, job.faces.images[targets.rows], images,
          np.arange(len(targets.rows))),
      'whitebox_seconds': whitebox_seconds,
      # Cosine to the template before each step: the black-box compares.
      'whitebox_score_history': inversion.result.history['id_cosine'],
  }
  if job.evaluator is not job.encoder:
    attack['evaluation'] = audit.score_attack(job.evaluator, images, job.faces,
                                              targets, job.config.fmrs)
  attack['num_impostor_pairs'] = attack['attacked']['num_impostor_pairs']
  return job.parts.put('attack', attack, arrays={'images': images})


def _blackbox(job: _Audit, attacker: _Attacker,
              attack: dict[str, Any]) -> dict[str, Any]:
  """The score-only attacker on the first targets, and how it compares
  with the white-box attack at equal budgets (the part, or run)."""
  bb = job.parts.get('blackbox')
  if bb is not None:
    return bb
  rows = attacker.targets.rows[:job.budget['nes_targets']]
  out = audit.blackbox_attack(
      attacker.config, job.generator, job.encoder, job.faces, rows,
      population=job.budget['nes_population'], steps=job.budget['nes_steps'],
      regressor=attacker.regressor)
  # Type I under the attacked encoder: the white-box reconstruction's
  # cosine to the very template, what the black-box attacker maximises.
  whitebox_cos = np.asarray(attack['attacked']['genuine'])[:len(rows)]
  equal = audit.equal_budget(
      np.asarray(attack['whitebox_score_history'])[:len(rows)],
      whitebox_cos, attack['whitebox_seconds'], out['score_history'],
      out['final_score'], out['seconds'], out['queries_per_step'])
  return job.parts.put('blackbox', {
      'num_targets': int(len(rows)),
      'queries_per_target': out['queries_per_target'],
      'queries_per_step': out['queries_per_step'],
      'seconds': out['seconds'],
      'score_history': out['score_history'],
      'final_score': out['final_score'],
      'mean_final_score': float(np.mean(out['final_score'])),
      'whitebox_steps': job.budget['steps'],
      'whitebox_seconds': attack['whitebox_seconds'],
      'whitebox_final_score': float(np.mean(whitebox_cos)),
      'equal_budget': equal,
  })


def _results(job: _Audit, leak: dict[str, Any], attack: dict[str, Any],
             bb: dict[str, Any], *, seconds: float) -> dict[str, Any]:
  """What ``audit.json`` holds: the parts (arrays left out) and the facts
  of this run."""
  def values(part):
    return {k: v for k, v in part.items() if k != '_arrays'}
  return {
      'config': {'fmrs': list(job.config.fmrs), 'budget': job.config.budget,
                 **job.budget},
      'leakage': values(leak),
      'attack': values(attack),
      'blackbox': values(bb),
      'facts': _facts(job, seconds),
  }


def _facts(job: _Audit, seconds: float) -> dict[str, Any]:
  faces = job.faces
  encoder = {'kind': job.encoder.kind, 'source': job.encoder.source}
  if not job.encoder.differentiable:
    encoder['black_box'] = job.encoder.why_blackbox
  return {
      'encoder': encoder,
      'verifier': {'kind': job.evaluator.kind, 'source': job.evaluator.source,
                   'independent': job.evaluator is not job.encoder},
      'generator': job.generator.source,
      'data': job.config.data, 'faces': len(faces),
      'skipped_photos': faces.skipped,
      'people': (None if faces.identity is None
                 else int(len(np.unique(faces.identity)))),
      'split': 'identity-disjoint, 70 % / 30 % of the people',
      'budget': job.config.budget, **job.budget,
      # This invocation only; reused parts cost nothing here.
      'seconds': seconds,
      'reused_parts': job.parts.reused,
      'device': str(jax.devices()[0].device_kind),
      'versions': {'python': platform.python_version(),
                   'jax': jax.__version__, 'numpy': np.__version__},
  }


def _grid(faces: faces_lib.Faces, targets: audit.AttackSet,
          images: np.ndarray, *, label: str = 'reconstruction'
          ) -> np.ndarray | None:
  """Target | reconstruction (| another photo of the person), or None."""
  if not len(targets.rows):
    return None
  columns = {label: images}
  if not targets.why_no_type2:
    columns['other photo'] = faces.images[targets.others]
  return evaluation_report.comparison_grid(
      faces.images[targets.rows], columns, rows=8, cell=128)


def _why_no_whitebox(encoder: protocols.Encoder) -> str:
  return (f'the encoder runs as a black box ({encoder.why_blackbox}): '
          'without gradients the white-box (ID2image) attack cannot run; '
          'the score-only attacker did')


def _blackbox_only(job: _Audit, attacker: _Attacker) -> dict[str, Any]:
  """For an encoder that can only be queried: the score-only attacker, its
  reconstructions scored under the encoder with thresholds from the pool
  (the part, or run)."""
  common.say(f'white-box attack not run: {_why_no_whitebox(job.encoder)}')
  bb = job.parts.get('blackbox')
  if bb is not None:
    return bb
  targets = attacker.targets
  rows = targets.rows[:job.budget['nes_targets']]
  out = audit.blackbox_attack(
      attacker.config, job.generator, job.encoder, job.faces, rows,
      population=job.budget['nes_population'], steps=job.budget['nes_steps'],
      regressor=attacker.regressor)
  scored = dataclasses.replace(targets, rows=rows,
                               others=targets.others[:len(rows)])
  return job.parts.put('blackbox', {
      'num_targets': int(len(rows)),
      'queries_per_target': out['queries_per_target'],
      'queries_per_step': out['queries_per_step'],
      'seconds': out['seconds'],
      'score_history': out['score_history'],
      'final_score': out['final_score'],
      'mean_final_score': float(np.mean(out['final_score'])),
      'attacked': audit.score_attack(job.encoder, out['images'], job.faces,
                                     scored, job.config.fmrs),
  }, arrays={'images': out['images']})


def _protection(job: _Audit, attacker: _Attacker) -> dict[str, Any]:
  """"What protection buys" (``--protect``): the unprotected templates and
  each setting, on the audit's faces and budget (`protect_measures`)."""
  config, targets = job.config, attacker.targets
  ctx = protect_measures.Context(
      faces=job.faces, descriptors=job.encoder.embed(job.faces.images),
      attributes=_labels(job)[0], attack_set=targets,
      encoder=job.encoder, evaluator=job.evaluator,
      evaluator_pool=job.evaluator.embed(job.faces.images[targets.pool]),
      generator=job.generator, fmrs=tuple(config.fmrs),
      inversion=protect_measures.attack_config(
          invert_config.get_config(), steps=job.budget['steps'],
          seed=config.seed, workdir=os.path.join(config.workdir, 'protect'),
          progress=config.progress),
      epochs=job.budget['epochs'], seed=config.seed,
      progress=config.progress)
  return protect_measures.compare(ctx, job.protect,
                                  key_seed=config.key_seed, seed=config.seed)
