"""Differentiable preprocessing from generator output to encoder input.

The generator emits NHWC images in [-1, 1] at its own resolution, aligned the
FFHQ way. Each face encoder expects its own crop, size, channel order and
normalisation. `to_encoder_input` does all of it in pure jnp so gradients
flow from the encoder back to the latent.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import chex
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How an encoder wants its input.

  Attributes:
    size: (height, width) of the encoder input.
    crop: (top, left, bottom, right) as fractions of the source image: the
      face box to cut from an FFHQ-aligned image before resizing. Rounded to
      whole pixels of the source resolution.
    channel_order: 'RGB' or 'BGR' (Caffe-trained models use BGR).
    mean: per-channel mean to subtract, on the 0..255 scale, in
      `channel_order`.
    std: per-channel divisor on the 0..255 scale, in `channel_order`.
    method: interpolation of the antialiased resize ('linear' or 'cubic').
  """
  size: tuple[int, int]
  crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
  channel_order: Literal['RGB', 'BGR'] = 'RGB'
  mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
  std: tuple[float, float, float] = (1.0, 1.0, 1.0)
  method: Literal['linear', 'cubic'] = 'linear'

  def __post_init__(self):
    top, left, bottom, right = self.crop
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
      raise ValueError(f'crop must satisfy 0 <= top < bottom <= 1 and '
                       f'0 <= left < right <= 1, got {self.crop}')
    if self.channel_order not in ('RGB', 'BGR'):
      raise ValueError(f'channel_order must be RGB or BGR, got '
                       f'{self.channel_order!r}')
    if min(self.size) < 1:
      raise ValueError(f'size must be positive, got {self.size}')


def crop_pixels(spec: InputSpec, height: int, width: int) -> tuple[
    int, int, int, int]:
  """The crop box of `spec` in whole pixels of a `height` x `width` image."""
  top, left, bottom, right = spec.crop
  box = (round(top * height), round(left * width), round(bottom * height),
         round(right * width))
  if box[2] <= box[0] or box[3] <= box[1]:
    raise ValueError(f'crop {spec.crop} is empty at {height}x{width}')
  return box


def to_encoder_input(images: chex.Array, spec: InputSpec) -> jax.Array:
  """Maps generator images to the encoder's input.

  Args:
    images: [..., H, W, 3] RGB in [-1, 1] (any leading batch dims).
    spec: the encoder's `InputSpec`.

  Returns:
    [..., spec.size[0], spec.size[1], 3] float array, cropped, resized with
    antialiasing, reordered and normalised as the encoder expects.
  """
  images = jnp.asarray(images)
  if images.ndim < 3 or images.shape[-1] != 3:
    raise ValueError(f'expected [..., H, W, 3] RGB images, got shape '
                     f'{images.shape}')
  height, width = images.shape[-3:-1]
  top, left, bottom, right = crop_pixels(spec, height, width)
  x = images[..., top:bottom, left:right, :]
  x = (x + 1.0) * 127.5  # [-1, 1] -> [0, 255]
  out_shape = x.shape[:-3] + tuple(spec.size) + (3,)
  if x.shape != out_shape:
    x = jax.image.resize(x, out_shape, method=spec.method, antialias=True)
  if spec.channel_order == 'BGR':
    x = x[..., ::-1]
  mean = jnp.asarray(spec.mean, x.dtype)
  std = jnp.asarray(spec.std, x.dtype)
  return (x - mean) / std


def uint8_to_unit_range(images: chex.Array) -> jax.Array:
  """uint8 [0, 255] images -> float32 [-1, 1] (the generator's range)."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0
