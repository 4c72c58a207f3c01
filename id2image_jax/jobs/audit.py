"""``id2image audit``: one report on what a face encoder's templates leak.

Data flow (one direction)::

  config -> encoder, independent verifier, generator, attribute nets  load
         -> faces: align the folder once (cached), read them          data
         -> leakage (Table 1 for this encoder)           evaluation.audit
         -> white-box reconstruction attack, type I / II TMR@FMR, grid
         -> black-box attacker (scores only), queries counted
         -> workdir: audit.html (self-contained), audit.json     reports

Each part is stored under ``workdir/parts/`` when done, so a rerun with the
same settings skips it (and a changed setting redoes it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from id2image_jax import data as data_lib
from id2image_jax import loading
from id2image_jax import protection
from id2image_jax.configs import audit as audit_config
from id2image_jax.configs import invert as invert_config
from id2image_jax.data import align
from id2image_jax.data import faces as faces_lib
from id2image_jax.evaluation import audit
from id2image_jax.evaluation import protection as protect_measures
from id2image_jax.evaluation import scores
from id2image_jax.jobs import common
from id2image_jax.reports import audit as report
from id2image_jax.reports import evaluation as evaluation_report


def _budget(config: Any) -> dict[str, int]:
  if config.budget not in audit_config.BUDGETS:
    raise ValueError(f'budget must be one of {sorted(audit_config.BUDGETS)},'
                     f' got {config.budget!r}')
  return {k: int(config[k] or v)
          for k, v in audit_config.BUDGETS[config.budget].items()}


# Bumped when a part gains or loses fields, so older parts are redone, not
# read back half-filled (2: the white-box history and the equal budgets).
_PARTS_FORMAT = 2


class _Parts:
  """Finished parts as JSON (+ npz) under ``workdir/parts``, keyed by the
  settings they depend on and `_PARTS_FORMAT`."""

  def __init__(self, workdir: str, settings: dict[str, Any]):
    self._dir = os.path.join(workdir, 'parts')
    os.makedirs(self._dir, exist_ok=True)
    text = json.dumps({**settings, 'format': _PARTS_FORMAT},
                      sort_keys=True, default=str)
    self._tag = hashlib.sha1(text.encode()).hexdigest()[:12]
    self.reused = []  # names read back from an earlier run

  def _path(self, name, ext):
    return os.path.join(self._dir, f'{name}-{self._tag}.{ext}')

  def get(self, name: str):
    path = self._path(name, 'json')
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      value = json.load(f)
    self.reused.append(name)
    arrays = self._path(name, 'npz')
    if os.path.isfile(arrays):
      with np.load(arrays) as z:
        value['_arrays'] = {k: z[k] for k in z.files}
    return value

  def put(self, name: str, value: dict[str, Any],
          arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    if arrays:
      np.savez(self._path(name, 'tmp.npz'), **arrays)
      os.replace(self._path(name, 'tmp.npz'), self._path(name, 'npz'))
    with open(self._path(name, 'json.tmp'), 'w') as f:
      json.dump(report.outputs.json_safe(value), f)
    os.replace(self._path(name, 'json.tmp'), self._path(name, 'json'))
    return {**value, '_arrays': arrays or {}}


def _aligned_folder(config: Any, num_images: int) -> str:
  """The faces as an aligned folder (aligned once into the workdir); with
  a budget of `num_images` (0: all), only a few more than that are aligned
  (some photos have no detectable face)."""
  spec = config.data
  if not spec:
    raise ValueError('set --data: a folder of face photos, a CelebA-layout '
                     'folder, an aligned copy (id2image align) or tfds:lfw')
  if spec.startswith('tfds:'):
    spec = _materialise(spec[len('tfds:'):], config.workdir)
  if not os.path.isdir(spec):
    raise FileNotFoundError(f'--data {spec}: no such folder')
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


def _materialise(name: str, workdir: str) -> str:
  """A TFDS face data set written as one folder per person."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = os.path.join(workdir, 'tfds', name)
  if os.path.isdir(out):
    return out
  source = data_lib.from_config({'source': name})
  tmp = out + '.tmp'
  for batch in data_lib.batches(source, 32):
    for key, image, ok, person in zip(
        batch['key'], batch['image'], batch['valid'],
        batch.get('name', batch['key'])):
      if ok:
        folder = os.path.join(tmp, str(person).replace('/', '_'))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(
            folder, os.path.basename(str(key)) + '.png'))
  os.replace(tmp, out)
  return out


