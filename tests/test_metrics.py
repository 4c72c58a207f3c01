"""Metrics agree with numpy / scikit-image / scipy references."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import metrics

skm = pytest.importorskip('skimage.metrics')
scipy_stats = pytest.importorskip('scipy.stats')


def _images(seed, shape, low, high):
  """Smooth random images in [low, high], so SSIM is far from 0 and 1."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(size=shape)
  noisy = np.clip(base + rng.normal(scale=0.15, size=shape), 0, 1)
  to = lambda u: (low + (high - low) * u).astype(np.float32)
  return to(base), to(noisy)


# --- image metrics ----------------------------------------------------------


@pytest.mark.parametrize('value_range', [(0.0, 1.0), (0.0, 255.0)])
def test_mse_psnr_match_skimage(value_range):
  a, b = _images(0, (2, 3, 16, 17, 3), *value_range)
  got_mse, got_psnr = metrics.mse(a, b), metrics.psnr(
      a, b, value_range=value_range)
  chex.assert_shape([got_mse, got_psnr], (2, 3))
  for i, j in itertools.product(range(2), range(3)):
    np.testing.assert_allclose(
        got_mse[i, j], skm.mean_squared_error(a[i, j], b[i, j]), rtol=1e-5)
    np.testing.assert_allclose(
        got_psnr[i, j], skm.peak_signal_noise_ratio(
            a[i, j], b[i, j], data_range=value_range[1] - value_range[0]),
        rtol=1e-5)


def test_psnr_is_range_convention_free():
  a, b = _images(1, (4, 8, 8, 3), 0.0, 1.0)
  want = metrics.psnr(a, b, value_range=(0.0, 1.0))
  got = metrics.psnr(2 * a - 1, 2 * b - 1, value_range=(-1.0, 1.0))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(metrics.mse(2 * a - 1, 2 * b - 1),
                             4 * metrics.mse(a, b), rtol=1e-5)
  assert np.isinf(metrics.psnr(a, a, value_range=(0.0, 1.0))).all()
  with pytest.raises(ValueError, match='value_range'):
    metrics.psnr(a, b, value_range=(1.0, 1.0))


# dm_pix SSIM (float32) vs skimage's (float64) Gaussian-window SSIM.
SSIM_ATOL = 1e-5


@pytest.mark.parametrize('value_range', [(0.0, 1.0), (0.0, 255.0),
                                         (-1.0, 1.0)])
def test_ssim_matches_skimage_gaussian_ssim(value_range):
  low, high = value_range
  a, b = _images(2, (2, 24, 20, 3), low, high)
  got = metrics.ssim(a, b, value_range=value_range)
  chex.assert_shape(got, (2,))
  for i in range(2):
    want = skm.structural_similarity(
        a[i].astype(np.float64) - low, b[i].astype(np.float64) - low,
        data_range=high - low, channel_axis=-1, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False)
    np.testing.assert_allclose(got[i], want, atol=SSIM_ATOL)
  assert 0.1 < float(got.min()) and float(got.max()) < 0.95
  np.testing.assert_allclose(metrics.ssim(a, a, value_range=value_range),
                             1.0, atol=1e-5)


class SsimTransformsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_leading_dims_jit_and_vmap(self):
    a, b = _images(3, (2, 3, 16, 16, 1), 0.0, 1.0)
    fn = self.variant(lambda a, b: metrics.ssim(a, b, value_range=(0., 1.)))
    got = fn(a, b)
    chex.assert_shape(got, (2, 3))
    per_image = jax.vmap(jax.vmap(
        lambda x, y: metrics.ssim(x, y, value_range=(0., 1.))))(a, b)
    np.testing.assert_allclose(got, per_image, rtol=1e-6)
    np.testing.assert_allclose(got[1, 2], fn(a[1, 2], b[1, 2]), rtol=1e-6)


def test_image_metrics_check_shapes():
  with pytest.raises(AssertionError):
    metrics.mse(jnp.ones((4, 4, 3)), jnp.ones((4, 4, 1)))
  with pytest.raises(AssertionError):
    metrics.psnr(jnp.ones((4, 3)), jnp.ones((4, 3)), value_range=(0., 1.))


