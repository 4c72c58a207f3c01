"""face-api.js face nets: 68 landmarks, expression, age and gender.

The three small nets of face-api.js (justadudewhohacks/face-api.js, kept up
to date as vladmandic/face-api; MIT), read at ``@vladmandic/face-api@1.7.15``
``src/``. All take a 112x112 RGB face and subtract face-api's mean RGB
(122.782, 117.001, 104.298) then divide by 255 (``FaceFeatureExtractor`` /
``TinyXception.forwardInput``: ``normalize(x, meanRgb).div(255)``). Two
feature extractors serve them; the variant table below says which.

``dense`` (``faceFeatureExtractor``; landmark68 and expression nets):
  four ``denseBlock4``s of 32, 64, 128, 256 channels, each halving the
  resolution (112 -> 56 -> 28 -> 14 -> 7), then ``avgPool`` 7x7/2 'valid'
  (a global mean at 7x7). A block is::

    out1 = relu(conv0(x))           # 3x3/2 conv in dense0, else separable
    out2 = sep1(out1)
    out3 = sep2(relu(out1 + out2))
    out4 = sep3(relu(out1 + (out2 + out3)))
    return relu(out1 + (out2 + (out3 + out4)))

  where ``sep`` is ``tf.separableConv2d`` (depthwise 3x3 then pointwise 1x1,
  'same') plus a bias. The additions keep face-api's grouping so float32
  results match TF.js to rounding.

``xception`` (``TinyXception(2)``; the age/gender net):
  conv_in 3x3/2 (32) + relu; reduction blocks 0 (64, input not activated)
  and 1 (128); two main blocks (128); the exit reduction block (256); a
  separable conv (512) + relu; avgPool 7x7/2 'valid'. A reduction block is
  ``maxPool3x3/2 'same'(sep1(relu(sep0(act(x))))) + conv1x1/2(x)``, a main
  block ``x + sep2(relu(sep1(relu(sep0(relu(x))))))``.

Heads (``fullyConnectedLayer``: ``x @ weights + bias``):
  landmark68: fc 256 -> 136, read as 68 (x, y) pairs in [0, 1] of the
    input square (face-api's ``postProcess`` only undoes its padding to a
    square, a no-op for the square crops fed here). Continuous coordinates:
    face-api multiplies them by the image size to draw on a canvas, so 0
    and 1 are the crop's outer edges, as in `id2image_jax.data.dlib_landmarks`.
  expression: fc 256 -> 7, softmax over `EXPRESSION_LABELS`.
  age_gender: fc 512 -> 1 (age in years, a regression) and fc 512 -> 2,
    softmax over `GENDER_LABELS` (index 0 is male).

Where the crops lie in an FFHQ-aligned image (`FFHQ_CROPS`) is derived from
face-api's own pipeline by ``ports/derive_npm_face_crops.py``; see there and
docs/face_models.md.
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

INPUT_SIZE = (112, 112)
# faceFeatureExtractor / TinyXception: normalize(x, meanRgb).div(255).
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 255.0
NUM_LANDMARKS = 68
EXPRESSION_LABELS = ('neutral', 'happy', 'sad', 'angry', 'fearful',
                     'disgusted', 'surprised')
GENDER_LABELS = ('male', 'female')

# Face boxes in an FFHQ-aligned image, (top, left, bottom, right) fractions,
# one per input pipeline of face-api.js (see ports/derive_npm_face_crops.py):
# 'detection': the SSD MobileNet v1 box that detectAllFaces gives and
#   withFaceLandmarks crops (landmark68);
# 'aligned': the alignedRect that withFaceExpressions / withAgeAndGender
#   crop (the 68 landmarks' bounding box grown by 20%), made square about
#   its centre as face-api's padToSquare does (which pads with black).
# Medians over 235 CelebA faces; per-face spread (std of the edges) 0.06-0.09
# for 'detection', 0.02-0.07 for 'aligned'.
FFHQ_CROPS = {
    'detection': (0.1910, 0.1280, 0.9043, 0.8413),
    'aligned': (0.2863, 0.1510, 0.9746, 0.8334),
}

# Variants are data (big_vision style).
VARIANTS: dict[str, dict[str, Any]] = {
    'landmark68': {'extractor': 'dense', 'widths': (32, 64, 128, 256),
                   'head': 'landmark68', 'crop': 'detection'},
    'expression': {'extractor': 'dense', 'widths': (32, 64, 128, 256),
                   'head': 'expression', 'crop': 'aligned'},
    'age_gender': {'extractor': 'xception',
                   'widths': (32, 64, 128, 256, 512), 'main_blocks': 2,
                   'head': 'age_gender', 'crop': 'aligned'},
}


def get_config(variant: str = 'landmark68', **overrides: Any
               ) -> dict[str, Any]:
  """A JSON-able config of a face-api.js net.

  Args:
    variant: a key of `VARIANTS`.
    **overrides: replace fields (``widths``, ``main_blocks``, ``crop``).

  Returns:
    ``{'variant', 'extractor', 'widths', 'head', 'crop', ...}``.
  """
  return _variants.as_lists(_variants.decode_variant(
      VARIANTS, variant, overrides, model='face-api'))


class DenseBlock(nn.Module):
  """face-api ``denseBlock4`` (see the module docstring)."""
  features: int
  first: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.first:
      out1 = tfl.Conv(self.features, 3, 2, dtype=self.dtype, name='conv0')(x)
    else:
      out1 = tfl.SeparableConv(self.features, 2, dtype=self.dtype,
                               name='conv0')(x)
    out1 = nn.relu(out1)
    sep = lambda i: tfl.SeparableConv(self.features, 1, dtype=self.dtype,
                                      name=f'conv{i}')
    out2 = sep(1)(out1)
    out3 = sep(2)(nn.relu(out1 + out2))
    out4 = sep(3)(nn.relu(out1 + (out2 + out3)))
    return nn.relu(out1 + (out2 + (out3 + out4)))


class DenseFeatureExtractor(nn.Module):
  """face-api ``FaceFeatureExtractor``: dense0..dense3 then the pool."""
  widths: Sequence[int] = (32, 64, 128, 256)
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    inter = {}
    for i, width in enumerate(self.widths):
      x = DenseBlock(width, first=i == 0, dtype=self.dtype,
                     name=f'dense{i}')(x)
      inter[f'dense{i}'] = x
    return x, inter


class ReductionBlock(nn.Module):
  """TinyXception ``reductionBlock``: halves the resolution."""
  features: int
  activate_input: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = nn.relu(x) if self.activate_input else x
    out = tfl.SeparableConv(self.features, dtype=self.dtype,
                            name='separable_conv0')(out)
    out = tfl.SeparableConv(self.features, dtype=self.dtype,
                            name='separable_conv1')(nn.relu(out))
    # TF 'same' max pooling: the padding never wins the max.
    out = nn.max_pool(out, (3, 3), strides=(2, 2), padding='SAME')
    shortcut = tfl.Conv(self.features, 1, 2, dtype=self.dtype,
                        name='expansion_conv')(x)
    return out + shortcut


class MainBlock(nn.Module):
  """TinyXception ``mainBlock``: three relu-separable convs plus identity."""
  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = x
    for i in range(3):
      out = tfl.SeparableConv(self.features, dtype=self.dtype,
                              name=f'separable_conv{i}')(nn.relu(out))
    return out + x


class TinyXception(nn.Module):
  """face-api ``TinyXception(main_blocks)``, before the pool.

  Submodule names follow the TF.js weight names: ``entry_flow``,
  ``middle_flow``, ``exit_flow``.
  """
  widths: Sequence[int] = (32, 64, 128, 256, 512)
  main_blocks: int = 2
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    c_in, c0, c1, c_exit, c_out = self.widths
    dt = self.dtype
    x = nn.relu(tfl.Conv(c_in, 3, 2, dtype=dt, name='entry_flow_conv_in')(x))
    x = ReductionBlock(c0, activate_input=False, dtype=dt,
                       name='entry_flow_reduction_block_0')(x)
    x = ReductionBlock(c1, dtype=dt, name='entry_flow_reduction_block_1')(x)
    inter = {'entry_flow': x}
    for i in range(self.main_blocks):
      x = MainBlock(c1, dtype=dt, name=f'middle_flow_main_block_{i}')(x)
    inter['middle_flow'] = x
    x = ReductionBlock(c_exit, dtype=dt, name='exit_flow_reduction_block')(x)
    x = nn.relu(tfl.SeparableConv(c_out, dtype=dt,
                                  name='exit_flow_separable_conv')(x))
    inter['exit_flow'] = x
    return x, inter


class FaceApiNet(nn.Module):
  """One face-api.js net; build it with `build(config)`.

  Attributes:
    extractor: 'dense' or 'xception'.
    widths: extractor channels (4 for dense, 5 for xception).
    main_blocks: TinyXception middle-flow blocks.
    head: 'landmark68', 'expression' or 'age_gender'.
    dtype: compute dtype (float32 or bfloat16); parameters are float32.
  """
  extractor: str = 'dense'
  widths: Sequence[int] = (32, 64, 128, 256)
  main_blocks: int = 2
  head: str = 'landmark68'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Runs the net on normalised 112x112 faces.

    Args:
      x: [*batch, 112, 112, 3] RGB, ``(pixel - MEAN_RGB) / 255`` (what
        `preprocess.to_encoder_input` makes with `input_spec`).

    Returns:
      outputs: landmark68 ``{'landmarks': [*batch, 68, 2]}`` (x, y) in
        [0, 1] of the input; expression ``{'logits', 'probs'}`` [*batch, 7];
        age_gender ``{'age': [*batch]`` years, ``'gender_logits',
        'gender_probs'`` [*batch, 2]}, all in `dtype`.
      intermediates: extractor maps (``dense0``..``dense3`` or
        ``entry_flow``, ``middle_flow``, ``exit_flow``, NHWC) and
        ``features`` [*batch, C], the pooled vector the heads read.
    """
    x = tfl.check_image_input(x, INPUT_SIZE, 'face-api net',
                              '(pixel - MEAN_RGB) / 255')
    if self.extractor not in ('dense', 'xception'):
      raise ValueError(f'unknown face-api extractor {self.extractor!r}')
    if self.head not in ('landmark68', 'expression', 'age_gender'):
      raise ValueError(f'unknown face-api head {self.head!r}')
    return tfl.over_batch(self._forward, x.astype(self.dtype))

  def _forward(self, x):
    if self.extractor == 'dense':
      x, inter = DenseFeatureExtractor(self.widths, dtype=self.dtype,
                                       name='extractor')(x)
    else:
      x, inter = TinyXception(self.widths, self.main_blocks,
                              dtype=self.dtype, name='extractor')(x)
    # avgPool 7x7/2 'valid' on the 7x7 map: one window, its mean.
    x = nn.avg_pool(x, (7, 7), strides=(2, 2), padding='VALID')
    features = x.reshape(x.shape[0], -1)
    inter['features'] = features
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype,
                                     param_dtype=jnp.float32, name=name)
    if self.head == 'landmark68':
      points = dense(2 * NUM_LANDMARKS, 'fc')(features)
      out = {'landmarks': points.reshape(-1, NUM_LANDMARKS, 2)}
    elif self.head == 'expression':
      logits = dense(len(EXPRESSION_LABELS), 'fc')(features)
      out = {'logits': logits, 'probs': jax.nn.softmax(logits, axis=-1)}
    else:
      age = dense(1, 'fc_age')(features)[:, 0]
      logits = dense(len(GENDER_LABELS), 'fc_gender')(features)
      out = {'age': age, 'gender_logits': logits,
             'gender_probs': jax.nn.softmax(logits, axis=-1)}
    return out, inter


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32
          ) -> FaceApiNet:
  """The module for a config from `get_config` (or a converted file).

  Args:
    config: ``extractor``, ``widths``, ``head`` and for xception
      ``main_blocks`` (or just ``variant``).
    dtype: compute dtype, float32 or bfloat16.

  Returns:
    A `FaceApiNet`.
  """
  config = _variants.named_only(config, get_config, field='extractor',
                                default='landmark68')
  widths = tuple(int(w) for w in config['widths'])
  want = 4 if config['extractor'] == 'dense' else 5
  if len(widths) != want:
    raise ValueError(f'{config["extractor"]} extractor needs {want} widths, '
                     f'got {widths}')
  return FaceApiNet(extractor=str(config['extractor']), widths=widths,
                    main_blocks=int(config.get('main_blocks', 2)),
                    head=str(config['head']), dtype=dtype)


