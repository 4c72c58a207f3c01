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
import numpy as np

from id2image_jax import errors
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
    raise errors.UsageError(
        f"attack must be 'gradient' or 'nes', got "
        f'{config.attack!r}')
  if not config.data:
    raise errors.UsageError(
        'set --data: a folder of face photos, a CelebA-layout '
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


def _load(config: Any) -> dict[str, Any]:
  """Settings checked, models loaded: every error in the request is
  raised here, before any face is read or anything written."""
  settings = settings_of(config)
  _check(config)
  encoder = loading.load_encoder(config.encoder)
  protection.check_all(settings, encoder.dim,
                       key_seed=config.key_seed)
  eval_spec = common.evaluation_partner(config.eval_encoder, config.encoder)
  return {
      'settings': settings, 'encoder': encoder,
      'evaluator': (encoder if eval_spec == config.encoder
                    else loading.load_encoder(eval_spec)),
      'generator': (loading.load_generator(config.generator,
                                           seed=config.seed)
                    if config.targets else None),
      'nets': [loading.load_attribute_net(n) for n in config.attribute_nets],
  }


def _keys(config: Any) -> tuple[dict[str, Any], jax.Array]:
  """The system keys from the secret seed, and the attacker's guess (from
  the run seed, never from the secret)."""
  keys = (protection.system_keys(config.key_seed)
          if config.key_seed is not None
          else {'system': None, 'second': None})
  return keys, jax.random.fold_in(protection.key_from_seed(config.seed), 2)


def _labels(config: Any, faces: faces_lib.Faces, nets
            ) -> tuple[dict[str, np.ndarray], str]:
  """The attributes to measure (``config.attributes``, or all)."""
  attributes, source = audit.labels(faces, nets)
  if config.attributes:
    missing = sorted(set(config.attributes) - set(attributes))
    if missing:
      raise errors.UsageError(
          f'attributes {missing} are not in the labels '
          f'(known: {sorted(attributes)})')
    attributes = {n: attributes[n] for n in config.attributes}
  return attributes, source


def _context(config: Any, models: dict[str, Any],
             faces: faces_lib.Faces, attributes) -> measures.Context:
  attack_set = audit.attack_targets(faces, config.targets)
  evaluator = models['evaluator']
  return measures.Context(
      faces=faces, descriptors=models['encoder'].embed(faces.images),
      attributes=attributes, attack_set=attack_set,
      encoder=models['encoder'], evaluator=evaluator,
      evaluator_pool=evaluator.embed(faces.images[attack_set.pool]),
      generator=models['generator'],
      inversion=measures.attack_config(
          invert_config.get_config(), steps=config.steps, seed=config.seed,
          workdir=os.path.join(config.workdir, 'inversion'),
          progress=config.progress),
      fmrs=tuple(config.fmrs), epochs=config.epochs, seed=config.seed,
      attack=config.attack, nes_population=config.nes_population,
      key_unknown=bool(config.key_unknown),
      linkability_bins=config.linkability_bins, progress=config.progress)


def _say_times(entry: dict[str, Any]) -> None:
  for part in ('leakage', 'reconstruction_informed',
               'reconstruction_key_unknown'):
    if entry.get(part):
      common.say(f'    {part}: {entry[part]["seconds"]:.0f} s '
                 f'({entry[part]["cpu_seconds"]:.0f} CPU s)')


def _measure_all(config: Any, ctx: measures.Context, settings
                 ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """Every setting in turn; (entries, setting -> informed images)."""
  keys, guess = _keys(config)
  entries, columns = [], {}
  for i, setting in enumerate(settings):
    t0 = time.time()
    entry, images = measures.measure_setting(ctx, setting, i, keys, guess)
    entry['seconds'] = time.time() - t0
    entries.append(entry)
    if 'informed' in images:
      columns[setting.label] = images['informed']
    _say_times(entry)
    common.say(f'  {setting.label}: {report.one_line(entry)} '
               f'({entry["seconds"]:.0f} s)')
  return entries, columns


def _results(config: Any, models, faces, entries, label_source,
             seconds: float) -> dict[str, Any]:
  """What protect.json holds (no key, no key seed)."""
  encoder, evaluator = models['encoder'], models['evaluator']
  generator = models['generator']
  return {
      'config': {
          'schemes': [e['setting'] for e in entries],
          'fmrs': list(config.fmrs), 'images': config.images,
          'targets': config.targets, 'steps': config.steps,
          'attack': config.attack, 'key_unknown': bool(config.key_unknown),
          'epochs': config.epochs,
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
          'seconds': seconds,
          'device': str(jax.devices()[0].device_kind),
          'versions': {'python': platform.python_version(),
                       'jax': jax.__version__, 'numpy': np.__version__},
      },
  }


def run(config: Any) -> dict[str, Any]:
  """Runs the comparison; returns what ``protect.json`` holds."""
  started = time.time()
  models = _load(config)
  faces = faces_lib.read_aligned(_aligned_folder(config),
                                 max_images=config.images, seed=config.seed)
  if len(faces) < 4:
    raise errors.BadInputError(
        f'only {len(faces)} usable face(s) in {config.data}: '
        'at least 4 are needed (2 people, train and test)')
  common.say(f'{len(faces)} faces; encoder {models["encoder"].kind}; '
             f'verifier {models["evaluator"].kind}; '
             f'{len(models["settings"])} settings')
  attributes, label_source = _labels(config, faces, models['nets'])
  ctx = _context(config, models, faces, attributes)
  entries, columns = _measure_all(config, ctx, models['settings'])
  results = _results(config, models, faces, entries, label_source,
                     time.time() - started)
  grid = (evaluation_report.comparison_grid(
      faces.images[ctx.attack_set.rows], columns, rows=8, cell=96)
          if columns else None)
  paths = report.write(config.workdir, results, grid=grid)
  common.say(f'protect: {paths["html"]} ({time.time() - started:.0f} s)')
  return results
