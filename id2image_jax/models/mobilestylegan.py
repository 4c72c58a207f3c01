"""MobileStyleGAN generator (Belousov 2021) in Flax linen, NHWC.

The maths are those of bes-dev/MobileStyleGAN.pytorch (``core/models``, read
at commit a9776ff), in the form its OpenVINO export (PyPI ``random-face``)
computes them; the parameter names follow the PyTorch modules:

  mapping:    z [B, z_dim] -> pixel norm -> ``fc0..fc{L-1}`` (dense, bias,
              lrelu(0.2) * sqrt(2)) -> w [B, w_dim] -> broadcast to ws
              [B, num_ws, w_dim] -> truncation ``w_avg + psi * (w - w_avg)``.
  synthesis:  learned ``const`` [4, 4, C0] -> ``conv1`` (3x3 modulated conv)
              -> ``block0 .. block{n-1}``, each at twice the resolution:
                ``up``:    x * affine(w), then the channels are read as the
                           four Haar wavelet bands of an image with a quarter
                           of the channels, and one inverse DWT doubles H, W;
                ``conv1``, ``conv2``: modulated depthwise-separable 3x3 convs
                           (depthwise 3x3, then pointwise 1x1);
              -> ``block{n-1}.to_img``: 1x1 modulated conv to 12 channels,
              the Haar bands (LL, LH, HL, HH) of the RGB image -> inverse
              DWT -> image [B, 2R, 2R, 3] with R the last hidden size.
              Every conv: ``x * (scale * affine(w))`` (``scale`` =
              1/sqrt(fan_in), fan_in = in_channels * k * k), the conv, a
              fixed noise map, bias, leaky ReLU(0.2) (no gain). ``to_img``
              has no noise and no activation.

Differences from the PyTorch training code, all from the export:

* Demodulation. MobileStyleGAN demodulates with a fixed buffer
  (``style_inv``), not with the styles, so the factor is a constant per
  output channel; the export multiplies it into the conv weights. The
  ``weight`` / ``pointwise`` parameters here are those products.
* Noise. The export traces one random noise map per conv and multiplies it
  by the learned noise weight; the products are the ``noise`` buffers [H, W]
  here (always added: the IR is deterministic).
* Equalised learning rate of the mapping layers: its gains are multiplied
  into the stored ``kernel`` / ``bias`` (plain dense layers here).
* Preview heads. The PyTorch model has a ``to_img`` head after ``conv1``
  (``to_img1``) and after every block, all trained (per-scale L1/L2 on the
  teacher's downsampled image); the export keeps only the last one. With
  ``config.preview_heads`` the module has them all and `synthesis` can stop
  at any of their sizes (``preview_resolutions``); the ported real model
  has ``preview_heads=False`` and no preview sizes.

W+ (``ws[:, j]`` per layer, the PyTorch ``style.ndim == 3`` layout):
``conv1`` ws[0], ``to_img1`` ws[1]; block i: ``up`` and ``conv1``
ws[3i + 1], ``conv2`` ws[3i + 2], ``to_img`` ws[3i + 3]. So ``num_ws = 3 n
+ 2`` (23 at 1024 px, n = 7 blocks); the last row is read by no layer (it
is in the PyTorch layout too). The OpenVINO IR takes one w for every layer,
i.e. equal rows.

Variables::

  params/mapping/fc{i}/{kernel [in, w_dim], bias [w_dim]}
  params/synthesis/const [4, 4, C0]
  params/synthesis/conv1/{affine/{kernel [w_dim, C0], bias [C0]},
                          weight [3, 3, C0, C0], bias [C0]}
  params/synthesis/block{i}/up/affine/{kernel [w_dim, Ci], bias [Ci]}
  params/synthesis/block{i}/conv{1,2}/{affine/{kernel, bias},
                                       depthwise [3, 3, 1, I],
                                       pointwise [I, O], bias [O]}
  params/synthesis/block{i}/to_img/{affine/{kernel, bias}, weight [C, 12],
                                    bias [12]}   (last block; every block
                                                  and to_img1 with
                                                  preview_heads)
  buffers/mapping/w_avg [w_dim]
  buffers/synthesis/conv1/noise [4, 4]
  buffers/synthesis/block{i}/conv{1,2}/noise [R, R]

Compute dtype: with ``config.dtype`` 'bfloat16' the synthesis activations
are stored in bfloat16 between layers and the matmul/conv operands are
bfloat16 (float32 accumulation); the elementwise maths inside a layer
(modulation, depthwise taps, noise, bias, activation, inverse DWT), the
mapping network, the styles and the output image stay float32. Parameters
are always float32. Output images are float32 NHWC, RGB in about [-1, 1]
(not clipped).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax.models import _variants
from id2image_jax.models import generator_init
from id2image_jax.models.stylegan2 import normalize_2nd_moment
from id2image_jax.models.stylegan2 import truncate

_DTYPES = ('float32', 'bfloat16')
LRELU_SLOPE = 0.2
MAPPING_GAIN = math.sqrt(2.0)
# Haar (db1) synthesis filters, as pytorch_wavelets' DWTInverse uses them:
# low-pass g0 and high-pass g1.
HAAR_LO = (1 / math.sqrt(2.0), 1 / math.sqrt(2.0))
HAAR_HI = (1 / math.sqrt(2.0), -1 / math.sqrt(2.0))
# Wavelet bands per image channel (LL + LH, HL, HH).
BANDS = 4
# He gain for leaky ReLU(0.2): keeps random-init activations O(1).
_INIT_GAIN = math.sqrt(2.0 / (1.0 + LRELU_SLOPE ** 2))


# --------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class MobileStyleGANConfig:
  """Architecture of a MobileStyleGAN generator.

  JSON round trip: ``MobileStyleGANConfig(**json.loads(json.dumps(
  dataclasses.asdict(config))))`` gives back an equal config.

  Attributes:
    resolution: output size in pixels: ``2 ** (len(channels) + 2)`` (the
      const is 4 px, each block doubles it, the last inverse DWT doubles
      it once more).
    z_dim: input latent size.
    w_dim: intermediate latent (style) size.
    mapping_layers: number of dense layers in the mapping network.
    channels: hidden channels of ``const``/``conv1`` and then of each
      block's output (PyTorch ``MobileSynthesisNetwork(channels=...)``);
      all but the last must be divisible by 4 (the ``up`` step splits them
      into 4 wavelet bands).
    img_channels: output image channels.
    preview_heads: whether ``to_img1`` and every block have a ``to_img``
      head (the PyTorch model), so synthesis can stop early.
    dtype: compute dtype of the synthesis network, 'float32' or 'bfloat16'.
  """
  resolution: int = 1024
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  channels: tuple[int, ...] = (512, 512, 512, 512, 512, 256, 128, 64)
  img_channels: int = 3
  preview_heads: bool = False
  dtype: str = 'float32'

  def __post_init__(self):
    # JSON gives lists; a frozen (hashable) config needs tuples.
    object.__setattr__(self, 'channels', tuple(int(c) for c in
                                               self.channels))
    if len(self.channels) < 2:
      raise ValueError('channels needs the const width and at least one '
                       f'block, got {self.channels}')
    want = 2 ** (len(self.channels) + 2)
    if self.resolution != want:
      raise ValueError(f'resolution must be 2 ** (len(channels) + 2) = '
                       f'{want} for channels {self.channels}, got '
                       f'{self.resolution!r}')
    if min(self.channels) < 1 or any(c % BANDS for c in self.channels[:-1]):
      raise ValueError('channels must be >= 1 and all but the last '
                       f'divisible by {BANDS}, got {self.channels}')
    if self.z_dim < 1 or self.w_dim < 1 or self.mapping_layers < 1:
      raise ValueError('z_dim, w_dim and mapping_layers must be >= 1, got '
                       f'{self.z_dim}, {self.w_dim}, {self.mapping_layers}')
    if self.dtype not in _DTYPES:
      raise ValueError(f'dtype must be one of {_DTYPES}, got {self.dtype!r}')

  @property
  def num_blocks(self) -> int:
    """Number of wavelet-upsampling blocks (7 at 1024 px)."""
    return len(self.channels) - 1

  @property
  def num_ws(self) -> int:
    """Number of per-layer latents (W+ rows): 3 * num_blocks + 2."""
    return 3 * self.num_blocks + 2

  def hidden_resolution(self, block: int) -> int:
    """Feature-map size of block `block`'s output (8 for block 0)."""
    return 8 * 2 ** block

  @property
  def preview_resolutions(self) -> tuple[int, ...]:
    """Image sizes below `resolution` that synthesis can stop at.

    ``to_img1`` gives 8 px, block i's head ``16 * 2 ** i``; empty without
    preview heads.
    """
    if not self.preview_heads:
      return ()
    return tuple(8 * 2 ** i for i in range(self.num_blocks))

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)


