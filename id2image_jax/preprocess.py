"""Differentiable preprocessing from generator output to encoder input.

The generator emits NHWC images in [-1, 1] at its own resolution, aligned the
FFHQ way. Each face encoder expects its own crop, size, channel order and
normalisation. `to_encoder_input` does all of it in pure jnp so gradients
flow from the encoder back to the latent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import chex
import jax
import jax.numpy as jnp

# Interpolations of `jax.image.resize` that InputSpec.method may name.
_METHODS = ('linear', 'cubic')


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
    # Configs come back from JSON with lists; store tuples so specs compare
    # equal and hash whatever their origin.
    try:
      size = tuple(int(v) for v in self.size)
      crop = tuple(float(v) for v in self.crop)
      mean = tuple(float(v) for v in self.mean)
      std = tuple(float(v) for v in self.std)
    except (TypeError, ValueError) as e:
      raise ValueError(f'InputSpec fields must be numbers: {e}') from e
    if len(size) != 2 or min(size) < 1:
      raise ValueError(f'size must be 2 positive ints (height, width), got '
                       f'{self.size}')
    if len(crop) != 4:
      raise ValueError(f'crop must be (top, left, bottom, right), got '
                       f'{self.crop}')
    top, left, bottom, right = crop
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
      raise ValueError(f'crop must satisfy 0 <= top < bottom <= 1 and '
                       f'0 <= left < right <= 1, got {self.crop}')
    if self.channel_order not in ('RGB', 'BGR'):
      raise ValueError(f'channel_order must be RGB or BGR, got '
                       f'{self.channel_order!r}')
    if len(mean) != 3 or len(std) != 3:
      raise ValueError(f'mean and std need 3 values (one per channel), got '
                       f'mean={self.mean}, std={self.std}')
    if not all(math.isfinite(m) for m in mean):
      raise ValueError(f'mean must be finite, got {self.mean}')
    if not all(math.isfinite(v) and v != 0.0 for v in std):
      raise ValueError(f'std must be finite and non-zero, got {self.std}')
    if self.method not in _METHODS:
      raise ValueError(f'method must be one of {_METHODS}, got '
                       f'{self.method!r}')
    object.__setattr__(self, 'size', size)
    object.__setattr__(self, 'crop', crop)
    object.__setattr__(self, 'mean', mean)
    object.__setattr__(self, 'std', std)


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

  Raises:
    ValueError: not float [..., H, W, 3]; the crop is empty at this
      resolution; NaN/Inf values in concrete (eager) input (see
      `check_finite`).
  """
  images = jnp.asarray(images)
  if images.ndim < 3 or images.shape[-1] != 3:
    raise ValueError(f'expected [..., H, W, 3] RGB images, got shape '
                     f'{images.shape}')
  if not jnp.issubdtype(images.dtype, jnp.floating):
    # uint8 pixels would be read as values in [-1, 1] and blow up to ~3e4.
    raise ValueError(f'expected float images in [-1, 1], got {images.dtype} '
                     '(convert uint8 with uint8_to_unit_range)')
  check_finite(images)
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


def check_finite(images: chex.Array, *, what: str = 'images') -> None:
  """Raises if concrete `images` hold NaN or Inf; a no-op under tracing.

  Inside `jax.jit` / `jax.grad` / `jax.vmap` the values are unknown at trace
  time, so nothing is checked there (no host sync, no error); validate data
  before the jitted step. Eagerly, the message counts the bad values and
  names the first bad image along the leading axis.

  Args:
    images: any array.
    what: names the array in the message.

  Raises:
    ValueError: some value is NaN or +-Inf.
  """
  if isinstance(images, jax.core.Tracer):
    return
  finite = jnp.isfinite(jnp.asarray(images))
  bad = int(finite.size - jnp.count_nonzero(finite))
  if bad:
    first = ''
    if finite.ndim > 3:
      flat = finite.reshape(finite.shape[0], -1).all(axis=1)
      first = f' (first in {what}[{int(jnp.argmin(flat))}])'
    raise ValueError(f'{what} hold {bad} NaN/Inf value(s){first}')


def uint8_to_unit_range(images: chex.Array) -> jax.Array:
  """uint8 [0, 255] images -> float32 [-1, 1] (the generator's range)."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0
