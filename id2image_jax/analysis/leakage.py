"""Non-ID leakage (paper section 3): what heads recover from descriptors.

Each function trains a head on training descriptors (or images, for the
"from image" row), evaluates it on test descriptors and computes the trivial
baseline of Table 1 from the training labels:

* attributes: accuracy (%) vs. always predicting the training majority class;
* landmarks: mean point error as % of the interocular distance (outer eye
  corners, points 36 and 45) vs. the mean training landmarks;
* histogram: 1-D earth mover's distance per channel (in bins), summed over
  R, G, B, vs. the mean training histogram.

Given a `Validation` split, each descriptor head is also fitted as a linear
probe (`probe`: logistic regression for attributes, ridge regression for
landmarks and histograms, on standardised descriptors) and the better of
the paper's MLP and the probe on validation gives the reported figures: the
paper's heads alone can understate what a descriptor gives away (issue 19).
The test data never takes part in the choice.

Inputs are descriptor dicts from `embed.load_descriptors`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from id2image_jax import fields
from id2image_jax import metrics
from id2image_jax.analysis import probe as probe_lib
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import pipeline
from id2image_jax.models import heads


@dataclasses.dataclass(frozen=True)
class Training:
  """How one head is trained (the paper's values live in configs/)."""
  hidden: tuple[int, ...]
  optimizer: str = 'adam'
  learning_rate: float = 1e-3
  batch_size: int = 256
  num_epochs: int = 20
  input_norm: str = 'l2'

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Training:
    kwargs = fields.known_fields(cls, config)
    if 'hidden' in kwargs:
      kwargs['hidden'] = tuple(int(h) for h in kwargs['hidden'])
    return cls(**kwargs)

  def tx(self) -> optax.GradientTransformation:
    return train_lib.optimizer(self.optimizer, self.learning_rate)


@dataclasses.dataclass(frozen=True)
class ImageTraining(Training):
  """How an image CNN is trained (`image_head`): `Training` (``hidden`` is
  one int: the FC width), and how it reads its images.

  Attributes:
    channels: conv widths.
    input_size: (height, width) the CNN runs at.
    shuffle_buffer: tf.data shuffle buffer (decoded images).
    seed: shuffle seed (tf.data's order is seeded, not keyed).
    cache_images: keep decoded training images in host memory across
      epochs.
  """
  channels: tuple[int, ...] = (32, 64, 128, 256, 256)
  input_size: tuple[int, int] = (128, 128)
  shuffle_buffer: int = 10_000
  seed: int = 0
  cache_images: bool = False

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> ImageTraining:
    training = super().from_config(config)
    return dataclasses.replace(training, channels=tuple(training.channels),
                               input_size=tuple(training.input_size))


@dataclasses.dataclass
class Trained:
  """A trained head: what to save and what it predicted on the test set."""
  name: str
  config: dict[str, Any]
  params: Any
  test_pred: np.ndarray
  history: train_lib.History
  # Rows of the test descriptors that `test_pred` belongs to (None: all).
  test_rows: np.ndarray | None = None


def subset(arrays: Mapping[str, Any], rows: np.ndarray) -> dict[str, Any]:
  """Rows of every array of a descriptor dict (``meta`` passes through)."""
  return {k: (v[rows] if isinstance(v, np.ndarray) else v)
          for k, v in arrays.items()}


def image_scale(arrays: Mapping[str, Any]) -> tuple[float, float]:
  """(width, height) of the embedded images, to measure landmark errors in
  pixels (CelebA's 178x218 crops are not square)."""
  size = arrays['meta'].get('image_size')
  if not size:
    return (1.0, 1.0)
  return (float(size[1]), float(size[0]))


def attribute_labels(arrays: Mapping[str, Any], name: str) -> np.ndarray:
  """bool [N] labels of one attribute.

  Looked up as a column of its own (e.g. from a folder's CSV) or by name in
  the ``attributes`` matrix (CelebA's 40, names in the metadata).
  """
  if name in arrays and isinstance(arrays[name], np.ndarray):
    values = arrays[name]
  else:
    names = arrays['meta'].get('source_info', {}).get('attribute_names')
    if names is None or name not in names or 'attributes' not in arrays:
      raise KeyError(f'no attribute {name!r} in the descriptors (known: '
                     f'{names})')
    values = arrays['attributes'][:, list(names).index(name)]
  if values.dtype.kind not in 'biuf':
    raise ValueError(f'attribute {name!r} is not numeric ({values.dtype})')
  return values > 0


def bootstrap_ci(values: np.ndarray, *, groups: np.ndarray | None = None,
                 num: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
  """Confidence interval of a mean by resampling whole groups.

  Test images of one person are not independent, so the bootstrap draws
  identities (with replacement) and keeps all their images.

  Args:
    values: [N] per-example values (e.g. 1/0 correct, or a gain).
    groups: [N] group (identity) of each example; None: every example is
      its own group.
    num: bootstrap resamples.
    level: coverage of the percentile interval.
    seed: resampling seed.

  Returns:
    (low, high) percentiles of the resampled means.
  """
  values = np.asarray(values, np.float64)
  if groups is None:
    groups = np.arange(len(values))
  _, inverse = np.unique(np.asarray(groups), return_inverse=True)
  sums = np.bincount(inverse, weights=values)
  counts = np.bincount(inverse).astype(np.float64)
  draw = np.random.default_rng(seed).integers(0, len(sums),
                                              (num, len(sums)))
  means = sums[draw].sum(1) / counts[draw].sum(1)
  tail = (1 - level) / 2 * 100
  lo, hi = np.percentile(means, [tail, 100 - tail])
  return float(lo), float(hi)


def _identities(arrays: Mapping[str, Any]) -> np.ndarray | None:
  ids = arrays.get('identity')
  return ids if isinstance(ids, np.ndarray) else None


# ----------------------------------------------------------------------------
# The paper's MLP or a linear probe: the better one on validation.


@dataclasses.dataclass(frozen=True)
class Validation:
  """How the reported head is chosen, never on the test data.

  The paper's MLP and a linear probe (`probe.fit`, each L2 strength of the
  grid) are trained on `fit` and scored on `data`, descriptors of other
  people; the probe's strength and then the better of the two are chosen
  there (a tie keeps the paper's MLP). The chosen one, trained on the
  training data as the paper's MLP is, gives the reported figures; the
  paper's MLP keeps its own.

  Attributes:
    data: validation descriptors (people in neither `fit` nor the test).
    fit: descriptors the candidates train on for the choice; None: the
      training data itself (the validation people are not in it), and then
      the choice's fits are the reported ones.
    probe: the linear probe's grid and optimiser limits.
  """
  data: Mapping[str, Any]
  fit: Mapping[str, Any] | None = None
  probe: probe_lib.Settings = probe_lib.Settings()


@dataclasses.dataclass(frozen=True)
class _Task:
  """What the choice needs to know of one head.

  Attributes:
    rows: usable rows of a descriptor dict.
    targets: float targets [n, *out_shape] of those rows.
    train_mlp: ``(key, descriptors, targets) -> predict``: the paper's MLP
      trained, as a function of descriptors.
    probe: the linear probe's kind.
    score: ``(predictions, arrays, rows) -> tuple``, larger is better,
      compared in order (its first entry is the reported metric, with
      `sign`).
    sign: +1 where the metric is a score, -1 where it is an error.
  """
  rows: Callable[[Mapping[str, Any]], np.ndarray]
  targets: Callable[[Mapping[str, Any], np.ndarray], np.ndarray]
  train_mlp: Callable[[jax.Array, np.ndarray, np.ndarray],
                      Callable[[np.ndarray], np.ndarray]]
  probe: probe_lib.Kind
  score: Callable[[np.ndarray, Mapping[str, Any], np.ndarray], tuple]
  sign: float = 1.0


def _choose(key: jax.Array, task: _Task, train: Mapping[str, Any],
            validation: Validation,
            mlp: Callable[[np.ndarray], np.ndarray]
            ) -> tuple[dict[str, Any], probe_lib.Linear]:
  """The better of the paper's MLP and a linear probe on validation.

  Args:
    key: for the MLP trained on ``validation.fit``.
    task: the head.
    train: the training descriptors (of the reported heads).
    validation: where the choice is made.
    mlp: the paper's MLP trained on `train` (scored when ``validation.fit``
      is None).

  Returns:
    ({'head': 'mlp' | 'linear', 'l2', 'mlp', 'linear', 'linear_by_l2',
    'num'}: the choice, the probe's strength and both validation metrics,
    the probe's per strength, and the validation rows; the probe trained
    on `train` at that strength).
  """
  fit = train if validation.fit is None else validation.fit
  fit_rows, val_rows = task.rows(fit), task.rows(validation.data)
  if not len(fit_rows) or not len(val_rows):
    raise ValueError(f'no rows to choose the head on ({len(fit_rows)} to '
                     f'fit, {len(val_rows)} to validate)')
  x_fit, y_fit = fit['descriptor'][fit_rows], task.targets(fit, fit_rows)
  x_val = validation.data['descriptor'][val_rows]
  if validation.fit is not None:
    mlp = task.train_mlp(key, x_fit, y_fit)
  mlp_score = task.score(mlp(x_val), validation.data, val_rows)
  probes = probe_lib.fit(task.probe, x_fit, y_fit, validation.probe)
  scores = [task.score(p.predict(x_val), validation.data, val_rows)
            for p in probes]
  # Ties go to the stronger L2: the simpler probe.
  best = max(range(len(probes)), key=lambda i: (scores[i], probes[i].l2))
  linear = probes[best]
  if validation.fit is not None:
    rows = task.rows(train)
    linear = probe_lib.fit(task.probe, train['descriptor'][rows],
                           task.targets(train, rows), validation.probe,
                           l2_grid=[linear.l2])[0]
  choice = {
      'head': 'linear' if scores[best] > mlp_score else 'mlp',
      'l2': linear.l2,
      'mlp': task.sign * mlp_score[0],
      'linear': task.sign * scores[best][0],
      'linear_by_l2': {f'{p.l2:g}': task.sign * s[0]
                       for p, s in zip(probes, scores)},
      'num': int(len(val_rows)),
  }
  return choice, linear


def _reported(measures: Mapping[str, dict[str, Any]],
              choice: dict[str, Any] | None) -> dict[str, Any]:
  """The chosen head's test figures at the top, each head's beside them."""
  head = choice['head'] if choice else 'mlp'
  out = {**measures[head], 'head': head, 'mlp': dict(measures['mlp'])}
  if choice:
    out['linear'] = dict(measures['linear'])
    out['validation'] = choice
  return out


def _mlp_trainer(config: Mapping[str, Any], training: Training, *,
                 loss_fn=None, progress: bool = False):
  """``(key, descriptors, targets) -> predict``: the head of `config`."""
  def train_mlp(key, descriptors, targets):
    model, params, _ = train_lib.train_head(
        key, config, descriptors, targets, tx=training.tx(),
        batch_size=training.batch_size, num_epochs=training.num_epochs,
        loss_fn=loss_fn, progress=progress)
    return lambda x: train_lib.predict(model, params, x)
  return train_mlp


def _selection_key(key: jax.Array, i: int) -> jax.Array:
  """The key of the MLP trained for the choice, apart from the reported
  one's ``fold_in(key, i)``."""
  return jax.random.fold_in(jax.random.fold_in(key, i), 1)


def _all_rows(arrays: Mapping[str, Any]) -> np.ndarray:
  return np.arange(len(arrays['descriptor']))


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
  p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(labels, np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _accuracy_score(pred, arrays, rows, *, name):
  """Validation accuracy (%), ties broken by the lower log loss."""
  labels = attribute_labels(arrays, name)[rows]
  probs = np.asarray(pred).reshape(len(rows))
  correct = np.asarray(metrics.binary_accuracy(probs, labels))
  return (100 * float(correct.mean()), -_log_loss(probs, labels))


def _accuracy_measures(probs: np.ndarray, labels: np.ndarray,
                       base: np.ndarray, groups: np.ndarray | None
                       ) -> dict[str, Any]:
  """Test accuracy (%) with its interval and the gain's over `base`."""
  correct = np.asarray(metrics.binary_accuracy(probs, labels), np.float64)
  gain_ci = bootstrap_ci(correct - base, groups=groups)
  return {
      'accuracy': 100 * float(np.mean(correct)),
      'accuracy_ci': [100 * v for v in bootstrap_ci(correct, groups=groups)],
      'gain_ci': [100 * v for v in gain_ci],
      'leaks': bool(gain_ci[0] > 0),
  }


def attribute_leakage(key: jax.Array, train: Mapping[str, Any],
                      test: Mapping[str, Any], names: Sequence[str],
                      training: Training, *,
                      validation: Validation | None = None,
                      progress: bool = False
                      ) -> tuple[dict[str, dict[str, Any]], list[Trained]]:
  """One binary head per attribute (paper 3.1), with majority baselines.

  Args:
    key: a ``jax.random.key``.
    train: training descriptors.
    test: test descriptors.
    names: the attributes (`attribute_labels`).
    training: the paper's MLP's hyper-parameters.
    validation: where the reported head is chosen (`Validation`); None:
      the paper's MLP alone.
    progress: show progress bars.

  Returns:
    ({attribute: {'accuracy', 'baseline', 'positive_rate', 'accuracy_ci',
    'gain_ci', 'leaks', 'head', 'mlp', ('linear', 'validation')}} in %, the
    paper's MLP heads). The top-level figures are the chosen head's
    (``head``: 'mlp' or 'linear'); ``mlp`` and ``linear`` hold each one's;
    ``validation`` the choice (`_choose`). The intervals are 95 %
    bootstraps over test identities (`bootstrap_ci`); ``gain`` is accuracy
    minus the majority baseline on the same images, and ``leaks`` says its
    interval lies above 0.
  """
  groups = _identities(test)
  results, trained = {}, []
  dim = train['descriptor'].shape[1]
  for i, name in enumerate(names):
    y_train = attribute_labels(train, name)
    y_test = attribute_labels(test, name)
    config = heads.head_config(
        'attribute', hidden=training.hidden, input_norm=training.input_norm,
        out_shape=(1,), input_dim=dim, attributes=[name])
    model, params, history = train_lib.train_head(
        jax.random.fold_in(key, i), config, train['descriptor'],
        y_train[:, None].astype(np.float32), tx=training.tx(),
        batch_size=training.batch_size, num_epochs=training.num_epochs,
        progress=progress)
    probs = train_lib.predict(model, params, test['descriptor'])[:, 0]
    majority = bool(y_train.mean() >= 0.5)
    base = (y_test == majority).astype(np.float64)
    measures = {'mlp': _accuracy_measures(probs, y_test, base, groups)}
    choice = None
    if validation is not None:
      choice, linear = _choose(
          _selection_key(key, i), _Task(
              rows=_all_rows,
              targets=lambda a, r, n=name: attribute_labels(a, n)[
                  r, None].astype(np.float32),
              train_mlp=_mlp_trainer(config, training, progress=progress),
              probe='logistic',
              score=functools.partial(_accuracy_score, name=name)),
          train, validation,
          lambda x, m=model, p=params: train_lib.predict(m, p, x))
      measures['linear'] = _accuracy_measures(
          linear.predict(test['descriptor'])[:, 0], y_test, base, groups)
    results[name] = {**_reported(measures, choice),
                     'baseline': 100 * float(np.mean(base)),
                     'positive_rate': 100 * float(y_test.mean())}
    trained.append(Trained(f'attribute_{name}', config, params, probs,
                           history))
  return results, trained


def _emd(pred: np.ndarray, target: np.ndarray
         ) -> tuple[float, list[float], np.ndarray]:
  per_channel = np.asarray(metrics.histogram_emd(
      pred, target, channel_reduction='none'))  # [N, 3], in bins
  return (float(per_channel.sum(-1).mean()),
          [float(v) for v in per_channel.mean(0)], per_channel.sum(-1))


def _error_gain(errors: np.ndarray, baseline: np.ndarray,
                groups: np.ndarray | None) -> dict[str, Any]:
  """Intervals of an error and of its reduction below the baseline's."""
  gain_ci = bootstrap_ci(baseline - errors, groups=groups)
  return {'ci': list(bootstrap_ci(errors, groups=groups)),
          'gain_ci': list(gain_ci), 'leaks': bool(gain_ci[0] > 0)}


def _emd_score(pred, arrays, rows):
  """Minus the validation EMD (larger is better)."""
  return (-_emd(pred, arrays['histogram'][rows])[0],)


def histogram_leakage(key: jax.Array, train: Mapping[str, Any],
                      test: Mapping[str, Any], training: Training, *,
                      validation: Validation | None = None,
                      progress: bool = False
                      ) -> tuple[dict[str, Any], Trained]:
  """Histogram regression (paper 3.2) and the mean-histogram baseline.

  Args:
    key: a ``jax.random.key``.
    train: training descriptors with ``histogram``.
    test: test descriptors with ``histogram``.
    training: the paper's MLP's hyper-parameters.
    validation: where the reported head is chosen (a ridge probe or the
      paper's MLP); None: the paper's MLP alone.
    progress: show a progress bar.

  Returns:
    ({'emd', 'emd_per_channel', 'baseline', 'baseline_per_channel', 'ci',
    'gain_ci', 'leaks', 'head', 'mlp', ('linear', 'validation')}, the
    paper's MLP head); EMD in bins per channel, ``emd`` summed over the
    channels; the chosen head's figures at the top and intervals as in
    `attribute_leakage` (gain: baseline EMD minus the head's). A ridge
    probe's histograms sum to 1 per channel but may have negative bins;
    the EMD of their cumulative sums is still defined.
  """
  target = train['histogram'].astype(np.float32)
  config = heads.head_config(
      'histogram', hidden=training.hidden, input_norm=training.input_norm,
      out_shape=target.shape[1:], input_dim=train['descriptor'].shape[1])
  model, params, history = train_lib.train_head(
      key, config, train['descriptor'], target, tx=training.tx(),
      batch_size=training.batch_size, num_epochs=training.num_epochs,
      progress=progress)
  pred = train_lib.predict(model, params, test['descriptor'])
  mean = np.broadcast_to(target.mean(0), test['histogram'].shape)
  base, base_c, base_each = _emd(mean, test['histogram'])
  groups = _identities(test)

  def measures_of(prediction):
    emd, emd_c, each = _emd(prediction, test['histogram'])
    return {'emd': emd, 'emd_per_channel': emd_c,
            **_error_gain(each, base_each, groups)}

  measures = {'mlp': measures_of(pred)}
  choice = None
  if validation is not None:
    choice, linear = _choose(
        _selection_key(key, 0), _Task(
            rows=_all_rows,
            targets=lambda a, r: a['histogram'][r].astype(np.float32),
            train_mlp=_mlp_trainer(config, training, progress=progress),
            probe='ridge', score=_emd_score, sign=-1.0),
        train, validation, lambda x: train_lib.predict(model, params, x))
    measures['linear'] = measures_of(linear.predict(test['descriptor']))
  return ({**_reported(measures, choice), 'baseline': base,
           'baseline_per_channel': base_c},
          Trained('histogram', config, params, pred, history))


def landmark_rows(arrays: Mapping[str, Any], require_detection: bool
                  ) -> np.ndarray:
  """Indices of rows with usable 68-point labels."""
  if 'landmarks68' not in arrays:
    raise KeyError('the descriptors have no landmarks68 (embed with '
                   'landmarks enabled)')
  ok = np.ones(len(arrays['landmarks68']), bool)
  if require_detection and 'landmarks68_detected' in arrays:
    ok &= arrays['landmarks68_detected']
  return np.flatnonzero(ok)


def nme_percent(pred: np.ndarray, target: np.ndarray,
                scale: tuple[float, float], *, per_example: bool = False
                ) -> float | np.ndarray:
  """Mean (or [N] per-example) landmark NME in % of the interocular
  distance."""
  # Coordinates are fractions of (width, height): scale to pixels first so
  # distances are isotropic on non-square crops.
  s = np.asarray(scale, np.float32)
  each = 100 * np.asarray(metrics.landmark_nme(pred * s, target * s))
  return each if per_example else float(np.mean(each))


def _nme_score(pred, arrays, rows):
  """Minus the validation NME (larger is better)."""
  return (-nme_percent(pred, arrays['landmarks68'][rows],
                       image_scale(arrays)),)


def landmark_leakage(key: jax.Array, train: Mapping[str, Any],
                     test: Mapping[str, Any], training: Training, *,
                     require_detection: bool = True, pixel_scale: float = 1.0,
                     validation: Validation | None = None,
                     progress: bool = False
                     ) -> tuple[dict[str, Any], Trained]:
  """Landmark regression from descriptors (paper 3.3) and the mean baseline.

  Args:
    key: a ``jax.random.key``.
    train: training descriptors with ``landmarks68``.
    test: test descriptors with ``landmarks68``.
    training: hyper-parameters.
    require_detection: leave out images where dlib's detector found no face.
    pixel_scale: the head's last layer works in, and the MSE is measured
      in, pixels of an image this size (`heads.ImageCNN`, `train.scaled`);
      the paper's SGD 1e-3 assumes pixels of 224-pixel images.
    validation: where the reported head is chosen (a ridge probe or the
      paper's MLP); None: the paper's MLP alone.
    progress: show a progress bar.

  Returns:
    ({'nme', 'baseline', 'num_train', 'num_test', 'ci', 'gain_ci',
    'leaks', 'head', 'mlp', ('linear', 'validation')} with NME in % of the
    interocular distance, the chosen head's figures at the top and
    intervals as in `attribute_leakage`, the paper's MLP head; its
    ``test_rows`` are the test rows used).
  """
  tr = landmark_rows(train, require_detection)
  te = landmark_rows(test, require_detection)
  if len(tr) == 0 or len(te) == 0:
    raise ValueError('no images with detected landmarks to train/test on')
  target = train['landmarks68'][tr].astype(np.float32)
  config = heads.head_config(
      'landmarks', hidden=training.hidden, input_norm=training.input_norm,
      input_dim=train['descriptor'].shape[1], output_scale=pixel_scale)
  loss_fn = train_lib.scaled(train_lib.mse_loss, pixel_scale)
  model, params, history = train_lib.train_head(
      key, config, train['descriptor'][tr], target, tx=training.tx(),
      batch_size=training.batch_size, num_epochs=training.num_epochs,
      loss_fn=loss_fn, progress=progress)
  pred = train_lib.predict(model, params, test['descriptor'][te])
  gt = test['landmarks68'][te]
  scale = image_scale(test)
  base = nme_percent(np.broadcast_to(target.mean(0), gt.shape), gt, scale,
                     per_example=True)
  groups = _identities(test)
  groups = None if groups is None else groups[te]

  def measures_of(prediction):
    each = nme_percent(prediction, gt, scale, per_example=True)
    return {'nme': float(each.mean()), **_error_gain(each, base, groups)}

  measures = {'mlp': measures_of(pred)}
  choice = None
  if validation is not None:
    rows = functools.partial(landmark_rows,
                             require_detection=require_detection)
    choice, linear = _choose(
        _selection_key(key, 0), _Task(
            rows=rows,
            targets=lambda a, r: a['landmarks68'][r].astype(np.float32),
            train_mlp=_mlp_trainer(config, training, loss_fn=loss_fn,
                                   progress=progress),
            probe='ridge', score=_nme_score, sign=-1.0),
        train, validation, lambda x: train_lib.predict(model, params, x))
    measures['linear'] = measures_of(linear.predict(test['descriptor'][te]))
  return ({**_reported(measures, choice), 'baseline': float(base.mean()),
           'num_train': int(len(tr)), 'num_test': int(len(te))},
          Trained('landmarks', config, params, pred, history, te))


# ----------------------------------------------------------------------------
# From images: the landmark CNN (and optionally an attribute CNN).


def _float_images(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) / 127.5 - 1.0  # uint8 -> [-1, 1]


def predict_images(model, params, source: pipeline.Source,
                   size: Sequence[int], *, batch_size: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(keys [N], predictions [N, ...]) of an image head over a source."""
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  keys, preds = [], []
  for b in pipeline.batches(source, batch_size, image_size=tuple(size)):
    n = int(b[pipeline.VALID].sum())
    x = _float_images(b[pipeline.IMAGE])
    preds.append(np.asarray(apply(params, x))[:n])
    keys.append(b[pipeline.KEY][:n])
  return np.concatenate(keys), np.concatenate(preds)


def image_head(key: jax.Array, kind: str, train_source: pipeline.Source,
               test_source: pipeline.Source, train_targets: np.ndarray,
               train_keys: np.ndarray, test_keys: np.ndarray,
               training: ImageTraining, *, pixel_scale: float = 1.0,
               progress: bool = False) -> Trained:
  """Trains an image CNN (`heads.ImageCNN`) and predicts `test_keys`.

  Args:
    key: a ``jax.random.key``.
    kind: ``'landmarks_cnn'`` or ``'attribute_cnn'`` (picks loss/output).
    train_source: training images.
    test_source: test images.
    train_targets: [M, *out_shape] targets of `train_keys` (the CNN's
      output shape is ``out_shape``).
    train_keys: keys of the training images to use.
    test_keys: keys of the test images to predict, in the wanted order.
    training: hyper-parameters and how the images are read.
    pixel_scale: output and loss units, as in `landmark_leakage`.
    progress: show a progress bar.

  Returns:
    The trained head with ``test_pred`` in the order of `test_keys`.
  """
  input_size = training.input_size
  config = heads.head_config(kind, channels=tuple(training.channels),
                             hidden=int(training.hidden[0]),
                             input_size=tuple(input_size),
                             out_shape=tuple(np.shape(train_targets)[1:]),
                             output_scale=pixel_scale)
  model = heads.build(config)
  src = pipeline.with_labels(train_source, train_keys,
                             {'target': train_targets})
  batch_size = min(training.batch_size, src.num_examples)
  new_epoch = pipeline.training_epochs(
      src, batch_size, image_size=input_size,
      shuffle_buffer=training.shuffle_buffer, seed=training.seed,
      cache=training.cache_images)

  def epoch_batches(unused_key, unused_epoch):
    for b in new_epoch():
      yield _float_images(b[pipeline.IMAGE]), b['target'].astype(np.float32)

  params, history = train_lib.fit(
      key, model, training.tx(),
      train_lib.scaled(train_lib.LOSSES[kind], pixel_scale), epoch_batches,
      example=jax.ShapeDtypeStruct((batch_size, *input_size, 3), np.float32),
      num_epochs=training.num_epochs, progress=progress, desc=kind)
  test_src = pipeline.with_labels(test_source, test_keys, {})
  keys, pred = predict_images(model, params, test_src, input_size)
  order = {k: i for i, k in enumerate(keys)}
  missing = [k for k in test_keys if k not in order]
  if missing:
    raise ValueError(f'test images not found in {test_source.name}: '
                     f'{missing[:3]}')
  pred = pred[[order[k] for k in test_keys]]
  return Trained(kind, config, params, pred, history)
