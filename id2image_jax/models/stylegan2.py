"""StyleGAN2 generator (config-f maths) in Flax linen, NHWC.

The maths are those of NVlabs stylegan2-ada-pytorch ``training/networks.py``
(read at commit d72cc7d0), which reproduces the original TensorFlow config-f
generator, with the same parameter roles and names:

  mapping:    z [B, z_dim] -> normalize_2nd_moment -> ``fc0..fc{L-1}``
              (equalised-lr dense, lr_multiplier 0.01, lrelu * sqrt(2)) ->
              w [B, w_dim] -> broadcast to ws [B, num_ws, w_dim] ->
              truncation ``w_avg + psi * (w - w_avg)`` on the first
              ``truncation_cutoff`` layers (all when None).
  synthesis:  ``b4``: learned const [4, 4, C] -> conv1 -> torgb;
              ``b{R}`` (R = 8..resolution): conv0 (2x upsampling) -> conv1 ->
              torgb, and the RGB skip image of the previous block upsampled.
              Every conv is a 3x3 modulated (styles from an ``affine`` layer of
              its own w) and demodulated convolution, plus per-pixel noise
              times a learned per-layer ``noise_strength``, bias, lrelu *
              sqrt(2) and, when ``conv_clamp`` is set, a clamp to +-conv_clamp
              (stylegan2-ada). ToRGB is a 1x1 modulated conv without
              demodulation (styles scaled by 1/sqrt(C)) plus bias, clamped too.
              Upsampling uses the FIR filter [1, 3, 3, 1] (`upfirdn2d`).

Layer j of the synthesis takes ``ws[:, j]``: b4.conv1 ws[0], b4.torgb ws[1],
b8.conv0 ws[1], b8.conv1 ws[2], b8.torgb ws[3], ... so ``num_ws = 2 *
log2(resolution) - 2`` (18 at 1024 px). Noise layers are the convs in the
same order (`noise_shapes`).

Variables::

  params/mapping/fc{i}/{kernel [in, out], bias [out]}
  params/synthesis/b4/const [4, 4, C]
  params/synthesis/b{R}/conv{0,1}/{affine/{kernel, bias}, weight [3, 3, I, O],
                                   bias [O], noise_strength []}
  params/synthesis/b{R}/torgb/{affine/{kernel, bias}, weight [1, 1, C, 3],
                               bias [3]}
  buffers/mapping/w_avg [w_dim]
  buffers/synthesis/b{R}/conv{0,1}/noise_const [R, R]

Weights are stored raw as in the checkpoints (equalised learning rate: the
gains are applied at run time). Every conv ``weight`` is a *correlation*
kernel (what ``lax.conv`` computes); the upsampling convs of the torch
checkpoints act as true convolutions (transposed conv), so porting flips
them (`id2image_jax.porting.stylegan2`).

Compute dtype: ``config.dtype`` ('float32' or 'bfloat16') is used for the
synthesis activations and convolutions; the mapping network, the affine
styles, the demodulation coefficients and the RGB skip image stay float32
(they are small, and float32 keeps truncation and the output image exact).
Parameters are always float32. Output images are float32 NHWC, RGB in about
[-1, 1] (not clipped).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax.models import _variants
from id2image_jax.models import generator_init

# Shared-weight modulated conv is the default: measured on CPU
# (benchmarks/README.md, "modulated conv forms") it is faster than the grouped
# per-sample-weight form for batches > 1, under vmap it stays one ordinary
# batched conv, and it never materialises per-sample weights [B, k, k, I, O]
# (2.4 GB at 1024 px, batch 256). Both forms compute the same maths.
DEFAULT_FUSED_MODCONV = False

NOISE_MODES = ('const', 'random', 'none')
_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_DEMOD_EPS = 1e-8
_DTYPES = ('float32', 'bfloat16')


# --------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
  """Architecture of a StyleGAN2 generator ('skip' generator, config-f).

  JSON round trip: ``StyleGAN2Config(**json.loads(json.dumps(
  dataclasses.asdict(config))))`` gives back an equal config.

  Attributes:
    resolution: output size in pixels, a power of two >= 4.
    z_dim: input latent size (0 is not supported).
    w_dim: intermediate latent size.
    mapping_layers: number of dense layers in the mapping network.
    mapping_features: width of the hidden mapping layers; None = w_dim.
    channel_base: channels at resolution R are ``min(channel_base // R,
      channel_max)``.
    channel_max: see channel_base.
    lr_multiplier: equalised-lr multiplier of the mapping layers.
    conv_clamp: clamp conv/ToRGB outputs to +-conv_clamp; None = no clamp.
    img_channels: output channels.
    resample_filter: FIR taps for upsampling (normalised to sum 1).
    use_noise: whether the convs have noise inputs.
    dtype: compute dtype of the synthesis network, 'float32' or 'bfloat16'.
  """
  resolution: int
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_features: int | None = None
  channel_base: int = 32768
  channel_max: int = 512
  lr_multiplier: float = 0.01
  conv_clamp: float | None = None
  img_channels: int = 3
  resample_filter: tuple[int, ...] = (1, 3, 3, 1)
  use_noise: bool = True
  dtype: str = 'float32'

  def __post_init__(self):
    # JSON gives lists; a frozen (hashable) config needs tuples.
    object.__setattr__(self, 'resample_filter',
                       tuple(self.resample_filter))
    r = self.resolution
    if not isinstance(r, int) or r < 4 or r & (r - 1):
      raise ValueError(f'resolution must be a power of two >= 4, got {r!r}')
    if self.z_dim < 1 or self.w_dim < 1 or self.mapping_layers < 1:
      raise ValueError('z_dim, w_dim and mapping_layers must be >= 1, got '
                       f'{self.z_dim}, {self.w_dim}, {self.mapping_layers}')
    if self.dtype not in _DTYPES:
      raise ValueError(f'dtype must be one of {_DTYPES}, got {self.dtype!r}')
    if min(self.channels(res) for res in self.block_resolutions) < 1:
      raise ValueError(f'channel_base {self.channel_base} gives no channels '
                       f'at {self.resolution} px')

  @property
  def num_ws(self) -> int:
    """Number of per-layer latents (W+ rows): 2 * log2(resolution) - 2."""
    return 2 * int(math.log2(self.resolution)) - 2

  @property
  def num_layers(self) -> int:
    """Number of modulated 3x3 convs (= noise inputs)."""
    return self.num_ws - 1

  @property
  def block_resolutions(self) -> tuple[int, ...]:
    return tuple(2 ** i for i in range(2, int(math.log2(self.resolution)) + 1))

  @property
  def preview_resolutions(self) -> tuple[int, ...]:
    """Smaller outputs synthesis can stop at: the RGB skip image of an
    earlier block, without the cost of the blocks above it."""
    return self.block_resolutions[:-1]

  def channels(self, res: int) -> int:
    """Feature channels of the block at resolution `res`."""
    return min(self.channel_base // res, self.channel_max)

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


# Variant table (data, not subclasses): name -> StyleGAN2Config kwargs.
VARIANTS: dict[str, dict[str, Any]] = {
    # Official StyleGAN2 config-f (e.g. FFHQ 1024, stylegan2-ffhq-config-f).
    'config-f-1024': dict(resolution=1024),
    'config-f-256': dict(resolution=256),
    # stylegan2-ada-pytorch train.py --cfg=paper256 / paper512 / paper1024
    # (mixed precision in torch, hence conv_clamp=256).
    'ada-paper256': dict(resolution=256, channel_base=16384, conv_clamp=256.),
    'ada-paper512': dict(resolution=512, conv_clamp=256.),
    'ada-paper1024': dict(resolution=1024, conv_clamp=256.),
    # Small randomly initialised generator for demos and tests.
    'demo-64': dict(resolution=64, z_dim=64, w_dim=64, mapping_layers=4,
                    channel_base=2048, channel_max=64),
    # Smaller still, for end-to-end job tests that must compile in seconds.
    'demo-8': dict(resolution=8, z_dim=16, w_dim=16, mapping_layers=2,
                   channel_base=128, channel_max=16),
}


def get_config(variant: str, **overrides: Any) -> StyleGAN2Config:
  """Config of a named variant (see `VARIANTS`) with fields overridden."""
  fields = _variants.entry(VARIANTS, variant, model='StyleGAN2')
  return StyleGAN2Config(**{**fields, **overrides})


def as_config(config: StyleGAN2Config | Mapping[str, Any]) -> StyleGAN2Config:
  """Accepts a config or its ``dataclasses.asdict`` / JSON dict."""
  if isinstance(config, StyleGAN2Config):
    return config
  return StyleGAN2Config(**dict(config))


def noise_shapes(config: StyleGAN2Config | Mapping[str, Any]
                 ) -> list[tuple[int, int]]:
  """(H, W) of every noise input, in layer order (b4.conv1, b8.conv0, ...)."""
  config = as_config(config)
  if not config.use_noise:
    return []
  shapes = []
  for res in config.block_resolutions:
    shapes += [(res, res)] * (1 if res == 4 else 2)
  return shapes


def const_noise(config: StyleGAN2Config | Mapping[str, Any],
                variables: Mapping[str, Any]) -> list[jax.Array]:
  """The stored ``noise_const`` maps in `noise_shapes` order.

  What ``noise_mode='const'`` uses; a starting point when the noise is
  optimised together with the latent.
  """
  config = as_config(config)
  if not config.use_noise:
    return []
  synthesis = variables['buffers']['synthesis']
  maps = []
  for res in config.block_resolutions:
    for conv in (('conv1',) if res == 4 else ('conv0', 'conv1')):
      maps.append(synthesis[f'b{res}'][conv]['noise_const'])
  return maps


# --------------------------------------------------------------------------
# Pure building blocks.


def setup_filter(taps: Sequence[float]) -> np.ndarray:
  """FIR taps -> float32 numpy filter normalised to sum 1 (separable, 1-D)."""
  f = np.asarray(taps, np.float32)
  if f.ndim != 1 or f.size == 0:
    raise ValueError(f'filter taps must be a non-empty 1-D list, got {taps!r}')
  return f / f.sum()


def _pad_pairs(padding) -> tuple[tuple[int, int], tuple[int, int]]:
  if isinstance(padding, int):
    return (padding, padding), (padding, padding)
  (y0, y1), (x0, x1) = padding
  return (int(y0), int(y1)), (int(x0), int(x1))


def _fir_1d(x: jax.Array, taps: np.ndarray, axis: int, down: int
            ) -> jax.Array:
  """Correlates `x` along `axis` with `taps` ('valid'), keeping every down-th.

  A sum of strided shifted slices: XLA fuses it into one elementwise kernel,
  and its transpose (the backward pass) is as cheap.
  """
  n = x.shape[axis] - taps.size + 1
  if n < 1:
    raise ValueError(f'filter of {taps.size} taps is longer than the padded '
                     f'input ({x.shape[axis]})')
  count = (n - 1) // down + 1
  out = None
  for j, t in enumerate(taps.tolist()):
    if t == 0:
      continue
    term = jax.lax.slice_in_dim(x, j, j + (count - 1) * down + 1, down, axis)
    term = term * jnp.asarray(t, x.dtype)
    out = term if out is None else out + term
  if out is None:
    shape = list(x.shape)
    shape[axis] = count
    out = jnp.zeros(shape, x.dtype)
  return out


def upfirdn2d(x: jax.Array, f: np.ndarray | Sequence[float], *, up: int = 1,
              down: int = 1, padding: Any = 0, flip_filter: bool = False,
              gain: float = 1.0) -> jax.Array:
  """Upsamples, pads, FIR-filters and downsamples images (per channel).

  The same sequence as stylegan2-ada's ``upfirdn2d`` (and scipy's
  ``upfirdn``): insert ``up - 1`` zeros after every pixel; pad (negative
  values crop); convolve with `f` keeping only outputs whose footprint lies
  inside the padded image; keep every ``down``-th pixel.

  Args:
    x: [B, H, W, C] images.
    f: static FIR filter (numpy or list, not traced): [taps], applied along H
      and W (separable), or [fh, fw].
    up: integer upsampling factor (both axes).
    down: integer downsampling factor (both axes).
    padding: int, or ``((top, bottom), (left, right))``, in pixels of the
      upsampled image; negative values crop.
    flip_filter: False = convolution, True = correlation.
    gain: overall gain (a separable filter applies sqrt(gain) per axis).

  Returns:
    [B, H', W', C] with ``H' = ceil((H * up + top + bottom - fh + 1) /
    down)`` (likewise W'), in x.dtype.
  """
  chex.assert_rank(x, 4)
  f = np.asarray(f, np.float32)
  if f.ndim not in (1, 2):
    raise ValueError(f'filter must be 1-D or 2-D, got shape {f.shape}')
  if up < 1 or down < 1:
    raise ValueError(f'up and down must be >= 1, got {up}, {down}')
  (py0, py1), (px0, px1) = _pad_pairs(padding)
  # Zero insertion (interior padding) and padding/cropping in one lax.pad;
  # the extra ``up - 1`` at the high end are the zeros after the last pixel.
  x = jax.lax.pad(x, jnp.zeros((), x.dtype),
                  [(0, 0, 0), (py0, py1 + up - 1, up - 1),
                   (px0, px1 + up - 1, up - 1), (0, 0, 0)])
  if not flip_filter:
    f = f[::-1] if f.ndim == 1 else f[::-1, ::-1]
  if f.ndim == 1:
    f = f * np.float32(math.sqrt(gain))
    x = _fir_1d(x, f, axis=1, down=down)
    return _fir_1d(x, f, axis=2, down=down)
  f = f * np.float32(gain)
  channels = x.shape[-1]
  kernel = jnp.broadcast_to(jnp.asarray(f, x.dtype)[:, :, None, None],
                            f.shape + (1, channels))
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(down, down), padding='VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=channels)


def upsample2d(x: jax.Array, f: np.ndarray | Sequence[float], *,
               up: int = 2) -> jax.Array:
  """[B, H, W, C] -> [B, H * up, W * up, C] with FIR filter `f` (gain up^2)."""
  f = np.asarray(f, np.float32)
  taps = f.shape[0]
  pad = ((taps + up - 1) // 2, (taps - up) // 2)
  return upfirdn2d(x, f, up=up, padding=(pad, pad), gain=up ** 2)


def _conv(x: jax.Array, w: jax.Array, *, up: int, groups: int,
          resample_filter: np.ndarray | None) -> jax.Array:
  """'Same' correlation of x [N, H, W, G*I] with w [kh, kw, I, G*O].

  With ``up > 1``: a transposed conv (correlation of the zero-upsampled input
  with `w`, full padding) then the FIR filter, padded so that the output is
  exactly [N, H*up, W*up, G*O] (stylegan2-ada ``conv2d_resample``).
  """
  kh, kw = w.shape[:2]
  dims = ('NHWC', 'HWIO', 'NHWC')
  if up == 1:
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=dims, feature_group_count=groups)
  if resample_filter is None:
    raise ValueError('upsampling needs a resample_filter')
  y = jax.lax.conv_general_dilated(
      x, w, (1, 1), ((kh - 1, kh - 1), (kw - 1, kw - 1)),
      lhs_dilation=(up, up), dimension_numbers=dims,
      feature_group_count=groups)
  # y is [(H-1)*up + kh]; stylegan2-ada's padding for a 'same' up-conv.
  taps = np.asarray(resample_filter).shape[0]
  pad = []
  for k in (kh, kw):
    p = k // 2
    pad.append((p + (taps + up - 1) // 2 - (k - 1),
                p + (taps - up) // 2 - (k - up)))
  return upfirdn2d(y, resample_filter, padding=tuple(pad), gain=up ** 2)


def modulated_conv2d(x: jax.Array, weight: jax.Array, styles: jax.Array, *,
                     demodulate: bool = True, up: int = 1,
                     resample_filter: np.ndarray | None = None,
                     fused: bool = DEFAULT_FUSED_MODCONV) -> jax.Array:
  """StyleGAN2 modulated (and demodulated) convolution, 'same' padding.

  For sample b: ``w_b[..., i, o] = weight[..., i, o] * styles[b, i]``, and
  with `demodulate` ``w_b[..., o] *= rsqrt(sum_{kh,kw,i} w_b^2 + 1e-8)``; the
  output is the correlation of x[b] with w_b (after 2x upsampling when
  ``up=2``: transposed conv + FIR filter, as in stylegan2-ada).

  Two formulations, equal up to rounding:

  * ``fused=True``: per-sample weights and one grouped conv with the batch
    folded into channels (the "fused" form of the official code).
  * ``fused=False``: scale the input channels by the styles, one ordinary
    conv with the shared `weight`, scale the output channels by the
    demodulation coefficients. No per-sample weights; under `jax.vmap` it
    stays an ordinary batched conv.

  Args:
    x: [B, H, W, I] activations (compute dtype).
    weight: [kh, kw, I, O] correlation kernel (odd kh, kw).
    styles: [B, I] modulation coefficients.
    demodulate: apply weight demodulation.
    up: 1, or an integer upsampling factor (needs `resample_filter`).
    resample_filter: 1-D FIR taps normalised to sum 1 (`setup_filter`).
    fused: which formulation (see above).

  Returns:
    [B, H * up, W * up, O] in x.dtype.
  """
  b, h, w_, i = x.shape
  kh, kw, _, o = weight.shape
  chex.assert_shape(weight, (kh, kw, i, o))
  chex.assert_shape(styles, (b, i))
  dtype = x.dtype
  weight = weight.astype(jnp.float32)
  styles = styles.astype(jnp.float32)
  dcoefs = None
  if demodulate:
    # sum_{kh,kw,i} (weight * s_i)^2 = (s^2) @ sum_{kh,kw} weight^2: [B, O],
    # without materialising per-sample weights.
    dcoefs = jax.lax.rsqrt(
        jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1))
        + _DEMOD_EPS)

  if not fused:
    y = x * styles[:, None, None, :].astype(dtype)
    y = _conv(y, weight.astype(dtype), up=up, groups=1,
              resample_filter=resample_filter)
    if demodulate:
      y = y * dcoefs[:, None, None, :].astype(dtype)
    return y

  wb = weight[None] * styles[:, None, None, :, None]  # [B, kh, kw, I, O]
  if demodulate:
    wb = wb * dcoefs[:, None, None, None, :]
  # Batch -> channel groups: x [1, H, W, B*I], kernel [kh, kw, I, B*O].
  xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w_, b * i)
  wg = jnp.transpose(wb, (1, 2, 3, 0, 4)).reshape(kh, kw, i, b * o)
  y = _conv(xg, wg.astype(dtype), up=up, groups=b,
            resample_filter=resample_filter)
  _, ho, wo, _ = y.shape
  return jnp.transpose(y.reshape(ho, wo, b, o), (2, 0, 1, 3))


def normalize_2nd_moment(x: jax.Array, *, axis: int = -1,
                         eps: float = 1e-8) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) along `axis` (StyleGAN's pixel norm of z)."""
  return x * jax.lax.rsqrt(
      jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


def truncate(ws: jax.Array, w_avg: jax.Array, *, psi: float | jax.Array = 1.0,
             cutoff: int | None = None) -> jax.Array:
  """Truncation trick: ``w_avg + psi * (ws - w_avg)`` on layers < cutoff.

  Args:
    ws: [B, num_ws, w_dim].
    w_avg: [w_dim].
    psi: scalar (may be traced); a Python 1 returns `ws` unchanged.
    cutoff: static number of leading layers to truncate; None = all.

  Returns:
    [B, num_ws, w_dim].
  """
  if isinstance(psi, (int, float)) and psi == 1:
    return ws
  truncated = w_avg + psi * (ws - w_avg)
  if cutoff is None:
    return truncated
  layer = jnp.arange(ws.shape[-2])[:, None]
  return jnp.where(layer < cutoff, truncated, ws)


def _bias_act(x: jax.Array, bias: jax.Array, *, lrelu: bool,
              clamp: float | None) -> jax.Array:
  """stylegan2-ada ``bias_act``: x + b, lrelu * sqrt(2), clamp to +-clamp."""
  x = x + bias.astype(x.dtype)
  if lrelu:
    x = jax.nn.leaky_relu(x, _LRELU_SLOPE) * jnp.asarray(_LRELU_GAIN, x.dtype)
  if clamp is not None:
    x = jnp.clip(x, -clamp, clamp)
  return x


# --------------------------------------------------------------------------
# Modules.


class FullyConnected(nn.Module):
  """Equalised-learning-rate dense layer (stylegan2-ada FullyConnectedLayer).

  ``kernel`` [in, out] (torch ``weight.T``) is stored raw, initialised
  N(0, 1 / lr_multiplier^2), and scaled by ``lr_multiplier / sqrt(in)`` at
  run time; ``bias`` is scaled by ``lr_multiplier``. Always float32.
  """
  features: int
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  lrelu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, in] -> [B, features] float32."""
    fan_in = x.shape[-1]
    kernel = self.param('kernel',
                        nn.initializers.normal(1.0 / self.lr_multiplier),
                        (fan_in, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.constant(self.bias_init),
                      (self.features,), jnp.float32)
    y = x.astype(jnp.float32) @ (
        kernel * (self.lr_multiplier / math.sqrt(fan_in)))
    return _bias_act(y, bias * self.lr_multiplier, lrelu=self.lrelu,
                     clamp=None)


class MappingNetwork(nn.Module):
  """z [B, z_dim] -> ws [B, num_ws, w_dim] (float32), with truncation."""
  config: StyleGAN2Config

  @nn.compact
  def __call__(self, z: jax.Array, *, truncation_psi: float | jax.Array = 1.0,
               truncation_cutoff: int | None = None) -> jax.Array:
    cfg = self.config
    chex.assert_shape(z, (None, cfg.z_dim))
    x = normalize_2nd_moment(z.astype(jnp.float32))
    hidden = cfg.mapping_features or cfg.w_dim
    for idx in range(cfg.mapping_layers):
      last = idx == cfg.mapping_layers - 1
      x = FullyConnected(cfg.w_dim if last else hidden,
                         lr_multiplier=cfg.lr_multiplier, lrelu=True,
                         name=f'fc{idx}')(x)
    w_avg = self.variable('buffers', 'w_avg', jnp.zeros, (cfg.w_dim,),
                          jnp.float32)
    ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], cfg.num_ws, cfg.w_dim))
    return truncate(ws, w_avg.value, psi=truncation_psi,
                    cutoff=truncation_cutoff)


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv (+2x upsampling), noise, bias, lrelu, clamp."""
  in_channels: int
  out_channels: int
  resolution: int
  up: int = 1
  kernel_size: int = 3
  use_noise: bool = True
  conv_clamp: float | None = None
  resample_filter: tuple[int, ...] = (1, 3, 3, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, *, noise_mode: str,
               noise: jax.Array | None, fused_modconv: bool) -> jax.Array:
    """x [B, R/up, R/up, I], w [B, w_dim] -> [B, R, R, O] (dtype)."""
    res, k = self.resolution, self.kernel_size
    b = x.shape[0]
    chex.assert_shape(x, (b, res // self.up, res // self.up,
                          self.in_channels))
    styles = FullyConnected(self.in_channels, bias_init=1.0,
                            name='affine')(w)
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (k, k, self.in_channels, self.out_channels),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.out_channels,),
                      jnp.float32)
    x = modulated_conv2d(x.astype(self.dtype), weight, styles, up=self.up,
                         resample_filter=setup_filter(self.resample_filter),
                         fused=fused_modconv)
    if self.use_noise:
      strength = self.param('noise_strength', nn.initializers.zeros, (),
                            jnp.float32)
      const = self.variable(
          'buffers', 'noise_const',
          lambda: jax.random.normal(self.make_rng('params'), (res, res),
                                    jnp.float32))
      if noise is not None:
        if noise.shape not in ((res, res), (b, res, res)):
          raise ValueError(f'noise for a {res}x{res} layer must be [{res}, '
                           f'{res}] or [{b}, {res}, {res}], got {noise.shape}')
        n = noise
      elif noise_mode == 'const':
        n = const.value
      elif noise_mode == 'random':
        n = jax.random.normal(self.make_rng('noise'), (b, res, res),
                              jnp.float32)
      else:
        n = None
      if n is not None:
        x = x + (n.astype(jnp.float32) * strength)[..., None].astype(x.dtype)
    return _bias_act(x, bias, lrelu=True, clamp=self.conv_clamp)