# Variant table (data, not subclasses): name -> MobileStyleGANConfig kwargs.
VARIANTS: dict[str, dict[str, Any]] = {
    # The distilled FFHQ model of the paper, as shipped in random-face.
    'ffhq-1024': {'resolution': 1024},
    # Small randomly initialised generator with preview heads, for demos.
    'demo-64': {'resolution': 64, 'z_dim': 64, 'w_dim': 64,
                'mapping_layers': 4, 'channels': (64, 64, 32, 16),
                'preview_heads': True},
    # Smaller still: tests that must compile in seconds.
    'demo-32': {'resolution': 32, 'z_dim': 16, 'w_dim': 16,
                'mapping_layers': 2, 'channels': (16, 16, 8),
                'preview_heads': True},
}


def get_config(variant: str, **overrides: Any) -> MobileStyleGANConfig:
  """Config of a named variant (see `VARIANTS`) with fields overridden."""
  fields = _variants.entry(VARIANTS, variant, model='MobileStyleGAN')
  return MobileStyleGANConfig(**{**fields, **overrides})


def as_config(config: MobileStyleGANConfig | Mapping[str, Any]
              ) -> MobileStyleGANConfig:
  """Accepts a config or its ``dataclasses.asdict`` / JSON dict."""
  if isinstance(config, MobileStyleGANConfig):
    return config
  return MobileStyleGANConfig(**dict(config))


