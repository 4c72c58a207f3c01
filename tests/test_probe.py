"""Linear probes, and the choice between them and the paper's MLP heads.

The probes are checked against independent references (numpy least squares
for ridge, a scalar root for a hand-made logistic case, the optimality
conditions in float64), and the choice on tiny planted data: the probe must
win where the signal is linear and the MLP is starved, the MLP where the
signal is not linear, and the test data must never move the choice.
"""

import jax
import numpy as np
import pytest
import scipy.optimize

from id2image_jax.analysis import leakage
from id2image_jax.analysis import probe
from id2image_jax.data import faces as faces_lib
from id2image_jax.evaluation import audit

D = 8
META = {'meta': {'image_size': [100, 80]}}


def _standardised(x):
  mean, scale = probe.standardiser(x)
  return (np.asarray(x, np.float64) - mean) / scale


def test_ridge_path_is_the_least_squares_solution():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + 4
  y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(60, 3)) + 2
  fitted = probe.fit('ridge', x, y, probe.Settings(l2_grid=(1e-3, 0.1, 3.0)))
  xs = _standardised(x)
  xc, yc = xs - xs.mean(0), y - y.mean(0)
  for p in fitted:
    # Ridge as ordinary least squares on rows sqrt(N l2) I appended.
    a = np.concatenate([xc, np.sqrt(len(x) * p.l2) * np.eye(5)])
    b = np.concatenate([yc, np.zeros((5, 3))])
    want = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(p.weights, want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(
        p.predict(x), xc @ want + y.mean(0), rtol=2e-4, atol=2e-4)
  # Stronger L2, smaller weights.
  norms = [np.linalg.norm(p.weights) for p in fitted]
  assert norms == sorted(norms, reverse=True)


def test_ridge_keeps_distributions_summing_to_one():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 4))
  hist = rng.dirichlet(np.ones(10), size=(50, 3))  # [N, 3 channels, 10]
  (p,) = probe.fit('ridge', x, hist, probe.Settings(l2_grid=(0.01,)))
  pred = p.predict(x)
  assert pred.shape == (50, 3, 10)
  np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-5)


def test_logistic_path_by_hand():
  # Two points x = +1 (label 1) and x = -1 (label 0): b = 0 by symmetry
  # and the optimum solves l2 * w = sigmoid(-w) (gradient of the mean BCE
  # + l2 / 2 w^2). Standardising leaves +-1 as they are.
  x = np.array([[1.0], [-1.0]])
  y = np.array([1.0, 0.0])
  for l2 in (0.05, 0.5, 2.0):
    want = scipy.optimize.brentq(
        lambda w, l2=l2: l2 * w - 1 / (1 + np.exp(w)), 0.0, 100.0)
    (p,) = probe.fit('logistic', x, y[:, None], probe.Settings(
        l2_grid=(l2,)))
    np.testing.assert_allclose(p.weights[0, 0], want, rtol=1e-4)
    np.testing.assert_allclose(p.bias[0], 0.0, atol=1e-5)


def test_logistic_path_meets_the_optimality_conditions():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(300, 6)) * rng.uniform(0.1, 10, 6)
  y = (_standardised(x) @ rng.normal(size=6) + rng.normal(size=300)) > 0.5
  fitted = probe.fit('logistic', x, y[:, None], probe.Settings())
  xs = _standardised(x)
  for p in fitted:
    w, b = p.weights[:, 0].astype(np.float64), float(p.bias[0])
    s = 1 / (1 + np.exp(-(xs @ w + b)))
    # The regularised objective's gradient, in float64 numpy.
    grad_w = xs.T @ (s - y) / len(y) + p.l2 * w
    grad_b = np.mean(s - y)
    assert np.linalg.norm(grad_w) < 1e-4, (p.l2, grad_w)
    assert abs(grad_b) < 1e-4
    np.testing.assert_allclose(p.predict(x)[:, 0], s, atol=1e-4)


def test_separable_data_with_little_l2_stays_finite():
  x = np.concatenate([np.full((10, 2), -1.0), np.full((10, 2), 1.0)])
  x += np.random.default_rng(3).normal(size=x.shape) * 0.01
  y = np.repeat([0.0, 1.0], 10)
  (p,) = probe.fit('logistic', x, y, probe.Settings(l2_grid=(1e-5,)))
  assert np.all(np.isfinite(p.weights))
  assert np.all((p.predict(x) > 0.5) == (y > 0.5))