# --- descriptors, histograms, landmarks ------------------------------------


def test_cosine_similarity():
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(2, 5, 2, 32)).astype(np.float32)
  want = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1)
                              * np.linalg.norm(b, axis=-1))
  got = metrics.cosine_similarity(a, b)
  chex.assert_shape(got, (5, 2))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_histogram_emd_matches_scipy_wasserstein():
  rng = np.random.default_rng(5)
  p = rng.uniform(size=(4, 3, 10)).astype(np.float32)
  q = rng.uniform(size=(4, 3, 10)).astype(np.float32)
  got = metrics.histogram_emd(p, q)
  chex.assert_shape(got, (4,))
  bins = np.arange(10)
  want = [np.mean([scipy_stats.wasserstein_distance(bins, bins, p[i, c],
                                                    q[i, c])
                   for c in range(3)]) for i in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Counts and frequencies give the same EMD; bin_width sets the unit.
  np.testing.assert_allclose(metrics.histogram_emd(1000 * p, q), got,
                             rtol=1e-5)
  np.testing.assert_allclose(metrics.histogram_emd(p, q, bin_width=25.5),
                             25.5 * got, rtol=1e-5)
  np.testing.assert_allclose(
      metrics.histogram_emd(p, q, channel_reduction='sum'), 3 * got,
      rtol=1e-5)
  with pytest.raises(ValueError, match='channel_reduction'):
    metrics.histogram_emd(p, q, channel_reduction='max')


def test_histogram_emd_scale():
  # All mass moved from the first to the last of 10 bins: 9 bins per channel.
  first, last = np.eye(10)[[0, -1]]
  p = np.stack([first] * 3)
  q = np.stack([last, last, first])
  np.testing.assert_allclose(metrics.histogram_emd(p, q), 6.0)
  np.testing.assert_allclose(metrics.histogram_emd(p, p), 0.0)


def test_landmark_nme():
  rng = np.random.default_rng(6)
  target = rng.uniform(0, 224, size=(3, 68, 2)).astype(np.float32)
  pred = target + rng.normal(size=target.shape).astype(np.float32)
  iod = np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)
  want = np.mean(np.linalg.norm(pred - target, axis=-1), -1) / iod
  got = metrics.landmark_nme(pred, target)
  chex.assert_shape(got, (3,))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(
      metrics.landmark_nme(pred.reshape(3, 136), target.reshape(3, 136)), want,
      rtol=1e-5)
  # Every point off by 5% of the interocular distance -> NME 0.05.
  shift = 0.05 * iod[:, None, None] * np.array([0.6, 0.8], np.float32)
  np.testing.assert_allclose(metrics.landmark_nme(target + shift, target),
                             0.05, rtol=1e-4)


# --- attack success -------------------------------------------------------


def _brute_force_threshold(impostor, fmr):
  """Smallest float64 t with mean(impostor >= t) <= fmr, by enumeration."""
  candidates = np.concatenate([[-np.inf], impostor,
                               np.nextafter(impostor, np.inf)])
  ok = [t for t in candidates if np.mean(impostor >= t) <= fmr + 1e-12]
  return min(ok)


@pytest.mark.parametrize('fmr', [1e-2, 0.05, 0.29, 0.5, 1.0])
@pytest.mark.parametrize('quantise', [False, True])
def test_impostor_threshold_matches_brute_force(fmr, quantise):
  scores = np.random.default_rng(7).normal(size=100)
  if quantise:  # Many ties.
    scores = np.round(scores, 1)
  got = metrics.impostor_threshold(scores, fmr)
  assert got == _brute_force_threshold(scores, fmr)
  assert np.mean(scores >= got) <= fmr