# --------------------------------------------------------------------------
# Haar wavelets (pure jnp).


def idwt_haar(low: jax.Array, high: jax.Array) -> jax.Array:
  """One level of the inverse 2-D Haar DWT (pytorch_wavelets ``DWTInverse``,
  ``wave='db1'``, any mode: 2-tap filters never reach the border).

  With s = (+1, -1) for the even / odd row k and column l of each output
  2x2 cell::

    y[2i + k, 2j + l] = (LL + s_k LH + s_l HL + s_k s_l HH)[i, j] / 2

  where LH is high-pass along H, HL along W (pytorch_wavelets' band order
  0, 1, 2). It is orthonormal: `dwt_haar` is its inverse and its transpose.

  Args:
    low: [B, H, W, C] low-pass band LL.
    high: [B, H, W, C, 3] bands LH, HL, HH.

  Returns:
    [B, 2H, 2W, C] in the dtype of `low`.
  """
  chex.assert_rank(low, 4)
  chex.assert_shape(high, low.shape + (3,))
  b, h, w, c = low.shape
  high = high.astype(low.dtype)
  lh, hl, hh = high[..., 0], high[..., 1], high[..., 2]
  # Sums and differences first: 8 adds instead of 12.
  a, d = low + lh, low - lh     # k = 0 / k = 1, before the W filter
  e, f = hl + hh, hl - hh
  y00, y01 = a + e, a - e       # (k, l) = (0, 0), (0, 1)
  y10, y11 = d + f, d - f       # (1, 0), (1, 1)
  y = jnp.stack([jnp.stack([y00, y01], axis=3),
                 jnp.stack([y10, y11], axis=3)], axis=2)  # [B,H,2,W,2,C]
  return y.reshape(b, 2 * h, 2 * w, c) * jnp.asarray(0.5, low.dtype)


