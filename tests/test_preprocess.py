"""preprocess.to_encoder_input against numpy / PIL references.

Resize references and tolerances (values on the 0..255 scale, float32):

  reference                                        atol    measured max |err|
  numpy triangle filter (PIL's BILINEAR algorithm)  1e-3    3.6e-4
  PIL Image.resize(BILINEAR), mode 'F'              1e-3    3.5e-4
  PIL Image.resize(BICUBIC), mode 'F'               1e-3    2.6e-4
  box average, factor 4, ramp / period-4 pattern     1e-3    2.3e-5 / 4e-6
                                                           (interior)

`jax.image.resize(..., antialias=True)` widens the interpolation kernel by
the downscale factor, exactly what PIL's resampler does, so the two agree to
float32 rounding (checked at 64->32, 100x90->37x41, 64->21 and 20->50 when
this file was written). A downscale by an integer factor k equals the box
average away from the borders for a linear ramp (any symmetric kernel keeps
a linear function) and for any pattern of period k (the stretched triangle
is a k-box convolved with itself, so it averages whole periods; without
antialiasing this fails); at the borders both PIL and JAX renormalise the
clipped kernel, so the box average is only compared inside.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import preprocess
from id2image_jax.preprocess import InputSpec

ATOL_255 = 1e-3


def _unit(pixels):
  """0..255 pixels -> the generator's [-1, 1] range."""
  return (np.asarray(pixels, np.float32) / 127.5 - 1.0).astype(np.float32)


def _triangle_weights(n_in, n_out):
  """[n_out, n_in] weights of an antialiased linear resize (PIL's rule).

  Output pixel i is centred at input coordinate (i + 0.5) * n_in / n_out;
  the triangle kernel is stretched by the downscale factor (support 1 when
  upscaling) and renormalised where the image border clips it.
  """
  scale = n_in / n_out
  support = max(scale, 1.0)
  centres = (np.arange(n_out) + 0.5) * scale
  taps = np.arange(n_in) + 0.5
  w = np.maximum(0.0, 1.0 - np.abs(taps[None] - centres[:, None]) / support)
  return w / w.sum(axis=1, keepdims=True)


def _numpy_reference(images, spec):
  """Crop, antialiased bilinear resize, channel order, mean/std in numpy."""
  images = np.asarray(images, np.float64)
  top, left, bottom, right = preprocess.crop_pixels(spec, *images.shape[-3:-1])
  x = (images[..., top:bottom, left:right, :] + 1.0) * 127.5
  wh = _triangle_weights(x.shape[-3], spec.size[0])
  ww = _triangle_weights(x.shape[-2], spec.size[1])
  x = np.einsum('oh,...hwc,pw->...opc', wh, x, ww)
  if spec.channel_order == 'BGR':
    x = x[..., ::-1]
  return (x - np.asarray(spec.mean)) / np.asarray(spec.std)


def _pil_resize(pixels, size, method):
  """Per-channel float ('F' mode) PIL resize of [H, W, 3] 0..255 pixels."""
  image_mod = pytest.importorskip('PIL.Image')
  resample = {'linear': image_mod.BILINEAR, 'cubic': image_mod.BICUBIC}
  return np.stack([
      np.asarray(image_mod.fromarray(
          np.ascontiguousarray(pixels[..., c], np.float32), mode='F').resize(
              (size[1], size[0]), resample[method]))
      for c in range(3)], axis=-1)


# --- value path ----------------------------------------------------------


