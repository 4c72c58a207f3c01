"""The measurements of an audit, on faces in memory (no file I/O).

* `leakage`: Table 1 for one encoder on a face set: heads trained on an
  identity-disjoint split predict attributes, 68 landmarks and the colour
  histogram from descriptors; baselines and bootstrap intervals from
  `analysis.leakage`.
* `attack_targets` / `score_attack`: who is inverted (a photo A of people
  who have another photo B), and how often the reconstruction is accepted
  as them (type I: vs A; type II: vs B) at fixed FMRs.
* `blackbox_attack`: the same inversion when only similarity scores can be
  queried (`inversion.blackbox`), with its query count.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax import protocols
from id2image_jax.analysis import leakage as leakage_lib
from id2image_jax.data import celeba
from id2image_jax.data import faces as faces_lib
from id2image_jax.data import targets as targets_lib
from id2image_jax.evaluation import scores
from id2image_jax.inversion import blackbox
from id2image_jax.inversion import engine
from id2image_jax.recipes import inversion as recipe

# Labels an attribute network gives when the data has none (pseudo labels).
_NET_ATTRIBUTES = {
    'male_prob': ('Male', lambda v: v > 0.5),
    'age_years': ('Young', lambda v: v < 30.0),
}


def _people(faces: faces_lib.Faces) -> np.ndarray:
  return (faces.identity if faces.identity is not None
          else np.arange(len(faces)))


def split_rows(faces: faces_lib.Faces, *, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) rows, identity-disjoint (70 / 30 % of the people)."""
  return tuple(celeba.identity_split(_people(faces), s,
                                     fractions=(0.7, 0.0, 0.3), seed=seed)
               for s in ('train', 'test'))


# Of the training people, the share set aside to choose the leakage heads.
VALIDATION_SHARE = 0.2


