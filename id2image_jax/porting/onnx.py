"""ONNX face encoders: read a file safely, fold it, port it, or run it in ORT.

`read_model` parses an ``.onnx`` file with the ``onnx`` package (protobuf:
no code runs on load) WITHOUT letting it touch external data, and refuses,
before any work and naming the tensor or node:

* a file (plus its external data) over `MAX_MODEL_BYTES`;
* a file protobuf cannot parse (truncated or not ONNX);
* an external-data path that is absolute or leaves the model's folder
  (``../``, a symlink out), names a missing file, or points past its end;
* an initialiser whose stored size disagrees with its shape and type;
* a graph with a cycle, a tensor nothing produces, or two producers;
* sparse initialisers, several image inputs, or no default-domain opset.

`convert` turns the parse into the ``onnx`` kind's config and variables
(`id2image_jax.models.onnx_graph`): ops the interpreter lacks are listed
with their nodes and the black-box alternative; constant subgraphs
(Constant nodes and anything computed only from initialisers) are folded;
float tensors become ``params`` (ported strictly by `port_params`),
integer ones static constants of the config; the input convention is
guessed from the input shape (`onnx_graph.guess_preset`).

`runtime` runs the same parsed file through ONNX Runtime (CPU) for the
black-box mode: descriptors only, no gradients.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import onnx_graph
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port
from id2image_jax.porting.rules import require_keys
from id2image_jax.porting.safe_load import CheckpointError

# The largest model read, file plus external data: 4 GiB holds every face
# encoder we know (insightface's IResNet-100 is 261 MB, a ViT-L ~1.2 GB)
# with room, and stops a hostile file from making us allocate without end.
MAX_MODEL_BYTES = 4 * 2 ** 30
_EXTERNAL = 1  # TensorProto.EXTERNAL
_DEFAULT_DOMAINS = ('', 'ai.onnx')
_SUBGRAPH = '<subgraph>'  # If / Loop / Scan bodies: not interpreted
_BLACKBOX_HINT = (
    'run it as a black box through ONNX Runtime instead (scores only, no '
    'gradients): --encoder blackbox:{path}; `id2image audit` falls back to '
    'that by itself')


class UnsupportedOpError(onnx_graph.UnsupportedOpError, CheckpointError):
  """The file uses ops the JAX interpreter lacks (lists them)."""


def _import(name: str, why: str):
  try:
    return __import__(name)
  except ImportError as e:
    raise ImportError(
        f'{why} needs the {name} package, a dependency of id2image_jax: '
        f'pip install {name} (or reinstall: pip install -e .)') from e


def _onnx():
  onnx = _import('onnx', 'reading .onnx files')
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  return onnx, numpy_helper


@dataclasses.dataclass(frozen=True, eq=False)
class OnnxFile:
  """A parsed, checked ONNX model.

  Attributes:
    path: the file.
    opset: default-domain opset version.
    input: the image input's name; input_shape: its shape (str for a
      symbolic dimension such as a dynamic batch).
    outputs: the graph's output names (the first is the descriptor).
    nodes: in dependency order.
    tensors: initialiser name -> array (external data read and checked).
    unsupported: (op, node name) of every node the interpreter lacks.
  """
  path: str
  opset: int
  input: str
  input_shape: tuple[Any, ...]
  outputs: tuple[str, ...]
  nodes: tuple[onnx_graph.Node, ...]
  tensors: Mapping[str, np.ndarray]
  unsupported: tuple[tuple[str, str], ...]

  @property
  def name(self) -> str:
    return os.path.basename(self.path)


def _refuse(path: str, why: str) -> CheckpointError:
  return CheckpointError(f'{path}: {why}')


def _numel(dims) -> int:
  n = 1
  for d in dims:
    n *= int(d)
  return n


def _external_fields(tensor) -> dict[str, str]:
  return {e.key: e.value for e in tensor.external_data}


class _Budget:
  """Bytes a model may still take (`MAX_MODEL_BYTES` in all)."""

  def __init__(self, path: str, limit: int):
    self.path, self.limit, self.used = path, limit, 0

  def take(self, nbytes: int, what: str) -> None:
    self.used += nbytes
    if self.used > self.limit:
      raise _refuse(self.path, f'{what} takes the model over the size limit '
                    f'of {self.limit / 2 ** 30:.2f} GiB ({self.used} bytes '
                    'so far); refused before reading it')


def _external_path(path: str, tensor, fields: Mapping[str, str]) -> str:
  """The checked file of an external tensor (inside the model's folder)."""
  location = fields.get('location', '')
  folder = os.path.dirname(os.path.abspath(path))
  if not location or os.path.isabs(location) or location.startswith('\\'):
    raise _refuse(path, f'tensor {tensor.name!r}: external data location '
                  f'{location!r} must be a path relative to the model\'s '
                  'folder')
  target = os.path.realpath(os.path.join(folder, location))
  if os.path.commonpath([target, os.path.realpath(folder)]) != (
      os.path.realpath(folder)):
    raise _refuse(path, f'tensor {tensor.name!r}: external data location '
                  f'{location!r} leaves the model\'s folder {folder}; '
                  'refused')
  if not os.path.isfile(target):
    raise _refuse(path, f'tensor {tensor.name!r}: its external data file '
                  f'{location!r} is missing (expected at {target})')
  return target


def _tensor_array(path: str, tensor, budget: _Budget,
                  numpy_helper) -> np.ndarray:
  """A TensorProto as numpy after every size check (module docstring)."""
  what = f'tensor {tensor.name!r}'
  dims = [int(d) for d in tensor.dims]
  if any(d < 0 for d in dims):
    raise _refuse(path, f'{what} has a negative dimension {dims}')
  dtype = onnx_graph.DTYPES.get(tensor.data_type)
  if dtype is None:
    raise _refuse(path, f'{what} has ONNX data type {tensor.data_type}, '
                  'which is not supported')
  need = _numel(dims) * np.dtype(dtype).itemsize
  budget.take(need, what)
  if tensor.data_location == _EXTERNAL:
    fields = _external_fields(tensor)
    target = _external_path(path, tensor, fields)
    offset = int(fields.get('offset', 0) or 0)
    length = fields.get('length')
    if length is not None and int(length) != need:
      raise _refuse(path, f'{what}: external data length {length} bytes, '
                    f'but its shape {dims} of {np.dtype(dtype).name} needs '
                    f'{need}')
    size = os.path.getsize(target)
    if offset < 0 or offset + need > size:
      raise _refuse(path, f'{what}: its external file {fields["location"]!r}'
                    f' holds {size} bytes, too few for {need} bytes at '
                    f'offset {offset} (truncated?)')
    with open(target, 'rb') as f:
      f.seek(offset)
      data = f.read(need)
    return np.frombuffer(data, dtype=dtype).reshape(dims).copy()
  if tensor.HasField('raw_data'):
    if len(tensor.raw_data) != need:
      raise _refuse(path, f'{what} stores {len(tensor.raw_data)} bytes, but '
                    f'its shape {dims} of {np.dtype(dtype).name} needs '
                    f'{need} (truncated or corrupt)')
  else:
    stored = max(len(tensor.float_data), len(tensor.int32_data),
                 len(tensor.int64_data), len(tensor.double_data),
                 len(tensor.uint64_data))
    if stored != _numel(dims):
      raise _refuse(path, f'{what} stores {stored} values, but its shape '
                    f'{dims} holds {_numel(dims)}')
  return np.asarray(numpy_helper.to_array(tensor), dtype=dtype)


def _attributes(path: str, node, budget: _Budget, onnx,
                numpy_helper) -> dict[str, Any]:
  out = {}
  kinds = onnx.AttributeProto
  for a in node.attribute:
    if a.type == kinds.TENSOR:
      out[a.name] = _tensor_array(path, a.t, budget, numpy_helper)
    elif a.type in (kinds.GRAPH, kinds.GRAPHS):
      out[a.name] = _SUBGRAPH
    elif a.type == kinds.STRING:
      out[a.name] = a.s.decode('utf-8', 'replace')
    elif a.type == kinds.STRINGS:
      out[a.name] = tuple(s.decode('utf-8', 'replace') for s in a.strings)
    elif a.type == kinds.FLOAT:
      out[a.name] = float(a.f)
    elif a.type == kinds.INT:
      out[a.name] = int(a.i)
    elif a.type == kinds.FLOATS:
      out[a.name] = tuple(float(v) for v in a.floats)
    elif a.type == kinds.INTS:
      out[a.name] = tuple(int(v) for v in a.ints)
    else:
      out[a.name] = f'<attribute type {a.type}>'
  return out


def _sorted_nodes(path: str, nodes: list[onnx_graph.Node],
                  ready: set[str]) -> tuple[onnx_graph.Node, ...]:
  """`nodes` in dependency order (Kahn); refuses cycles and dangling or
  doubly produced tensors, naming them."""
  producer = {}
  for node in nodes:
    for out in node.outputs:
      if not out:
        continue
      if out in producer or out in ready:
        first = producer.get(out)
        raise _refuse(path, f'tensor {out!r} is produced twice (node '
                      f'{node.name!r} and '
                      f'{first.name if first else "an input/initialiser"!r})')
      producer[out] = node
  for node in nodes:
    for name in node.inputs:
      if name and name not in ready and name not in producer:
        raise _refuse(path, f'node {node.name!r} ({node.op}) reads tensor '
                      f'{name!r}, which no node, initialiser or input '
                      'provides (truncated or corrupt graph?)')
  waiting = {id(n): {i for i in n.inputs if i and i not in ready}
             for n in nodes}
  users: dict[str, list[onnx_graph.Node]] = {}
  for node in nodes:
    for name in waiting[id(node)]:
      users.setdefault(name, []).append(node)
  queue = [n for n in nodes if not waiting[id(n)]]
  order = []
  while queue:
    node = queue.pop(0)
    order.append(node)
    for out in node.outputs:
      for user in users.get(out, ()):
        waiting[id(user)].discard(out)
        if not waiting[id(user)]:
          queue.append(user)
  if len(order) != len(nodes):
    stuck = next(n for n in nodes if waiting[id(n)])
    raise _refuse(path, f'the graph has a cycle: node {stuck.name!r} '
                  f'({stuck.op}) waits on {sorted(waiting[id(stuck)])}, '
                  'which depend on it')
  return tuple(order)


def read_model(path: str, *, max_bytes: int | None = None) -> OnnxFile:
  """Parses and checks an ONNX file (module docstring); reads it once.

  Args:
    path: the ``.onnx`` file; external data must sit in its folder.
    max_bytes: size limit (default `MAX_MODEL_BYTES`).

  Raises:
    CheckpointError: the file is refused; the message names the tensor or
      node and why.
    ImportError: the onnx package is missing (says how to install it).
  """
  onnx, numpy_helper = _onnx()
  path = os.fspath(path)
  budget = _Budget(path, MAX_MODEL_BYTES if max_bytes is None else max_bytes)
  budget.take(os.path.getsize(path), 'the file itself')
  with open(path, 'rb') as f:
    data = f.read()
  model = onnx.ModelProto()
  try:
    model.ParseFromString(data)
  except Exception as e:  # protobuf's DecodeError and friends
    raise _refuse(path, f'not an ONNX model or truncated ({e})') from None
  graph = model.graph
  if not graph.node:
    raise _refuse(path, 'holds no graph nodes (truncated or not an ONNX '
                  'model)')
  opset = next((int(o.version) for o in model.opset_import
                if o.domain in _DEFAULT_DOMAINS), None)
  if opset is None:
    raise _refuse(path, 'declares no default-domain (ai.onnx) opset')
  if graph.sparse_initializer:
    raise _refuse(path, f'tensor {graph.sparse_initializer[0].values.name!r}'
                  ' is a sparse initialiser, which is not supported')
  # First every external reference and size, then any data is read.
  tensors = {}
  for t in graph.initializer:
    tensors[t.name] = _tensor_array(path, t, budget, numpy_helper)
  images = [i for i in graph.input if i.name not in tensors]
  if len(images) != 1:
    raise _refuse(path, f'has {len(images)} non-constant inputs '
                  f'{[i.name for i in images]}; a face encoder takes one '
                  'image batch')
  image = images[0]
  elem = image.type.tensor_type.elem_type
  if elem not in (1, 10, 11, 16):
    raise _refuse(path, f'input {image.name!r} has ONNX type {elem}, not a '
                  'float image')
  shape = tuple(
      int(d.dim_value) if d.HasField('dim_value') else (d.dim_param or '?')
      for d in image.type.tensor_type.shape.dim)
  nodes, unsupported = [], []
  for i, n in enumerate(graph.node):
    name = n.name or f'{n.op_type}_{i}'
    attrs = _attributes(path, n, budget, onnx, numpy_helper)
    node = onnx_graph.Node(op=n.op_type, name=name, inputs=tuple(n.input),
                           outputs=tuple(n.output), attrs=attrs)
    custom = n.domain not in _DEFAULT_DOMAINS
    if custom or n.op_type not in onnx_graph.OPS or any(
        isinstance(v, str) and v == _SUBGRAPH for v in attrs.values()):
      op = f'{n.domain}.{n.op_type}' if custom else n.op_type
      unsupported.append((op, name))
    nodes.append(node)
  ordered = _sorted_nodes(path, nodes, set(tensors) | {image.name})
  outputs = tuple(o.name for o in graph.output)
  if not outputs:
    raise _refuse(path, 'declares no graph output')
  return OnnxFile(path=path, opset=opset, input=image.name,
                  input_shape=shape, outputs=outputs, nodes=ordered,
                  tensors=tensors, unsupported=tuple(unsupported))


def is_onnx(parsed: Any) -> bool:
  return isinstance(parsed, OnnxFile)


def check_supported(parsed: OnnxFile) -> None:
  """Raises `UnsupportedOpError` listing every op the interpreter lacks."""
  if not parsed.unsupported:
    return
  by_op: dict[str, list[str]] = {}
  for op, node in parsed.unsupported:
    by_op.setdefault(op, []).append(node)
  listed = '; '.join(f'{op} (node {nodes[0]!r}'
                     + (f' and {len(nodes) - 1} more' if len(nodes) > 1
                        else '') + ')' for op, nodes in by_op.items())
  error = UnsupportedOpError(
      f'{parsed.path} uses op(s) the JAX interpreter does not support: '
      f'{listed}; ' + _BLACKBOX_HINT.format(path=parsed.path))
  error.ops = listed  # the short form, for the black-box fallback's reason
  raise error


def fold(parsed: OnnxFile) -> tuple[tuple[onnx_graph.Node, ...],
                                    dict[str, np.ndarray]]:
  """Folds constant subgraphs: every node whose inputs are all constants
  runs now, once; returns (the nodes left, every constant by name)."""
  consts = {k: np.asarray(v) for k, v in parsed.tensors.items()}
  kept = []
  for node in parsed.nodes:
    if all(not name or name in consts for name in node.inputs):
      inputs = [consts[name] if name else None for name in node.inputs]
      try:
        outputs = onnx_graph.run_node(node, inputs, opset=parsed.opset)
      except onnx_graph.UnsupportedOpError as e:
        raise UnsupportedOpError(
            f'{parsed.path}: {e}; ' + _BLACKBOX_HINT.format(
                path=parsed.path)) from None
      except (onnx_graph.GraphError, ValueError, TypeError) as e:
        raise _refuse(parsed.path, f'folding node {node.name!r} '
                      f'({node.op}) failed: {e}') from None
      for name, value in zip(node.outputs, outputs):
        if name:
          consts[name] = np.asarray(value)
    else:
      kept.append(node)
  return tuple(kept), consts


def _key(name: str, taken: set[str]) -> str:
  key = re.sub(r'[^A-Za-z0-9_.-]', '_', name) or 'tensor'
  base, i = key, 2
  while key in taken:
    key, i = f'{base}_{i}', i + 1
  taken.add(key)
  return key


def _attr_to_config(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    return onnx_graph.array_to_config(value)
  if isinstance(value, tuple):
    return list(value)
  return value


@dataclasses.dataclass(frozen=True)
class Folded:
  """A converted model: the config and its float tensors by ONNX name."""
  config: dict[str, Any]
  params: dict[str, np.ndarray]


def fold_to_config(parsed: OnnxFile) -> Folded:
  """The ``onnx`` kind's config (nodes, static constants, input
  convention) and float params of a parsed file.

  Raises:
    UnsupportedOpError: ops the interpreter lacks (all listed).
    CheckpointError: the descriptor does not depend on the image.
  """
  check_supported(parsed)
  nodes, consts = fold(parsed)
  output = parsed.outputs[0]
  used = {name for n in nodes for name in n.inputs if name} | {output}
  if output in consts or parsed.input not in used:
    raise _refuse(parsed.path, f'its output {output!r} does not depend on '
                  f'the image input {parsed.input!r}')
  for node in nodes:
    extra = [o for o in node.outputs[1:] if o and o in used]
    if extra and node.op in ('Dropout', 'MaxPool', 'BatchNormalization',
                             'LayerNormalization'):
      raise UnsupportedOpError(
          f'{parsed.path}: node {node.name!r} ({node.op}) has a second '
          f'output {extra[0]!r} in use (training-mode or index outputs are '
          'not supported); ' + _BLACKBOX_HINT.format(path=parsed.path))
  taken: set[str] = set()
  params, param_list, constants = {}, [], {}
  for name in sorted(n for n in used if n in consts):
    value = consts[name]
    if np.issubdtype(value.dtype, np.floating):
      key = _key(name, taken)
      param_list.append([key, name, list(value.shape)])
      params[name] = value.astype(np.float32)
    else:
      constants[name] = onnx_graph.array_to_config(value)
  layout = onnx_graph.guess_layout(parsed.input_shape)
  preset, why = onnx_graph.guess_preset(parsed.input_shape, layout)
  spec = onnx_graph.input_spec_from(
      preset, size=onnx_graph.image_size(parsed.input_shape, layout))
  config = {
      'format': 1, 'file': parsed.name, 'opset': parsed.opset,
      'input': parsed.input, 'input_shape': list(parsed.input_shape),
      'layout': layout, 'output': output,
      'nodes': [{'op': n.op, 'name': n.name, 'inputs': list(n.inputs),
                 'outputs': list(n.outputs),
                 'attrs': {k: _attr_to_config(v)
                           for k, v in n.attrs.items()}} for n in nodes],
      'params': param_list, 'constants': constants,
      'input_preset': preset, 'input_preset_why': why,
      'input_spec': spec_to_config(spec),
  }
  return Folded(config, params)


def spec_to_config(spec) -> dict[str, Any]:
  return {'size': list(spec.size), 'crop': list(spec.crop),
          'channel_order': spec.channel_order, 'mean': list(spec.mean),
          'std': list(spec.std), 'method': spec.method}


def port_params(source: Mapping[str, np.ndarray], config: Mapping[str, Any],
                *, what: str = 'ONNX model') -> dict[str, Any]:
  """Strictly fills ``{'params': ...}`` of `config` from float tensors by
  ONNX name: every one used, every parameter filled, shapes checked."""
  require_keys(source, [name for _, name, _ in config['params']], what=what)
  rules = [Rule(re.escape(name), f'params/{key}')
           for key, name, _ in config['params']]
  ported = port(source, rules, onnx_graph.abstract_variables(config),
                what=what)
  return {'params': ported.get('params', {})}


def convert(parsed: OnnxFile, what: str) -> tuple[dict[str, Any], Any]:
  """``Kind.convert`` of the onnx kind: (config, variables)."""
  folded = fold_to_config(parsed)
  return folded.config, port_params(folded.params, folded.config, what=what)


def with_input(config: Mapping[str, Any],
               overrides: Mapping[str, Any] | None) -> tuple[dict, str]:
  """The config with the input convention `overrides` asks for, and the
  line that says which convention is used and why (always printed).

  Args:
    config: an onnx config (`fold_to_config` or `io_config`).
    overrides: ``encoder_input`` fields (`onnx_graph.INPUT_FIELDS`); empty
      values keep the guess.

  Raises:
    ValueError: unknown preset or field, or an invalid value.
  """
  overrides = {k: v for k, v in (overrides or {}).items()
               if v not in ('', (), None, [])}
  preset = overrides.get('preset') or config['input_preset']
  why = (('set by encoder_input.preset' if overrides.get('preset') else
          config['input_preset_why']))
  layout = config['layout']
  spec = onnx_graph.input_spec_from(
      preset, overrides=overrides,
      size=onnx_graph.image_size(config['input_shape'], layout))
  changed = sorted(k for k in overrides if k != 'preset')
  line = (f'input convention {preset!r} ({why})'
          + (f', overridden: {", ".join(changed)}' if changed else '')
          + f': {onnx_graph.describe_spec(spec)}; change it with --set '
          'encoder_input.preset=arcface|facenet|sface or '
          'encoder_input.FIELD=... (README, "Auditing your own model")')
  return ({**config, 'input_preset': preset, 'input_preset_why': why,
           'input_spec': spec_to_config(spec)}, line)


def io_config(parsed: OnnxFile) -> dict[str, Any]:
  """What the black-box mode needs of a file: input, layout, convention."""
  layout = onnx_graph.guess_layout(parsed.input_shape)
  preset, why = onnx_graph.guess_preset(parsed.input_shape, layout)
  spec = onnx_graph.input_spec_from(
      preset, size=onnx_graph.image_size(parsed.input_shape, layout))
  return {'file': parsed.name, 'input': parsed.input,
          'input_shape': list(parsed.input_shape), 'layout': layout,
          'output': parsed.outputs[0], 'input_preset': preset,
          'input_preset_why': why, 'input_spec': spec_to_config(spec)}


def runtime(parsed: OnnxFile, config: Mapping[str, Any]
            ) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
  """ONNX Runtime (CPU) on a checked file: ``(run, descriptor size)``.

  ``run(x [B, H, W, 3] float32, the encoder input) -> [B, D]`` float32.
  The file was checked by `read_model` (external paths included) before
  ORT reads it.
  """
  ort = _import('onnxruntime', 'the black-box (ONNX Runtime) mode')
  session = ort.InferenceSession(parsed.path,
                                 providers=['CPUExecutionProvider'])
  first = config['input_shape'][0] if config['input_shape'] else None
  one_at_a_time = first == 1  # a file exported with a fixed batch of 1
  nchw = config['layout'] == 'NCHW'
  name, output = config['input'], config['output']

  def run(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if nchw:
      x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    batches = [x[i:i + 1] for i in range(len(x))] if one_at_a_time else [x]
    outs = [session.run([output], {name: b})[0] for b in batches if len(b)]
    if not outs:
      return np.zeros((0, 0), np.float32)
    y = np.concatenate(outs)
    return y.reshape(len(y), -1).astype(np.float32)

  h, w = config['input_spec']['size']
  probe = run(np.zeros((1, h, w, 3), np.float32))
  return run, int(probe.shape[-1])