def test_no_resize_path_is_exact_crop_and_normalisation():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 40, 30, 3)).astype(np.float32)
  # crop rows 10:30 and columns 6:24 -> 20x18, the output size: no resize.
  spec = InputSpec(size=(20, 18), crop=(0.25, 0.2, 0.75, 0.8),
                   channel_order='BGR', mean=(10.0, 20.0, 30.0),
                   std=(2.0, 4.0, 8.0))
  assert preprocess.crop_pixels(spec, 40, 30) == (10, 6, 30, 24)
  got = preprocess.to_encoder_input(images, spec)
  pixels = (images[:, 10:30, 6:24, :].astype(np.float64) + 1.0) * 127.5
  want = (pixels[..., ::-1] - [10, 20, 30]) / [2, 4, 8]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize('source,crop,size', [
    ((64, 64), (0.0, 0.0, 1.0, 1.0), (32, 32)),      # integer factor 2
    ((100, 90), (0.1, 0.05, 0.9, 0.95), (37, 41)),   # crop, non-integer
    ((48, 48), (0.25, 0.25, 0.75, 0.75), (50, 50)),  # upscale
])
def test_linear_resize_matches_numpy_and_pil(source, crop, size):
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (1,) + source + (3,)).astype(np.float32)
  spec = InputSpec(size=size, crop=crop, mean=(5.0, 6.0, 7.0))
  got = np.asarray(preprocess.to_encoder_input(images, spec))
  assert got.shape == (1,) + size + (3,)
  np.testing.assert_allclose(got, _numpy_reference(images, spec),
                             atol=ATOL_255)
  top, left, bottom, right = preprocess.crop_pixels(spec, *source)
  pixels = (images[0, top:bottom, left:right].astype(np.float64) + 1) * 127.5
  want = _pil_resize(pixels, size, 'linear') - [5.0, 6.0, 7.0]
  np.testing.assert_allclose(got[0], want, atol=ATOL_255)


def test_cubic_resize_matches_pil_bicubic():
  rng = np.random.default_rng(2)
  images = rng.uniform(-1, 1, (70, 60, 3)).astype(np.float32)
  spec = InputSpec(size=(23, 29), method='cubic')
  got = preprocess.to_encoder_input(images, spec)
  want = _pil_resize((images.astype(np.float64) + 1) * 127.5, (23, 29),
                     'cubic')
  np.testing.assert_allclose(got, want, atol=ATOL_255)
  # Cubic and linear really differ on noise (the method is honoured).
  linear = preprocess.to_encoder_input(images, InputSpec(size=(23, 29)))
  assert np.abs(np.asarray(linear) - np.asarray(got)).max() > 1.0


