"""Losses agree with numpy references and survive jit, vmap and grad."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import losses
from id2image_jax import metrics


def _sigmoid(z):
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def _eq3(x, bins, lo, hi, sigma):
  """Paper eq. 3 literally, in float64: sigmoids around each bin centre."""
  x = np.asarray(x, np.float64)[..., None]
  delta = (hi - lo) / bins
  centres = lo + delta * (np.arange(1, bins + 1) - 0.5)
  return np.sum(_sigmoid(sigma * (x - centres + delta / 2))
                - _sigmoid(sigma * (x - centres - delta / 2)), axis=-2)


def _off_edges(x, bins, lo, hi, margin):
  """Moves values at least `margin` away from every bin edge."""
  edges = np.linspace(lo, hi, bins + 1)
  nearest = edges[np.abs(x[..., None] - edges).argmin(-1)]
  close = np.abs(x - nearest) < margin
  return np.where(close, nearest + np.where(x >= nearest, margin, -margin), x)


# --- soft_histogram --------------------------------------------------------


@pytest.mark.parametrize('bins,lo,hi', [(10, 0.0, 255.0), (7, -1.0, 1.0),
                                        (1, 2.0, 3.0)])
def test_soft_histogram_tends_to_hard_histogram(bins, lo, hi):
  rng = np.random.default_rng(0)
  span = hi - lo
  x = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(3, 400))
  x = _off_edges(x, bins, lo, hi, 1e-3 * span).astype(np.float32)
  got = losses.soft_histogram(x, bins=bins, lo=lo, hi=hi,
                              sigma=2e4 / span)
  want = np.stack([np.histogram(row, bins, (lo, hi))[0] for row in x])
  np.testing.assert_allclose(got, want, atol=1e-3)


def test_soft_histogram_is_paper_eq3():
  rng = np.random.default_rng(1)
  x = rng.uniform(-20, 275, size=(2, 300)).astype(np.float32)
  got = losses.soft_histogram(x)
  np.testing.assert_allclose(got, _eq3(x, 10, 0.0, 255.0, 1.85), rtol=1e-5,
                             atol=1e-4)
  got = losses.soft_histogram(x, bins=4, lo=10.0, hi=50.0, sigma=0.3)
  np.testing.assert_allclose(got, _eq3(x, 4, 10.0, 50.0, 0.3), rtol=1e-5,
                             atol=1e-4)


def test_soft_histogram_gradient_matches_eq3_derivative():
  rng = np.random.default_rng(2)
  x = rng.uniform(0, 255, size=(500,)).astype(np.float32)
  w = rng.normal(size=10)
  got = jax.jit(jax.grad(lambda x: jnp.dot(losses.soft_histogram(x), w)))(x)
  # d/dx sigmoid(s (x - e)) = s sigmoid (1 - sigmoid).
  edges = np.linspace(0, 255, 11)
  s = _sigmoid(1.85 * (x.astype(np.float64)[:, None] - edges))
  ds = 1.85 * s * (1 - s)
  want = (ds[:, :-1] - ds[:, 1:]) @ w
  assert np.all(np.isfinite(got))
  assert np.abs(got).max() > 1e-3  # Paper sigma: gradients do not vanish.
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('lead', [(), (2,), (2, 3)])
def test_soft_histogram_shapes_and_normalisation(lead):
  x = jax.random.uniform(jax.random.key(0), (*lead, 50), maxval=255.0)
  counts = losses.soft_histogram(x, bins=6)
  chex.assert_shape(counts, (*lead, 6))
  chex.assert_type(counts, jnp.float32)
  freq = losses.soft_histogram(x, bins=6, normalize=True)
  np.testing.assert_allclose(jnp.sum(freq, -1), np.ones(lead), rtol=1e-6)
  np.testing.assert_allclose(freq * jnp.sum(counts, -1, keepdims=True),
                             counts, rtol=1e-5, atol=1e-5)


def test_soft_histogram_rejects_bad_input():
  with pytest.raises(AssertionError):
    losses.soft_histogram(jnp.float32(3.0))
  with pytest.raises(ValueError, match='bins'):
    losses.soft_histogram(jnp.ones(4), bins=0)
  with pytest.raises(ValueError, match='bins'):
    losses.soft_histogram(jnp.ones(4), bins=2.0)


def test_soft_histogram_out_of_range_input_is_zero_not_nan():
  freq = losses.soft_histogram(jnp.full((8,), 1e4), normalize=True)
  np.testing.assert_array_equal(freq, np.zeros(10))


class SoftHistogramTransformsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_variants_agree(self):
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-1.0)
    fn = self.variant(lambda x, s: losses.image_soft_histogram(
        x, value_range=(-1.0, 1.0), sigma=s))
    got = fn(x, 1.85)  # sigma may be traced (e.g. annealed).
    chex.assert_shape(got, (2, 3, 10))
    want = losses.image_soft_histogram(x, value_range=(-1.0, 1.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_vmap_equals_loop_and_traces_once(self):
    x = jax.random.uniform(jax.random.key(2), (4, 6, 5, 3), minval=-1.0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(x):
      return jax.vmap(lambda im: losses.image_soft_histogram(
          im, value_range=(-1.0, 1.0)))(x)

    got = batched(x)
    batched(x + 0.1)
    want = np.stack([losses.image_soft_histogram(im, value_range=(-1.0, 1.0))
                     for im in x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --- image histograms --------------------------------------------------------


def test_image_soft_histogram_is_per_channel_soft_histogram():
  rng = np.random.default_rng(3)
  images = rng.uniform(-1, 1, size=(2, 5, 7, 3)).astype(np.float32)
  got = losses.image_soft_histogram(images, value_range=(-1.0, 1.0),
                                    normalize=False)
  pixels = (images + 1.0) * 127.5
  flat = np.moveaxis(pixels, -1, -3).reshape(2, 3, 35)
  np.testing.assert_allclose(got, losses.soft_histogram(flat), rtol=1e-5,
                             atol=1e-4)
  np.testing.assert_allclose(got, _eq3(flat, 10, 0.0, 255.0, 1.85),
                             rtol=1e-5, atol=1e-4)


def test_image_histograms_do_not_depend_on_value_range_convention():
  rng = np.random.default_rng(4)
  u8 = rng.integers(0, 256, size=(2, 9, 9, 3), dtype=np.uint8)
  # 7 bins: no integer lies on an edge, where rounding in the mapping could
  # move a pixel of the hard histogram across (documented).
  for fn in (losses.image_soft_histogram, losses.image_histogram):
    want = fn(u8, value_range=(0.0, 255.0), bins=7)
    unit = fn(u8.astype(np.float32) / 255.0, value_range=(0.0, 1.0), bins=7)
    signed = fn(u8.astype(np.float32) / 127.5 - 1.0, value_range=(-1.0, 1.0),
                bins=7)
    np.testing.assert_allclose(unit, want, atol=1e-5)
    np.testing.assert_allclose(signed, want, atol=1e-5)
  with pytest.raises(ValueError, match='value_range'):
    losses.image_soft_histogram(u8, value_range=(1.0, -1.0))


@pytest.mark.parametrize('bins', [5, 10])
def test_image_histogram_matches_numpy_including_edges(bins):
  rng = np.random.default_rng(5)
  # With 5 bins the edges 0, 51, ..., 255 are integers, so ties are tested.
  u8 = rng.integers(0, 256, size=(2, 16, 16, 3)).astype(np.float32)
  u8[0, 0, :6, 0] = [0, 51, 102, 204, 255, 255]
  u8[1, 0, :2, 1] = [-3, 300]  # Out of range: dropped by np.histogram too.
  got = losses.image_histogram(u8, value_range=(0.0, 255.0), bins=bins,
                               normalize=False)
  want = np.array([[np.histogram(im[..., c], bins, (0, 255))[0]
                    for c in range(3)] for im in u8])
  np.testing.assert_array_equal(got, want)
  freq = losses.image_histogram(u8, value_range=(0.0, 255.0), bins=bins)
  np.testing.assert_allclose(freq, want / want.sum(-1, keepdims=True),
                             rtol=1e-6)


def test_image_soft_histogram_gradients_reach_pixels():
  images = jax.random.uniform(jax.random.key(3), (2, 8, 8, 3), minval=-1.0)
  target = jnp.full((2, 3, 10), 0.1)

  def loss(images):
    hist = losses.image_soft_histogram(images, value_range=(-1.0, 1.0))
    return jnp.sum(losses.histogram_loss(hist, target))

  grad = jax.jit(jax.grad(loss))(images)
  assert np.all(np.isfinite(grad))
  assert np.count_nonzero(grad) > grad.size // 4


def test_image_soft_histogram_bfloat16_input():
  images = jax.random.uniform(jax.random.key(4), (8, 8, 3), minval=-1.0)
  got = losses.image_soft_histogram(images.astype(jnp.bfloat16),
                                    value_range=(-1.0, 1.0))
  chex.assert_type(got, jnp.float32)
  want = losses.image_soft_histogram(
      images.astype(jnp.bfloat16).astype(jnp.float32), value_range=(-1, 1))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_soft_histogram_gradient_keeps_no_per_bin_intermediate():
  # The design goal: backward must not hold [M, bins] residuals (~44 MiB
  # here, 132 MiB at 1024x1024x3); the fused version needs none on CPU.
  images = jnp.zeros((1, 256, 256, 3))
  def loss(images):
    return jnp.sum(losses.image_soft_histogram(images, value_range=(-1, 1)))
  compiled = jax.jit(jax.grad(loss)).lower(images).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip('backend reports no memory analysis')
  per_bin_bytes = images.size * 11 * 4
  assert stats.temp_size_in_bytes < per_bin_bytes // 4


# --- distances ---------------------------------------------------------------


def test_identity_loss_l2_and_cosine():
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(2, 4, 3, 16)).astype(np.float32)
  got = losses.identity_loss(a, b)
  chex.assert_shape(got, (4, 3))
  np.testing.assert_allclose(got, np.sum((a - b) ** 2, -1), rtol=1e-5)
  cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(
      b, axis=-1)
  np.testing.assert_allclose(losses.identity_loss(a, b, kind='cosine'),
                             1 - cos, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.cosine_distance(3 * a, b), 1 - cos,
                             rtol=1e-5, atol=1e-6)
  # For unit vectors the two kinds differ by a factor of 2.
  ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
  ub = b / np.linalg.norm(b, axis=-1, keepdims=True)
  np.testing.assert_allclose(losses.identity_loss(ua, ub),
                             2 * losses.identity_loss(ua, ub, kind='cosine'),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='kind'):
    losses.identity_loss(a, b, kind='l1')
  with pytest.raises(AssertionError):
    losses.identity_loss(a, b[..., :8])


def test_cosine_distance_zero_vector_has_finite_gradient():
  grad = jax.jit(jax.grad(lambda a: losses.cosine_distance(a, jnp.ones(4))))(
      jnp.zeros(4))
  assert np.all(np.isfinite(grad))
  assert float(losses.cosine_distance(jnp.zeros(4), jnp.ones(4))) == 1.0


def test_losses_compute_bfloat16_in_float32():
  a = jax.random.normal(jax.random.key(5), (3, 512))
  b = jax.random.normal(jax.random.key(6), (3, 512))
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  got = losses.identity_loss(a16, b16)
  chex.assert_type(got, jnp.float32)
  want = losses.identity_loss(a16.astype(jnp.float32), b16.astype(jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_landmark_loss_points_and_flat():
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=(2, 5, 68, 2)).astype(np.float32)
  want = np.sum((a - b) ** 2, axis=(-2, -1))
  np.testing.assert_allclose(losses.landmark_loss(a, b), want, rtol=1e-5)
  np.testing.assert_allclose(
      losses.landmark_loss(a.reshape(5, 136), b.reshape(5, 136)), want,
      rtol=1e-5)
  np.testing.assert_allclose(losses.landmark_loss(a[0], b[0]), want[0],
                             rtol=1e-5)
  five = rng.normal(size=(2, 5, 2)).astype(np.float32)
  np.testing.assert_allclose(
      losses.landmark_loss(five[0], five[1], num_points=5),
      np.sum((five[0] - five[1]) ** 2), rtol=1e-5)
  with pytest.raises(AssertionError, match='68'):
    losses.landmark_loss(a[..., :67, :], b[..., :67, :])


def test_histogram_loss():
  rng = np.random.default_rng(8)
  a, b = rng.uniform(size=(2, 4, 3, 10)).astype(np.float32)
  np.testing.assert_allclose(losses.histogram_loss(a, b),
                             np.sum((a - b) ** 2, axis=(-2, -1)), rtol=1e-5)
  with pytest.raises(AssertionError):
    losses.histogram_loss(a[0, 0], b[0, 0])  # [bins] alone: no channel axis.


# --- objective ---------------------------------------------------------------


def test_objective_is_weighted_sum_with_paper_defaults():
  assert dict(losses.DEFAULT_WEIGHTS) == {'id': 1.0, 'landmarks': 0.0006,
                                          'histogram': 0.01}
  with pytest.raises(TypeError):
    losses.DEFAULT_WEIGHTS['id'] = 2.0  # type: ignore[index]
  terms = {'id': jnp.array([1.0, 2.0]), 'landmarks': jnp.array([100.0, 0.0]),
           'histogram': jnp.array([3.0, 5.0])}
  total, aux = losses.objective(terms)
  np.testing.assert_allclose(total, [1.0 + 0.06 + 0.03, 2.0 + 0.05],
                             rtol=1e-6)
  assert aux.keys() == terms.keys()
  np.testing.assert_array_equal(aux['landmarks'], terms['landmarks'])
  # Ablation: absent terms' weights are ignored; per-example weights work.
  total, _ = losses.objective({'id': terms['id']},
                              weights={'id': jnp.array([2.0, 3.0]),
                                       'unused': 9.0})
  np.testing.assert_allclose(total, [2.0, 6.0])


def test_objective_errors():
  with pytest.raises(ValueError, match=r"\['hist'\]"):
    losses.objective({'id': jnp.ones(2), 'hist': jnp.ones(2)})
  with pytest.raises(ValueError, match='at least one'):
    losses.objective({})
  with pytest.raises(AssertionError):
    losses.objective({'id': jnp.ones(2), 'histogram': jnp.ones((2, 1))})


def test_objective_as_aux_loss_under_jit_grad():
  target = jax.random.normal(jax.random.key(7), (3, 8))

  def loss_fn(x):
    terms = {'id': losses.identity_loss(x, target),
             'histogram': losses.histogram_loss(x.reshape(3, 2, 4),
                                                jnp.zeros((3, 2, 4)))}
    total, terms = losses.objective(terms)
    return jnp.sum(total), terms

  x = jnp.zeros((3, 8))
  (value, terms), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(x)
  np.testing.assert_allclose(value, jnp.sum(target**2), rtol=1e-5)
  chex.assert_shape(terms['id'], (3,))
  np.testing.assert_allclose(grad, -2 * target, rtol=1e-5)


# --- API conventions -------------------------------------------------------


def _public_functions():
  for module in (losses, metrics):
    for name in getattr(module, '__all__', dir(module)):
      fn = getattr(module, name)
      if inspect.isfunction(fn) and not name.startswith('_') and (
          fn.__module__.startswith('id2image_jax')):
        yield pytest.param(fn, id=f'{module.__name__}.{name}')


@pytest.mark.parametrize('fn', list(_public_functions()))
def test_optional_arguments_are_keyword_only(fn):
  spec = inspect.getfullargspec(fn)
  assert not spec.defaults, (
      f'{fn.__name__}: optional arguments must be keyword-only, prefer '
      f'f(x, *, option=...) (got positional defaults for '
      f'{spec.args[-len(spec.defaults):]})')
  assert 'rng' not in spec.args + spec.kwonlyargs


def test_api_test_covers_both_modules():
  names = {p.id for p in _public_functions()}
  assert 'id2image_jax.losses.soft_histogram' in names
  assert 'id2image_jax.metrics.tmr_at_fmr' in names
  assert len(names) >= 17
