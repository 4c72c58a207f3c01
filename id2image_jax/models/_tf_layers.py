"""Layers that compute what their TensorFlow / TF.js namesakes compute.

The face-api.js and human-models nets were written against TensorFlow ops,
whose ``'SAME'`` padding puts the odd extra row and column at the end (as
``jax.lax`` 'SAME' does) and whose depthwise kernels are stored as
[kh, kw, in, multiplier]. Kernels here keep Flax's HWIO layout with the
depthwise multiplier folded into the output axis ([kh, kw, 1, C]), so the
porters only reshape. All layouts are NHWC; parameters are float32 whatever
the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Human (human-models) divides its face crops by 255: input in [0, 1]. The
# config fields (0..255 scale) of the nets it feeds that way.
HUMAN_INPUT = {'input_mean': (0.0, 0.0, 0.0),
               'input_std': (255.0, 255.0, 255.0)}


class Conv(nn.Module):
  """``tf.nn.conv2d`` (+ bias): kernel [kh, kw, in, out] HWIO.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    stride: both strides.
    padding: 'SAME' (TF's: extra padding at the end) or 'VALID'.
    use_bias: whether a bias [out] is added.
    dtype: compute dtype.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: str = 'SAME'
  use_bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # lax's 'SAME' is TF's rule (pad_total // 2 before, the rest after).
    return nn.Conv(self.features, (self.kernel_size, self.kernel_size),
                   strides=(self.stride, self.stride), padding=self.padding,
                   use_bias=self.use_bias, dtype=self.dtype,
                   param_dtype=jnp.float32, name='conv')(x)


class DepthwiseConv(nn.Module):
  """``tf.nn.depthwise_conv2d`` with multiplier 1 (+ bias).

  The kernel is [kh, kw, 1, C]: TF's [kh, kw, C, 1] reshaped.
  """
  kernel_size: int = 3
  stride: int = 1
  padding: str = 'SAME'
  use_bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    return nn.Conv(channels, (self.kernel_size, self.kernel_size),
                   strides=(self.stride, self.stride), padding=self.padding,
                   feature_group_count=channels, use_bias=self.use_bias,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   name='conv')(x)


class SeparableConv(nn.Module):
  """``tf.separableConv2d`` then a bias add (face-api.js layers).

  Depthwise 3x3 (stride, 'SAME') then pointwise 1x1, neither with a bias,
  then ``+ bias``: params ``depthwise/conv/kernel`` [3, 3, 1, C],
  ``pointwise/conv/kernel`` [1, 1, C, F] and ``bias`` [F].
  """
  features: int
  stride: int = 1
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = DepthwiseConv(3, self.stride, use_bias=False, dtype=self.dtype,
                      name='depthwise')(x)
    x = Conv(self.features, 1, use_bias=False, dtype=self.dtype,
             name='pointwise')(x)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return x + bias.astype(x.dtype)


class PReLU(nn.Module):
  """Per-channel PReLU over the last axis: ``x if x >= 0 else alpha * x``."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.constant(0.25),
                       (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def check_image_input(x: Any, size: tuple[int, int], model: str,
                      hint: str) -> jax.Array:
  """Validates [*batch, H, W, 3] float input; returns it as an array.

  Args:
    x: the input.
    size: expected (H, W).
    model: names the model in messages.
    hint: what the input should be (normalisation), for the message.

  Raises:
    ValueError: wrong trailing shape or a non-float dtype.
  """
  x = jnp.asarray(x)
  if x.ndim < 3 or tuple(x.shape[-3:]) != tuple(size) + (3,):
    raise ValueError(
        f'{model} expects [*batch, {size[0]}, {size[1]}, 3] RGB input '
        f'({hint}), got shape {tuple(x.shape)}; use '
        'preprocess.to_encoder_input with its input_spec')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{model} expects float input ({hint}), got {x.dtype}')
  return x


def over_batch(fn: Callable[[jax.Array], Any], x: jax.Array) -> Any:
  """Applies `fn` ([N, H, W, C] -> tree of [N, ...]) to [*batch, H, W, C].

  Any number of leading batch dims, none included (one image under vmap):
  they are flattened into one for the convs and restored on every output.
  """
  batch = x.shape[:-3]
  flat = x.reshape((-1,) + x.shape[-3:])
  out = fn(flat)
  return jax.tree.map(lambda y: y.reshape(batch + y.shape[1:]), out)
