"""ArcFace IResNet-18/34/50/100/200 face encoder (insightface arcface_torch).

The layout is pinned to insightface's
``recognition/arcface_torch/backbones/iresnet.py`` (deepinsight/insightface,
read at commit 7fadd420, unchanged in substance since arcface_torch was added
in March 2021), which is what the public ``backbone.pth`` / ``model.pt``
files of arcface_torch hold:

  stem:    conv1 3x3/1 (3 -> 64, no bias) -> bn1 -> prelu (per channel)
  layerK:  K = 1..4 with 64/128/256/512 channels and (2,2,2,2), (3,4,6,3),
           (3,4,14,3), (3,13,30,3) or (6,26,60,6) `IBasicBlock`s; the first
           block of each layer halves the resolution, so 112 -> 56 -> 28 ->
           14 -> 7.
  block:   bn1 -> conv1 3x3/1 -> bn2 -> prelu -> conv2 3x3/s -> bn3, plus the
           identity, or downsample = (conv 1x1/s, no bias -> bn) of the input
           in the first block of a layer. The stride sits on conv2 and there
           is no activation after the sum (pre-activation "improved" block).
  head:    bn2 (BatchNorm2d 512) -> flatten in torch's C, H, W order -> dropout
           -> fc (Linear 512*7*7 -> 512) -> features (BatchNorm1d 512).

The descriptor is the output of ``features``; it is not L2-normalised (cosine
similarity is the caller's business). Every batch norm, 2-D and 1-D, uses
eps = 1e-5 in arcface_torch (checked over the file's whole history); the
2e-5 seen elsewhere belongs to the MXNet ``arcface_mxnet/symbol/fresnet.py``
symbols, which this module does not reproduce. Batch norm runs in inference
mode (running statistics) and dropout is the identity, so this module is for
inference and for gradients through a frozen encoder, not for training it.
The ``fp16`` autocast flag of the torch code is ignored: the compute dtype is
the `dtype` field (float32 or bfloat16); parameters stay float32.

Other networks are also called "IResNet"/"IR" and are NOT this layout, nor
loaded by `id2image_jax.porting.iresnet`: face.evoLVe's and pSp/e4e's
``model_irse.Backbone`` (IR / IR-SE, e.g. ``model_ir_se50.pth``) and
TreB1eN's InsightFace_Pytorch ``model.Backbone`` use ``input_layer`` /
``body`` / ``output_layer`` modules, squeeze-excitation units, a bottleneck
unit with a different order of operations and a 3x3 stem; the older MXNet
``fresnet`` symbols use eps 2e-5 and their own names. Port those separately.

Input: [*batch, 112, 112, 3] RGB, normalised as arcface_torch does,
(x / 255 - 0.5) / 0.5, i.e. in [-1, 1] (`input_spec` says so for
`id2image_jax.preprocess.to_encoder_input`).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from id2image_jax import preprocess
from id2image_jax.models import _variants
from id2image_jax.models import nn as tnn

# Variant table: arcface_torch ``get_model`` name -> IBasicBlocks per layer.
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    'r18': (2, 2, 2, 2),
    'r34': (3, 4, 6, 3),
    'r50': (3, 4, 14, 3),
    'r100': (3, 13, 30, 3),
    'r200': (6, 26, 60, 6),
}

DESCRIPTOR_DIM = 512  # arcface_torch's default ``num_features``.
INPUT_SIZE = (112, 112)
# Channels of layer1..layer4; fixed in arcface_torch (no width multiplier).
WIDTHS = (64, 128, 256, 512)
# BatchNorm2d / BatchNorm1d eps everywhere in arcface_torch's iresnet.py.
BN_EPS = 1e-5

# Default face box in an FFHQ-aligned generator image, as fractions
# (top, left, bottom, right): rows 35:223 and columns 32:220 of a 256x256
# image, the crop that StyleGAN-inversion identity losses feed to ArcFace
# before pooling to 112x112 (eladrich/pixel2style2pixel
# ``criteria/id_loss.py`` at commit 5cfff385: ``x[:, :, 35:223, 32:220]``
# of the 256x256 output, then ``AdaptiveAvgPool2d((112, 112))``; many later
# inversion codes copy it). It approximates insightface's 5-point alignment
# within FFHQ's alignment; the 188x188 box is resized to 112x112.
FFHQ_CROP = (35 / 256, 32 / 256, 223 / 256, 220 / 256)


def get_config(variant: str = 'r50', **overrides: Any) -> dict[str, Any]:
  """A JSON-able config for a variant of the table.

  Args:
    variant: a key of `VARIANTS` ('r18', 'r34', 'r50', 'r100', 'r200').
    **overrides: replace fields: ``layers`` (4 block counts),
      ``num_features`` (descriptor size), ``use_fc`` / ``use_features``
      (whether the ``fc`` Linear / ``features`` BatchNorm1d head exists).

  Returns:
    ``{'variant', 'layers', 'num_features', 'use_fc', 'use_features'}``.
  """
  return _variants.decode_variant(VARIANTS, variant, overrides,
                                 model='IResNet', fields=_fields)


def _fields(layers: Sequence[int]) -> dict[str, Any]:
  """The config fields of a `VARIANTS` entry (its block counts)."""
  return {'layers': list(layers), 'num_features': DESCRIPTOR_DIM,
          'use_fc': True, 'use_features': True}


class IBasicBlock(nn.Module):
  """arcface_torch ``IBasicBlock`` on NHWC (see the module docstring).

  Attributes:
    features: output channels (``planes``).
    stride: stride of conv2 and of the downsample conv.
    downsample: whether the identity goes through conv 1x1 + bn.
    dtype: compute dtype.
  """
  features: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bn = lambda name: tnn.BatchNorm(epsilon=BN_EPS, dtype=self.dtype,
                                    name=name)
    out = bn('bn1')(x)
    out = tnn.Conv2d(self.features, 3, 1, 1, use_bias=False, dtype=self.dtype,
                     name='conv1')(out)
    out = bn('bn2')(out)
    out = tnn.PReLU(self.features, name='prelu')(out)
    out = tnn.Conv2d(self.features, 3, self.stride, 1, use_bias=False,
                     dtype=self.dtype, name='conv2')(out)
    out = bn('bn3')(out)
    identity = x
    if self.downsample:
      identity = tnn.Conv2d(self.features, 1, self.stride, 0, use_bias=False,
                            dtype=self.dtype, name='downsample_conv')(x)
      identity = bn('downsample_bn')(identity)
    return out + identity


class IResNet(nn.Module):
  """arcface_torch IResNet, inference only.

  Parameter paths follow torch's names with '.' -> '/' and block indices
  joined: ``layer2.0.downsample.0.weight`` lives at
  ``params/layer2_0/downsample_conv/conv/kernel`` (see
  `id2image_jax.porting.iresnet` for the whole table).

  Attributes:
    layers: IBasicBlocks in layer1..layer4.
    num_features: descriptor size (``fc`` outputs).
    use_fc: whether the ``fc`` Linear exists; without it the descriptor is
      the flattened bn2 output (25088-d).
    use_features: whether the ``features`` BatchNorm1d follows ``fc``.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.
  """
  layers: Sequence[int] = VARIANTS['r50']
  num_features: int = DESCRIPTOR_DIM
  use_fc: bool = True
  use_features: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Embeds preprocessed faces.

    Args:
      x: [*batch, 112, 112, 3] RGB in [-1, 1] ((pixel / 255 - 0.5) / 0.5),
        any number of leading batch dims (none under `jax.vmap` per image).

    Returns:
      descriptor: [*batch, num_features] in `dtype`, not L2-normalised.
      intermediates: NHWC feature maps ``stem`` [*batch, 112, 112, 64],
        ``layer1`` [.., 56, 56, 64], ``layer2`` [.., 28, 28, 128],
        ``layer3`` [.., 14, 14, 256], ``layer4`` [.., 7, 7, 512]; ``flatten``
        [*batch, 25088], the bn2 output flattened in torch's C, H, W order
        (the fc input); ``fc`` [*batch, num_features] before ``features``
        when both exist.
    """
    if len(self.layers) != 4 or min(self.layers) < 1:
      raise ValueError(f'layers must be 4 positive block counts, got '
                       f'{tuple(self.layers)}')
    if self.use_features and not self.use_fc:
      raise ValueError('use_features needs use_fc: `features` normalises the '
                       'fc output')
    x = jnp.asarray(x)
    tnn.check_image_input(x, INPUT_SIZE, model='IResNet',
                          why=' (fc is sized for 7x7 after four stride-2 '
                          'stages)')
    x = x.astype(self.dtype)
    bn = lambda name: tnn.BatchNorm(epsilon=BN_EPS, dtype=self.dtype,
                                    name=name)
    intermediates = {}
    x = tnn.Conv2d(WIDTHS[0], 3, 1, 1, use_bias=False, dtype=self.dtype,
                   name='conv1')(x)
    x = bn('bn1')(x)
    x = tnn.PReLU(WIDTHS[0], name='prelu')(x)
    intermediates['stem'] = x
    for i, (width, blocks) in enumerate(zip(WIDTHS, self.layers), start=1):
      for j in range(blocks):
        # Every layer starts with stride 2, so its first block always needs
        # the downsample branch (channels or resolution change).
        x = IBasicBlock(width, stride=2 if j == 0 else 1, downsample=j == 0,
                        dtype=self.dtype, name=f'layer{i}_{j}')(x)
      intermediates[f'layer{i}'] = x
    x = bn('bn2')(x)
    # torch.flatten(x, 1) on NCHW: flatten channel-major so the fc weight
    # ports with a plain transpose.
    x = jnp.moveaxis(x, -1, -3)
    x = x.reshape(x.shape[:-3] + (-1,))
    intermediates['flatten'] = x
    # Dropout (arcface_torch's `dropout`, default 0) is the identity here.
    if self.use_fc:
      x = nn.Dense(self.num_features, dtype=self.dtype, name='fc')(x)
      if self.use_features:
        intermediates['fc'] = x
        x = bn('features')(x)
    return x, intermediates


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32) -> IResNet:
  """Builds the module from a config (`get_config` or the porter's).

  Args:
    config: ``layers`` (or just ``variant``), and optionally
      ``num_features``, ``use_fc``, ``use_features``.
    dtype: compute dtype, float32 or bfloat16.

  Returns:
    An `IResNet`.
  """
  layers = config.get('layers')
  if layers is None:
    layers = get_config(config.get('variant', 'r50'))['layers']
  return IResNet(layers=tuple(int(n) for n in layers),
                 num_features=int(config.get('num_features', DESCRIPTOR_DIM)),
                 use_fc=bool(config.get('use_fc', True)),
                 use_features=bool(config.get('use_features', True)),
                 dtype=dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: tuple[float, float, float, float] = FFHQ_CROP
               ) -> preprocess.InputSpec:
  """How to feed generator images to the encoder.

  Args:
    config: unused (every variant takes the same input); accepted so all
      encoders share the signature.
    crop: (top, left, bottom, right) fractions of the source image; the
      default `FFHQ_CROP` suits FFHQ-aligned StyleGAN2 output. Pass
      ``(0, 0, 1, 1)`` for images already aligned the insightface way.

  Returns:
    112x112 RGB, (x / 255 - 0.5) / 0.5 (mean = std = 127.5 on 0..255).
  """
  del config
  return preprocess.InputSpec(size=INPUT_SIZE, crop=tuple(crop),
                              channel_order='RGB', mean=(127.5,) * 3,
                              std=(127.5,) * 3, method='linear')