def test_impostor_threshold_edge_cases():
  scores = np.linspace(-1, 1, 100)
  with pytest.raises(ValueError, match='at least 1000'):
    metrics.impostor_threshold(scores, 1e-3)
  # fmr = 1 / n allows one false match: the threshold lies just above the
  # second highest score, so only the highest passes.
  assert metrics.impostor_threshold(scores, 1e-2) == np.nextafter(
      scores[-2], np.inf)
  # All tied: no threshold at or below the tie admits only 1%.
  tied = np.full(100, 0.3)
  assert metrics.impostor_threshold(tied, 1e-2) == np.nextafter(0.3, 1)
  assert metrics.impostor_threshold(tied, 1.0) == -np.inf
  for bad in (0.0, 1.5, -0.1):
    with pytest.raises(ValueError, match='fmr'):
      metrics.impostor_threshold(scores, bad)
  with pytest.raises(ValueError, match='NaN'):
    metrics.impostor_threshold(np.array([0.1, np.nan]), 0.5)
  with pytest.raises(ValueError, match='1-D'):
    metrics.impostor_threshold(np.zeros((2, 2)), 0.5)


def test_tmr_at_fmr():
  rng = np.random.default_rng(8)
  impostor = rng.normal(0.0, 0.1, size=2000)
  genuine = rng.normal(0.35, 0.1, size=300)
  got = metrics.tmr_at_fmr(genuine, impostor)
  assert set(got) == {1e-2, 1e-3}
  for fmr, tmr in got.items():
    t = _brute_force_threshold(impostor, fmr)
    assert tmr == np.mean(genuine >= t)
  assert 0.0 < got[1e-3] < got[1e-2] < 1.0
  assert metrics.tmr_at_fmr(impostor[:10] + 10, impostor, fmrs=(0.5,)) == {
      0.5: 1.0}


def test_verification_scores():
  rng = np.random.default_rng(9)
  labels = np.array([0, 0, 1, 2, 2, 2])
  targets = rng.normal(size=(6, 8)).astype(np.float32)
  recon = (targets + 0.1 * rng.normal(size=(6, 8))).astype(np.float32)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  cos = unit(recon) @ unit(targets).T
  same = labels[:, None] == labels[None]

  genuine, impostor = metrics.verification_scores(recon, targets, labels)
  np.testing.assert_allclose(genuine, np.diagonal(cos), rtol=1e-5)
  np.testing.assert_allclose(np.sort(impostor), np.sort(cos[~same]),
                             rtol=1e-5, atol=1e-6)
  assert impostor.size == 36 - (4 + 1 + 9)

  genuine, impostor = metrics.verification_scores(recon, targets, labels,
                                                  genuine='same_identity')
  np.testing.assert_allclose(np.sort(genuine), np.sort(cos[same]), rtol=1e-5,
                             atol=1e-6)
  assert impostor.size == 22

  # A separate gallery of other images: needs its own labels.
  genuine, impostor = metrics.verification_scores(
      recon, targets[:3], labels, target_labels=labels[:3],
      genuine='same_identity')
  assert genuine.size + impostor.size == 18
  with pytest.raises(ValueError, match='same_index'):
    metrics.verification_scores(recon, targets[:3], labels,
                                target_labels=labels[:3])
  with pytest.raises(ValueError, match='labels'):
    metrics.verification_scores(recon, targets, labels[:5])
  with pytest.raises(ValueError, match='genuine'):
    metrics.verification_scores(recon, targets, labels, genuine='all')


def test_wilson_interval_textbook_values():
  # Newcombe (1998), Table I: 0/10 -> [0, 0.2775], 5/10 ->
  # [0.2366, 0.7634]; and all of 6 accepted still leaves room below 1.
  np.testing.assert_allclose(metrics.wilson_interval(0, 10), (0.0, 0.2775),
                             atol=1e-4)
  np.testing.assert_allclose(metrics.wilson_interval(5, 10),
                             (0.2366, 0.7634), atol=1e-4)
  low, high = metrics.wilson_interval(6, 6)
  assert high == 1.0 and low == pytest.approx(0.6097, abs=1e-4)
  with pytest.raises(ValueError, match='trials'):
    metrics.wilson_interval(0, 0)
  with pytest.raises(ValueError, match='successes'):
    metrics.wilson_interval(3, 2)


