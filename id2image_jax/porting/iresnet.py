"""Ports insightface arcface_torch IResNet state dicts to Flax variables.

Ports the public ``backbone.pth`` / ``model.pt`` files that arcface_torch
writes with ``torch.save(backbone.state_dict())``; files enter through
`id2image_jax.loading.read` (kind 'iresnet'), which reads them once with the
restricted loader (no torch needed) and flattens them with
`safe_load.state_dict`. So also accepted: a ``checkpoint_gpu_*.pt`` training
checkpoint (its ``state_dict_backbone`` entry is used) and a state dict
whose every key carries DataParallel's ``module.`` prefix. The architecture
is inferred from the keys: the number of blocks in each of layer1..layer4
(hence the variant), the descriptor size (``fc.weight``) and whether ``fc``
/ ``features`` exist.

Only the arcface_torch layout is supported (see
`id2image_jax.models.iresnet`); face.evoLVe / pSp ``model_ir_se50.pth`` and
TreB1eN IR-SE files are recognised and refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import iresnet
from id2image_jax.porting import layout
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import batch_norm
from id2image_jax.porting.rules import conv2d
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys
from id2image_jax.porting.rules import resnet_stage_blocks

_BLOCK = r'layer([1-4])\.(\d+)'


def _prelu(torch_path: str, flax_path: str) -> list[Rule]:
  return [Rule(rf'{torch_path}\.weight', f'params/{flax_path}/negative_slope')]


# The whole mapping: torch key (full match) -> Flax variable path.
RULES: tuple[Rule, ...] = (
    *conv2d('conv1', 'conv1'),
    *batch_norm('bn1', 'bn1'),
    *_prelu('prelu', 'prelu'),
    *batch_norm(rf'{_BLOCK}\.(bn[123])', r'layer\1_\2/\3'),
    *conv2d(rf'{_BLOCK}\.(conv[12])', r'layer\1_\2/\3'),
    *_prelu(rf'{_BLOCK}\.prelu', r'layer\1_\2/prelu'),
    *conv2d(rf'{_BLOCK}\.downsample\.0', r'layer\1_\2/downsample_conv'),
    *batch_norm(rf'{_BLOCK}\.downsample\.1', r'layer\1_\2/downsample_bn'),
    *batch_norm('bn2', 'bn2'),
    Rule(r'fc\.weight', 'params/fc/kernel', layout.linear_to_dense),
    Rule(r'fc\.bias', 'params/fc/bias'),
    *batch_norm('features', 'features'),
)

# Checkpoint keys deliberately unused: BN update counters (training only).
IGNORE: tuple[str, ...] = (r'.*\.num_batches_tracked',)

# Keys of IR / IR-SE backbones (face.evoLVe, pSp/e4e model_ir_se50.pth,
# TreB1eN InsightFace_Pytorch), a different architecture.
_IRSE_MARKERS = ('input_layer.0.weight', 'output_layer.0.weight')


def infer_config(source: Mapping[str, Any], *,
                 what: str = 'checkpoint') -> dict[str, Any]:
  """Reads the architecture off the state dict keys.

  Args:
    source: flat ``{torch key: array}``.
    what: names the checkpoint in errors.

  Returns:
    A JSON-able config for `id2image_jax.models.iresnet.build`:
    ``variant`` (a `VARIANTS` key, or 'custom'), ``layers``,
    ``num_features``, ``use_fc``, ``use_features``.

  Raises:
    PortingError: not an arcface_torch IResNet, or inconsistent blocks.
  """
  if any(k in source for k in _IRSE_MARKERS):
    raise PortingError(
        f'{what} looks like an IR/IR-SE Backbone (face.evoLVe, pSp/e4e '
        'model_ir_se50.pth or TreB1eN InsightFace_Pytorch: keys input_layer.*'
        ', body.*, output_layer.*), a different architecture from '
        'insightface arcface_torch IResNet; it is not supported by this '
        'porter')
  if 'conv1.weight' not in source:
    raise PortingError(f'{what} lacks conv1.weight: not an insightface '
                       'arcface_torch IResNet state dict (first keys: '
                       f'{sorted(source)[:5]})')
  layers = resnet_stage_blocks(
      source, what=what, model='an arcface_torch IResNet state dict')
  use_fc = 'fc.weight' in source
  use_features = any(k.startswith('features.') for k in source)
  if use_features and not use_fc:
    raise PortingError(f'{what} has features.* (BatchNorm1d) but no '
                       'fc.weight: the features layer normalises the fc '
                       'output, so this is not an arcface_torch IResNet')
  num_features = iresnet.DESCRIPTOR_DIM
  if use_fc:
    shape = np.shape(source['fc.weight'])
    if len(shape) != 2:
      raise PortingError(f'{what}: fc.weight has shape {shape}, expected '
                         '[num_features, 25088]')
    num_features = int(shape[0])
  variant = next((name for name, blocks in iresnet.VARIANTS.items()
                  if tuple(layers) == blocks), 'custom')
  return {'variant': variant, 'layers': layers,
          'num_features': num_features, 'use_fc': use_fc,
          'use_features': use_features}


def expected_keys(config: Mapping[str, Any]) -> list[str]:
  """The torch keys an arcface_torch state dict for `config` must hold.

  ``num_batches_tracked`` counters are not listed (they are ignored).
  """
  bn = lambda p: [f'{p}.weight', f'{p}.bias', f'{p}.running_mean',
                  f'{p}.running_var']
  keys = ['conv1.weight', *bn('bn1'), 'prelu.weight']
  for i, blocks in enumerate(config['layers'], start=1):
    for j in range(blocks):
      p = f'layer{i}.{j}'
      keys += [*bn(f'{p}.bn1'), f'{p}.conv1.weight', *bn(f'{p}.bn2'),
               f'{p}.prelu.weight', f'{p}.conv2.weight', *bn(f'{p}.bn3')]
      if j == 0:
        keys += [f'{p}.downsample.0.weight', *bn(f'{p}.downsample.1')]
  keys += bn('bn2')
  if config['use_fc']:
    keys += ['fc.weight', 'fc.bias']
    if config['use_features']:
      keys += bn('features')
  return keys


def convert_state_dict(source: Mapping[str, Any], *,
                       what: str = 'checkpoint') -> tuple[dict, dict]:
  """Ports an arcface_torch IResNet state dict.

  Args:
    source: flat ``{torch key: array}`` (`safe_load.state_dict` of the
      ``torch.save(backbone.state_dict())`` file).
    what: names the checkpoint in errors.

  Returns:
    config: JSON-able dict for `id2image_jax.models.iresnet.build`.
    variables: ``{'params': ..., 'batch_stats': ...}`` float32 jax arrays.

  Raises:
    PortingError: a key, shape or block structure does not match the
      arcface_torch IResNet (the message names the keys).
  """
  config = infer_config(source, what=what)
  # Name missing entries by their torch keys; `port` then checks shapes,
  # unknown keys and full coverage of the Flax tree.
  require_keys(source, expected_keys(config), what=what)
  return config, port_image_model(source, RULES, iresnet.build(config),
                                  iresnet.INPUT_SIZE, ignore=IGNORE,
                                  what=what)