def dwt_haar(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One level of the forward 2-D Haar DWT, the inverse of `idwt_haar`.

  Args:
    x: [B, 2H, 2W, C] (even sizes).

  Returns:
    ``(low [B, H, W, C], high [B, H, W, C, 3])``: LL and (LH, HL, HH).
  """
  chex.assert_rank(x, 4)
  b, h2, w2, c = x.shape
  if h2 % 2 or w2 % 2:
    raise ValueError(f'dwt_haar needs even H and W, got {x.shape}')
  cells = x.reshape(b, h2 // 2, 2, w2 // 2, 2, c)
  y00, y01 = cells[:, :, 0, :, 0], cells[:, :, 0, :, 1]
  y10, y11 = cells[:, :, 1, :, 0], cells[:, :, 1, :, 1]
  a, e = y00 + y01, y00 - y01
  d, f = y10 + y11, y10 - y11
  half = jnp.asarray(0.5, x.dtype)
  low = (a + d) * half
  high = jnp.stack([a - d, e + f, e - f], axis=-1) * half
  return low, high


def split_bands(x: jax.Array, channels: int) -> tuple[jax.Array, jax.Array]:
  """[B, H, W, 4C] -> (LL [B, H, W, C], (LH, HL, HH) [B, H, W, C, 3]).

  The PyTorch layout: the first C channels are LL; channel ``C + 3c + k``
  is band k of channel c (``x[:, C:].view(b, C, 3, h, w)``).
  """
  b, h, w, _ = x.shape
  chex.assert_shape(x, (b, h, w, BANDS * channels))
  return x[..., :channels], x[..., channels:].reshape(b, h, w, channels, 3)


def bands_to_image(freq: jax.Array) -> jax.Array:
  """[B, R, R, 4C] wavelet bands -> [B, 2R, 2R, C] image (float32)."""
  freq = freq.astype(jnp.float32)
  return idwt_haar(*split_bands(freq, freq.shape[-1] // BANDS))


def depthwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Per-channel 'same' correlation (zero padding), as a sum of shifts.

  Equals ``lax.conv_general_dilated(..., feature_group_count=C)`` (and
  OpenVINO's GroupConvolution with one channel per group), but XLA:CPU runs
  grouped convolutions ~7x slower than these k*k fused multiply-adds
  (benchmarks in docs/mobilestylegan.md); the backward pass is as cheap.

  Args:
    x: [B, H, W, C].
    kernel: [k, k, 1, C], odd k.

  Returns:
    [B, H, W, C] in the dtype of `x`.
  """
  _, h, w, c = x.shape
  k = kernel.shape[0]
  chex.assert_shape(kernel, (k, k, 1, c))
  p = k // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  kernel = kernel.astype(x.dtype)
  out = None
  for i in range(k):
    for j in range(k):
      term = xp[:, i:i + h, j:j + w, :] * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


# --------------------------------------------------------------------------
# Modules.


def _affine(w: jax.Array, features: int, name: str) -> jax.Array:
  """Style affine of the PyTorch ``modulation`` Linear (bias init 1)."""
  return nn.Dense(features, dtype=jnp.float32, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(
                      1.0 / math.sqrt(w.shape[-1])),
                  bias_init=nn.initializers.ones, name=name)(w)


def _leaky_relu(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, LRELU_SLOPE)


class MappingNetwork(nn.Module):
  """z [B, z_dim] -> ws [B, num_ws, w_dim] (float32), with truncation."""
  config: MobileStyleGANConfig

  @nn.compact
  def __call__(self, z: jax.Array, *, truncation_psi: float | jax.Array = 1.0,
               truncation_cutoff: int | None = None) -> jax.Array:
    cfg = self.config
    chex.assert_shape(z, (None, cfg.z_dim))
    x = normalize_2nd_moment(z.astype(jnp.float32))
    for idx in range(cfg.mapping_layers):
      fan_in = x.shape[-1]
      x = nn.Dense(cfg.w_dim, dtype=jnp.float32, param_dtype=jnp.float32,
                   kernel_init=nn.initializers.normal(1 / math.sqrt(fan_in)),
                   name=f'fc{idx}')(x)
      x = _leaky_relu(x) * MAPPING_GAIN
    w_avg = self.variable('buffers', 'w_avg', jnp.zeros, (cfg.w_dim,),
                          jnp.float32)
    ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], cfg.num_ws, cfg.w_dim))
    return truncate(ws, w_avg.value, psi=truncation_psi,
                    cutoff=truncation_cutoff)