class ToRGB(nn.Module):
  """1x1 modulated conv without demodulation, bias, clamp."""
  in_channels: int
  img_channels: int = 3
  conv_clamp: float | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array, *,
               fused_modconv: bool) -> jax.Array:
    """x [B, R, R, C], w [B, w_dim] -> [B, R, R, img_channels] (dtype)."""
    styles = FullyConnected(self.in_channels, bias_init=1.0,
                            name='affine')(w)
    styles = styles * (1.0 / math.sqrt(self.in_channels))
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (1, 1, self.in_channels, self.img_channels),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.img_channels,),
                      jnp.float32)
    x = modulated_conv2d(x.astype(self.dtype), weight, styles,
                         demodulate=False, fused=fused_modconv)
    return _bias_act(x, bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution: [const | conv0 (up)] -> conv1 -> torgb (+ skip image)."""
  config: StyleGAN2Config
  resolution: int

  @nn.compact
  def __call__(self, x: jax.Array | None, img: jax.Array | None,
               ws: jax.Array, *, noise_mode: str,
               noise: Sequence[jax.Array] | None,
               fused_modconv: bool) -> tuple[jax.Array, jax.Array]:
    """ws [B, num_conv + 1, w_dim]; img [B, R/2, R/2, 3] float32 or None."""
    cfg, res = self.config, self.resolution
    dtype = cfg.compute_dtype
    out_ch = cfg.channels(res)
    first = res == 4
    layer = functools.partial(
        SynthesisLayer, out_channels=out_ch, resolution=res,
        use_noise=cfg.use_noise, conv_clamp=cfg.conv_clamp,
        resample_filter=cfg.resample_filter, dtype=dtype)
    noise = list(noise) if noise is not None else [None, None]
    b = ws.shape[0]
    if first:
      const = self.param('const', nn.initializers.normal(1.0),
                         (res, res, out_ch), jnp.float32)
      x = jnp.broadcast_to(const.astype(dtype)[None], (b, res, res, out_ch))
      convs = [layer(in_channels=out_ch, name='conv1')]
    else:
      in_ch = cfg.channels(res // 2)
      convs = [layer(in_channels=in_ch, up=2, name='conv0'),
               layer(in_channels=out_ch, name='conv1')]
    for j, conv in enumerate(convs):
      x = conv(x, ws[:, j], noise_mode=noise_mode, noise=noise[j],
               fused_modconv=fused_modconv)
    if img is not None:
      img = upsample2d(img, setup_filter(cfg.resample_filter))
    y = ToRGB(out_ch, cfg.img_channels, conv_clamp=cfg.conv_clamp,
              dtype=dtype, name='torgb')(x, ws[:, len(convs)],
                                         fused_modconv=fused_modconv)
    y = y.astype(jnp.float32)
    img = y if img is None else img + y
    return x, img


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] (W+) or w [B, w_dim] (W) -> images [B, R, R, 3]."""
  config: StyleGAN2Config

  @nn.compact
  def __call__(self, ws: jax.Array, *, noise_mode: str = 'const',
               noise: Sequence[jax.Array] | None = None,
               fused_modconv: bool = DEFAULT_FUSED_MODCONV,
               resolution: int | None = None) -> jax.Array:
    cfg = self.config
    last = cfg.resolution if resolution is None else resolution
    if last not in cfg.block_resolutions:
      raise ValueError(f'resolution must be one of {cfg.block_resolutions}, '
                       f'got {resolution!r}')
    if noise_mode not in NOISE_MODES:
      raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got '
                       f'{noise_mode!r}')
    if ws.ndim == 2:  # W: one latent for every layer.
      chex.assert_shape(ws, (None, cfg.w_dim))
      ws = jnp.broadcast_to(ws[:, None], (ws.shape[0], cfg.num_ws, cfg.w_dim))
    chex.assert_shape(ws, (None, cfg.num_ws, cfg.w_dim))
    ws = ws.astype(jnp.float32)
    if noise is not None:
      noise = list(noise)
      if not cfg.use_noise or len(noise) != cfg.num_layers:
        want = cfg.num_layers if cfg.use_noise else 0
        raise ValueError(f'noise must be a list of {want} arrays (one per '
                         f'layer, see noise_shapes), got {len(noise)}')
    x = img = None
    w_idx = 0
    for res in cfg.block_resolutions:
      num_conv = 1 if res == 4 else 2
      block_noise = noise[w_idx:w_idx + num_conv] if noise else None
      x, img = SynthesisBlock(cfg, res, name=f'b{res}')(
          x, img, ws[:, w_idx:w_idx + num_conv + 1], noise_mode=noise_mode,
          noise=block_noise, fused_modconv=fused_modconv)
      w_idx += num_conv
      if res == last:
        break
    return img