def test_integer_factor_downscale_of_a_ramp_is_the_box_average():
  factor, n = 4, 64
  rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
  slopes = np.array([[1.5, 0.5], [-1.0, 2.0], [0.25, -0.75]])
  pixels = np.stack([a * rows + b * cols for a, b in slopes], axis=-1)
  pixels = 20 + 200 * (pixels - pixels.min()) / np.ptp(pixels)  # 20..220
  spec = InputSpec(size=(n // factor, n // factor))
  got = np.asarray(preprocess.to_encoder_input(_unit(pixels), spec))
  box = pixels.reshape(n // factor, factor, n // factor, factor, 3).mean(
      axis=(1, 3))
  inner = slice(1, -1)  # the kernel reaches 1.5 output pixels past a block
  np.testing.assert_allclose(got[inner, inner], box[inner, inner],
                             atol=ATOL_255)
  # A pattern with period `factor` in both axes: the antialiased kernel (a
  # triangle of half-width `factor`, i.e. a box of `factor` convolved with
  # itself) averages whole periods, so inside it also equals the box mean,
  # here the mean of the random tile. A plain bilinear sample (no
  # antialiasing) picks two pixels of the tile instead.
  tile = np.random.default_rng(3).uniform(0, 255, (factor, factor, 3))
  pattern = np.tile(tile, (n // factor, n // factor, 1))
  got = np.asarray(preprocess.to_encoder_input(_unit(pattern), spec))
  box = pattern.reshape(n // factor, factor, n // factor, factor, 3).mean(
      axis=(1, 3))
  np.testing.assert_allclose(box, np.broadcast_to(tile.mean(axis=(0, 1)),
                                                  box.shape), atol=1e-9)
  np.testing.assert_allclose(got[inner, inner], box[inner, inner],
                             atol=ATOL_255)


def test_channel_order_mean_and_std_per_channel():
  colour = np.array([200.0, 100.0, 30.0])  # R, G, B on 0..255
  image = np.broadcast_to(_unit(colour), (16, 16, 3))
  rgb = InputSpec(size=(8, 8), mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 5.0))
  out = np.asarray(preprocess.to_encoder_input(image, rgb))
  np.testing.assert_allclose(out, np.broadcast_to(
      (colour - [1, 2, 3]) / [2, 4, 5], (8, 8, 3)), atol=1e-4)
  # BGR: the output's channel 0 is blue, and mean/std are in BGR order.
  bgr = InputSpec(size=(8, 8), channel_order='BGR', mean=(1.0, 2.0, 3.0),
                  std=(2.0, 4.0, 5.0))
  out = np.asarray(preprocess.to_encoder_input(image, bgr))
  np.testing.assert_allclose(out[0, 0], (colour[::-1] - [1, 2, 3]) /
                             [2, 4, 5], atol=1e-4)
  # [-1, 1] ends map to 0 and 255.
  ends = np.stack([-np.ones((4, 4, 3)), np.ones((4, 4, 3))])
  out = preprocess.to_encoder_input(ends.astype(np.float32),
                                    InputSpec(size=(4, 4)))
  np.testing.assert_allclose(out[0], 0.0, atol=1e-4)
  np.testing.assert_allclose(out[1], 255.0, atol=1e-4)


def test_batch_dims_jit_and_vmap_agree():
  rng = np.random.default_rng(4)
  images = rng.uniform(-1, 1, (2, 3, 32, 24, 3)).astype(np.float32)
  spec = InputSpec(size=(10, 12), crop=(0.1, 0.0, 0.9, 1.0),
                   mean=(3.0, 2.0, 1.0), std=(50.0, 60.0, 70.0))
  eager = preprocess.to_encoder_input(images, spec)
  assert eager.shape == (2, 3, 10, 12, 3)
  jitted = jax.jit(preprocess.to_encoder_input, static_argnums=1)(images,
                                                                  spec)
  mapped = jax.vmap(jax.vmap(lambda im: preprocess.to_encoder_input(
      im, spec)))(images)
  single = preprocess.to_encoder_input(images[1, 2], spec)
  chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-5)
  chex.assert_trees_all_close(mapped, eager, rtol=1e-6, atol=1e-5)
  chex.assert_trees_all_close(single, eager[1, 2], rtol=1e-6, atol=1e-5)


def test_bfloat16_images_stay_bfloat16():
  images = jnp.zeros((1, 16, 16, 3), jnp.bfloat16)
  out = preprocess.to_encoder_input(images, InputSpec(size=(8, 8)))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), 127.5, atol=0.5)


# --- gradients -------------------------------------------------------------


def test_gradients_are_finite_and_reach_only_the_crop():
  rng = np.random.default_rng(5)
  images = rng.uniform(-1, 1, (2, 40, 40, 3)).astype(np.float32)
  spec = InputSpec(size=(12, 12), crop=(0.25, 0.25, 0.75, 0.75),
                   mean=(120.0,) * 3, std=(60.0,) * 3)
  weights = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda im: jnp.sum(
      preprocess.to_encoder_input(im, spec) * weights)))(images)
  grad = np.asarray(grad)
  assert grad.shape == images.shape and np.all(np.isfinite(grad))
  inside = grad[:, 10:30, 10:30]
  assert np.all(np.abs(inside).max(axis=(1, 2)) > 0)
  outside = grad.copy()
  outside[:, 10:30, 10:30] = 0
  assert not outside.any()
  # The map is linear: its gradient is the adjoint, checked on the
  # numpy reference (d/dx of <A x, w> = A^T w).
  wh = _triangle_weights(20, 12)
  want = np.einsum('oh,nopc,pw->nhwc', wh, weights, wh) * 127.5 / 60.0
  np.testing.assert_allclose(inside, want, rtol=1e-4, atol=1e-6)


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize('shape', [(1, 16, 16, 4), (1, 16, 16, 1),
                                   (1, 3, 16, 16), (16, 3)])