def test_a_constant_column_is_not_divided_by_zero():
  x = np.random.default_rng(4).normal(size=(20, 3))
  x[:, 1] = 7.0
  mean, scale = probe.standardiser(x)
  assert scale[1] == 1.0 and mean[1] == 7.0
  (p,) = probe.fit('ridge', x, x[:, :1], probe.Settings(l2_grid=(1e-3,)))
  assert np.all(np.isfinite(p.predict(x)))


def test_settings_reject_a_bad_grid():
  with pytest.raises(ValueError, match='l2_grid'):
    probe.Settings.from_config({'l2_grid': (0.1, 0.0)})
  with pytest.raises(ValueError, match='probe kind'):
    probe.fit('lasso', np.ones((3, 2)), np.ones((3, 1)), probe.Settings())


# ----------------------------------------------------------------------------
# The choice between the paper's MLP and the probe.


def _people_split(x, arrays, n_fit, n_val):
  """(fit, validation, test) dicts, 2 images per person."""
  ids = np.arange(len(x)) // 2
  arrays = {'descriptor': x.astype(np.float32), 'identity': ids, **arrays}
  cuts = [(0, n_fit), (n_fit, n_fit + n_val), (n_fit + n_val, len(x))]
  return [{**{k: v[a:b] for k, v in arrays.items()}, **META}
          for a, b in cuts]


# An MLP starved of steps: it cannot leave its start.
STARVED = leakage.Training(hidden=(4,), learning_rate=1e-6, batch_size=64,
                           num_epochs=1)


def _linear_attribute(seed, n=900):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, D))
  y = x @ rng.normal(size=D) > 0  # linearly separable
  return _people_split(x, {'smile': y}, 500, 200)


def test_the_probe_wins_where_the_signal_is_linear():
  fit, val, test = _linear_attribute(0)
  res, heads = leakage.attribute_leakage(
      jax.random.key(0), fit, test, ['smile'], STARVED,
      validation=leakage.Validation(data=val))
  r = res['smile']
  assert r['head'] == 'linear'
  assert r['validation']['linear'] > r['validation']['mlp'] + 20, r
  # The reported figures, and the leak verdict, are the probe's.
  for key in ('accuracy', 'accuracy_ci', 'gain_ci', 'leaks'):
    assert r[key] == r['linear'][key]
  assert r['accuracy'] > 90 and r['leaks']
  assert r['mlp']['accuracy'] < 80
  # The paper's MLP is still what is returned to be saved.
  np.testing.assert_allclose(
      100 * np.mean((heads[0].test_pred > 0.5) == test['smile']),
      r['mlp']['accuracy'])


def test_the_mlp_wins_where_the_signal_is_not_linear():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1400, 2))
  # The distance from the origin decides: no line separates it, and a
  # linear probe stays at the majority rate.
  y = np.linalg.norm(x, axis=1) > 1.1774  # the median radius
  fit, val, test = _people_split(x, {'ring': y}, 900, 250)
  res, _ = leakage.attribute_leakage(
      jax.random.key(1), fit, test, ['ring'],
      leakage.Training(hidden=(32, 32), input_norm='none', learning_rate=1e-2,
                       batch_size=32, num_epochs=15),
      validation=leakage.Validation(data=val))
  r = res['ring']
  assert r['head'] == 'mlp', r['validation']
  assert r['validation']['mlp'] > 85 > 65 > r['validation']['linear']
  assert r['accuracy'] == r['mlp']['accuracy'] > r['linear']['accuracy']


def test_the_test_data_never_moves_the_choice():
  fit, val, test = _linear_attribute(2)
  # Half the training people are the fit part, half validation people.
  train = {k: (np.concatenate([fit[k], val[k]]) if k != 'meta' else v)
           for k, v in fit.items()}
  # Other test faces: mirrored descriptors, so every head now errs.
  other_test = {**test, 'descriptor': -test['descriptor']}
  choices = []
  for t in (test, other_test):
    res, _ = leakage.attribute_leakage(
        jax.random.key(2), train, t, ['smile'], STARVED,
        validation=leakage.Validation(data=val, fit=fit))
    choices.append(res['smile'])
  assert choices[0]['validation'] == choices[1]['validation']
  assert choices[0]['head'] == choices[1]['head'] == 'linear'
  # ... while the test figures did change.
  assert choices[0]['accuracy'] > 90 > 10 > choices[1]['accuracy']