class Generator(nn.Module):
  """StyleGAN2 generator: `mapping` (z -> ws) then `synthesis` (ws -> image).

  Usage::

    G = build(config)
    images = G.apply(variables, z, truncation_psi=0.7)
    ws = G.apply(variables, z, method='mapping')
    images = G.apply(variables, ws, method='synthesis')          # W+ or W
    images = G.apply(variables, ws, noise_mode='random', method='synthesis',
                     rngs={'noise': key})
  """
  config: StyleGAN2Config

  def setup(self):
    self.mapping_network = MappingNetwork(self.config, name='mapping')
    self.synthesis_network = SynthesisNetwork(self.config, name='synthesis')

  def __call__(self, z: jax.Array, *,
               truncation_psi: float | jax.Array = 1.0,
               truncation_cutoff: int | None = None,
               noise_mode: str = 'const',
               noise: Sequence[jax.Array] | None = None,
               fused_modconv: bool = DEFAULT_FUSED_MODCONV) -> jax.Array:
    """z [B, z_dim] -> images [B, R, R, img_channels] float32, ~[-1, 1]."""
    ws = self.mapping(z, truncation_psi=truncation_psi,
                      truncation_cutoff=truncation_cutoff)
    return self.synthesis(ws, noise_mode=noise_mode, noise=noise,
                          fused_modconv=fused_modconv)

  def mapping(self, z: jax.Array, *, truncation_psi: float | jax.Array = 1.0,
              truncation_cutoff: int | None = None) -> jax.Array:
    """z [B, z_dim] -> ws [B, num_ws, w_dim] float32 (W+, rows equal).

    Args:
      z: latents (normalised inside, as in StyleGAN).
      truncation_psi: 1 = none; may be traced.
      truncation_cutoff: static number of leading layers truncated; None =
        all.
    """
    return self.mapping_network(z, truncation_psi=truncation_psi,
                                truncation_cutoff=truncation_cutoff)

  def synthesis(self, ws: jax.Array, *, noise_mode: str = 'const',
                noise: Sequence[jax.Array] | None = None,
                fused_modconv: bool = DEFAULT_FUSED_MODCONV,
                resolution: int | None = None) -> jax.Array:
    """ws [B, num_ws, w_dim] (W+) or [B, w_dim] (W) -> images [B, R, R, 3].

    Args:
      ws: per-layer latents, or one latent for all layers.
      noise_mode: 'const' (stored ``noise_const`` buffers), 'random' (needs
        ``rngs={'noise': key}``) or 'none'.
      noise: explicit per-layer noise maps overriding `noise_mode`: a list of
        `num_layers` arrays shaped [H, W] or [B, H, W] (see `noise_shapes`),
        standard-normal scale (each layer multiplies by its
        ``noise_strength``).
      fused_modconv: modulated-conv formulation (see `modulated_conv2d`).
      resolution: stop at this block and return its RGB skip image (a
        cheaper preview, `StyleGAN2Config.preview_resolutions`); None = full.
        Noise maps of the blocks not run are ignored.

    Returns:
      float32 [B, R, R, img_channels], about [-1, 1].
    """
    return self.synthesis_network(ws, noise_mode=noise_mode, noise=noise,
                                  fused_modconv=fused_modconv,
                                  resolution=resolution)