def _inversion_config(config: Any, budget: dict[str, int]
                      ) -> ml_collections.ConfigDict:
  c = invert_config.get_config()
  with c.unlocked():
    c.steps = budget['steps']
    c.workdir = os.path.join(config.workdir, 'inversion')
    c.resume = True
    c.progress = config.progress
    c.seed = config.seed
  return c


def _protection(config, budget, faces, descriptors, nets, targets,
                encoder, evaluator, generator) -> dict[str, Any]:
  """"What protection buys" (``--protect``): the unprotected templates and
  each setting, on the audit's faces and budget (`protect_measures`)."""
  ctx = protect_measures.Context(
      faces=faces, descriptors=descriptors,
      attributes=audit.labels(faces, nets)[0], attack_set=targets,
      encoder=encoder, evaluator=evaluator,
      evaluator_pool=evaluator.embed(faces.images[targets.pool]),
      generator=generator, fmrs=tuple(config.fmrs),
      inversion=protect_measures.attack_config(
          invert_config.get_config(), steps=budget['steps'],
          seed=config.seed, workdir=os.path.join(config.workdir, 'protect'),
          progress=config.progress),
      epochs=budget['epochs'], seed=config.seed, progress=config.progress)
  return protect_measures.compare(ctx, protection.parse(config.protect),
                                  key_seed=config.key_seed, seed=config.seed)