def test_wrong_channels_or_rank_is_an_error(shape):
  with pytest.raises(ValueError, match=r'\[\.\.\., H, W, 3\] RGB'):
    preprocess.to_encoder_input(np.zeros(shape, np.float32),
                                InputSpec(size=(8, 8)))


def test_integer_images_are_refused():
  with pytest.raises(ValueError, match='uint8_to_unit_range'):
    preprocess.to_encoder_input(np.zeros((8, 8, 3), np.uint8),
                                InputSpec(size=(4, 4)))


def test_crop_that_rounds_to_nothing_is_an_error():
  spec = InputSpec(size=(4, 4), crop=(0.0, 0.0, 0.1, 0.5))
  assert preprocess.crop_pixels(spec, 100, 100) == (0, 0, 10, 50)
  with pytest.raises(ValueError, match='is empty at 4x4'):
    preprocess.crop_pixels(spec, 4, 4)
  with pytest.raises(ValueError, match='is empty at 4x4'):
    preprocess.to_encoder_input(np.zeros((4, 4, 3), np.float32), spec)


@pytest.mark.parametrize('fields,message', [
    ({'size': (0, 8)}, 'size must be 2 positive'),
    ({'size': (8, 8, 3)}, 'size must be 2 positive'),
    ({'crop': (0.5, 0.0, 0.5, 1.0)}, 'top < bottom'),
    ({'crop': (0.0, -0.1, 1.0, 1.0)}, 'left < right'),
    ({'crop': (0.0, 0.0, 1.0, 1.2)}, 'right <= 1'),
    ({'crop': (0.0, 0.0, 1.0)}, r'crop must be \(top'),
    ({'channel_order': 'GRB'}, 'RGB or BGR'),
    ({'mean': (1.0, 2.0)}, '3 values'),
    ({'std': (1.0, 0.0, 1.0)}, 'non-zero'),
    ({'std': (1.0, float('nan'), 1.0)}, 'finite'),
    ({'mean': (1.0, float('inf'), 1.0)}, 'mean must be finite'),
    ({'method': 'nearest'}, 'method must be one of'),
    ({'size': ('a', 8)}, 'must be numbers'),
])
def test_invalid_input_spec_is_an_error(fields, message):
  with pytest.raises(ValueError, match=message):
    InputSpec(**{'size': (8, 8), **fields})


def test_spec_from_json_lists_equals_spec_from_tuples():
  from_json = InputSpec(size=[224, 224], crop=[0, 0, 1, 1], mean=[1, 2, 3],
                        std=[1, 1, 1])
  assert from_json == InputSpec(size=(224, 224), mean=(1.0, 2.0, 3.0))
  assert isinstance(from_json.size, tuple) and hash(from_json)


def test_non_finite_images_raise_eagerly_but_not_under_jit():
  images = np.zeros((3, 8, 8, 3), np.float32)
  images[1, 2, 3, 0] = np.nan
  images[2, 0, 0, 2] = np.inf
  spec = InputSpec(size=(4, 4))
  with pytest.raises(ValueError, match=r'2 NaN/Inf.*images\[1\]'):
    preprocess.to_encoder_input(images, spec)
  with pytest.raises(ValueError, match='1 NaN/Inf'):
    preprocess.check_finite(images[1, 2])
  preprocess.check_finite(images[0])  # finite: no error
  # Traced values are unknown: no error, no host sync; NaN propagates.
  out = jax.jit(preprocess.to_encoder_input, static_argnums=1)(images, spec)
  assert np.isnan(np.asarray(out[1])).any()
  assert np.all(np.isfinite(np.asarray(out[0])))
