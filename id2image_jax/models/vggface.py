"""VGG-Face VGG-16 face encoder (Parkhi, Vedaldi & Zisserman, BMVC 2015).

This is the network the ID2image paper uses for its evaluation (Sec. 4.4,
Fig. 9: cosine similarity of VGG-Face descriptors between a real image and
its reconstruction). The layout is pinned to Samuel Albanie's PyTorch import
of the MatConvNet model, ``vgg_face_dag.py`` / ``vgg_face_dag.pth`` (made
with his pytorch-mcn converter, listed at
robots.ox.ac.uk/~albanie/pytorch-models.html), whose state dict holds

  conv1_1 .. conv5_3:  13 Conv2d 3x3, stride 1, padding 1, with bias, each
                       followed by ReLU; stages of 2, 2, 3, 3, 3 convs with
                       64, 128, 256, 512, 512 channels, each stage closed by
                       MaxPool2d(2, 2) (no padding, floor mode), so
                       224 -> 112 -> 56 -> 28 -> 14 -> 7.
  fc6:                 Linear(25088 -> 4096) on pool5 flattened in torch's
                       C, H, W order (``x.view(x.size(0), -1)``), ReLU,
                       Dropout(0.5).
  fc7:                 Linear(4096 -> 4096), ReLU, Dropout(0.5).
  fc8:                 Linear(4096 -> 2622), logits over the 2622 identities
                       of the VGG-Face training set.

The port's ``meta`` says ``mean = [129.186279296875, 104.76238250732422,
93.59396362304688]``, ``std = [1, 1, 1]``, ``imageSize = [224, 224, 3]``:
pixels on the 0..255 scale in RGB order (MatConvNet order; the same values
reversed, (93.59, 104.76, 129.19), are the BGR mean of the original Caffe
release), minus the mean, not divided.

Descriptor: by default the fc7 output after its ReLU (4096-d). Parkhi et al.
describe faces by the output of the last layer before the classifier, which
is fc7 (their learnt triplet-loss projection is not part of the public
model), and VGG-Face verification codes compare it by cosine. The
``descriptor_layer`` config field selects 'fc6' (also after ReLU) instead;
both are always computed (fc7 is ~0.2% of the network's FLOPs) and both
are in the intermediates. Dropout is the identity (inference only).

fc6 layout: this module flattens pool5 in NHWC order, so its fc6 kernel is
the torch weight with its 25088 input columns reordered from (C, H, W) to
(H, W, C) (`id2image_jax.porting.layout.linear_chw_to_dense`); the numbers
are the same, no transpose of the feature map is needed at run time.

fc8 (the 2622-way classifier) is only useful to classify the VGG-Face
training identities, so the default config has no fc8 (``num_classes = 0``)
and `id2image_jax.porting.vggface.convert_state_dict` ignores fc8 unless
asked to keep it (``classifier=True``); with it, the logits are
``intermediates['fc8']``.

Input: [*batch, 224, 224, 3] RGB, ``pixel_0_255 - mean`` (`input_spec`).
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

# Variant table: name -> (channels, number of 3x3 convs) per stage. VGG-Face
# was only released as VGG-16 ("configuration D" of Simonyan & Zisserman).
VARIANTS: dict[str, tuple[tuple[int, int], ...]] = {
    'vgg16': ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
}
DEFAULT_VARIANT = 'vgg16'

DESCRIPTOR_DIM = 4096  # fc6 / fc7 width.
NUM_CLASSES = 2622  # fc8: identities of the VGG-Face training set.
INPUT_SIZE = (224, 224)
DESCRIPTOR_LAYERS = ('fc6', 'fc7')
# vgg_face_dag meta 'mean' (RGB, 0..255 scale); 'std' is [1, 1, 1].
MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)
STD_RGB = (1.0, 1.0, 1.0)

# Default face box in an FFHQ-aligned image, (top, left, bottom, right)
# fractions. VGG-Face was trained on face-detector boxes with some margin
# around the face (not on landmark-aligned chips), and its public demos feed
# a loosely cropped face resized whole to 224x224. No published mapping into
# FFHQ's frame exists, so this is an estimate: it reuses the box measured for
# dlib's encoder (`id2image_jax.models.dlib_resnet.FFHQ_CROP`: the square
# that dlib's face detector plus 25% padding cuts, mapped into the FFHQ
# frame over 93 real faces by ports/derive_dlib_ffhq_crop.py), i.e. brows to
# below the chin and ear to ear, which is the kind of detector box with
# margin VGG-Face saw. Override it with `input_spec(crop=...)` (or the
# registry's ``crop``) for other alignments.
FFHQ_CROP = (0.2585, 0.1599, 0.9446, 0.8461)

# Pooling stages between the input and fc6 (each halves the resolution).
_NUM_POOLS = 5


def get_config(variant: str = DEFAULT_VARIANT,
               **overrides: Any) -> dict[str, Any]:
  """A JSON-able config for a variant of the table.

  Args:
    variant: a key of `VARIANTS` ('vgg16').
    **overrides: replace fields: ``stages`` (5 pairs [channels, convs]),
      ``num_features`` (fc6/fc7 width), ``num_classes`` (fc8 outputs; 0 for
      no fc8), ``descriptor_layer`` ('fc6' or 'fc7').

  Returns:
    ``{'variant', 'stages', 'num_features', 'num_classes',
    'descriptor_layer'}``.
  """
  config = _variants.decode_variant(VARIANTS, variant, overrides,
                                   model='VGG-Face', fields=_fields)
  if config['descriptor_layer'] not in DESCRIPTOR_LAYERS:
    raise ValueError(f'descriptor_layer must be one of {DESCRIPTOR_LAYERS}, '
                     f'got {config["descriptor_layer"]!r}')
  return config


def _fields(stages: Sequence[Sequence[int]]) -> dict[str, Any]:
  """The config fields of a `VARIANTS` entry (its stages)."""
  return {'stages': [list(s) for s in stages],
          'num_features': DESCRIPTOR_DIM, 'num_classes': 0,
          'descriptor_layer': 'fc7'}


class VGGFace(nn.Module):
  """VGG-Face (vgg_face_dag layout), inference only, NHWC.

  Parameter paths follow torch's names: ``conv3_2.weight`` lives at
  ``params/conv3_2/conv/kernel``, ``fc7.bias`` at ``params/fc7/bias`` (see
  `id2image_jax.porting.vggface` for the table).

  Attributes:
    stages: (channels, convs) for each of the 5 stages.
    num_features: width of fc6 and fc7.
    num_classes: fc8 outputs, or 0 for no fc8.
    descriptor_layer: 'fc7' (default) or 'fc6', both after ReLU.
    dtype: compute dtype (float32 or bfloat16; None = float32); parameters
      are float32.
  """
  stages: Sequence[tuple[int, int]] = VARIANTS[DEFAULT_VARIANT]
  num_features: int = DESCRIPTOR_DIM
  num_classes: int = 0
  descriptor_layer: str = 'fc7'
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Embeds preprocessed faces.

    Args:
      x: [*batch, 224, 224, 3] RGB, ``pixel_0_255 - MEAN_RGB``; any number
        of leading batch dims (none under `jax.vmap` per image).

    Returns:
      descriptor: [*batch, num_features] in the compute dtype, the
        ``descriptor_layer`` output after ReLU, not L2-normalised.
      intermediates: NHWC maps after each max pool, ``pool1``
        [*batch, 112, 112, 64] .. ``pool5`` [*batch, 7, 7, 512]; ``fc6`` and
        ``fc7`` [*batch, 4096] after ReLU; ``fc8`` [*batch, num_classes]
        logits when num_classes > 0.

    Raises:
      ValueError: wrong shape, integer dtype, bad config, or (for concrete
        input only; under jit values cannot be checked) NaN/Inf values.
    """
    if len(self.stages) != _NUM_POOLS or min(n for _, n in self.stages) < 1:
      raise ValueError(f'stages must be {_NUM_POOLS} (channels, convs) pairs '
                       f'with convs >= 1, got {tuple(self.stages)}')
    if self.descriptor_layer not in DESCRIPTOR_LAYERS:
      raise ValueError(f'descriptor_layer must be one of {DESCRIPTOR_LAYERS},'
                       f' got {self.descriptor_layer!r}')
    x = jnp.asarray(x)
    tnn.check_image_input(x, INPUT_SIZE, model='VGG-Face',
                          why=' (fc6 is sized for 7x7 after five 2x2 max '
                          'pools)')
    dtype = self.dtype or jnp.float32
    batch = x.shape[:-3]
    # The pooling helper works on one batch axis; fold all leading dims.
    x = x.reshape((-1,) + x.shape[-3:]).astype(dtype)
    inter = {}
    for i, (channels, convs) in enumerate(self.stages, start=1):
      for j in range(1, convs + 1):
        x = tnn.Conv2d(channels, 3, 1, 1, dtype=dtype,
                       name=f'conv{i}_{j}')(x)
        x = nn.relu(x)
      x = tnn.max_pool2d(x, 2, stride=2)
      inter[f'pool{i}'] = x
    # NHWC flatten: fc6's kernel rows were reordered from torch's (C, H, W)
    # when porting, so no transpose is needed here.
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.num_features, dtype=dtype, name='fc6')(x))
    inter['fc6'] = x
    x = nn.relu(nn.Dense(self.num_features, dtype=dtype, name='fc7')(x))
    inter['fc7'] = x
    if self.num_classes:
      inter['fc8'] = nn.Dense(self.num_classes, dtype=dtype, name='fc8')(x)
    inter = {k: v.reshape(batch + v.shape[1:]) for k, v in inter.items()}
    return inter[self.descriptor_layer], inter