def test_clustered_rate_interval_counts_people_not_pairs():
  # One attempt per person: the plain Wilson interval.
  hits = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
  one_each = metrics.clustered_rate_interval(hits, np.arange(8))
  assert one_each['effective_attempts'] == 8
  np.testing.assert_allclose((one_each['low'], one_each['high']),
                             metrics.wilson_interval(5, 8))
  # Four people with 5 attempts each, all-or-nothing per person: 20
  # attempts carry the information of 4 people.
  hits = np.repeat([True, False, True, True], 5)
  people = np.repeat(np.arange(4), 5)
  got = metrics.clustered_rate_interval(hits, people)
  assert got['rate'] == 0.75 and got['attempts'] == 20 and got['people'] == 4
  assert got['effective_attempts'] == pytest.approx(4.0)
  np.testing.assert_allclose((got['low'], got['high']),
                             metrics.wilson_interval(3, 4))
  # Independent within people (hits spread evenly): close to 20 attempts.
  even = metrics.clustered_rate_interval(
      np.tile([True, True, False, True, True], 4), people)
  assert even['effective_attempts'] == 20
  # At rate 1 the variance says nothing: the number of people is used.
  full = metrics.clustered_rate_interval(np.ones(20, bool), people)
  assert full['effective_attempts'] == 4 and full['high'] == 1.0
  with pytest.raises(ValueError, match='one shape'):
    metrics.clustered_rate_interval(np.ones(3, bool), np.arange(2))


def test_bootstrap_thresholds_resample_people():
  rng = np.random.default_rng(0)
  people = np.repeat(np.arange(40), 3)
  x = rng.normal(size=(120, 16)) + 2.0 * rng.normal(size=(40, 16))[people]
  fmrs = (1e-1, 1e-2)
  got = metrics.bootstrap_impostor_thresholds(x, people, fmrs, num=60,
                                              seed=1)
  again = metrics.bootstrap_impostor_thresholds(x, people, fmrs, num=60,
                                                seed=1)
  np.testing.assert_array_equal(got[1e-2], again[1e-2])
  from id2image_jax.evaluation import scores  # pylint: disable=g-import-not-at-top
  point = {f: metrics.impostor_threshold(
      scores.impostor_pair_scores(x, people), f) for f in fmrs}
  for f in fmrs:
    assert got[f].shape == (60,) and np.isfinite(got[f]).all()
    low, high = np.percentile(got[f], [2.5, 97.5])
    assert low < point[f] < high
  # The stricter rate rests on fewer pairs above it: a wider spread.
  assert np.std(got[1e-2]) > np.std(got[1e-1])
  # A copy of a person is never paired with itself: with two people, every
  # replicate that draws one person twice has no impostor pair at all.
  two = metrics.bootstrap_impostor_thresholds(x[:6], people[:6], (0.5,),
                                              num=40, seed=0)[0.5]
  assert np.isnan(two).any() and np.isfinite(two).any()


def test_pixel_measures_compare_at_the_reconstructions_size():
  rng = np.random.default_rng(0)
  big = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  small = np.asarray(jax.image.resize(big, (2, 16, 16, 3), 'linear',
                                      antialias=True))
  # A photo against its own downscaled copy: a perfect reconstruction.
  same = metrics.pixel_measures(big, small)
  np.testing.assert_allclose(same['mse'], 0, atol=1e-12)
  assert np.all(np.isinf(same['psnr']))
  np.testing.assert_allclose(same['ssim'], 1, atol=1e-5)
  # MSE on the [0, 1] scale: a quarter of the [-1, 1] one.
  other = -small
  got = metrics.pixel_measures(small, other)
  np.testing.assert_allclose(got['mse'], np.mean(small**2, axis=(1, 2, 3)),
                             rtol=1e-5)
  np.testing.assert_allclose(
      got['psnr'], metrics.psnr(small, other, value_range=(-1, 1)),
      rtol=1e-6)
  np.testing.assert_array_equal(metrics.resized_like(small, other), small)