def validation_rows(faces: faces_lib.Faces, train_rows: np.ndarray, *,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(fit, validation) rows: the training people split again, identity-
  disjoint (80 / 20 %; with 2 or more people, at least one on each side).

  The leakage heads are chosen on the validation people (never on the
  test people) and then trained on all training rows.

  Returns:
    Two arrays of rows of `faces`, together `train_rows`; validation is
    empty when there is one training person only.
  """
  people = _people(faces)[train_rows]
  count = len(np.unique(people))
  if count < 2:
    return train_rows, train_rows[:0]
  share = min(max(VALIDATION_SHARE, 1 / count), 1 - 1 / count)
  fit, val = (celeba.identity_split(people, s, fractions=(1 - share, share,
                                                          0.0), seed=seed)
              for s in ('train', 'validation'))
  return train_rows[fit], train_rows[val]


def labels(faces: faces_lib.Faces,
           nets: Sequence[protocols.AttributeNet]) -> tuple[
               dict[str, np.ndarray], str]:
  """Binary attributes to predict, and where they come from (in words).

  The data's own annotations when it has them (CelebA's 40), else pseudo
  labels from the attribute networks: Male, Young (< 30 years), and the top
  expression (Smiling = happy).
  """
  if faces.attributes:
    return dict(faces.attributes), 'the data set\'s annotations'
  out = {}
  for net in nets:
    pred = net.predict(faces.images)
    for name, value in pred.items():
      if name in _NET_ATTRIBUTES:
        label, rule = _NET_ATTRIBUTES[name]
        out[label] = np.asarray(rule(value))
      elif name == 'expression_probs':
        top = np.asarray(value).argmax(-1)
        for i, expr in enumerate(net.labels[name]):
          if expr == 'happy':
            out['Smiling'] = top == i
  kinds = ', '.join(n.kind for n in nets)
  return out, f'pseudo labels from the attribute networks ({kinds})'


MIN_HEAD_STEPS = 400


def leakage(key: jax.Array, faces: faces_lib.Faces, descriptors: np.ndarray,
            attributes: dict[str, np.ndarray], *, epochs: int,
            progress: bool = False) -> dict[str, Any]:
  """Table 1 for one encoder (see the module docstring).

  Each figure is the better, on validation people carved out of the
  training people (`validation_rows`), of the paper's MLP and a linear
  probe (`analysis.leakage.Validation`); the paper's MLP's own figures are
  kept beside it.

  Returns:
    ``{'attributes': {...}, 'landmarks': {...}, 'histogram': {...},
    'num_train', 'num_validation', 'num_test', 'skipped_attributes':
    {name: why}, 'head_choice': why none was made, or ''}`` in the form of
    `analysis.leakage` (with intervals and ``leaks`` flags).
  """
  train_rows, test_rows = split_rows(faces)
  fit_rows, val_rows = validation_rows(faces, train_rows)
  arrays = _leakage_arrays(faces, descriptors, attributes)
  train = leakage_lib.subset(arrays, train_rows)
  test = leakage_lib.subset(arrays, test_rows)
  validation, no_choice = None, ('one training person only: the paper\'s '
                                 'MLP alone')
  if len(val_rows):
    validation = leakage_lib.Validation(
        data=leakage_lib.subset(arrays, val_rows),
        fit=leakage_lib.subset(arrays, fit_rows))
    no_choice = ''
  # An attribute constant on either side teaches nothing measurable.
  usable, skipped = [], {}
  for n, v in attributes.items():
    if len(np.unique(v[train_rows])) < 2 or len(np.unique(v[test_rows])) < 2:
      skipped[n] = 'one class only in the training or test split'
    else:
      usable.append(n)
  short = functools.partial(_head_training, epochs=epochs,
                            num_train=len(train_rows))
  attrs, _ = leakage_lib.attribute_leakage(
      jax.random.fold_in(key, 0), train, test, [f'attr:{n}' for n in usable],
      short((256, 256, 256), 1e-3, 'adam', 256), validation=validation,
      progress=progress)
  lm, _ = leakage_lib.landmark_leakage(
      jax.random.fold_in(key, 1), train, test,
      # Adam: the paper's SGD 1e-3 needs tens of thousands of steps to
      # leave the origin (measured: 450 steps on 42 faces barely move).
      short((256, 256), 3e-3, 'adam', 16), pixel_scale=224.0,
      validation=validation, progress=progress)
  hist, _ = leakage_lib.histogram_leakage(
      jax.random.fold_in(key, 2), train, test,
      short((8, 8), 1e-3, 'adam', 32), validation=validation,
      progress=progress)
  return {'attributes': {n[len('attr:'):]: r for n, r in attrs.items()},
          'landmarks': lm, 'histogram': hist,
          'num_train': int(len(train_rows)),
          'num_validation': int(len(val_rows)),
          'num_test': int(len(test_rows)),
          'skipped_attributes': skipped, 'head_choice': no_choice}


def _leakage_arrays(faces: faces_lib.Faces, descriptors: np.ndarray,
                    attributes: dict[str, np.ndarray]) -> dict[str, Any]:
  """The faces as a descriptor dict of `analysis.leakage`."""
  size = faces.images.shape[1]
  return {
      'descriptor': descriptors,
      'identity': _people(faces),
      'landmarks68': faces.landmarks,
      'landmarks68_detected': np.ones(len(faces), bool),
      'histogram': np.asarray(losses.image_histogram(
          faces.images, value_range=(-1.0, 1.0))),
      **{f'attr:{n}': v for n, v in attributes.items()},
      'meta': {'image_size': [size, size]},
  }


def _head_training(hidden, lr, opt, batch, *, epochs: int, num_train: int
                   ) -> leakage_lib.Training:
  """An MLP head's training on `num_train` faces."""
  batch = min(batch, num_train)
  # A few dozen faces give a few steps per epoch: train for at least
  # MIN_HEAD_STEPS steps so small audits measure converged heads.
  per_epoch = max(1, num_train // batch)
  return leakage_lib.Training(
      hidden=hidden, optimizer=opt, learning_rate=lr, batch_size=batch,
      num_epochs=max(epochs, -(-MIN_HEAD_STEPS // per_epoch)))


@dataclasses.dataclass
class AttackSet:
  """Who is attacked, and the pool that sets the thresholds.

  Attributes:
    rows: [T] face rows whose descriptor is inverted (photo A).
    others: [T] a second photo B of the same person per target, or -1.
    pool: [M] face rows whose pairs of different people set the
      verification thresholds: every face (the white-box and black-box
      attacks use no head trained on the training split), so that small
      sets still give enough impostor pairs.
    why_no_type2: why there is no type-II attack, or ''.
  """
  rows: np.ndarray
  others: np.ndarray
  pool: np.ndarray
  why_no_type2: str


def attack_targets(faces: faces_lib.Faces, num: int) -> AttackSet:
  """Up to `num` test people, photo A of each (module docstring)."""
  _, test = split_rows(faces)
  pool = np.arange(len(faces))
  if faces.identity is None:
    return AttackSet(test[:num], np.full(min(num, len(test)), -1), pool,
                     'the data has no identities (one photo per person '
                     'assumed): only type I is measured')
  people = faces.identity[test]
  rows, others = [], []
  for p in dict.fromkeys(people):  # in order, each person once
    mine = test[people == p]
    if len(mine) >= 2:
      rows.append(mine[0])
      others.append(mine[1])
    if len(rows) == num:
      break
  why = ''
  if not rows:
    why = ('no test person has two photos: only type I is measured')
    rows = list(test[:num])
    others = [-1] * len(rows)
  return AttackSet(np.asarray(rows), np.asarray(others), pool, why)


def score_attack(encoder: protocols.Encoder, images: np.ndarray,
                 faces: faces_lib.Faces, attack: AttackSet,
                 fmrs: Sequence[float], *,
                 pool_descriptors: np.ndarray | None = None
                 ) -> dict[str, Any]:
  """Identity scores of reconstructions under `encoder` (type I and II).

  Args:
    encoder: the scoring encoder.
    images: [T, H, W, 3] reconstructions of ``attack.rows``.
    faces: the face set.
    attack: targets and pool.
    fmrs: false match rates.
    pool_descriptors: the pool's descriptors under `encoder` if known.
  """
  if pool_descriptors is None:
    pool_descriptors = encoder.embed(faces.images[attack.pool])
  identity = (faces.identity if faces.identity is not None
              else np.arange(len(faces)))
  pairs = scores.impostor_pair_scores(pool_descriptors,
                                      identity[attack.pool])
  labels = np.arange(len(attack.pool))
  index = {int(r): i for i, r in enumerate(attack.pool)}
  rows = np.asarray([index[int(r)] for r in attack.rows])
  # How far the thresholds move with the people who set them: on an
  # audit's few faces, often more than the rates themselves.
  samples = metrics.bootstrap_impostor_thresholds(
      pool_descriptors, identity[attack.pool], fmrs)
  out = scores.identity_metrics(
      encoder.embed(images), rows, pool_descriptors, labels, pairs, fmrs,
      pool_identity=(identity[attack.pool] if not attack.why_no_type2
                     else None), threshold_samples=samples)
  out['num_pool_images'] = int(len(attack.pool))
  return out


def invert(config: Any, generator: protocols.Generator,
           encoder: protocols.Encoder, faces: faces_lib.Faces,
           rows: np.ndarray, *, regressor=None) -> recipe.Inversion:
  """The white-box attack: the ID2image inversion of the rows' templates."""
  targets = targets_lib.Targets(
      descriptors=encoder.embed(faces.images[rows]),
      names=[faces.keys[r] for r in rows], sources=faces.images[rows])
  return recipe.invert_targets(config, generator, encoder, targets,
                               regressor=regressor)


def blackbox_attack(config: Any, generator: protocols.Generator,
                    encoder: protocols.Encoder, faces: faces_lib.Faces,
                    rows: np.ndarray, *, population: int, steps: int,
                    sigma: float = 0.05, regressor=None) -> dict[str, Any]:
  """The score-only attacker on the same templates, same start.

  Returns:
    ``{'images' [T, R, R, 3], 'queries_per_step', 'queries_per_target',
    'seconds',
    'score_history' [T, steps + 1 recorded], 'final_score' [T]}``.
  """
  started = time.perf_counter()
  targets = targets_lib.Targets(
      descriptors=encoder.embed(faces.images[rows]),
      names=[faces.keys[r] for r in rows])
  # As the audit always ran it: one chunk, constant learning rate, no
  # resume files (its parts store keeps the result).
  no_resume = ml_collections.ConfigDict({**config.to_dict(), 'resume': False})
  inversion = recipe.invert_targets_by_scores(
      no_resume, generator, encoder, targets,
      population=population, sigma=sigma, regressor=regressor,
      run_options=engine.InvertOptions(
          steps=steps, chunk_size=len(rows),
          tx=optax.adam(config.learning_rate), progress=config.progress))
  result, images = inversion.result, inversion.images
  # Every step and the final evaluation each query 2P + 1 images.
  per_step = blackbox.queries_per_step(population)
  return {'images': images, 'queries_per_step': int(per_step),
          'queries_per_target': int((steps + 1) * per_step),
          'seconds': time.perf_counter() - started,
          'score_history': result.history['score'],
          'final_score': result.final['score']}


def _mean_curve(history, final) -> np.ndarray:
  """Mean over targets of [history entries..., final score]."""
  history = np.asarray(history, np.float64)
  final = np.asarray(final, np.float64)
  return np.concatenate([history, final[:, None]], axis=1).mean(0)


def _at_budget(curve: np.ndarray, costs: np.ndarray, budget: float):
  """The curve's value after the last entry that fits in `budget`."""
  fits = np.flatnonzero(costs <= budget + 1e-9)
  return float(curve[fits[-1]]) if fits.size else None


def equal_budget(whitebox_history, whitebox_final, whitebox_seconds: float,
                 blackbox_history, blackbox_final, blackbox_seconds: float,
                 queries_per_step: int) -> dict[str, Any]:
  """Both attacks on the same targets at equal encoder calls and wall time.

  Histories are [T, steps] cosines to the template before each step's
  update, then the final score. Entry j of the white-box costs j + 1 encoder
  calls (a forward + backward each); of the black-box, (j + 1) x
  `queries_per_step` score queries. Time per entry is the run's mean
  (compilation included, so both are charged alike).

  Returns:
    the mean curves with their costs, and the cosine each attack had at the
    other's full budget (``None``: nothing finished within it).
  """
  wb = _mean_curve(whitebox_history, whitebox_final)
  bb = _mean_curve(blackbox_history, blackbox_final)
  wb_calls = np.arange(1, len(wb) + 1, dtype=np.float64)
  bb_calls = np.arange(1, len(bb) + 1, dtype=np.float64) * queries_per_step
  wb_time = wb_calls * whitebox_seconds / len(wb)
  return {
      'whitebox_curve': wb.tolist(), 'whitebox_calls': wb_calls.tolist(),
      'blackbox_curve': bb.tolist(), 'blackbox_calls': bb_calls.tolist(),
      'calls': int(wb_calls[-1]),
      'whitebox_at_calls': float(wb[-1]),
      'blackbox_at_calls': _at_budget(bb, bb_calls, wb_calls[-1]),
      'seconds': float(blackbox_seconds),
      'whitebox_at_seconds': _at_budget(wb, wb_time, blackbox_seconds),
      'blackbox_at_seconds': float(bb[-1]),
  }
