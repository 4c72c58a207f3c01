"""The ``id2image embed`` and ``id2image leakage`` jobs.

``run_embed(config)`` writes descriptor datasets (configs/embed.py);
``run_leakage(config)`` trains the heads on them and writes the Table-1
report (configs/leakage.py). Both take an ``ml_collections.ConfigDict``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import data as data_lib
from id2image_jax.analysis import embed as embed_lib
from id2image_jax.analysis import landmarks
from id2image_jax.analysis import leakage
from id2image_jax.analysis import report
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import pipeline

log = logging.getLogger(__name__)


def _names(value: str | Sequence[str]) -> list[str]:
  """'a,b' or ('a', 'b') -> ['a', 'b']."""
  if isinstance(value, str):
    return [v.strip() for v in value.split(',') if v.strip()]
  return [str(v) for v in value]


def _plain(config: Any) -> dict[str, Any]:
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def _encoder_name(config: Mapping[str, Any]) -> str:
  name = config.get('encoder_name')
  if name:
    return name
  # 'vggface2:/w/resnet50_ft_weight.pkl' -> 'resnet50_ft_weight'; a
  # converted directory keeps its name; 'dlib' stays 'dlib'.
  path = str(config['encoder']).rpartition(':')[2]
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def run_embed(config: Any, *, embed_fn: embed_lib.EmbedFn | None = None,
              landmarker: Any = None) -> list[str]:
  """Embeds the configured dataset splits (configs/embed.py).

  Args:
    config: fields ``encoder`` (converted checkpoint dir), ``encoder_name``
      (for ``out``; default the dir's name), ``crop``, ``data`` (a
      `data.from_config` dict; ``data.split`` may list several splits,
      comma-separated), ``out`` (pattern with ``{encoder}`` and
      ``{split}``), ``batch_size``, ``image_size``, ``histogram_bins``,
      ``landmarks`` (``enabled``, ``face_box``, ``upsample``,
      ``num_workers``), ``save_every``, ``progress``, ``overwrite``.
    embed_fn: use this instead of loading ``config.encoder``.
    landmarker: use this instead of dlib (tests, other labellers).

  Returns:
    The written ``.npz`` paths, one per split.
  """
  cfg = _plain(config)
  if embed_fn is None:
    if not cfg.get('encoder'):
      raise ValueError('set config.encoder (--encoder): dlib, a public '
                       'encoder checkpoint file, KIND:PATH or a converted '
                       'checkpoint directory')
    embed_fn = embed_lib.load_encoder(
        cfg['encoder'], crop=tuple(cfg.get('crop') or (0, 0, 1, 1)),
        dtype=jnp.dtype(cfg.get('dtype') or 'float32'))
  name = _encoder_name(cfg)
  lm = cfg.get('landmarks') or {}
  own_landmarker = landmarker is None and lm.get('enabled', False)
  if own_landmarker:
    landmarker = landmarks.Dlib68(
        face_box=lm.get('face_box', 'detector'),
        upsample=int(lm.get('upsample', 1)),
        num_workers=int(lm.get('num_workers', 0)))
  image_size = cfg.get('image_size')
  batch_size = int(cfg['batch_size'])
  paths = []
  try:
    for split in _names(cfg['data'].get('split') or 'test'):
      source = data_lib.from_config({**cfg['data'], 'split': split})
      out = cfg['out'].format(encoder=name, split=split)
      log.info('embedding %s (%d images) -> %s', source.name,
               source.num_examples, out)
      paths.append(embed_lib.embed_dataset(
          embed_fn, source, out, batch_size=batch_size,
          sharding=batch_sharding(batch_size),
          image_size=tuple(image_size) if image_size else None,
          histogram_bins=int(cfg.get('histogram_bins', 10)),
          landmarker=landmarker, save_every=int(cfg.get('save_every', 50)),
          progress=bool(cfg.get('progress', True)),
          overwrite=bool(cfg.get('overwrite', False)),
          meta={'encoder': name, 'encoder_path': str(cfg.get('encoder'))}))
  finally:
    if own_landmarker:
      landmarker.close()
  return paths


def batch_sharding(batch_size: int) -> jax.sharding.Sharding | None:
  """Splits batches over all local devices (data parallel), if several.

  Returns:
    A ``NamedSharding`` over the leading axis, or None on one device or when
    `batch_size` does not divide evenly.
  """
  devices = jax.local_devices()
  if len(devices) < 2:
    return None
  if batch_size % len(devices):
    log.warning('batch_size %d is not a multiple of the %d devices: using '
                'one device', batch_size, len(devices))
    return None
  mesh = jax.sharding.Mesh(np.asarray(devices), ('batch',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('batch'))


def _load(pattern: str, encoder: str, splits: Sequence[str]
          ) -> dict[str, Any]:
  paths = [pattern.format(encoder=encoder, split=s) for s in splits]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
        f'descriptor file(s) {missing} not found; write them with `id2image '
        f'embed --encoder ... --out {pattern}` (data.split='
        f'{",".join(splits)})')
  return embed_lib.load_descriptors(paths)


def _limit(arrays: dict[str, Any], n: int) -> dict[str, Any]:
  if n and len(arrays['descriptor']) > n:
    return leakage.subset(arrays, np.arange(n))
  return arrays


def run_leakage(config: Any) -> dict[str, Any]:
  """Trains the heads and writes the Table-1 report (configs/leakage.py).

  Writes into ``config.workdir``: ``leakage.md``, ``leakage.json``,
  ``figures/*.png`` and the trained heads under ``heads/<row>/<head>``
  (restore with `train.load_head`).

  Args:
    config: see configs/leakage.py.

  Returns:
    The results dict written to ``leakage.json``.
  """
  cfg = _plain(config)
  workdir = cfg['workdir']
  key = jax.random.key(int(cfg.get('seed', 0)))
  progress = bool(cfg.get('progress', False))
  encoders = _names(cfg['encoders'])
  train_splits = _names(cfg['train_splits'])
  test_split = cfg['test_split']
  attr_cfg, hist_cfg, lm_cfg = (cfg['attributes'], cfg['histogram'],
                                cfg['landmarks'])
  attribute_names = _names(attr_cfg['names']) if attr_cfg['enabled'] else []
  img_cfg = cfg['image_baseline']
  notes = []

  # Check the image data first: a missing dataset should fail before hours
  # of head training, not after.
  image_sources = None
  fig_cfg = cfg.get('figures') or {}
  need_images = img_cfg['enabled'] or fig_cfg.get('images', True)
  if need_images and cfg.get('data'):
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
    raise ValueError('image_baseline.enabled needs config.data')

  rows, details, trained_heads, first = {}, {}, {}, None
  for e, encoder in enumerate(encoders):
    ekey = jax.random.fold_in(key, e)
    train = _limit(_load(cfg['descriptors'], encoder, train_splits),
                   int(cfg.get('max_train_examples') or 0))
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
          pixel_scale=float(lm_cfg.get('pixel_scale', 1.0)),
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
      train_lib.save_head(os.path.join(workdir, 'heads', encoder, head.name),
                          head.params, dict(head.config, encoder=encoder),
                          source=f'trained on {train["meta"]["files"]}')

  if first is None:
    raise ValueError('config.encoders is empty')
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
    image_row.update(_image_rows(
        jax.random.fold_in(key, 1000), cfg, image_sources, train, test,
        attribute_names, details, workdir, progress))
  else:
    notes.append('From image: image baselines disabled '
                 '(image_baseline.enabled=False).')
  if attribute_names and not (img_cfg['enabled'] and
                              img_cfg.get('attributes')):
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
  train_splits = _names(cfg['train_splits'])
  # One source over all training splits, keyed like the descriptors.
  train_src = _concat_sources([sources[s] for s in train_splits])
  test_src = sources[cfg['test_split']]
  row = {}
  common = dict(channels=tuple(img_cfg['channels']),
                input_size=tuple(img_cfg['input_size']),
                shuffle_buffer=int(img_cfg.get('shuffle_buffer', 10_000)),
                seed=int(cfg.get('seed', 0)),
                cache=bool(img_cfg.get('cache_images', False)),
                progress=progress)
  if img_cfg.get('landmarks', True) and cfg['landmarks']['enabled']:
    req = bool(cfg['landmarks']['require_detection'])
    tr = leakage.landmark_rows(train, req)
    te = leakage.landmark_rows(test, req)
    head = leakage.image_head(
        jax.random.fold_in(key, 0), 'landmarks_cnn', train_src, test_src,
        train['landmarks68'][tr].astype(np.float32), train['key'][tr],
        test['key'][te], training, out_shape=(68, 2),
        pixel_scale=float(cfg['landmarks'].get('pixel_scale', 1.0)),
        **common)
    nme = leakage.nme_percent(head.test_pred, test['landmarks68'][te],
                              leakage.image_scale(test))
    row['landmarks'] = nme
    details['image'] = {'landmarks': {'nme': nme, 'num_train': len(tr),
                                      'num_test': len(te)}}
    train_lib.save_head(os.path.join(workdir, 'heads', 'image', head.name),
                        head.params, head.config)
  if img_cfg.get('attributes') and attribute_names:
    y_train = np.stack([leakage.attribute_labels(train, n)
                        for n in attribute_names], -1).astype(np.float32)
    y_test = np.stack([leakage.attribute_labels(test, n)
                       for n in attribute_names], -1)
    head = leakage.image_head(
        jax.random.fold_in(key, 1), 'attribute_cnn', train_src, test_src,
        y_train, train['key'], test['key'], training,
        out_shape=(len(attribute_names),), **common)
    acc = 100 * ((head.test_pred > 0.5) == y_test).mean(0)
    row['attributes'] = {n: float(a) for n, a in zip(attribute_names, acc)}
    details.setdefault('image', {})['attributes'] = row['attributes']
    train_lib.save_head(os.path.join(workdir, 'heads', 'image', head.name),
                        head.params, dict(head.config,
                                          attributes=attribute_names))
  return row


def _concat_sources(sources: Sequence[pipeline.Source]) -> pipeline.Source:
  if len(sources) == 1:
    return sources[0]

  def make_dataset(start: int):
    ds = sources[0].make_dataset(0)
    for s in sources[1:]:
      ds = ds.concatenate(s.make_dataset(0))
    return ds.skip(start)

  return pipeline.Source(name='+'.join(s.name for s in sources),
                         num_examples=sum(s.num_examples for s in sources),
                         make_dataset=make_dataset, info=sources[0].info)


def _figures(cfg, sources, test_split, test, trained_heads, workdir
             ) -> dict[str, str]:
  """Fig. 3 for the first encoder: landmark overlays and histograms."""
  k = int((cfg.get('figures') or {}).get('num_examples', 6))
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