def input_spec(config: Mapping[str, Any], *,
               crop: Sequence[float] | None = None) -> preprocess.InputSpec:
  """How to cut and normalise an FFHQ-aligned image for this net.

  Args:
    config: the net's config (its ``crop`` names an `FFHQ_CROPS` box).
    crop: (top, left, bottom, right) fractions overriding the config's box,
      e.g. ``(0, 0, 1, 1)`` for faces already cropped face-api's way.

  Returns:
    112x112 RGB, mean `MEAN_RGB`, std 255 (on the 0..255 scale), bilinear
    (face-api resizes with ``resizeBilinear``).
  """
  if crop is None:
    crop = FFHQ_CROPS[config.get('crop', VARIANTS[config.get(
        'variant', 'landmark68')]['crop'])]
  return preprocess.InputSpec(size=INPUT_SIZE, crop=tuple(crop),
                              channel_order='RGB', mean=MEAN_RGB,
                              std=(INPUT_SCALE,) * 3, method='linear')


def landmarks_in_image(points: chex.Array, spec: preprocess.InputSpec, *,
                       image_size: tuple[int, int] | None = None
                       ) -> jax.Array:
  """Maps landmarks from the fed crop to the whole FFHQ-aligned image.

  Both are continuous coordinates normalised to [0, 1] (0 and 1 are the
  outer pixel edges), (x, y) order.

  Args:
    points: [..., 2] (x, y) in [0, 1] of the crop (the net's output).
    spec: the `InputSpec` whose ``crop`` was fed.
    image_size: (height, width) of the source image. With it the crop is
      rounded to whole pixels exactly as `preprocess.to_encoder_input` cut
      it; without it the fractional box is used.

  Returns:
    [..., 2] (x, y) in [0, 1] of the source image.
  """
  top, left, bottom, right = _crop_box(spec, image_size)
  points = jnp.asarray(points)
  scale = jnp.asarray([right - left, bottom - top], points.dtype)
  offset = jnp.asarray([left, top], points.dtype)
  return points * scale + offset


def landmarks_in_crop(points: chex.Array, spec: preprocess.InputSpec, *,
                      image_size: tuple[int, int] | None = None
                      ) -> jax.Array:
  """The inverse of `landmarks_in_image` (image -> crop coordinates)."""
  top, left, bottom, right = _crop_box(spec, image_size)
  points = jnp.asarray(points)
  scale = jnp.asarray([right - left, bottom - top], points.dtype)
  offset = jnp.asarray([left, top], points.dtype)
  return (points - offset) / scale


def _crop_box(spec, image_size):
  if image_size is None:
    return spec.crop
  height, width = image_size
  top, left, bottom, right = preprocess.crop_pixels(spec, height, width)
  return top / height, left / width, bottom / height, right / width
