"""Template protection schemes, scores, registry and unlinkability (issue
21), against cases computed by hand; jit and vmap of every scheme."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import protection
from id2image_jax.evaluation import protection as measures

D = 16
KEYED = ('partial_random:k=5', 'projection', 'projection:dim=7',
         'biohash:bits=9', 'polyprotect:m=3,overlap=1', 'noise:scale=0.2')
EVERY = ('none', 'partial:k=5', 'quantise:bits=8', 'quantise:bits=4',
         'quantise:bits=1') + KEYED


def _x(n=4, d=D, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _key(seed=7):
  return protection.key_from_seed(seed)


def _setting(text):
  (setting,) = protection.parse(text)
  return setting


def _gram_schmidt(vectors):
  """Classical Gram-Schmidt of the columns (the textbook loop)."""
  out = []
  for v in vectors.T.astype(np.float64):
    for u in out:
      v = v - (v @ u) * u
    out.append(v / np.linalg.norm(v))
  return np.stack(out, axis=1)


# --------------------------------------------------------------------------
# Schemes by hand.


def test_partial_first_keeps_the_first_k():
  x = np.array([[1., 2., 3., 4.], [5., 6., 7., 8.]], np.float32)
  np.testing.assert_array_equal(protection.partial_first(None, x, k=2),
                                [[1., 2.], [5., 6.]])
  with pytest.raises(ValueError, match='k must be in'):
    protection.partial_first(None, x, k=5)


def test_partial_random_is_a_sorted_keyed_subset():
  x = np.arange(D, dtype=np.float32)[None]
  t = np.asarray(protection.partial_random(_key(), x, k=5))[0]
  # The template of 0..D-1 is the index set itself.
  assert t.shape == (5,) and np.all(np.diff(t) > 0)
  np.testing.assert_array_equal(t, protection.subset_indices(_key(), D, 5))
  again = np.asarray(protection.partial_random(_key(), x, k=5))[0]
  np.testing.assert_array_equal(t, again)  # one key, one subset
  other = np.asarray(protection.partial_random(_key(8), x, k=5))[0]
  assert not np.array_equal(t, other)


def test_quantise_by_hand():
  x = np.array([[0.5, -1.0, 0.25, 0.0]], np.float32)
  # int8: 127 levels each side; 63.5 and 31.75 round to even.
  np.testing.assert_array_equal(protection.quantise(None, x, bits=8),
                                [[64., -127., 32., 0.]])
  # 4 bits: 7 levels; 3.5 -> 4, 1.75 -> 2.
  np.testing.assert_array_equal(protection.quantise(None, x, bits=4),
                                [[4., -7., 2., 0.]])
  # 1 bit: the sign, 0 counts as +.
  np.testing.assert_array_equal(protection.quantise(None, x, bits=1),
                                [[1., -1., 1., 1.]])
  # The per-template scale: doubling a template changes nothing.
  np.testing.assert_array_equal(protection.quantise(None, 2 * x, bits=4),
                                [[4., -7., 2., 0.]])


def test_straight_through_gradients():
  x = jnp.asarray(_x(1)[0])
  w = jnp.arange(D, dtype=jnp.float32)
  # sign: the identity's gradient.
  g = jax.grad(lambda v: jnp.sum(w * protection.sign(v)))(x)
  np.testing.assert_allclose(g, w)
  # rounding: the gradient of the unrounded, scaled values.
  def scaled(v):
    return v * (127.0 / jnp.max(jnp.abs(v)))
  g = jax.grad(lambda v: jnp.sum(w * protection.quantise(None, v, bits=8))
               )(x)
  np.testing.assert_allclose(g, jax.grad(lambda v: jnp.sum(w * scaled(v)))(x),
                             rtol=1e-5)
  # BioHash: the projection's gradient.
  k = _key()
  g = jax.grad(lambda v: jnp.sum(protection.biohash(k, v, bits=4)))(x)
  ref = jax.grad(lambda v: jnp.sum(protection.projection(k, v, dim=4)))(x)
  np.testing.assert_allclose(g, ref, rtol=1e-6)


def test_orthonormal_matrix_is_gram_schmidt_of_the_keys_gaussians():
  k = _key()
  q = np.asarray(protection.orthonormal_matrix(k, D, 6), np.float64)
  gauss = np.asarray(jax.random.normal(jax.random.clone(k), (D, 6)))
  np.testing.assert_allclose(q, _gram_schmidt(gauss), atol=2e-5)
  np.testing.assert_allclose(q.T @ q, np.eye(6), atol=1e-5)


def test_projection_full_size_is_an_invertible_rotation():
  x, k = _x(), _key()
  y = np.asarray(protection.projection(k, x), np.float64)
  q = np.asarray(protection.orthonormal_matrix(k, D, D), np.float64)
  np.testing.assert_allclose(y @ q.T, x, atol=1e-5)  # key holder inverts
  cos = protection.score_matrix('cosine', x, x)
  np.testing.assert_allclose(protection.score_matrix('cosine', y, y), cos,
                             atol=1e-5)
  assert protection.projection(k, x, dim=7).shape == (4, 7)


def test_biohash_by_hand():
  x, k = _x(), _key()
  gauss = np.asarray(jax.random.normal(jax.random.clone(k), (D, 9)))
  inner = x.astype(np.float64) @ _gram_schmidt(gauss)
  expected = np.where(inner > 0, 1.0, -1.0)
  np.testing.assert_array_equal(protection.biohash(k, x, bits=9), expected)


def test_polyprotect_map_by_hand():
  v = np.array([[1., 2., 3., 4.]], np.float32)
  # m = 2, overlap 1: windows (1, 2), (2, 3), (3, 4);
  # p = 2 * a ** 2 - 3 * b ** 1.
  p = protection.polyprotect_map(v, jnp.array([2, -3]), jnp.array([2, 1]),
                                 overlap=1)
  np.testing.assert_array_equal(p, [[2 * 1 - 3 * 2, 2 * 4 - 3 * 3,
                                     2 * 9 - 3 * 4]])
  # Negative values keep their sign under odd powers: (-1) ** 3 = -1.
  p = protection.polyprotect_map(-v[:, :3], jnp.array([1, 1, 1]),
                                 jnp.array([3, 1, 2]), overlap=0)
  np.testing.assert_array_equal(p, [[-1 - 2 + 9]])


def test_polyprotect_windows_and_padding():
  np.testing.assert_array_equal(
      protection.polyprotect_windows(7, m=3, overlap=1),
      [[0, 1, 2], [2, 3, 4], [4, 5, 6]])
  # D = 8: the last window reaches index 8, a padded zero.
  w = protection.polyprotect_windows(8, m=3, overlap=1)
  assert w.shape == (4, 3) and w[-1, -1] == 8
  # 128-d, m = 5: overlap 0 -> 26 elements, overlap 4 -> 124.
  assert len(protection.polyprotect_windows(128, m=5, overlap=0)) == 26
  assert len(protection.polyprotect_windows(128, m=5, overlap=4)) == 124
  with pytest.raises(ValueError, match='overlap'):
    protection.polyprotect_windows(8, m=3, overlap=3)


def test_polyprotect_key_and_template():
  c, e = protection.polyprotect_key(_key(), m=5, coefficient_range=3)
  c, e = np.asarray(c), np.asarray(e)
  assert np.all(c != 0) and np.all(np.abs(c) <= 3)
  np.testing.assert_array_equal(np.sort(e), [1, 2, 3, 4, 5])
  x = _x()
  t = protection.polyprotect(_key(), x, m=5, overlap=2,
                             coefficient_range=3)
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(
      t, protection.polyprotect_map(unit, c, e, overlap=2), rtol=1e-6)
  # Normalised first: the scale of the descriptor does not matter.
  np.testing.assert_allclose(
      protection.polyprotect(_key(), 3 * x, m=5, overlap=2,
                             coefficient_range=3), t, rtol=1e-5, atol=1e-7)


def test_gaussian_noise_by_hand():
  x = np.array([[3., 4.]], np.float32)
  np.testing.assert_allclose(protection.gaussian_noise(_key(), x, scale=0.0),
                             [[0.6, 0.8]])
  many = np.tile(x, (4000, 1))
  t = np.asarray(protection.gaussian_noise(_key(), many, scale=0.5))
  noise = t - [0.6, 0.8]
  # Expected squared norm scale ** 2; independent draws per row.
  assert abs(np.mean(np.sum(noise ** 2, 1)) - 0.25) < 0.02
  assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.05


def test_keyed_schemes_refuse_a_missing_key():
  for text in KEYED:
    with pytest.raises(ValueError, match='needs a key'):
      _setting(text).protect(None, _x())


# --------------------------------------------------------------------------
# Scores.


def test_scores_by_hand():
  np.testing.assert_allclose(
      protection.cosine_score(jnp.array([1., 0.]), jnp.array([1., 1.])),
      1 / np.sqrt(2), rtol=1e-6)
  a = jnp.array([1., -1., 1., -1.])
  b = jnp.array([1., 1., 1., -1.])
  assert float(protection.hamming_similarity(a, b)) == 0.75
  # 0/1 and +-1 encodings agree.
  assert float(protection.hamming_similarity((a > 0) * 1.0, b)) == 0.75
  # For +-1 templates: Hamming similarity = (1 + cos) / 2.
  np.testing.assert_allclose((1 + protection.cosine_score(a, b)) / 2, 0.75)


def test_score_matrix_agrees_with_the_pairwise_scores():
  a, b = _x(3), _x(5, seed=1)
  for kind in protection.SCORE_KINDS:
    s = protection.score_matrix(kind, a, b)
    fn = protection.score_fn(kind)
    ref = np.asarray(fn(a[:, None], b[None]))
    np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='score must be'):
    protection.score_fn('l1')


# --------------------------------------------------------------------------
# Registry and parsing.


def test_parse_reads_schemes_params_and_defaults():
  got = protection.parse('partial:k=32, biohash:bits=64,'
                         'polyprotect:m=5,overlap=3,none,noise:scale=0.1')
  assert [s.name for s in got] == ['partial', 'biohash', 'polyprotect',
                                   'none', 'noise']
  assert got[0].params == {'k': 32}
  assert got[2].params == {'m': 5, 'overlap': 3, 'coefficient_range': 50}
  assert got[4].params == {'scale': 0.1}
  assert [s.score_kind for s in got] == ['cosine', 'hamming', 'cosine',
                                         'cosine', 'cosine']
  # A label parses back to the same setting.
  for s in got:
    assert protection.parse(s.label) == [s]


@pytest.mark.parametrize('text,message', [
    ('foo:k=3', "unknown scheme 'foo'"),
    ('partial:j=3', "no parameter 'j'"),
    ('partial', 'needs k='),
    ('biohash:bits=0', 'bits must be >= 1'),
    ('partial:k=abc', 'k must be an integer'),
    ('noise:scale=-1', 'scale must be >= 0'),
    ('k=3,partial:k=4', 'before any scheme'),
    ('partial:k=3,k=4', 'given twice'),
    ('', 'empty'),
])
def test_parse_errors_name_the_token(text, message):
  with pytest.raises(ValueError, match=message):
    protection.parse(text)


def test_check_against_the_descriptor_size_and_the_key():
  with pytest.raises(ValueError, match=r'k=200 exceeds D.*\(128\)'):
    protection.check_all(protection.parse('partial:k=200'), 128,
                         key_seed=None)
  with pytest.raises(ValueError, match='bits=129 exceeds'):
    protection.check_all(protection.parse('biohash:bits=129'), 128,
                         key_seed=5)
  with pytest.raises(ValueError, match='overlap must be smaller than m'):
    protection.check_all(protection.parse('polyprotect:m=3,overlap=3'),
                         128, key_seed=5)
  with pytest.raises(ValueError, match='biohash:bits=8 need'):
    protection.check_all(protection.parse('partial:k=3,biohash:bits=8'),
                         128, key_seed=None)
  with pytest.raises(ValueError, match='non-negative integer'):
    protection.check_all(protection.parse('biohash:bits=8'), 128,
                         key_seed='abc')
  protection.check_all(protection.parse('partial:k=3,quantise:bits=1'),
                       128, key_seed=None)


def test_template_sizes():
  sizes = {t: _setting(t).template_size(D) for t in EVERY}
  assert sizes == {'none': D, 'partial:k=5': 5, 'quantise:bits=8': D,
                   'quantise:bits=4': D, 'quantise:bits=1': D,
                   'partial_random:k=5': 5, 'projection': D,
                   'projection:dim=7': 7, 'biohash:bits=9': 9,
                   'polyprotect:m=3,overlap=1': 8, 'noise:scale=0.2': D}


def test_key_from_seed_keeps_every_bit():
  data = lambda s: np.asarray(jax.random.key_data(  # pylint: disable=g-long-lambda
      protection.key_from_seed(s)))
  assert not np.array_equal(data(5), data(5 + 2 ** 32))
  assert not np.array_equal(data(5), data(6))
  np.testing.assert_array_equal(data(5), data(5))
  with pytest.raises(ValueError, match='non-negative integer'):
    protection.key_from_seed(-1)
  keys = protection.system_keys(5)
  assert not np.array_equal(jax.random.key_data(keys['system']),
                            jax.random.key_data(keys['second']))


# --------------------------------------------------------------------------
# Transformations.


@pytest.mark.parametrize('text', EVERY)
def test_jit_equals_eager(text):
  s = _setting(text)
  key = _key() if s.needs_key else None
  x = _x()
  def protect(key, x):
    return s.scheme.protect(key, x, **s.params)
  fn = jax.jit(chex.assert_max_traces(protect, n=1))
  eager = s.protect(key, x)
  np.testing.assert_allclose(fn(key, x), eager, rtol=1e-6, atol=1e-6)
  fn(key, x + 1.0)  # same shapes: no second trace


@pytest.mark.parametrize('text', [t for t in EVERY if 'noise' not in t])
def test_vmap_over_rows_equals_the_batch(text):
  # One key protects every row the same way (noise draws per row instead).
  s = _setting(text)
  key = _key() if s.needs_key else None
  x = _x()
  rows = jax.vmap(lambda d: s.protect(key, d))(x)
  np.testing.assert_allclose(rows, s.protect(key, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('text', KEYED)
def test_vmap_over_keys(text):
  s = _setting(text)
  keys = jax.random.split(_key(), 3)
  x = _x(2)
  batched = jax.vmap(lambda k: s.protect(k, x))(keys)
  for i in range(3):
    np.testing.assert_allclose(batched[i], s.protect(keys[i], x), rtol=1e-5,
                               atol=1e-6)
  assert not np.allclose(batched[0], batched[1])  # keys matter


# --------------------------------------------------------------------------
# Unlinkability and the verification measures.


def test_unlinkability_textbook_example():
  # Bins of 0.2 on [0, 1]. Mated: 0.3 | 0.7 | 0.9, 0.9 -> p = 0, .25, 0,
  # .25, .5; non-mated: 0.1 | 0.3, 0.3 | 0.5 -> .25, .5, .25, 0, 0.
  # D(s): bin 2 LR = .5 -> 0; bins 4, 5 have no non-mated -> 1.
  # D<->sys = .25 * 1 + .5 * 1 = 0.75.
  out = protection.unlinkability([0.9, 0.9, 0.7, 0.3], [0.1, 0.3, 0.3, 0.5],
                                 bins=5, score_range=(0.0, 1.0))
  np.testing.assert_allclose(out['local'], [0, 0, 0, 1, 1])
  assert out['d_sys'] == pytest.approx(0.75)
  assert (out['num_mated'], out['num_non_mated']) == (4, 4)


def test_unlinkability_partial_evidence_and_the_prior():
  # Bin (0.4, 0.6]: mated .75, non-mated .25 -> LR = 3, D = 2*3/4 - 1 = .5;
  # bin (0.8, 1]: D = 1. D<->sys = .75 * .5 + .25 * 1 = 0.625.
  mated, non_mated = [0.5, 0.5, 0.5, 0.9], [0.5, 0.1, 0.1, 0.1]
  out = protection.unlinkability(mated, non_mated, bins=5,
                                 score_range=(0.0, 1.0))
  assert out['d_sys'] == pytest.approx(0.625)
  # omega = 1/3: omega LR = 1 is no evidence, D = 0 there: 0.25.
  out = protection.unlinkability(mated, non_mated, bins=5, omega=1 / 3,
                                 score_range=(0.0, 1.0))
  assert out['d_sys'] == pytest.approx(0.25)
  # Identical distributions: fully unlinkable.
  same = protection.unlinkability([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], bins=3)
  assert same['d_sys'] == 0.0
  with pytest.raises(ValueError, match='no scores'):
    protection.unlinkability([], [0.1])


def test_roc_auc_by_hand():
  # Pairs: .9 > .5, .9 > .1, .5 = .5 (half), .5 > .1 -> 3.5 / 4.
  assert measures.roc_auc([0.9, 0.5], [0.5, 0.1]) == 0.875
  assert measures.roc_auc([1.0], [0.0]) == 1.0
  assert measures.roc_auc([], [0.1]) is None


def test_pair_and_cross_key_scores_by_hand():
  t = np.array([[1., 0.], [1., 1.], [0., 1.]])
  ident = np.array([0, 0, 1])
  genuine, impostor = measures.pair_scores(t, ident, 'cosine')
  np.testing.assert_allclose(genuine, [1 / np.sqrt(2)])
  np.testing.assert_allclose(impostor, [0.0, 1 / np.sqrt(2)])
  mated, non_mated = measures.cross_key_scores(t, t, ident, 'cosine')
  np.testing.assert_allclose(mated, [1 / np.sqrt(2)] * 2)
  assert len(non_mated) == 4


def test_utility_flags_templates_that_no_longer_verify():
  good = measures.utility([0.9, 0.8], [0.1, 0.2, 0.3], (0.5,))
  assert good['auc'] == 1.0 and good['verifies'] and not good['note']
  assert good['tmr']['0.5']['num_impostor'] == 3
  bad = measures.utility([0.1, 0.2], [0.1, 0.2, 0.15], (0.5,))
  assert bad['verifies'] is False and 'no longer verify' in bad['note']
  none = measures.utility([], [0.1, 0.2], (0.5,))
  assert none['auc'] is None and 'not measurable' in none['note']


def test_linkability_separates_keyless_from_keyed_schemes():
  # 40 people x 2 photos: tight clusters around each person's centre.
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(40, 32))
  x = np.repeat(centres, 2, axis=0) + 0.2 * rng.normal(size=(80, 32))
  ident = np.repeat(np.arange(40), 2)
  keys = protection.system_keys(3)
  out = {}
  for text in ('none', 'biohash:bits=32', 'projection'):
    s = _setting(text)
    a = np.asarray(s.protect(keys['system'], x))
    b = np.asarray(s.protect(keys['second'], x))
    out[text] = measures.linkability(a, b, ident, s.score_kind)['d_sys']
  assert out['none'] > 0.9          # the same template in both systems
  assert out['biohash:bits=32'] < 0.3  # new key, unrelated bits
  assert out['projection'] < 0.3
  flat = measures.linkability(x, x, None, 'cosine')
  assert flat['d_sys'] is None and 'not measurable' in flat['note']


def test_a_new_capture_gets_fresh_noise_but_the_same_system_key():
  key, x = _key(), _x(2)
  noise = _setting('noise:scale=0.5')
  stored = noise.protect(key, x)
  probe = noise.protect(measures.probe_key(noise, key), x)
  assert not np.allclose(stored, probe)  # the noise is drawn again
  biohash = _setting('biohash:bits=9')
  assert measures.probe_key(biohash, key) is key
  assert measures.probe_key(_setting('none'), None) is None


def test_short_labels_leave_out_defaults():
  got = protection.parse('polyprotect:m=5,overlap=4,projection,partial:k=3')
  assert [s.short_label for s in got] == ['polyprotect:overlap=4',
                                          'projection', 'partial:k=3']
