"""``id2image leakage``: heads trained on descriptors, and the Table-1 report.

Reads the descriptor files of `id2image embed`, trains the attribute,
histogram and landmark heads per encoder (`analysis.leakage`), the
image-based rows, and writes the report (`reports.leakage`) and the heads
(``heads/<encoder>/<head>``, loaded by `loading.load_head`). Config:
configs/leakage.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from id2image_jax import data as data_lib
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax.analysis import leakage
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import descriptors
from id2image_jax.data import pipeline
from id2image_jax.jobs import common
from id2image_jax.reports import leakage as report


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
  cfg = common.plain(config)
  workdir = cfg['workdir']
  key = jax.random.key(cfg['seed'])
  progress = cfg['progress']
  encoders = common.names(cfg['encoders'])
  train_splits = common.names(cfg['train_splits'])
  test_split = cfg['test_split']
  attr_cfg, hist_cfg, lm_cfg = (cfg['attributes'], cfg['histogram'],
                                cfg['landmarks'])
  attribute_names = (common.names(attr_cfg['names']) if attr_cfg['enabled']
                     else [])
  if attribute_names == ['all']:
    attribute_names = list(data_lib.CELEBA_ATTRIBUTES)
  img_cfg = cfg['image_baseline']
  notes = []

  # Check the image data first: a missing dataset should fail before hours
  # of head training, not after.
  image_sources = None
  fig_cfg = cfg['figures']
  need_images = img_cfg['enabled'] or fig_cfg['images']
  if need_images and cfg['data']:
    # The figures need the test images only; the image baseline all splits.
    splits = train_splits + [test_split] if img_cfg['enabled'] else [
        test_split]
    try:
      image_sources = {
          s: data_lib.from_config({**cfg['data'], 'split': s})
          for s in splits}
    except pipeline.DataNotFoundError:
      if img_cfg['enabled']:
        raise
      notes.append('figures drawn without images: the image data was not '
                   'found')
  elif img_cfg['enabled']:
    raise errors.UsageError('image_baseline.enabled needs config.data')

  rows, details, trained_heads, first = {}, {}, {}, None
  for e, encoder in enumerate(encoders):
    ekey = jax.random.fold_in(key, e)
    train = _limit(_load(cfg['descriptors'], encoder, train_splits),
                   cfg['max_train_examples'])
    test = _load(cfg['descriptors'], encoder, [test_split])
    first = first or (train, test)
    row, det, trained = {}, {}, []
    if attribute_names:
      res, heads_ = leakage.attribute_leakage(
          jax.random.fold_in(ekey, 0), train, test, attribute_names,
          leakage.Training.from_config(attr_cfg), progress=progress)
      row['attributes'] = {n: r['accuracy'] for n, r in res.items()}
      det['attributes'], trained = res, trained + heads_
    if hist_cfg['enabled']:
      res, head = leakage.histogram_leakage(
          jax.random.fold_in(ekey, 1), train, test,
          leakage.Training.from_config(hist_cfg), progress=progress)
      row['histogram'], det['histogram'] = res['emd'], res
      trained.append(head)
    if lm_cfg['enabled']:
      res, head = leakage.landmark_leakage(
          jax.random.fold_in(ekey, 2), train, test,
          leakage.Training.from_config(lm_cfg),
          require_detection=bool(lm_cfg['require_detection']),
          pixel_scale=lm_cfg['pixel_scale'],
          progress=progress)
      row['landmarks'], det['landmarks'] = res['nme'], res
      trained.append(head)
    det['num_train'] = int(len(train['descriptor']))
    det['num_test'] = int(len(test['descriptor']))
    det['descriptor_dim'] = int(train['descriptor'].shape[1])
    label = f'From ID ({encoder})'
    rows[label], details[encoder] = row, det
    trained_heads[encoder] = trained
    for head in trained:
      loading.save_head(os.path.join(workdir, 'heads', encoder, head.name),
                        head.params, dict(head.config, encoder=encoder),
                        source=f'trained on {train["meta"]["files"]}')

  if first is None:
    raise errors.UsageError('config.encoders is empty')
  # Labels come from the same images whichever the encoder: the first
  # encoder's baselines stand for all.
  d = details[encoders[0]]
  baseline = {
      'attributes': {n: r['baseline'] for n, r in
                     d.get('attributes', {}).items()},
      'landmarks': d.get('landmarks', {}).get('baseline'),
      'histogram': d.get('histogram', {}).get('baseline'),
  }
  image_row = {'histogram': 0.0 if hist_cfg['enabled'] else None}
  notes.append('From image, histogram: computed exactly from the image '
               '(EMD 0), as in the paper.')
  train, test = first
  if img_cfg['enabled']:
    try:
      image_row.update(_image_rows(
          jax.random.fold_in(key, 1000), cfg, image_sources, train, test,
          attribute_names, details, workdir, progress))
    except train_lib.TrainingDiverged as e:
      # The descriptor rows are done and still worth writing.
      notes.append(f'From image: not reported, its CNN diverged: {e}.')
  else:
    notes.append('From image: image baselines disabled '
                 '(image_baseline.enabled=False).')
  if attribute_names and not (img_cfg['enabled'] and
                              img_cfg['attributes']):
    notes.append('From image, attributes: n/a (no image->attribute network '
                 'trained; set image_baseline.attributes=True for a CNN '
                 'baseline). The paper quotes [20]: 92 / 99 / 99 %.')

  figures = _figures(cfg, image_sources, test_split, first[1],
                     trained_heads, workdir)
  results = {
      'table': report.table(attribute_names, rows, image_row, baseline),
      'units': report.UNITS,
      'notes': notes,
      'details': details,
      'figures': figures,
      'config': cfg,
  }
  report.write(results, workdir)
  return results


def _image_rows(key, cfg, sources, train, test, attribute_names, details,
                workdir, progress) -> dict[str, Any]:
  """The "From image" row: landmark CNN (and optional attribute CNN)."""
  img_cfg = cfg['image_baseline']
  training = leakage.Training.from_config(img_cfg)
  train_splits = common.names(cfg['train_splits'])
  # One source over all training splits, keyed like the descriptors.
  train_src = pipeline.concat_sources([sources[s] for s in train_splits])
  test_src = sources[cfg['test_split']]
  row = {}
  shared = dict(channels=tuple(img_cfg['channels']),
                input_size=tuple(img_cfg['input_size']),
                shuffle_buffer=img_cfg['shuffle_buffer'],
                seed=cfg['seed'],
                cache=img_cfg['cache_images'],
                progress=progress)
  if img_cfg['landmarks'] and cfg['landmarks']['enabled']:
    req = bool(cfg['landmarks']['require_detection'])
    tr = leakage.landmark_rows(train, req)
    te = leakage.landmark_rows(test, req)
    head = leakage.image_head(
        jax.random.fold_in(key, 0), 'landmarks_cnn', train_src, test_src,
        train['landmarks68'][tr].astype(np.float32), train['key'][tr],
        test['key'][te], training, out_shape=(68, 2),
        pixel_scale=cfg['landmarks']['pixel_scale'],
        **shared)
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
        y_train, train['key'], test['key'], training,
        out_shape=(len(attribute_names),), **shared)
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
