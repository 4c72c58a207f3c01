"""Layers that compute exactly what their PyTorch namesakes compute.

Ported encoders use these so that a rule table can map ``conv1.weight`` to
``conv1/kernel`` and the numbers agree: explicit symmetric padding (never
'SAME' on strided convs, which pads asymmetrically), torch's pooling padding
and ``ceil_mode``, per-channel PReLU, inference-mode batch norm. All layouts
are NHWC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def check_image_input(x: jax.Array, size: Sequence[int], *, model: str,
                      channels: str = 'RGB', why: str = '',
                      batched: bool = False) -> None:
  """Refuses what an encoder cannot take, naming the model and the fix.

  Shape [*batch, H, W, 3] (exactly [B, H, W, 3] if `batched`) with (H, W) =
  `size`, a float dtype, and (outside jit, where values are known) finite
  values: under jit a NaN only spoils its own image's descriptor.
  """
  h, w = (int(v) for v in size)
  rank_ok = x.ndim == 4 if batched else x.ndim >= 3
  if not rank_ok or tuple(x.shape[-3:]) != (h, w, 3):
    batch = 'B' if batched else '*batch'
    raise ValueError(
        f'{model} expects [{batch}, {h}, {w}, 3] {channels} input{why}, got '
        f'shape {tuple(x.shape)}; use preprocess.to_encoder_input with '
        'input_spec(config)')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{model} expects a float input (use '
                     f'preprocess.to_encoder_input), got {x.dtype}')
  if not isinstance(x, jax.core.Tracer):
    bad = int(x.size - jnp.count_nonzero(jnp.isfinite(x)))
    if bad:
      raise ValueError(f'{model} input has {bad} non-finite value(s)')


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(nn.Module):
  """``torch.nn.Conv2d`` in NHWC: kernel [kh, kw, in/groups, out]."""
  features: int
  kernel_size: int | Sequence[int]
  stride: int | Sequence[int] = 1
  padding: int | Sequence[int] = 0
  groups: int = 1
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = _pair(self.padding)
    return nn.Conv(self.features, _pair(self.kernel_size),
                   strides=_pair(self.stride), padding=((ph, ph), (pw, pw)),
                   feature_group_count=self.groups, use_bias=self.use_bias,
                   dtype=self.dtype, name='conv')(x)


class BatchNorm(nn.Module):
  """Inference-mode ``torch.nn.BatchNorm{1,2}d`` over the last axis.

  Variables: params ``scale``/``bias`` and batch_stats ``mean``/``var``
  (torch ``weight``/``bias``/``running_mean``/``running_var``).
  """
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.BatchNorm(use_running_average=True, epsilon=self.epsilon,
                        use_scale=self.use_scale, use_bias=self.use_bias,
                        dtype=self.dtype, name='bn')(x)


class PReLU(nn.Module):
  """``torch.nn.PReLU(num_parameters)``: one slope per channel (last axis)."""
  num_parameters: int = 1
  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param('negative_slope',
                       nn.initializers.constant(self.init_slope),
                       (self.num_parameters,), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def _pool_padding(size: int, window: int, stride: int, pad: int,
                  ceil_mode: bool) -> tuple[int, int]:
  """torch's output-size rule as (low, high) padding for reduce_window."""
  span = size + 2 * pad - window
  out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
  # torch drops a last window that would start inside the right padding.
  if ceil_mode and (out - 1) * stride >= size + pad:
    out -= 1
  high = (out - 1) * stride + window - size - pad
  return pad, max(high, 0)


def max_pool2d(x: jax.Array, kernel_size: int | Sequence[int], *,
               stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0,
               ceil_mode: bool = False) -> jax.Array:
  """``torch.nn.functional.max_pool2d`` on [N, H, W, C] (pads with -inf)."""
  kh, kw = _pair(kernel_size)
  sh, sw = _pair(stride if stride is not None else kernel_size)
  ph, pw = _pair(padding)
  pads = ((0, 0), _pool_padding(x.shape[-3], kh, sh, ph, ceil_mode),
          _pool_padding(x.shape[-2], kw, sw, pw, ceil_mode), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max,
                               (1, kh, kw, 1), (1, sh, sw, 1), pads)


def avg_pool2d(x: jax.Array, kernel_size: int | Sequence[int], *,
               stride: int | Sequence[int] | None = None,
               padding: int | Sequence[int] = 0,
               ceil_mode: bool = False,
               count_include_pad: bool = True) -> jax.Array:
  """``torch.nn.functional.avg_pool2d`` on [N, H, W, C]."""
  kh, kw = _pair(kernel_size)
  sh, sw = _pair(stride if stride is not None else kernel_size)
  ph, pw = _pair(padding)
  pad_h = _pool_padding(x.shape[-3], kh, sh, ph, ceil_mode)
  pad_w = _pool_padding(x.shape[-2], kw, sw, pw, ceil_mode)
  pads = ((0, 0), pad_h, pad_w, (0, 0))
  window, strides = (1, kh, kw, 1), (1, sh, sw, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads)
  # torch counts the symmetric zero padding but never the extra ceil_mode
  # padding on the high side.
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  sym = ((0, 0), (ph, ph), (pw, pw), (0, 0))
  if count_include_pad:
    ones = jnp.pad(ones, sym, constant_values=1.0)
    extra = ((0, 0), (0, pad_h[1] - ph), (0, pad_w[1] - pw), (0, 0))
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides,
                                  tuple((lo, max(hi, 0)) for lo, hi in extra))
  else:
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides,
                                  pads)
  return total / count


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [N, C]."""
  return jnp.mean(x, axis=(-3, -2))
