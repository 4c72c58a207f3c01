"""Ports VGG-Face ``vgg_face_dag.pth`` state dicts to Flax variables.

Ports the file of Samuel Albanie's PyTorch import of VGG-Face (a
``torch.save(model.state_dict())`` of ``Vgg_face_dag``: keys
``conv1_1.weight`` / ``.bias`` .. ``conv5_3``, ``fc6``, ``fc7``, ``fc8``);
files enter through `id2image_jax.loading.read` (kind 'vggface'), which
reads them once with the restricted loader (no torch needed) and flattens
them with `safe_load.state_dict`. So a state dict whose every key carries
DataParallel's ``module.`` prefix, or one wrapped in ``{'state_dict': ...}``,
is accepted too.

Rules (torch key, full match -> Flax leaf, transform):

  convI_J.weight [O, I, 3, 3] -> params/convI_J/conv/kernel  OIHW -> HWIO
  convI_J.bias   [O]          -> params/convI_J/conv/bias    as is
  fc6.weight     [4096, 25088] -> params/fc6/kernel           columns
                                  (C, H, W) -> rows (H, W, C), transposed
  fc7.weight / fc8.weight      -> params/fcK/kernel           transposed
  fcK.bias                     -> params/fcK/bias             as is

fc8 (the 2622-identity classifier) is ignored by default (the descriptor is
fc7; see `id2image_jax.models.vggface`); ``convert_state_dict(source,
classifier=True)`` ports it and the config then has ``num_classes = 2622``.
The architecture (channels and convs per stage, fc width) is read off the
keys and shapes, so the public file gives the 'vgg16' variant and any other
VGG in the same naming ports as 'custom'.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import vggface
from id2image_jax.porting import layout
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import count_numbered
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys

_CONV = r'(conv[1-5]_\d+)'
_POOL5 = vggface.INPUT_SIZE[0] // 2**5  # 7: pool5's height and width.


def rules(config: Mapping[str, Any]) -> tuple[Rule, ...]:
  """The rule table for `config` (fc6's reordering needs pool5's shape).

  Args:
    config: a `vggface` config (``stages``; ``num_classes``).

  Returns:
    Rules mapping every torch key of the config to its Flax leaf (fc8 only
    when ``num_classes`` > 0).
  """
  pool5_channels = int(config['stages'][-1][0])
  table = [
      Rule(rf'{_CONV}\.weight', r'params/\1/conv/kernel',
           layout.conv_oihw_to_hwio),
      Rule(rf'{_CONV}\.bias', r'params/\1/conv/bias'),
      Rule(r'fc6\.weight', 'params/fc6/kernel',
           functools.partial(layout.linear_chw_to_dense,
                             channels=pool5_channels, height=_POOL5,
                             width=_POOL5)),
      Rule(r'fc6\.bias', 'params/fc6/bias'),
      Rule(r'fc7\.weight', 'params/fc7/kernel', layout.linear_to_dense),
      Rule(r'fc7\.bias', 'params/fc7/bias'),
  ]
  if config.get('num_classes'):
    # Without fc8 its keys fall through to `ignored` instead.
    table += [Rule(r'fc8\.weight', 'params/fc8/kernel',
                   layout.linear_to_dense),
              Rule(r'fc8\.bias', 'params/fc8/bias')]
  return tuple(table)


def ignored(config: Mapping[str, Any]) -> tuple[str, ...]:
  """Checkpoint keys deliberately unused: fc8 unless `config` keeps it."""
  return () if config.get('num_classes') else (r'fc8\.(weight|bias)',)


def infer_config(source: Mapping[str, Any], *, what: str = 'checkpoint',
                 classifier: bool = False) -> dict[str, Any]:
  """Reads the architecture off the state dict keys and shapes.

  Args:
    source: flat ``{torch key: array}``.
    what: names the checkpoint in errors.
    classifier: keep fc8 (``num_classes`` = its outputs) if present.

  Returns:
    A JSON-able config for `id2image_jax.models.vggface.build`: ``variant``
    ('vgg16' or 'custom'), ``stages``, ``num_features``, ``num_classes``,
    ``descriptor_layer`` ('fc7').

  Raises:
    PortingError: not a vgg_face_dag state dict, or inconsistent shapes.
  """
  if 'conv1_1.weight' not in source:
    raise PortingError(f'{what} lacks conv1_1.weight: not a VGG-Face '
                       'vgg_face_dag state dict (first keys: '
                       f'{sorted(source)[:5]})')
  stages = []
  for i in range(1, 6):
    count = count_numbered(source, rf'conv{i}_(\d+)\.weight$', first=1,
                           what=what, label=f'conv{i}_*')
    if not count:
      raise PortingError(f'{what} has no conv{i}_* weights: not a VGG-Face '
                         'vgg_face_dag state dict')
    shape = np.shape(source[f'conv{i}_1.weight'])
    if len(shape) != 4:
      raise PortingError(f'{what}: conv{i}_1.weight has shape {shape}, '
                         'expected [out, in, 3, 3]')
    stages.append([int(shape[0]), count])
  if 'fc6.weight' not in source:
    raise PortingError(f'{what} lacks required key(s): fc6.weight')
  shape = np.shape(source['fc6.weight'])
  if len(shape) != 2:
    raise PortingError(f'{what}: fc6.weight has shape {shape}, expected '
                       '[num_features, 25088]')
  num_classes = 0
  if classifier:
    if 'fc8.weight' not in source:
      raise PortingError(f'{what} lacks fc8.weight, needed for '
                         'classifier=True')
    num_classes = int(np.shape(source['fc8.weight'])[0])
  variant = ('vgg16' if (tuple(map(tuple, stages)) == vggface.VARIANTS['vgg16']
                         and shape[0] == vggface.DESCRIPTOR_DIM) else 'custom')
  return {'variant': variant, 'stages': stages, 'num_features': int(shape[0]),
          'num_classes': num_classes, 'descriptor_layer': 'fc7'}


def expected_keys(config: Mapping[str, Any]) -> list[str]:
  """The torch keys a vgg_face_dag state dict for `config` must hold."""
  keys = []
  for i, (_, convs) in enumerate(config['stages'], start=1):
    for j in range(1, convs + 1):
      keys += [f'conv{i}_{j}.weight', f'conv{i}_{j}.bias']
  keys += ['fc6.weight', 'fc6.bias', 'fc7.weight', 'fc7.bias']
  if config.get('num_classes'):
    keys += ['fc8.weight', 'fc8.bias']
  return keys


def convert_state_dict(source: Mapping[str, Any], *, what: str = 'checkpoint',
                       classifier: bool = False,
                       descriptor_layer: str = 'fc7') -> tuple[dict, dict]:
  """Ports a vgg_face_dag state dict.

  Args:
    source: flat ``{torch key: array}`` (`safe_load.state_dict` of
      ``vgg_face_dag.pth``).
    what: names the checkpoint in errors.
    classifier: also port fc8 (the 2622-identity logits, in the
      intermediates as ``fc8``); by default fc8 is ignored.
    descriptor_layer: 'fc7' (default) or 'fc6', stored in the config.

  Returns:
    config: JSON-able dict for `id2image_jax.models.vggface.build`.
    variables: ``{'params': ...}`` float32 jax arrays.

  Raises:
    ValueError: an unknown `descriptor_layer`.
    PortingError: a key or shape does not match (the message names it).
  """
  if descriptor_layer not in vggface.DESCRIPTOR_LAYERS:
    raise ValueError(f'descriptor_layer must be one of '
                     f'{vggface.DESCRIPTOR_LAYERS}, got {descriptor_layer!r}')
  config = infer_config(source, what=what, classifier=classifier)
  config['descriptor_layer'] = descriptor_layer
  # Name missing entries by their torch keys; `port` then checks shapes,
  # unknown keys and full coverage of the Flax tree.
  require_keys(source, expected_keys(config), what=what)
  return config, port_image_model(
      source, rules(config), vggface.build(config), vggface.INPUT_SIZE,
      ignore=ignored(config), what=what)

