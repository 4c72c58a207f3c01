"""VGGFace2 ResNet-50 and SE-ResNet-50 face encoders (Cao et al., FG 2018).

The layout is pinned to the widely used PyTorch port of the authors' Caffe
models, cydonia999/VGGFace2-pytorch (``models/resnet.py``,
``models/senet.py`` and ``utils.load_state_dict``), whose weight files
``resnet50_ft_weight.pkl`` / ``senet50_ft_weight.pkl`` (and the ``_scratch``
ones) are pickled dicts ``{torch key: numpy array}``:

  stem:    conv1 7x7/2 pad 3 (3 -> 64, no bias) -> bn1 -> relu -> maxpool
           3x3/2, padding 0, ceil_mode=True (Caffe's pooling rounds up), so
           224 -> 112 -> 56.
  layerK:  K = 1..4 with planes 64/128/256/512 (outputs 4x that) and 3, 4, 6,
           3 `Bottleneck`s; layer2..4 start with stride 2: 56 -> 28 -> 14 -> 7.
  block:   conv1 1x1/s -> bn1 -> relu -> conv2 3x3/1 pad 1 -> bn2 -> relu ->
           conv3 1x1 -> bn3, plus the identity or downsample = (conv 1x1/s ->
           bn) of the input in the first block of a layer; relu after the
           sum. The stride sits on the FIRST 1x1 conv (Caffe / original
           ResNet), not on the 3x3 as in torchvision's ResNet-50 v1.5: the
           two have identical key names and shapes but different outputs.
  SE:      (SENet-50 only) in every block, after bn3: global average pool ->
           conv4 1x1 (4p -> 4p/16, with bias) -> relu -> conv5 1x1 (4p/16 ->
           4p, with bias) -> sigmoid, which scales bn3's output channel-wise
           before the residual sum. The port names these ``conv4`` /
           ``conv5`` (its unused ``SEModule`` class is not in the files).
  head:    AvgPool2d(7) on the 7x7 map = global average -> the 2048-d
           descriptor; ``fc`` (Linear 2048 -> 8631 VGGFace2 training
           identities) follows in the files.

The descriptor is the pooled 2048-d feature before ``fc``, what the port's
``extract`` command saves (``include_top=False``) and what the ID2image paper
uses (d in R^2048); it is not L2-normalised. ``fc`` is optional: configs with
``num_classes > 0`` add it and return its logits as
``intermediates['logits']``; `id2image_jax.porting.vggface2.convert_state_dict`
leaves it out unless asked (70 MB of weights that inversion never reads).

Every batch norm uses eps = 1e-5 (``nn.BatchNorm2d``'s default in the port,
and Caffe's ``BatchNorm`` default) and runs in inference mode from
``batch_stats``, so this module is for inference and for gradients through a
frozen encoder, not for training it. The compute dtype is `dtype` (float32 or
bfloat16); parameters stay float32.

Input: [*batch, 224, 224, 3] in BGR channel order, on the 0..255 scale minus
the per-channel mean (91.4953, 103.8827, 131.0912) (B, G, R; from the authors'
``resnet50_ft.prototxt``, quoted in the port's ``datasets/vgg_face2.py``),
with NO division by a std. `input_spec` says so for
`id2image_jax.preprocess.to_encoder_input`.
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
from id2image_jax.models import dlib_resnet
from id2image_jax.models import nn as tnn

# Variants are data: blocks per layer and whether blocks carry SE units.
VARIANTS: dict[str, dict[str, Any]] = {
    'resnet50': {'layers': (3, 4, 6, 3), 'se': False},
    'senet50': {'layers': (3, 4, 6, 3), 'se': True},
}
DEFAULT_VARIANT = 'resnet50'

DESCRIPTOR_DIM = 2048
INPUT_SIZE = (224, 224)
# Bottleneck `planes` of layer1..layer4; block outputs are EXPANSION x these.
PLANES = (64, 128, 256, 512)
EXPANSION = 4
# SE bottleneck: conv4 maps 4p channels to 4p / SE_REDUCTION.
SE_REDUCTION = 16
BN_EPS = 1e-5
# Identities of the VGGFace2 training split: the size of ``fc`` in the files.
NUM_TRAIN_IDENTITIES = 8631
# B, G, R means on 0..255 (resnet50_ft.prototxt); no std division.
MEAN_BGR = (91.4953, 103.8827, 131.0912)

# Face box in an FFHQ-aligned image, (top, left, bottom, right) fractions. An
# ESTIMATE: VGGFace2 was trained on loose crops (the detector's box enlarged
# by ~30% to take in the whole head, shorter side resized to 256, central
# 224x224 kept), and no public recipe maps FFHQ's alignment onto it. On the
# FFHQ template (eye-to-eye ~0.25 of the frame, eyes at y ~0.47, mouth at y
# ~0.75) such a crop is a square of ~0.68 of the frame centred just below
# the nose, which is where the measured dlib chip box lies (0.686 of the
# frame, centre (0.60, 0.50); see `dlib_resnet.FFHQ_CROP`, derived from real
# faces by ports/derive_dlib_ffhq_crop.py). So we reuse that box; pass
# ``crop=`` to `input_spec` (or ``load_encoder(..., crop=...)``) to change it.
FFHQ_CROP = dlib_resnet.FFHQ_CROP


def get_config(variant: str = DEFAULT_VARIANT, **overrides: Any
               ) -> dict[str, Any]:
  """A JSON-able config for a variant of the table.

  Args:
    variant: 'resnet50' or 'senet50'.
    **overrides: replace fields: ``layers`` (4 block counts), ``se``
      (squeeze-excitation units), ``num_classes`` (size of the ``fc``
      classifier; 0 = no classifier, the default).

  Returns:
    ``{'variant', 'layers', 'se', 'num_classes'}``.
  """
  return _variants.decode_variant(VARIANTS, variant, overrides,
                                 model='VGGFace2', fields=_fields)


def _fields(entry: Mapping[str, Any]) -> dict[str, Any]:
  """The config fields of a `VARIANTS` entry."""
  return {'layers': list(entry['layers']), 'se': entry['se'],
          'num_classes': 0}


def _on_images(fn, x: jax.Array) -> jax.Array:
  """Applies an NHWC op to [*batch, H, W, C] with any number of batch dims."""
  lead = x.shape[:-3]
  out = fn(x.reshape((-1,) + x.shape[-3:]))
  return out.reshape(lead + out.shape[-3:])


class Bottleneck(nn.Module):
  """The port's ``Bottleneck`` (optionally with SE) on NHWC.

  Attributes:
    planes: width of conv1/conv2; the output has ``4 * planes`` channels.
    stride: stride of conv1 (the first 1x1) and of the downsample conv.
    downsample: whether the identity goes through conv 1x1 + bn.
    se: whether the conv4/conv5 squeeze-excitation unit scales the branch.
    dtype: compute dtype.
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  se: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bn = lambda name: tnn.BatchNorm(epsilon=BN_EPS, dtype=self.dtype,
                                    name=name)
    conv = lambda features, k, s, p, name, bias=False: tnn.Conv2d(
        features, k, s, p, use_bias=bias, dtype=self.dtype, name=name)
    width = self.planes * EXPANSION
    # Caffe placement: the stride is on the first 1x1 conv.
    out = nn.relu(bn('bn1')(conv(self.planes, 1, self.stride, 0, 'conv1')(x)))
    out = nn.relu(bn('bn2')(conv(self.planes, 3, 1, 1, 'conv2')(out)))
    out = bn('bn3')(conv(width, 1, 1, 0, 'conv3')(out))
    if self.se:
      # F.avg_pool2d(out, out.size(2)) on the square map: a global mean.
      gate = jnp.mean(out, axis=(-3, -2), keepdims=True)
      gate = nn.relu(conv(width // SE_REDUCTION, 1, 1, 0, 'conv4', True)(gate))
      gate = nn.sigmoid(conv(width, 1, 1, 0, 'conv5', True)(gate))
      out = out * gate
    identity = x
    if self.downsample:
      identity = bn('downsample_bn')(
          conv(width, 1, self.stride, 0, 'downsample_conv')(x))
    return nn.relu(out + identity)


class VGGFace2ResNet(nn.Module):
  """VGGFace2 ResNet-50 / SENet-50, inference only.

  Parameter paths follow torch's names with '.' -> '/' and block indices
  joined: ``layer2.0.downsample.0.weight`` lives at
  ``params/layer2_0/downsample_conv/conv/kernel``, ``layer1.2.conv4.bias`` at
  ``params/layer1_2/conv4/conv/bias`` (see `id2image_jax.porting.vggface2`).

  Attributes:
    layers: Bottlenecks in layer1..layer4.
    se: SENet blocks (conv4/conv5 squeeze-excitation).
    num_classes: size of the ``fc`` classifier; 0 = none.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.
  """
  layers: Sequence[int] = VARIANTS['resnet50']['layers']
  se: bool = False
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Embeds preprocessed faces.

    Args:
      x: [*batch, 224, 224, 3] BGR, 0..255 minus `MEAN_BGR` (no scaling), any
        number of leading batch dims (none under `jax.vmap` per image).
        Concrete (non-traced) input must be finite; under `jax.jit` a NaN
        image gives a NaN descriptor (only for that image).

    Returns:
      descriptor: [*batch, 2048] in `dtype`, the global average of layer4,
        not L2-normalised.
      intermediates: NHWC feature maps ``stem`` [*batch, 112, 112, 64]
        (after conv1/bn1/relu, before the max pool), ``layer1``
        [.., 56, 56, 256], ``layer2`` [.., 28, 28, 512], ``layer3``
        [.., 14, 14, 1024], ``layer4`` [.., 7, 7, 2048]; and ``logits``
        [*batch, num_classes] when the classifier exists.
    """
    if len(self.layers) != 4 or min(self.layers) < 1:
      raise ValueError(f'layers must be 4 positive block counts, got '
                       f'{tuple(self.layers)}')
    x = jnp.asarray(x)
    # Under jit NaN propagates to that image's descriptor only (batch norm
    # uses running stats).
    tnn.check_image_input(x, INPUT_SIZE, model='VGGFace2', channels='BGR',
                          why=' (mean-subtracted, 224x224 as trained: '
                          'avgpool(7) needs a 7x7 layer4)')
    x = x.astype(self.dtype)
    intermediates = {}
    x = tnn.Conv2d(PLANES[0], 7, 2, 3, use_bias=False, dtype=self.dtype,
                   name='conv1')(x)
    x = nn.relu(tnn.BatchNorm(epsilon=BN_EPS, dtype=self.dtype,
                              name='bn1')(x))
    intermediates['stem'] = x
    x = _on_images(lambda t: tnn.max_pool2d(t, 3, stride=2, padding=0, ceil_mode=True), x)
    for i, (planes, blocks) in enumerate(zip(PLANES, self.layers), start=1):
      for j in range(blocks):
        stride = 2 if (i > 1 and j == 0) else 1
        # First block of every layer changes channels (64 -> 256 in layer1),
        # so it always has the downsample branch.
        x = Bottleneck(planes, stride=stride, downsample=j == 0, se=self.se,
                       dtype=self.dtype, name=f'layer{i}_{j}')(x)
      intermediates[f'layer{i}'] = x
    # AvgPool2d(7, stride=1) on the 7x7 map, flattened.
    descriptor = jnp.mean(x, axis=(-3, -2))
    if self.num_classes:
      intermediates['logits'] = nn.Dense(self.num_classes, dtype=self.dtype,
                                         name='fc')(descriptor)
    return descriptor, intermediates


def build(config: Mapping[str, Any], *, dtype: Any = None) -> VGGFace2ResNet:
  """Builds the module from a config (`get_config` or the porter's).

  Args:
    config: ``variant`` and optionally ``layers``, ``se``, ``num_classes``.
    dtype: compute dtype, float32 (default, also for None) or bfloat16.

  Returns:
    A `VGGFace2ResNet`.
  """
  variant = config.get('variant', DEFAULT_VARIANT)
  table = VARIANTS.get(variant, {})
  layers = config.get('layers', table.get('layers'))
  if layers is None:
    raise ValueError(f'config {dict(config)} names neither a variant of '
                     f'{sorted(VARIANTS)} nor layers')
  se = config.get('se', table.get('se', False))
  return VGGFace2ResNet(layers=tuple(int(n) for n in layers),
                        se=bool(se),
                        num_classes=int(config.get('num_classes', 0) or 0),
                        dtype=jnp.float32 if dtype is None else dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: tuple[float, float, float, float] = FFHQ_CROP
               ) -> preprocess.InputSpec:
  """How to feed generator images to the encoder.

  Args:
    config: unused (both variants take the same input); accepted so all
      encoders share the signature.
    crop: (top, left, bottom, right) fractions of the source image; the
      default `FFHQ_CROP` (an estimate, see its comment) suits FFHQ-aligned
      StyleGAN2 output. Pass ``(0, 0, 1, 1)`` for images already cropped the
      VGGFace2 way.

  Returns:
    224x224, BGR, minus `MEAN_BGR` on the 0..255 scale, std 1.
  """
  del config
  return preprocess.InputSpec(size=INPUT_SIZE, crop=tuple(crop),
                              channel_order='BGR', mean=MEAN_BGR,
                              std=(1.0, 1.0, 1.0), method='linear')