def build(config: StyleGAN2Config | Mapping[str, Any], *,
          dtype: Any = None) -> Generator:
  """Generator module for `config` (a config or its dict).

  Args:
    config: architecture.
    dtype: optional compute dtype overriding ``config.dtype``.
  """
  config = as_config(config)
  if dtype is not None:
    config = dataclasses.replace(config, dtype=jnp.dtype(dtype).name)
  return Generator(config)


def abstract_variables(config: StyleGAN2Config | Mapping[str, Any]) -> dict:
  """Shapes/dtypes of the variables (``jax.ShapeDtypeStruct`` leaves)."""
  return generator_init.abstract_variables(build(config))


def init_variables(key: jax.Array,
                   config: StyleGAN2Config | Mapping[str, Any], *,
                   w_avg_samples: int = 1024) -> dict:
  """Random variables as stylegan2-ada initialises them, plus a real w_avg.

  The module initialisers' distributions: weights, const and noise
  constants N(0, 1) (mapping kernels N(0, 1/lr_multiplier^2)), biases 0,
  affine biases 1, noise strengths 0, drawn as
  `id2image_jax.models.generator_init` says (fast to compile). Unlike a
  fresh torch model (w_avg = 0), ``w_avg`` is the mean of `w_avg_samples`
  mapped random z, so truncation behaves as with a trained checkpoint.

  Args:
    key: typed PRNG key.
    config: architecture.
    w_avg_samples: number of z used for w_avg; 0 keeps zeros.

  Returns:
    ``{'params': ..., 'buffers': ...}`` of float32 arrays.
  """
  config = as_config(config)
  leaf_init = functools.partial(_init_leaf,
                                lr_multiplier=config.lr_multiplier)
  return generator_init.random_variables(key, build(config), leaf_init,
                                         w_avg_samples=w_avg_samples)


def _init_leaf(path: tuple[str, ...], shape: tuple[int, ...], *,
               lr_multiplier: float
               ) -> float | Callable[[np.ndarray], np.ndarray]:
  """How a leaf starts (`generator_init.LeafInit`; see `init_variables`)."""
  del shape  # every distribution is per element
  if path[-1] in ('kernel', 'weight', 'const', 'noise_const'):
    if path[:2] == ('params', 'mapping'):
      return lambda draw: draw / np.float32(lr_multiplier)
    return lambda draw: draw
  if path[-1] == 'bias' and path[-2] == 'affine':
    return 1.0
  return 0.0  # biases, noise strengths, w_avg