def test_the_validation_data_does_move_the_choice():
  fit, val, test = _linear_attribute(3)
  res, _ = leakage.attribute_leakage(
      jax.random.key(3), fit, test, ['smile'], STARVED,
      validation=leakage.Validation(data={**val, 'smile': ~val['smile']}))
  # Flipped validation labels: every probe scores below chance there; the
  # starved MLP, near its start, is the lesser evil.
  assert res['smile']['head'] == 'mlp'
  assert max(res['smile']['validation']['linear_by_l2'].values()) < 50
  assert res['smile']['accuracy'] == res['smile']['mlp']['accuracy']


def test_ridge_probes_for_landmarks_and_histograms():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(900, D))
  template = rng.uniform(0.3, 0.7, (68, 2))
  points = template + 0.02 * (x @ rng.normal(size=(D, 136))).reshape(
      -1, 68, 2)
  logits = x @ rng.normal(size=(D, 30)) * 0.3
  hist = np.asarray(jax.nn.softmax(logits.reshape(-1, 3, 10), -1))
  fit, val, test = _people_split(
      x, {'landmarks68': points.astype(np.float32),
          'landmarks68_detected': np.arange(900) % 7 != 0,
          'histogram': hist.astype(np.float32)}, 500, 200)
  validation = leakage.Validation(data=val)
  lm, head = leakage.landmark_leakage(
      jax.random.key(4), fit, test, STARVED, validation=validation)
  assert lm['head'] == 'linear' and lm['nme'] == lm['linear']['nme']
  assert lm['nme'] < 0.5 * lm['mlp']['nme'], lm
  assert lm['leaks'] and lm['gain_ci'] == lm['linear']['gain_ci']
  # Only detected faces are chosen on, as they are trained and tested on.
  assert lm['validation']['num'] == int(val['landmarks68_detected'].sum())
  assert len(head.test_rows) == lm['num_test']
  hist_res, _ = leakage.histogram_leakage(
      jax.random.key(5), fit, test, STARVED, validation=validation)
  assert hist_res['head'] == 'linear'
  assert hist_res['emd'] == hist_res['linear']['emd'] < hist_res['mlp'][
      'emd']
  assert set(hist_res['validation']['linear_by_l2']) == {
      f'{v:g}' for v in probe.L2_GRID}


def test_without_validation_the_paper_mlp_alone():
  fit, _, test = _linear_attribute(5)
  res, _ = leakage.attribute_leakage(
      jax.random.key(5), fit, test, ['smile'], STARVED)
  r = res['smile']
  assert r['head'] == 'mlp' and 'linear' not in r and 'validation' not in r
  assert r['accuracy'] == r['mlp']['accuracy']


# ----------------------------------------------------------------------------
# The audit's validation people.


def _faces(people, per_person=3):
  n = people * per_person
  return faces_lib.Faces(
      images=np.zeros((n, 4, 4, 3), np.float32),
      landmarks=np.zeros((n, 68, 2), np.float32),
      keys=[f'{i}.jpg' for i in range(n)],
      identity=np.repeat(np.arange(people), per_person), attributes={},
      skipped={})


@pytest.mark.parametrize('people', [2, 3, 7, 24])
def test_audit_validation_people_come_from_the_training_people(people):
  faces = _faces(people)
  train, test = audit.split_rows(faces)
  fit, val = audit.validation_rows(faces, train)
  np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), train)
  who = faces.identity
  assert not set(who[fit]) & set(who[val])
  assert not set(who[val]) & set(who[test])
  if len(set(who[train])) >= 2:
    assert len(set(who[val])) >= 1 and len(set(who[fit])) >= 1
  assert len(set(who[val])) <= max(1, round(0.2 * len(set(who[train]))))


def test_audit_with_one_training_person_has_no_validation():
  faces = _faces(1)
  fit, val = audit.validation_rows(faces, np.arange(3))
  np.testing.assert_array_equal(fit, np.arange(3))
  assert val.size == 0
