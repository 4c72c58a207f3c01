"""Ports VGGFace2 ResNet-50 / SENet-50 weights to Flax variables.

Reads the public weight files of cydonia999/VGGFace2-pytorch
(``resnet50_ft_weight.pkl``, ``senet50_ft_weight.pkl`` and the ``_scratch``
ones: pickled dicts ``{torch key: numpy array}``, often written by Python 2)
and the same keys saved as a torch state dict (``.pth``, also wrapped in a
``{'model_state_dict': ...}`` training checkpoint of that repository, or with
DataParallel's ``module.`` prefix). Files enter through
`id2image_jax.loading.read` (kind 'vggface2'), which reads them once with the
restricted loader (no torch needed) and flattens them with
`safe_load.state_dict`. ResNet-50 vs SENet-50 is read off the keys (SENet
blocks carry ``conv4`` / ``conv5``), as are the blocks per layer.

The classifier ``fc`` (2048 -> 8631 identities) is in the files but not part
of the descriptor: `convert_state_dict` ignores it unless
``include_top=True``, which ports it as the model's ``fc`` (logits in
``intermediates['logits']``).

Files with the same key names but another architecture are refused where
they can be told apart: torchvision's ImageNet ResNet-50 (``fc`` of 1000
classes; stride on the 3x3 conv and padded max pool, so identical keys and
shapes would give wrong descriptors), ArcFace IResNet (``prelu`` keys) and
VGG-Face (``conv1_1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import vggface2
from id2image_jax.porting import layout
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import batch_norm
from id2image_jax.porting.rules import conv2d
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys
from id2image_jax.porting.rules import resnet_stage_blocks

_BLOCK = r'layer([1-4])\.(\d+)'


# The whole mapping: torch key (full match) -> Flax variable path.
RULES: tuple[Rule, ...] = (
    *conv2d('conv1', 'conv1'),
    *batch_norm('bn1', 'bn1'),
    *conv2d(rf'{_BLOCK}\.(conv[123])', r'layer\1_\2/\3'),
    *batch_norm(rf'{_BLOCK}\.(bn[123])', r'layer\1_\2/\3'),
    # SENet squeeze-excitation 1x1 convs, with biases.
    *conv2d(rf'{_BLOCK}\.(conv[45])', r'layer\1_\2/\3', bias=True),
    *conv2d(rf'{_BLOCK}\.downsample\.0', r'layer\1_\2/downsample_conv'),
    *batch_norm(rf'{_BLOCK}\.downsample\.1', r'layer\1_\2/downsample_bn'),
)
# The identity classifier, ported only with ``include_top``.
TOP_RULES: tuple[Rule, ...] = (
    Rule(r'fc\.weight', 'params/fc/kernel', layout.linear_to_dense),
    Rule(r'fc\.bias', 'params/fc/bias'),
)

# Checkpoint keys deliberately unused: BN update counters (training only;
# present in .pth state dicts of recent torch, absent from the .pkl files).
IGNORE: tuple[str, ...] = (r'.*\.num_batches_tracked',)
# Also unused unless ``include_top``: the 8631-way identity classifier.
IGNORE_TOP: tuple[str, ...] = (r'fc\.weight', r'fc\.bias')

# Training checkpoints of VGGFace2-pytorch (trainer.py) wrap the weights.
_SE_KEY = re.compile(rf'{_BLOCK}\.conv[45]\.')
# torchvision's ImageNet classifier size.
_IMAGENET_CLASSES = 1000


def _refuse_other_encoders(source: Mapping[str, Any], what: str) -> None:
  keys = set(source)
  if any(k.endswith('prelu.weight') for k in keys) or 'features.weight' in keys:
    raise PortingError(
        f'{what} looks like an ArcFace IResNet (prelu / features keys such as '
        f'{sorted(k for k in keys if "prelu" in k)[:2]}), not a VGGFace2 '
        'ResNet-50/SENet-50; load it with id2image_jax.porting.iresnet '
        "(encoder kind 'iresnet')")
  if 'conv1_1.weight' in keys:
    raise PortingError(
        f'{what} looks like VGG-Face (VGG-16: conv1_1.weight ...), not '
        "VGGFace2; use encoder kind 'vggface'")


def infer_config(source: Mapping[str, Any], *, what: str = 'checkpoint',
                 include_top: bool = False) -> dict[str, Any]:
  """Reads the architecture off the state dict keys.

  Args:
    source: flat ``{torch key: array}``.
    what: names the checkpoint in errors.
    include_top: keep the ``fc`` classifier (``num_classes`` from its shape).

  Returns:
    A JSON-able config for `id2image_jax.models.vggface2.build`:
    ``variant`` ('resnet50', 'senet50' or 'custom'), ``layers``, ``se``,
    ``num_classes`` (0 unless `include_top`).

  Raises:
    PortingError: not a VGGFace2 ResNet/SENet (the message names the keys
      it looked for and the keys it found), or inconsistent blocks.
  """
  _refuse_other_encoders(source, what)
  anchors = ('conv1.weight', 'layer1.0.conv3.weight')
  if not all(k in source for k in anchors):
    raise PortingError(
        f'{what} is neither a VGGFace2 ResNet-50 nor a SENet-50 state dict: '
        f'it lacks {[k for k in anchors if k not in source]} (first keys '
        f'found: {sorted(source)[:6]})')
  layers = resnet_stage_blocks(
      source, what=what, model='a VGGFace2 ResNet-50/SENet-50 state dict')
  se = any(_SE_KEY.match(k) for k in source)
  num_classes = 0
  if 'fc.weight' in source:
    shape = np.shape(source['fc.weight'])
    if len(shape) != 2:
      raise PortingError(f'{what}: fc.weight has shape {shape}, expected '
                         f'[{vggface2.NUM_TRAIN_IDENTITIES}, 2048]')
    if shape[0] == _IMAGENET_CLASSES and not se:
      raise PortingError(
          f'{what} has a 1000-class fc: it looks like torchvision\'s '
          'ImageNet ResNet-50, whose keys match VGGFace2\'s but whose stride '
          'sits on the 3x3 conv (and whose max pool is padded); it would '
          'give wrong descriptors, so it is refused')
    if include_top:
      num_classes = int(shape[0])
  elif include_top:
    raise PortingError(f'{what} has no fc.weight: cannot include_top')
  variant = 'custom'
  for name, arch in vggface2.VARIANTS.items():
    if tuple(layers) == arch['layers'] and se == arch['se']:
      variant = name
  return {'variant': variant, 'layers': layers, 'se': se,
          'num_classes': num_classes}


def expected_keys(config: Mapping[str, Any]) -> list[str]:
  """The torch keys a VGGFace2 weight file for `config` must hold.

  ``num_batches_tracked`` counters are not listed (they are ignored);
  ``fc.weight`` / ``fc.bias`` only when ``num_classes`` > 0.
  """
  bn = lambda p: [f'{p}.weight', f'{p}.bias', f'{p}.running_mean',
                  f'{p}.running_var']
  keys = ['conv1.weight', *bn('bn1')]
  for i, blocks in enumerate(config['layers'], start=1):
    for j in range(blocks):
      p = f'layer{i}.{j}'
      for k in (1, 2, 3):
        keys += [f'{p}.conv{k}.weight', *bn(f'{p}.bn{k}')]
      if config.get('se'):
        keys += [f'{p}.conv4.weight', f'{p}.conv4.bias',
                 f'{p}.conv5.weight', f'{p}.conv5.bias']
      if j == 0:
        keys += [f'{p}.downsample.0.weight', *bn(f'{p}.downsample.1')]
  if config.get('num_classes'):
    keys += ['fc.weight', 'fc.bias']
  return keys


def convert_state_dict(source: Mapping[str, Any], *,
                       what: str = 'checkpoint',
                       include_top: bool = False) -> tuple[dict, dict]:
  """Ports a VGGFace2 ResNet-50 / SENet-50 state dict.

  Args:
    source: flat ``{torch key: array}`` (`safe_load.state_dict` of
      ``resnet50_ft_weight.pkl`` / ``senet50_ft_weight.pkl`` (or
      ``_scratch``), or of a ``.pth`` state dict with the same keys).
    what: names the checkpoint in errors.
    include_top: also port the ``fc`` identity classifier.

  Returns:
    config: JSON-able dict for `id2image_jax.models.vggface2.build`.
    variables: ``{'params': ..., 'batch_stats': ...}`` float32 jax arrays.

  Raises:
    PortingError: a key, shape or block structure does not match (the
      message names the keys); nothing is returned half-loaded.
  """
  config = infer_config(source, what=what, include_top=include_top)
  # Name missing entries by their torch keys; `port` then checks shapes,
  # unknown keys and full coverage of the Flax tree.
  require_keys(source, expected_keys(config), what=what)
  if include_top:
    rules, ignore = RULES + TOP_RULES, IGNORE
  else:
    rules, ignore = RULES, IGNORE + IGNORE_TOP
  return config, port_image_model(source, rules, vggface2.build(config),
                                  vggface2.INPUT_SIZE, ignore=ignore,
                                  what=what)