class StyledConv(nn.Module):
  """Modulated conv (full 3x3, or depthwise-separable), noise, bias, lrelu.

  ``depthwise=False``: PyTorch ``StyledConv2d(conv_module=ModulatedConv2d)``
  (only ``conv1`` at 4 px); True: ``ModulatedDWConv2d`` (every block).
  """
  in_channels: int
  out_channels: int
  resolution: int
  depthwise: bool
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """x [B, R, R, I], w [B, w_dim] -> [B, R, R, O] (dtype)."""
    res, k, i, o = (self.resolution, self.kernel_size, self.in_channels,
                    self.out_channels)
    b = x.shape[0]
    chex.assert_shape(x, (b, res, res, i))
    styles = _affine(w, i, 'affine') * (1.0 / math.sqrt(i * k * k))
    normal = nn.initializers.normal(_INIT_GAIN)
    # Activations are stored in `dtype`; the elementwise maths is float32
    # (fused, free) and only the matmul/conv operands are `dtype`, with
    # float32 accumulation: one rounding per layer output, which halves the
    # bfloat16 error at 1024 px (docs/mobilestylegan.md).
    x = x.astype(jnp.float32)
    if self.depthwise:
      dw = self.param('depthwise', nn.initializers.normal(1.0), (k, k, 1, i),
                      jnp.float32)
      pw = self.param('pointwise', normal, (i, o), jnp.float32)
      # Per-channel styles commute with the per-channel conv: modulating
      # after it lets the styles' gradient reuse the forward activations
      # instead of a second transposed depthwise conv (fwd+bwd ~2x faster
      # on XLA:CPU at 1024 px; same maths up to rounding).
      x = depthwise_conv2d(x, dw) * styles[:, None, None, :]
      x = jnp.einsum('bhwi,io->bhwo', x.astype(self.dtype),
                     pw.astype(self.dtype),
                     preferred_element_type=jnp.float32)
    else:
      weight = self.param('weight', normal, (k, k, i, o), jnp.float32)
      pad = ((k // 2, k // 2), (k // 2, k // 2))
      x = x * styles[:, None, None, :]
      x = jax.lax.conv_general_dilated(
          x.astype(self.dtype), weight.astype(self.dtype), (1, 1), pad,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
          preferred_element_type=jnp.float32)
    noise = self.variable('buffers', 'noise', jnp.zeros, (res, res),
                          jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (o,), jnp.float32)
    x = x + noise.value[None, :, :, None] + bias
    return _leaky_relu(x).astype(self.dtype)


class ToBands(nn.Module):
  """PyTorch ``MultichannelIamge``: 1x1 modulated conv (no demodulation) to
  the 4 wavelet bands of each image channel, plus bias."""
  in_channels: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    """x [B, R, R, C], w [B, w_dim] -> [B, R, R, out_channels] float32."""
    styles = _affine(w, self.in_channels, 'affine') * (
        1.0 / math.sqrt(self.in_channels))
    weight = self.param('weight', nn.initializers.normal(1.0),
                        (self.in_channels, self.out_channels), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.out_channels,),
                      jnp.float32)
    x = x.astype(jnp.float32) * styles[:, None, None, :]
    y = jnp.einsum('bhwi,io->bhwo', x.astype(self.dtype),
                   weight.astype(self.dtype),
                   preferred_element_type=jnp.float32)
    return y + bias


class WaveletUpsample(nn.Module):
  """PyTorch ``IDWTUpsaplme``: x * affine(w), read as 4 bands, inverse DWT.

  [B, R, R, C] -> [B, 2R, 2R, C / 4]; the styles have no 1/sqrt(fan_in).
  """
  in_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    styles = _affine(w, self.in_channels, 'affine')
    x = x.astype(jnp.float32) * styles[:, None, None, :]
    return idwt_haar(*split_bands(x, self.in_channels // BANDS)).astype(
        self.dtype)


class SynthesisBlock(nn.Module):
  """``up`` -> ``conv1`` -> ``conv2`` (-> ``to_img`` when asked)."""
  config: MobileStyleGANConfig
  index: int

  @nn.compact
  def __call__(self, x: jax.Array, ws: jax.Array, *, head: bool
               ) -> tuple[jax.Array, jax.Array | None]:
    """x [B, R/2, R/2, C_in], ws [B, 3, w_dim] -> (x [B, R, R, C_out],
    bands [B, R, R, 4 * img_channels] float32 or None)."""
    cfg, i = self.config, self.index
    dtype = cfg.compute_dtype
    c_in, c_out = cfg.channels[i], cfg.channels[i + 1]
    res = cfg.hidden_resolution(i)
    x = WaveletUpsample(c_in, dtype=dtype, name='up')(x, ws[:, 0])
    x = StyledConv(c_in // BANDS, c_out, res, depthwise=True, dtype=dtype,
                   name='conv1')(x, ws[:, 0])
    x = StyledConv(c_out, c_out, res, depthwise=True, dtype=dtype,
                   name='conv2')(x, ws[:, 1])
    bands = None
    if head:
      bands = ToBands(c_out, BANDS * cfg.img_channels, dtype=dtype,
                      name='to_img')(x, ws[:, 2])
    return x, bands


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] (W+) or w [B, w_dim] (W) -> images [B, R, R, 3].

  ``resolution`` < config.resolution (one of ``preview_resolutions``) stops
  after the block whose head gives that size.
  """
  config: MobileStyleGANConfig

  @nn.compact
  def __call__(self, ws: jax.Array, *, resolution: int | None = None
               ) -> jax.Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    if ws.ndim == 2:  # W: one latent for every layer.
      chex.assert_shape(ws, (None, cfg.w_dim))
      ws = jnp.broadcast_to(ws[:, None], (ws.shape[0], cfg.num_ws, cfg.w_dim))
    chex.assert_shape(ws, (None, cfg.num_ws, cfg.w_dim))
    ws = ws.astype(jnp.float32)
    resolution = cfg.resolution if resolution is None else resolution
    if resolution != cfg.resolution and (
        resolution not in cfg.preview_resolutions):
      raise ValueError(
          f'resolution must be {cfg.resolution} or one of the preview '
          f'resolutions {cfg.preview_resolutions}, got {resolution!r}')
    # Initialisation creates every head, whatever size was asked for.
    all_heads = cfg.preview_heads and self.is_initializing()
    b = ws.shape[0]
    c0 = cfg.channels[0]
    const = self.param('const', nn.initializers.normal(1.0), (4, 4, c0),
                       jnp.float32)
    x = jnp.broadcast_to(const.astype(dtype)[None], (b, 4, 4, c0))
    x = StyledConv(c0, c0, 4, depthwise=False, dtype=dtype,
                   name='conv1')(x, ws[:, 0])
    img = None
    if resolution == 8 or all_heads:
      bands = ToBands(c0, BANDS * cfg.img_channels, dtype=dtype,
                      name='to_img1')(x, ws[:, 1])
      img = bands_to_image(bands) if resolution == 8 else None
    for i in range(cfg.num_blocks):
      if img is not None:  # stopped at a preview size
        break
      # Block i's head gives 16 * 2^i px; the last block's is `resolution`.
      stop = resolution == 16 * 2 ** i
      x, bands = SynthesisBlock(cfg, i, name=f'block{i}')(
          x, ws[:, 3 * i + 1:3 * i + 4], head=stop or all_heads)
      if stop:
        img = bands_to_image(bands)
    return img


class Generator(nn.Module):
  """MobileStyleGAN: `mapping` (z -> ws) then `synthesis` (ws -> image).

  Usage::

    G = build(config)
    images = G.apply(variables, z, truncation_psi=0.7)
    ws = G.apply(variables, z, method='mapping')
    images = G.apply(variables, ws, method='synthesis')          # W+ or W
    preview = G.apply(variables, ws, resolution=128, method='synthesis')
  """
  config: MobileStyleGANConfig

  def setup(self):
    self.mapping_network = MappingNetwork(self.config, name='mapping')
    self.synthesis_network = SynthesisNetwork(self.config, name='synthesis')

  def __call__(self, z: jax.Array, *,
               truncation_psi: float | jax.Array = 1.0,
               truncation_cutoff: int | None = None,
               resolution: int | None = None) -> jax.Array:
    """z [B, z_dim] -> images [B, R, R, img_channels] float32, ~[-1, 1]."""
    ws = self.mapping(z, truncation_psi=truncation_psi,
                      truncation_cutoff=truncation_cutoff)
    return self.synthesis(ws, resolution=resolution)

  def mapping(self, z: jax.Array, *, truncation_psi: float | jax.Array = 1.0,
              truncation_cutoff: int | None = None) -> jax.Array:
    """z [B, z_dim] -> ws [B, num_ws, w_dim] float32 (W+, rows equal).

    Args:
      z: latents (normalised inside, as in StyleGAN).
      truncation_psi: 1 = none; may be traced. Pulls towards
        ``buffers/mapping/w_avg``.
      truncation_cutoff: static number of leading layers truncated; None =
        all.

    Returns:
      [B, num_ws, w_dim] float32.
    """
    return self.mapping_network(z, truncation_psi=truncation_psi,
                                truncation_cutoff=truncation_cutoff)

  def synthesis(self, ws: jax.Array, *, resolution: int | None = None
                ) -> jax.Array:
    """ws [B, num_ws, w_dim] (W+) or [B, w_dim] (W) -> images.

    Args:
      ws: per-layer latents, or one latent for all layers.
      resolution: static output size: None or ``config.resolution`` for
        the full image, or one of ``config.preview_resolutions`` to stop
        the wavelet pyramid early (cheaper; that block's head).

    Returns:
      float32 [B, resolution, resolution, img_channels], about [-1, 1].
    """
    return self.synthesis_network(ws, resolution=resolution)


def build(config: MobileStyleGANConfig | Mapping[str, Any], *,
          dtype: Any = None) -> Generator:
  """Generator module for `config` (a config or its dict).

  Args:
    config: architecture.
    dtype: optional compute dtype overriding ``config.dtype``.

  Returns:
    The (stateless) Flax module.
  """
  config = as_config(config)
  if dtype is not None:
    config = dataclasses.replace(config, dtype=jnp.dtype(dtype).name)
  return Generator(config)


def abstract_variables(config: MobileStyleGANConfig | Mapping[str, Any]
                       ) -> dict:
  """Shapes/dtypes of the variables (``jax.ShapeDtypeStruct`` leaves)."""
  return generator_init.abstract_variables(build(config))


# Random-init standard deviations by leaf name (see `init_variables`).
def _init_std(path: tuple[str, ...], shape: tuple[int, ...]) -> float:
  name = path[-1]
  if path[1] == 'mapping':
    return 1.0 / math.sqrt(shape[0]) if name == 'kernel' else 0.0
  if path[-2:-1] == ('affine',):
    # Styles 1 +- 0.5: they matter, without growing activations much.
    return 0.5 / math.sqrt(shape[0]) if name == 'kernel' else 0.0
  if name in ('weight', 'pointwise'):
    return 1.0 if 'to_img' in path[-2] else _INIT_GAIN
  if name in ('depthwise', 'const'):
    return 1.0
  if name == 'noise':
    return 0.1
  return 0.0


def init_variables(key: jax.Array,
                   config: MobileStyleGANConfig | Mapping[str, Any], *,
                   w_avg_samples: int = 1024) -> dict:
  """Random variables at a scale that keeps activations O(1), plus w_avg.

  Weights and the const are N(0, std^2) with He-style std (1/sqrt(fan_in)
  for mapping kernels, 0.5/sqrt(w_dim) for style affines, sqrt(2 / (1 +
  0.2^2)) for conv weights followed by
  leaky ReLU, 1 for depthwise, const and heads), noise maps N(0, 0.1^2),
  biases 0, affine biases 1 (as PyTorch's modulation layers), drawn as
  `id2image_jax.models.generator_init` says (fast to compile). ``w_avg`` is
  the mean of `w_avg_samples` mapped random z, so truncation behaves as with
  a trained checkpoint.

  Args:
    key: typed PRNG key.
    config: architecture.
    w_avg_samples: number of z used for w_avg; 0 keeps zeros.

  Returns:
    ``{'params': ..., 'buffers': ...}`` of float32 arrays.
  """
  config = as_config(config)
  return generator_init.random_variables(key, build(config), _init_leaf,
                                         w_avg_samples=w_avg_samples)


def _init_leaf(path: tuple[str, ...], shape: tuple[int, ...]
               ) -> float | Callable[[np.ndarray], np.ndarray]:
  """How a leaf starts (`generator_init.LeafInit`; see `init_variables`)."""
  std = _init_std(path, shape)
  if std:
    return lambda draw: draw * np.float32(std)
  if path[-1] == 'bias' and path[-2] == 'affine':
    return 1.0
  return 0.0  # biases, w_avg
