"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``).

The network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``): a
29-conv ResNet with per-channel affine layers (folded batch norm) that maps a
150x150 RGB face chip to a 128-d descriptor; faces of one person lie within
Euclidean distance ~0.6. It is the one real pretrained face encoder that
installs from the package index (``face-recognition-models``), and this
project's embedded default encoder. Weights are read by
`id2image_jax.porting.dlib_resnet.convert` with no dlib at run time.

Layout is NHWC. What differs from a textbook ResNet, all reproduced here:

* convolutions pad only when their stride is 1 (dlib's default padding is
  ``stride != 1 ? 0 : kernel // 2``): the 7x7/2 stem and the strided 3x3
  convs are 'VALID', the 3x3/1 convs pad 1 on each side;
* the downsampling shortcut is a 2x2/2 average pool, and the residual sum is
  dlib's ``add_prev``: both operands are zero-padded at the end of each
  axis (height, width, channels) to the larger shape. So channels 32..63 of
  the shortcut are zeros, and at 8x8 -> 3x3 (conv) vs 4x4 (pool) the
  conv branch is padded with a zero row and column;
* the head is a global average pool and a 256 -> 128 linear map without
  bias; the descriptor is not normalised.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from id2image_jax.models import _variants
from id2image_jax.models import nn as tnn
from id2image_jax.preprocess import InputSpec

DESCRIPTOR_DIM = 128

# Where dlib's 150x150 face chip (``get_face_chip(img, shape5, size=150,
# padding=0.25)``, what the model was trained on) lies in an FFHQ-aligned
# image, as (top, left, bottom, right) fractions of the FFHQ frame. Derived by
# ``ports/derive_dlib_ffhq_crop.py``: detect real faces with dlib, align each
# the FFHQ way (the ffhq-dataset recipe on dlib's 68 landmarks) and map the
# corners of dlib's chip into that frame. Mean over 93 faces (skimage's
# astronaut, its mirror image and the 91 lfw_subset faces dlib detects after
# an 8x upscale): the astronaut alone gives (0.262, 0.159, 0.955, 0.851), the
# per-face spread is 0.01-0.025 and the residual rotation 0.5 +- 2 degrees.
# The chip is square in the frame and reaches below the chin.
FFHQ_CROP = (0.2585, 0.1599, 0.9446, 0.8461)

# Variants are data (flax examples / big_vision style). `stages` lists, from
# the input up, (features, number of residual blocks, whether the first
# block downsamples); dlib's alevel4 .. alevel0.
VARIANTS: dict[str, dict[str, Any]] = {
    'v1': dict(
        input_size=150,
        stem_features=32,
        stem_kernel=7,
        stages=((32, 3, False), (64, 4, True), (128, 3, True),
                (256, 3, True), (256, 1, True)),
        descriptor_dim=DESCRIPTOR_DIM,
        # input_rgb_image_sized: x = (pixel - mean) / 256 per RGB channel.
        input_mean=(122.782, 117.001, 104.298),
        input_scale=256.0,
        crop=FFHQ_CROP,
    ),
}
DEFAULT_VARIANT = 'v1'


def get_config(variant: str = DEFAULT_VARIANT) -> dict[str, Any]:
  """A JSON-able copy of a variant's config."""
  return _variants.decode_variant(VARIANTS, variant, {}, model='dlib_resnet')


class Affine(nn.Module):
  """dlib's ``affine_`` in conv mode: ``x * scale + bias`` per channel."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,),
                       jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,),
                      jnp.float32)
    return x * scale.astype(x.dtype) + bias.astype(x.dtype)


def _conv(features: int, kernel: int, stride: int, dtype, name: str):
  # dlib pads kernel // 2 only when the stride is 1 (layers.h con_).
  padding = kernel // 2 if stride == 1 else 0
  return tnn.Conv2d(features, kernel, stride=stride, padding=padding,
                    use_bias=True, dtype=dtype, name=name)


def add_zero_padded(a: jax.Array, b: jax.Array) -> jax.Array:
  """dlib's ``add_prev``: [N, H, W, C] sum after zero-padding both at the end
  of every axis to the larger size."""
  shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))

  def pad(x):
    return jnp.pad(x, [(0, s - d) for s, d in zip(shape, x.shape)])

  return pad(a) + pad(b)


class ResBlock(nn.Module):
  """``ares`` / ``ares_down``: relu(block(x) + shortcut(x)).

  block = conv3x3/stride -> affine -> relu -> conv3x3/1 -> affine; the
  shortcut is the identity, or a 2x2/2 average pool when downsampling.
  """
  features: int
  downsample: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    stride = 2 if self.downsample else 1
    y = _conv(self.features, 3, stride, self.dtype, 'conv1')(x)
    y = nn.relu(Affine(name='affine1')(y))
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = Affine(name='affine2')(y)
    shortcut = x
    if self.downsample:
      shortcut = nn.avg_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    return nn.relu(add_zero_padded(shortcut, y))


class DlibResNet(nn.Module):
  """The descriptor network. Build it with `build(config)`.

  Attributes:
    input_size: square input side (150).
    stem_features: channels of the 7x7/2 stem conv.
    stem_kernel: stem kernel size.
    stages: ((features, num_blocks, downsample_first), ...) from the input.
    descriptor_dim: output size of the final bias-free linear map.
    dtype: compute dtype (params stay float32), e.g. ``jnp.bfloat16``.
  """
  input_size: int = 150
  stem_features: int = 32
  stem_kernel: int = 7
  stages: Sequence[tuple[int, int, bool]] = VARIANTS['v1']['stages']
  descriptor_dim: int = DESCRIPTOR_DIM
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Maps preprocessed chips to descriptors.

    Args:
      x: [B, input_size, input_size, 3] RGB, already normalised as
        ``input_spec`` says: ``(pixel_0_255 - mean) / 256``.

    Returns:
      (descriptor [B, descriptor_dim], intermediates) where intermediates
      holds 'stem' [B, 35, 35, 32] (after the max pool), 'stage0' ..
      'stage4' (each stage's output, 35, 17, 8, 4, 2 pixels wide for 150
      inputs) and 'pooled' [B, 256] (before the final linear map).

    Raises:
      ValueError: wrong rank, size, channels or dtype; non-finite values
        when `x` is concrete. Under jit values cannot be checked: a
        non-finite chip gives a meaningless descriptor for that chip only
        (XLA's CPU max may even drop the NaN), so validate upstream.
    """
    tnn.check_image_input(x, (self.input_size,) * 2, model='dlib_resnet',
                          batched=True)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    inter = {}
    x = _conv(self.stem_features, self.stem_kernel, 2, dtype, 'stem_conv')(x)
    x = nn.relu(Affine(name='stem_affine')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    inter['stem'] = x
    for s, (features, blocks, downsample) in enumerate(self.stages):
      for b in range(blocks):
        x = ResBlock(features, downsample and b == 0, dtype,
                     name=f'stage{s}_block{b}')(x)
      inter[f'stage{s}'] = x
    x = jnp.mean(x, axis=(1, 2))  # avg_pool_everything
    inter['pooled'] = x
    x = nn.Dense(self.descriptor_dim, use_bias=False, dtype=dtype,
                 name='fc')(x)
    return x, inter


def build(config: Mapping[str, Any], *, dtype: Any = None) -> DlibResNet:
  """The module for `config` (from `get_config` or a converted checkpoint)."""
  return DlibResNet(
      input_size=int(config['input_size']),
      stem_features=int(config['stem_features']),
      stem_kernel=int(config['stem_kernel']),
      stages=tuple((int(f), int(n), bool(d)) for f, n, d in config['stages']),
      descriptor_dim=int(config['descriptor_dim']),
      dtype=dtype)


def input_spec(config: Mapping[str, Any]) -> InputSpec:
  """How to cut and normalise an FFHQ-aligned image for this encoder.

  dlib's ``input_rgb_image_sized`` computes ``(pixel - avg) / 256`` per RGB
  channel with the averages stored in the model file. Bilinear resizing
  stands in for dlib's chip extraction (bilinear, after a pyramid for large
  downscales); with antialiasing the two agree closely.
  """
  size = int(config['input_size'])
  scale = float(config['input_scale'])
  return InputSpec(size=(size, size), crop=tuple(config['crop']),
                   channel_order='RGB',
                   mean=tuple(float(m) for m in config['input_mean']),
                   std=(scale, scale, scale), method='linear')