def build(config: Mapping[str, Any], *, dtype: Any = None) -> VGGFace:
  """Builds the module from a config (`get_config` or the porter's).

  Args:
    config: ``stages`` (or just ``variant``), and optionally
      ``num_features``, ``num_classes``, ``descriptor_layer``.
    dtype: compute dtype, float32 or bfloat16 (None = float32).

  Returns:
    A `VGGFace`.
  """
  stages = config.get('stages')
  if stages is None:
    stages = VARIANTS[get_config(config.get('variant', DEFAULT_VARIANT))[
        'variant']]
  return VGGFace(
      stages=tuple((int(c), int(n)) for c, n in stages),
      num_features=int(config.get('num_features', DESCRIPTOR_DIM)),
      num_classes=int(config.get('num_classes', 0)),
      descriptor_layer=str(config.get('descriptor_layer', 'fc7')),
      dtype=dtype)


def input_spec(config: Mapping[str, Any] | None = None, *,
               crop: tuple[float, float, float, float] = FFHQ_CROP
               ) -> preprocess.InputSpec:
  """How to feed generator images to the encoder.

  Args:
    config: unused (every config takes the same input); accepted so all
      encoders share the signature.
    crop: (top, left, bottom, right) fractions of the source image; the
      default `FFHQ_CROP` is an estimate for FFHQ-aligned StyleGAN2 output
      (see its comment). Pass ``(0, 0, 1, 1)`` for images already cropped
      the VGG-Face way.

  Returns:
    224x224 RGB, ``pixel_0_255 - MEAN_RGB`` (std 1), antialiased bilinear
    resize.
  """
  del config
  return preprocess.InputSpec(size=INPUT_SIZE, crop=tuple(crop),
                              channel_order='RGB', mean=MEAN_RGB,
                              std=STD_RGB, method='linear')
