"""``id2image leakage``: heads trained on descriptors, and the Table-1 report.

Reads the descriptor files of `id2image embed`, trains the attribute,
histogram and landmark heads per encoder (`analysis.leakage`), the
image-based rows, and writes the report (`reports.leakage`) and the heads
(``heads/<encoder>/<head>``, loaded by `loading.load_head`). Config:
configs/leakage.py. `run` reads as its phases, each a function below it in
call order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from id2image_jax import data as data_lib
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax.analysis import leakage
from id2image_jax.analysis import probe
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import descriptors
from id2image_jax.data import pipeline
from id2image_jax.jobs import common
from id2image_jax.reports import leakage as report


def run(config: Any) -> dict[str, Any]:
  """Trains the heads and writes the Table-1 report (configs/leakage.py).

  Writes into ``config.workdir``: ``leakage.md``, ``leakage.json``,
  ``figures/*.png`` and the trained heads under ``heads/<row>/<head>``
  (restore with `loading.load_head`).

  Args:
    config: see configs/leakage.py.

  Returns:
    The results dict written to ``leakage.json``.
  """
  job = _settings(config)
  # The image data first: a missing dataset should fail before hours of
  # head training, not after.
  image_sources, notes = _image_sources(job)
  rows, details, trained_heads, first = {}, {}, {}, None
  for e, encoder in enumerate(job.encoders):
    train, test = _descriptors(job, encoder)
    first = first or (train, test)
    details[encoder], trained = _descriptor_row(
        jax.random.fold_in(job.key, e), job, train, test,
        _validation(job, encoder))
    rows.update(report.descriptor_rows(encoder, details[encoder]))
    trained_heads[encoder] = trained
    _save_heads(job, encoder, trained, train)
  # Every row is tested on the same images: the first encoder's
  # descriptors serve the image row, the figures and the baselines.
  train, test = first
  image_row, image_notes = _image_row(job, image_sources, train, test,
                                      details)
  results = {
      'table': report.table(job.attribute_names, rows, image_row,
                            _baselines(details[job.encoders[0]])),
      'units': report.UNITS,
      'notes': notes + image_notes,
      'details': details,
      'figures': _figures(job.cfg, image_sources, job.test_split, test,
                          trained_heads, job.workdir),
      'config': job.cfg,
  }
  report.write(results, job.workdir)
  return results


@dataclasses.dataclass(frozen=True)
class _Settings:
  """The config of one leakage run, read once (`_settings`).

  Attributes:
    cfg: the whole config as a plain dict (written into the results).
    key: the run's PRNG key.
    encoders: one Table-1 row each.
    train_splits: the splits the heads train on.
    test_split: the split they are tested on.
    attribute_names: the attributes predicted ([] when disabled).
  """
  cfg: dict[str, Any]
  key: jax.Array
  encoders: list[str]
  train_splits: list[str]
  test_split: str
  attribute_names: list[str]

  @property
  def workdir(self) -> str:
    return self.cfg['workdir']

  @property
  def progress(self) -> bool:
    return self.cfg['progress']


def _settings(config: Any) -> _Settings:
  cfg = common.plain(config)
  attr_cfg = cfg['attributes']
  attribute_names = (common.names(attr_cfg['names']) if attr_cfg['enabled']
                     else [])
  if attribute_names == ['all']:
    attribute_names = list(data_lib.CELEBA_ATTRIBUTES)
  encoders = common.names(cfg['encoders'])
  if not encoders:
    raise errors.UsageError('config.encoders is empty')
  return _Settings(cfg=cfg, key=jax.random.key(cfg['seed']),
                   encoders=encoders,
                   train_splits=common.names(cfg['train_splits']),
                   test_split=cfg['test_split'],
                   attribute_names=attribute_names)


def _image_sources(job: _Settings
                   ) -> tuple[dict[str, Any] | None, list[str]]:
  """The image data per split (None when not needed or, for the figures
  only, not found), and notes on what is missing."""
  cfg = job.cfg
  img_cfg = cfg['image_baseline']
  need_images = img_cfg['enabled'] or cfg['figures']['images']
  if not (need_images and cfg['data']):
    if img_cfg['enabled']:
      raise errors.UsageError('image_baseline.enabled needs config.data')
    return None, []
  # The figures need the test images only; the image baseline all splits.
  splits = (job.train_splits + [job.test_split] if img_cfg['enabled']
            else [job.test_split])
  try:
    return {s: data_lib.from_config({**cfg['data'], 'split': s})
            for s in splits}, []
  except pipeline.DataNotFoundError:
    if img_cfg['enabled']:
      raise
    return None, ['figures drawn without images: the image data was not '
                  'found']


def _descriptors(job: _Settings, encoder: str
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(train, test) descriptors of `encoder` (train capped by
  ``max_train_examples``)."""
  train = _limit(_load(job.cfg['descriptors'], encoder, job.train_splits),
                 job.cfg['max_train_examples'])
  test = _load(job.cfg['descriptors'], encoder, [job.test_split])
  return train, test


def _load(pattern: str, encoder: str, splits: Sequence[str]
          ) -> dict[str, Any]:
  paths = [pattern.format(encoder=encoder, split=s) for s in splits]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise errors.MissingInputError(
        f'descriptor file(s) {missing} not found; write them with `id2image '
        f'embed --encoder ... --out {pattern}` (data.split='
        f'{",".join(splits)})')
  return descriptors.load_descriptors(paths)


def _limit(arrays: dict[str, Any], n: int) -> dict[str, Any]:
  if n and len(arrays['descriptor']) > n:
    return leakage.subset(arrays, np.arange(n))
  return arrays


def _validation(job: _Settings, encoder: str) -> leakage.Validation | None:
  """Where each reported head is chosen between the paper's MLP and a
  linear probe: the validation split, never the test split (None: no
  probe, the paper's MLP alone)."""
  cfg = job.cfg['probe']
  if not cfg['enabled']:
    return None
  split = cfg['validation_split']
  fit_splits = [s for s in job.train_splits if s != split]
  if split == job.test_split or not fit_splits:
    raise errors.UsageError(
        f'probe.validation_split={split!r} must be neither the test split '
        f'nor the only training split (train_splits={job.train_splits})')
  # Validation people inside the training splits: the choice trains on
  # the other splits, and the chosen head is then trained on them all.
  fit = (_limit(_load(job.cfg['descriptors'], encoder, fit_splits),
                job.cfg['max_train_examples'])
         if split in job.train_splits else None)
  return leakage.Validation(
      data=_load(job.cfg['descriptors'], encoder, [split]), fit=fit,
      probe=probe.Settings.from_config(cfg))


def _descriptor_row(key: jax.Array, job: _Settings, train: dict[str, Any],
                    test: dict[str, Any],
                    validation: leakage.Validation | None
                    ) -> tuple[dict[str, Any], list[Any]]:
  """One encoder's "From ID" rows: its heads trained, chosen and tested.

  Returns:
    (details: every measure, the paper's trained MLP heads).
  """
  cfg = job.cfg
  det, trained = {}, []
  if job.attribute_names:
    det['attributes'], trained = leakage.attribute_leakage(
        jax.random.fold_in(key, 0), train, test, job.attribute_names,
        leakage.Training.from_config(cfg['attributes']),
        validation=validation, progress=job.progress)
  if cfg['histogram']['enabled']:
    det['histogram'], head = leakage.histogram_leakage(
        jax.random.fold_in(key, 1), train, test,
        leakage.Training.from_config(cfg['histogram']),
        validation=validation, progress=job.progress)
    trained.append(head)
  lm_cfg = cfg['landmarks']
  if lm_cfg['enabled']:
    det['landmarks'], head = leakage.landmark_leakage(
        jax.random.fold_in(key, 2), train, test,
        leakage.Training.from_config(lm_cfg),
        require_detection=bool(lm_cfg['require_detection']),
        pixel_scale=lm_cfg['pixel_scale'], validation=validation,
        progress=job.progress)
    trained.append(head)
  det['num_train'] = int(len(train['descriptor']))
  det['num_validation'] = (int(len(validation.data['descriptor']))
                           if validation else 0)
  det['num_test'] = int(len(test['descriptor']))
  det['descriptor_dim'] = int(train['descriptor'].shape[1])
  return det, trained


def _save_heads(job: _Settings, encoder: str, trained: list[Any],
                train: dict[str, Any]) -> None:
  for head in trained:
    loading.save_head(os.path.join(job.workdir, 'heads', encoder, head.name),
                      head.params, dict(head.config, encoder=encoder),
                      source=f'trained on {train["meta"]["files"]}')


def _baselines(details: dict[str, Any]) -> dict[str, Any]:
  """The Baseline row. Labels come from the same images whichever the
  encoder: one encoder's baselines stand for all."""
  return {
      'attributes': {n: r['baseline'] for n, r in
                     details.get('attributes', {}).items()},
      'landmarks': details.get('landmarks', {}).get('baseline'),
      'histogram': details.get('histogram', {}).get('baseline'),
  }


def _image_row(job: _Settings, image_sources, train: dict[str, Any],
               test: dict[str, Any], details: dict[str, Any]
               ) -> tuple[dict[str, Any], list[str]]:
  """The "From image" row (its CNNs when enabled) and notes on it."""
  cfg = job.cfg
  img_cfg = cfg['image_baseline']
  row = {'histogram': 0.0 if cfg['histogram']['enabled'] else None}
  notes = ['From image, histogram: computed exactly from the image '
           '(EMD 0), as in the paper.']
  if img_cfg['enabled']:
    try:
      row.update(_image_rows(
          jax.random.fold_in(job.key, 1000), cfg, image_sources, train, test,
          job.attribute_names, details, job.workdir, job.progress))
    except train_lib.TrainingDiverged as e:
      # The descriptor rows are done and still worth writing.
      notes.append(f'From image: not reported, its CNN diverged: {e}.')
  else:
    notes.append('From image: image baselines disabled '
                 '(image_baseline.enabled=False).')
  if job.attribute_names and not (img_cfg['enabled'] and
                                  img_cfg['attributes']):
    notes.append('From image, attributes: n/a (no image->attribute network '
                 'trained; set image_baseline.attributes=True for a CNN '
                 'baseline). The paper quotes [20]: 92 / 99 / 99 %.')
  return row, notes


def _image_rows(key, cfg, sources, train, test, attribute_names, details,
                workdir, progress) -> dict[str, Any]:
  """The "From image" row: landmark CNN (and optional attribute CNN)."""
  img_cfg = cfg['image_baseline']
  training = leakage.ImageTraining.from_config(
      {**img_cfg, 'seed': cfg['seed']})
  train_splits = common.names(cfg['train_splits'])
  # One source over all training splits, keyed like the descriptors.
  train_src = pipeline.concat_sources([sources[s] for s in train_splits])
  test_src = sources[cfg['test_split']]
  row = {}
  if img_cfg['landmarks'] and cfg['landmarks']['enabled']:
    req = bool(cfg['landmarks']['require_detection'])
    tr = leakage.landmark_rows(train, req)
    te = leakage.landmark_rows(test, req)
    head = leakage.image_head(
        jax.random.fold_in(key, 0), 'landmarks_cnn', train_src, test_src,
        train['landmarks68'][tr].astype(np.float32), train['key'][tr],
        test['key'][te], training,
        pixel_scale=cfg['landmarks']['pixel_scale'], progress=progress)
    nme = leakage.nme_percent(head.test_pred, test['landmarks68'][te],
                              leakage.image_scale(test))
    row['landmarks'] = nme
    details['image'] = {'landmarks': {'nme': nme, 'num_train': len(tr),
                                      'num_test': len(te)}}
    loading.save_head(os.path.join(workdir, 'heads', 'image', head.name),
                      head.params, head.config)
  if img_cfg['attributes'] and attribute_names:
    y_train = np.stack([leakage.attribute_labels(train, n)
                        for n in attribute_names], -1).astype(np.float32)
    y_test = np.stack([leakage.attribute_labels(test, n)
                       for n in attribute_names], -1)
    head = leakage.image_head(
        jax.random.fold_in(key, 1), 'attribute_cnn', train_src, test_src,
        y_train, train['key'], test['key'], training, progress=progress)
    acc = 100 * ((head.test_pred > 0.5) == y_test).mean(0)
    row['attributes'] = {n: float(a) for n, a in zip(attribute_names, acc)}
    details.setdefault('image', {})['attributes'] = row['attributes']
    loading.save_head(os.path.join(workdir, 'heads', 'image', head.name),
                      head.params, dict(head.config,
                                        attributes=attribute_names))
  return row


def _figures(cfg, sources, test_split, test, trained_heads, workdir
             ) -> dict[str, str]:
  """Fig. 3 for the first encoder: landmark overlays and histograms."""
  k = cfg['figures']['num_examples']
  if k <= 0 or not trained_heads:
    return {}
  encoder, heads_ = next(iter(trained_heads.items()))
  by_name = {h.name: h for h in heads_}
  figures = {}
  fig_dir = os.path.join(workdir, 'figures')
  if 'landmarks' in by_name:
    head = by_name['landmarks']
    rows = head.test_rows[:k]
    keys = test['key'][rows]
    images = _images_for(sources, test_split, keys)
    size = test['meta'].get('image_size') or [1, 1]
    figures['Landmarks from ID (top: dlib, bottom: predicted)'] = (
        os.path.relpath(report.landmark_figure(
            os.path.join(fig_dir, f'landmarks_{encoder}.png'), images,
            test['landmarks68'][rows], head.test_pred[:k], image_size=size,
            titles=list(keys)), workdir))
  if 'histogram' in by_name:
    head = by_name['histogram']
    figures['Histograms from ID (dotted: image, solid: predicted)'] = (
        os.path.relpath(report.histogram_figure(
            os.path.join(fig_dir, f'histograms_{encoder}.png'),
            test['histogram'][:k], head.test_pred[:k],
            titles=list(test['key'][:k])), workdir))
  return figures


def _images_for(sources, split, keys) -> np.ndarray | None:
  if not sources or split not in sources:
    return None
  src = pipeline.with_labels(sources[split], keys, {})
  found = {}
  for b in pipeline.batches(src, len(keys)):
    for key, image, ok in zip(b[pipeline.KEY], b[pipeline.IMAGE],
                              b[pipeline.VALID]):
      if ok:
        found[key] = image
  if len(found) != len(keys):
    return None
  return np.stack([found[k] for k in keys])