def run(config: Any) -> dict[str, Any]:
  """Runs the audit; returns the results written to ``audit.json``."""
  started = time.time()
  budget = _budget(config)
  protect = protection.parse(config.protect) if config.protect else []
  # Fail on unknown models before any work.
  encoder = loading.load_encoder(config.encoder)
  protection.check_all(protect, encoder.dim,
                       key_seed=config.key_seed)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  evaluator = (encoder if eval_spec == config.encoder
               else loading.load_encoder(eval_spec))
  generator = loading.load_generator(config.generator, seed=config.seed)
  nets = [loading.load_attribute_net(n) for n in config.attribute_nets]
  faces = faces_lib.read_aligned(_aligned_folder(config, budget['images']),
                                 max_images=budget['images'],
                                 seed=config.seed)
  if len(faces) < 4:
    raise ValueError(f'only {len(faces)} usable face(s) in {config.data}: '
                     'an audit needs at least 4 (2 people, train and test)')
  common.say(f'{len(faces)} faces; encoder {encoder.kind}; verifier '
             f'{evaluator.kind}; generator {generator.kind}')
  parts = _Parts(config.workdir, {
      'encoder': config.encoder, 'eval': eval_spec, 'data': config.data,
      'generator': config.generator, 'budget': budget, 'seed': config.seed,
      'keys': faces.keys, 'nets': list(config.attribute_nets)})
  descriptors = encoder.embed(faces.images)

  leak = parts.get('leakage')
  if leak is None:
    attributes, source = audit.labels(faces, nets)
    leak = audit.leakage(jax.random.key(config.seed), faces, descriptors,
                         attributes, epochs=budget['epochs'],
                         progress=config.progress)
    gains = [r['accuracy'] - r['baseline']
             for r in leak['attributes'].values()]
    leak = parts.put('leakage', {**leak, 'label_source': source,
                                 'max_attribute_gain': max(gains, default=0.0)})

  inv_config = _inversion_config(config, budget)
  inv_config.init = common.resolve_init(inv_config.init, generator, encoder)
  heads = common.load_heads({}, init=inv_config.init)
  targets = audit.attack_targets(faces, budget['targets'])
  attack = parts.get('attack')
  if attack is None:
    t0 = time.time()
    inversion = audit.invert(inv_config, generator, encoder, faces,
                             targets.rows, regressor=heads.regressor)
    whitebox_seconds = time.time() - t0
    images = inversion.images
    attack = {
        'num_targets': int(len(targets.rows)), 'steps': budget['steps'],
        'why_no_type2': targets.why_no_type2,
        'attacked_encoder': encoder.kind, 'evaluation_encoder': evaluator.kind,
        'attacked': audit.score_attack(encoder, images, faces, targets,
                                       config.fmrs),
        'attributes': scores.attribute_preservation(
            nets, faces.images[targets.rows], images,
            np.arange(len(targets.rows))),
        'whitebox_seconds': whitebox_seconds,
        # Cosine to the template before each step: the black-box compares.
        'whitebox_score_history': inversion.result.history['id_cosine'],
    }
    if evaluator is not encoder:
      attack['evaluation'] = audit.score_attack(evaluator, images, faces,
                                                targets, config.fmrs)
    attack['num_impostor_pairs'] = attack['attacked']['num_impostor_pairs']
    attack = parts.put('attack', attack, {'images': images})
  images = attack['_arrays']['images']

  bb = parts.get('blackbox')
  if bb is None:
    rows = targets.rows[:budget['nes_targets']]
    out = audit.blackbox_attack(
        inv_config, generator, encoder, faces, rows,
        population=budget['nes_population'], steps=budget['nes_steps'],
        regressor=heads.regressor)
    # Type I under the attacked encoder: the white-box reconstruction's
    # cosine to the very template, what the black-box attacker maximises.
    whitebox_cos = np.asarray(attack['attacked']['genuine'])[:len(rows)]
    queries_per_step = out['queries_per_step']
    equal = audit.equal_budget(
        np.asarray(attack['whitebox_score_history'])[:len(rows)],
        whitebox_cos, attack['whitebox_seconds'], out['score_history'],
        out['final_score'], out['seconds'], queries_per_step)
    bb = parts.put('blackbox', {
        'num_targets': int(len(rows)),
        'queries_per_target': out['queries_per_target'],
        'queries_per_step': queries_per_step,
        'seconds': out['seconds'],
        'score_history': out['score_history'],
        'final_score': out['final_score'],
        'mean_final_score': float(np.mean(out['final_score'])),
        'whitebox_steps': budget['steps'],
        'whitebox_seconds': attack['whitebox_seconds'],
        'whitebox_final_score': float(np.mean(whitebox_cos)),
        'equal_budget': equal,
    })

  results = {
      'config': {'fmrs': list(config.fmrs), 'budget': config.budget,
                 **budget},
      'leakage': {k: v for k, v in leak.items() if k != '_arrays'},
      'attack': {k: v for k, v in attack.items() if k != '_arrays'},
      'blackbox': {k: v for k, v in bb.items() if k != '_arrays'},
      'facts': {
          'encoder': {'kind': encoder.kind, 'source': encoder.source},
          'verifier': {'kind': evaluator.kind, 'source': evaluator.source,
                       'independent': evaluator is not encoder},
          'generator': generator.source,
          'data': config.data, 'faces': len(faces),
          'skipped_photos': faces.skipped,
          'people': (None if faces.identity is None
                     else int(len(np.unique(faces.identity)))),
          'split': 'identity-disjoint, 70 % / 30 % of the people',
          'budget': config.budget, **budget,
          # This invocation only; reused parts cost nothing here.
          'seconds': time.time() - started,
          'reused_parts': parts.reused,
          'device': str(jax.devices()[0].device_kind),
          'versions': {'python': platform.python_version(),
                       'jax': jax.__version__, 'numpy': np.__version__},
      },
  }
  if protect:
    results['protection'] = _protection(config, budget, faces, descriptors,
                                        nets, targets, encoder, evaluator,
                                        generator)
  grid = None
  if len(targets.rows):
    columns = {'reconstruction': images}
    if not targets.why_no_type2:
      columns['other photo'] = faces.images[targets.others]
    grid = evaluation_report.comparison_grid(
        faces.images[targets.rows], columns, rows=8, cell=128)
  paths = report.write(config.workdir, results, grid=grid)
  common.say(f'audit: {paths["html"]} ({time.time() - started:.0f} s)')
  for v in report.verdicts(results):
    common.say(f'  {v["risk"]}: {v["level"]}')
  return results
