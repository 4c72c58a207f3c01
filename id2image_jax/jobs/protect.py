"""``id2image protect``: what protecting stored templates buys (issue 21).

Data flow (one direction)::

  config -> schemes parsed and checked against the encoder, key seed  protection
         -> encoder, verifier, generator, attribute nets            load
         -> faces: align the folder once (cached), read them        data
         -> per setting (unprotected first): templates under two keys,
            utility, leakage, reconstruction (informed / key unknown),
            unlinkability                             evaluation.protection
         -> workdir: protect.html (self-contained), protect.json,
            protect_chart.png                                   reports

Every error in the schemes, the key seed or the models stops the job before
any face is read and before anything is written. The key seed is used in
memory only: neither it nor anything derived from it is written.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from id2image_jax import loading
from id2image_jax import protection
from id2image_jax.configs import invert as invert_config
from id2image_jax.data import align
from id2image_jax.data import faces as faces_lib
from id2image_jax.evaluation import audit
from id2image_jax.evaluation import protection as measures
from id2image_jax.jobs import common
from id2image_jax.reports import evaluation as evaluation_report
from id2image_jax.reports import protect as report


def settings_of(config: Any) -> list[protection.Setting]:
  """The unprotected reference, then the configured settings (parsed)."""
  parsed = protection.parse(config.schemes)
  reference = protection.parse('none')
  return reference + [s for s in parsed if s.name != 'none']


def _check(config: Any) -> None:
  if config.attack not in ('gradient', 'nes'):
    raise ValueError(f"attack must be 'gradient' or 'nes', got "
                     f'{config.attack!r}')
  if config.key_seed is not None:
    protection.key_from_seed(config.key_seed)  # a clear error if malformed
  if not config.data:
    raise ValueError('set --data: a folder of face photos, a CelebA-layout '
                     'folder or an aligned copy (id2image align)')
  if not os.path.isdir(config.data):
    raise FileNotFoundError(f'--data {config.data}: no such folder')


def _aligned_folder(config: Any) -> str:
  """The faces as an aligned folder (aligned once into the workdir; with
  an image budget only a few more than that are aligned)."""
  if os.path.isfile(os.path.join(config.data, align.LANDMARK_FILE)):
    return config.data
  out = os.path.join(config.workdir, 'aligned')
  n = config.images
  names = (faces_lib.choose(config.data, n + n // 4 + 2, seed=config.seed)
           if n else None)
  counts = align.align_folder(config.data, out, names=names,
                              progress=config.progress)
  common.say(f'aligned {counts["aligned"] + counts["reused"]} photo(s); '
             f'{counts["skipped"]} without a detectable face')
  return out


def _inversion_config(config: Any) -> ml_collections.ConfigDict:
  c = invert_config.get_config()
  with c.unlocked():
    c.steps = config.steps
    # The ID2image identity loss on protected templates, on unit vectors:
    # templates of different schemes have different scales.
    c.identity_loss = 'cosine'
    # Every setting starts from the mean face: the shipped ID -> latent
    # regressor reads unprotected descriptors only.
    c.init = 'w_avg'
    c.resume = False  # nothing key-dependent is stored
    c.workdir = os.path.join(config.workdir, 'inversion')
    c.progress = config.progress
    c.seed = config.seed
  return c


def _strip(value: Any) -> Any:
  """Drops the long per-pair score lists from a measure (JSON size)."""
  if isinstance(value, dict):
    return {k: _strip(v) for k, v in value.items()
            if k != 'attack_impostor_scores'}
  return value


def _measure(config, setting, index, keys, guess, ctx) -> dict[str, Any]:
  """All measures of one setting (module docstring)."""
  faces, descriptors = ctx['faces'], ctx['descriptors']
  kind = setting.score_kind
  stored = np.asarray(setting.protect(keys['system'], descriptors))
  second = np.asarray(setting.protect(keys['second'], descriptors))
  genuine, impostor = measures.pair_scores(stored, faces.identity, kind)
  scheme = setting.scheme
  entry = {
      'setting': setting.label, 'short_label': setting.short_label,
      'scheme': setting.name,
      'family': scheme.family, 'params': dict(setting.params),
      'source': scheme.source, 'score': kind,
      'template_size': int(stored.shape[1]), 'gradient': scheme.gradient,
      'key': scheme.key,
      'utility': measures.utility(genuine, impostor, config.fmrs),
      'linkability': measures.linkability(stored, second, faces.identity,
                                          kind, bins=config.linkability_bins),
  }
  t0, cpu0 = time.time(), time.process_time()
  entry['leakage'] = measures.template_leakage(
      jax.random.fold_in(jax.random.key(config.seed), index), faces, stored,
      ctx['attributes'], epochs=config.epochs, progress=config.progress)
  entry['leakage']['seconds'] = time.time() - t0
  # CPU seconds too: on a shared machine wall time says little.
  common.say(f'    leakage: {time.time() - t0:.0f} s '
             f'({time.process_time() - cpu0:.0f} CPU s)')
  images = {}
  attack = ctx['attack_set']
  if config.targets and len(attack.rows):
    threats = [('informed', keys['system'])]
    if config.key_unknown and scheme.key == 'secret':
      threats.append(('key_unknown', guess))
    for threat, attacker_key in threats:
      cpu0 = time.process_time()
      out = measures.reconstruct(
          ctx['inversion'], ctx['generator'], ctx['encoder'], setting,
          stored[attack.rows], attacker_key, attack=config.attack,
          population=config.nes_population)
      success = measures.reconstruction_success(
          setting, keys['system'], ctx['encoder'], ctx['evaluator'],
          out['images'], faces, attack, stored[attack.rows], impostor,
          config.fmrs, evaluator_pool=ctx['evaluator_pool'],
          threat_model=threat)
      entry[f'reconstruction_{threat}'] = _strip({
          **success, 'attack': out['attack'], 'gradient': out['gradient'],
          'seconds': out['seconds'], 'steps': config.steps,
          'queries_per_target': out.get('queries_per_target'),
          'num_targets': int(len(attack.rows))})
      images[threat] = out['images']
      common.say(f'    reconstruction ({threat}): {out["seconds"]:.0f} s '
                 f'({time.process_time() - cpu0:.0f} CPU s)')
  return entry, images


def run(config: Any) -> dict[str, Any]:
  """Runs the comparison; returns what ``protect.json`` holds."""
  started = time.time()
  # Everything that can be wrong in the request fails here, before work.
  settings = settings_of(config)
  _check(config)
  encoder = loading.load_encoder(config.encoder)
  protection.check_all(settings, encoder.dim,
                       have_key=config.key_seed is not None)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  evaluator = (encoder if eval_spec == config.encoder
               else loading.load_encoder(eval_spec))
  generator = (loading.load_generator(config.generator, seed=config.seed)
               if config.targets else None)
  nets = [loading.load_attribute_net(n) for n in config.attribute_nets]

  keys = (protection.system_keys(config.key_seed)
          if config.key_seed is not None
          else {'system': None, 'second': None})
  # The attacker's guess comes from the run seed, never from the secret.
  guess = jax.random.fold_in(protection.key_from_seed(config.seed), 2)

  faces = faces_lib.read_aligned(_aligned_folder(config),
                                 max_images=config.images, seed=config.seed)
  if len(faces) < 4:
    raise ValueError(f'only {len(faces)} usable face(s) in {config.data}: '
                     'at least 4 are needed (2 people, train and test)')
  common.say(f'{len(faces)} faces; encoder {encoder.kind}; verifier '
             f'{evaluator.kind}; {len(settings)} settings')
  attributes, label_source = audit.labels(faces, nets)
  if config.attributes:
    missing = sorted(set(config.attributes) - set(attributes))
    if missing:
      raise ValueError(f'attributes {missing} are not in the labels '
                       f'(known: {sorted(attributes)})')
    attributes = {n: attributes[n] for n in config.attributes}
  attack_set = audit.attack_targets(faces, config.targets)
  ctx = {
      'faces': faces, 'descriptors': encoder.embed(faces.images),
      'attributes': attributes, 'attack_set': attack_set,
      'encoder': encoder, 'evaluator': evaluator, 'generator': generator,
      'evaluator_pool': evaluator.embed(faces.images[attack_set.pool]),
      'inversion': _inversion_config(config),
  }
  entries, grid_columns = [], {}
  for i, setting in enumerate(settings):
    t0 = time.time()
    entry, images = _measure(config, setting, i, keys, guess, ctx)
    entry['seconds'] = time.time() - t0
    entries.append(entry)
    if 'informed' in images:
      grid_columns[setting.label] = images['informed']
    common.say(f'  {setting.label}: {report.one_line(entry)} '
               f'({entry["seconds"]:.0f} s)')

  results = {
      'config': {
          'schemes': [s.label for s in settings], 'fmrs': list(config.fmrs),
          'images': config.images, 'targets': config.targets,
          'steps': config.steps, 'attack': config.attack,
          'key_unknown': bool(config.key_unknown), 'epochs': config.epochs,
          'linkability_bins': config.linkability_bins, 'seed': config.seed,
          'keyed': config.key_seed is not None,
      },
      'threat_models': measures.THREAT_MODELS,
      'settings': entries,
      'facts': {
          'encoder': {'kind': encoder.kind, 'source': encoder.source,
                      'dim': encoder.dim},
          'verifier': {'kind': evaluator.kind, 'source': evaluator.source,
                       'independent': evaluator is not encoder},
          'generator': None if generator is None else generator.source,
          'data': config.data, 'faces': len(faces),
          'skipped_photos': faces.skipped,
          'people': (None if faces.identity is None
                     else int(len(np.unique(faces.identity)))),
          'label_source': label_source,
          'attack_init': 'w_avg (the mean face), for every setting',
          'split': 'identity-disjoint, 70 % / 30 % of the people (leakage)',
          'seconds': time.time() - started,
          'device': str(jax.devices()[0].device_kind),
          'versions': {'python': platform.python_version(),
                       'jax': jax.__version__, 'numpy': np.__version__},
      },
  }
  grid = None
  if grid_columns:
    grid = evaluation_report.comparison_grid(
        faces.images[attack_set.rows], grid_columns, rows=8, cell=96)
  paths = report.write(config.workdir, results, grid=grid)
  common.say(f'protect: {paths["html"]} ({time.time() - started:.0f} s)')
  return results
