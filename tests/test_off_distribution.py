"""Target descriptors unlike their encoder's are named (issue 23).

The fixtures are a toy "encoder": 32-d descriptors that share a common
direction (as a real network's do: dlib's have cosine 0.85..0.95 to their
mean) with norms near 1.5; "another encoder" has another common direction.
"""

import json

import numpy as np
import pytest

from id2image_jax.data import off_distribution as od

DIM = 32


def _encoder_rows(n, *, seed, direction_seed=0):
  rng = np.random.default_rng(seed)
  direction = np.random.default_rng(direction_seed).standard_normal(DIM)
  direction /= np.linalg.norm(direction)
  rows = direction + 0.12 * rng.standard_normal((n, DIM))
  norms = rng.normal(1.5, 0.05, (n, 1))
  return rows / np.linalg.norm(rows, axis=1, keepdims=True) * norms


@pytest.fixture(scope='module')
def reference():
  return od.measure_reference(_encoder_rows(400, seed=1), kind='toy',
                              source='toy rows')


def _flagged_rows(rows, reference):
  return [f.row for f in od.check(rows, reference)]


def test_real_like_rows_pass(reference):
  held_out = _encoder_rows(200, seed=2)
  assert od.check(held_out, reference) == []


@pytest.mark.parametrize('factor', [0.5, 2.0, 10.0, 0.0])
def test_rescaled_rows_are_named_by_their_norm(reference, factor):
  rows = _encoder_rows(4, seed=3)
  rows[2] *= factor
  findings = od.check(rows, reference, names=['a', 'b', 'c', 'd'])
  assert [(f.row, f.name) for f in findings] == [(2, 'c')]
  (problem,) = findings[0].problems
  assert problem.startswith('L2 norm')
  assert ('above' if factor > 1 else 'below') in problem


def test_unit_normalised_rows_are_named(reference):
  rows = _encoder_rows(5, seed=4)
  rows /= np.linalg.norm(rows, axis=1, keepdims=True)
  assert _flagged_rows(rows, reference) == [0, 1, 2, 3, 4]


def test_another_encoders_rows_of_the_same_size_are_named(reference):
  # Same norms, another common direction: only the cosine can tell.
  other = _encoder_rows(50, seed=5, direction_seed=7)
  findings = od.check(other, reference)
  assert len(findings) == 50
  assert all(len(f.problems) == 1 and 'cosine to the mean toy descriptor'
             in f.problems[0] for f in findings)


def test_random_vectors_are_named(reference):
  rng = np.random.default_rng(6)
  gaussian = rng.standard_normal((50, DIM))
  gaussian *= 1.5 / np.linalg.norm(gaussian, axis=1, keepdims=True)
  assert len(od.check(gaussian, reference)) == 50


def test_non_finite_rows_are_left_to_the_nan_report(reference):
  rows = _encoder_rows(3, seed=8)
  rows[0, 1] = np.nan
  rows[2] *= 5
  assert _flagged_rows(rows, reference) == [2]


def test_wrong_size_is_an_error(reference):
  with pytest.raises(ValueError, match=r'\[N, 32\]'):
    od.check(np.zeros((2, 16)), reference)


def test_the_warning_names_the_first_rows_and_the_count(reference):
  rows = _encoder_rows(6, seed=9) * 3
  text = od.describe(od.check(rows, reference, names=list('uvwxyz')), 6,
                     kind='toy', limit=2)
  assert text.startswith("6 of 6 target descriptor(s) look unlike toy's")
  assert 'row 0 (u)' in text and 'row 1 (v)' in text
  assert 'row 2' not in text and 'and 4 more' in text


def test_reference_and_report_survive_json(reference):
  again = od.Reference.from_json(json.loads(json.dumps(
      {**reference.to_json(), 'separation': {'provenance': 1}})))
  assert again.norm_range == pytest.approx(reference.norm_range)
  np.testing.assert_allclose(again.mean_descriptor,
                             reference.mean_descriptor, rtol=1e-5)
  rows = _encoder_rows(2, seed=10)
  rows[1] *= 4
  entry = json.loads(json.dumps(od.report(od.check(rows, reference), 2,
                                          reference=reference)))
  assert entry['checked'] and entry['flagged'] == 1
  assert entry['findings'][0]['row'] == 1
  assert od.report(None, 2, reference=None, why_not='no stats') == {
      'checked': False, 'why_not': 'no stats'}
