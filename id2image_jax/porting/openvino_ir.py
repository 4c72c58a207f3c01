"""Reads OpenVINO IR files (``model.xml`` + ``model.bin``) as plain data.

An IR is an XML layer graph and a flat binary blob: every ``Const`` layer's
``<data element_type shape offset size>`` points at its bytes in the
``.bin``. This module parses the XML with ``xml.etree`` and slices the blob
with numpy, nothing else: no OpenVINO, nothing in the files is executed, and
XML with a DTYPE or entities is refused (no entity expansion). IR versions
10 and 11 (OpenVINO 2020.1 and later) are accepted.

Every problem raises `IRError` naming the file and the layer or constant:
malformed XML, a missing or non-integer attribute, an edge to an unknown
layer or port, an unknown element type, a constant whose size disagrees
with its shape, a ``.bin`` too short for a constant.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable

import numpy as np

from id2image_jax.porting.safe_load import CheckpointError

VERSIONS = ('10', '11')
# IR element_type -> numpy dtype. bf16 is decoded by hand (numpy has none).
_ELEMENT_TYPES = {
    'f64': np.float64, 'f32': np.float32, 'f16': np.float16,
    'i64': np.int64, 'i32': np.int32, 'i16': np.int16, 'i8': np.int8,
    'u64': np.uint64, 'u32': np.uint32, 'u16': np.uint16, 'u8': np.uint8,
    'boolean': np.bool_, 'bf16': np.uint16,
}


class IRError(CheckpointError):
  """An IR file is malformed, truncated or uses something unsupported."""


@dataclasses.dataclass(frozen=True)
class Port:
  """One input or output port of a layer.

  Attributes:
    id: port number (inputs count from 0, outputs continue after them).
    precision: e.g. 'FP32', 'I64'; None when the XML omits it.
    shape: dims (``()`` for a scalar; -1 for a dynamic dim).
    names: tensor names of an output port (``names="a,b"``).
  """
  id: int
  precision: str | None
  shape: tuple[int, ...]
  names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Layer:
  """One ``<layer>``: an operation, a Parameter, a Const or a Result.

  Attributes:
    id: the layer id edges refer to.
    name: the layer name (not necessarily unique or meaningful).
    type: operation type, e.g. 'Convolution', 'Const'.
    version: opset, e.g. 'opset1'.
    data: the ``<data>`` attributes as strings.
    inputs: input ports, by id.
    outputs: output ports, by id.
  """
  id: int
  name: str
  type: str
  version: str
  data: dict[str, str]
  inputs: tuple[Port, ...]
  outputs: tuple[Port, ...]

  def describe(self) -> str:
    return f"{self.type} '{self.name}' (layer {self.id})"


@dataclasses.dataclass(frozen=True)
class Edge:
  """Output port `src_port` of layer `src` feeds input `dst_port` of `dst`."""
  src: int
  src_port: int
  dst: int
  dst_port: int


class Graph:
  """A parsed IR: layers, edges and the values of its constants.

  Attributes:
    name: the ``<net name>``.
    version: the IR version ('10' or '11').
    layers: layer id -> `Layer`, in file order.
    edges: every `Edge`.
    constants: Const layer id -> numpy array (read-only).
    what: names the file in messages.
  """

  def __init__(self, *, name: str, version: str, layers: dict[int, Layer],
               edges: list[Edge], constants: dict[int, np.ndarray],
               what: str):
    self.name, self.version, self.what = name, version, what
    self.layers, self.edges, self.constants = layers, edges, constants
    self._producer: dict[tuple[int, int], tuple[int, int]] = {}
    self._consumers: dict[int, list[tuple[int, int, int]]] = {}
    for e in edges:
      self._producer[(e.dst, e.dst_port)] = (e.src, e.src_port)
      self._consumers.setdefault(e.src, []).append(
          (e.src_port, e.dst, e.dst_port))

  def of_type(self, type_: str) -> list[Layer]:
    """Layers of one type, in file order."""
    return [layer for layer in self.layers.values() if layer.type == type_]

  def producer(self, layer: Layer, index: int) -> tuple[Layer, int]:
    """(layer, output port id) feeding the `index`-th input of `layer`.

    Raises:
      IRError: the input is not connected.
    """
    if index >= len(layer.inputs):
      raise IRError(f'{self.what}: {layer.describe()} has '
                    f'{len(layer.inputs)} inputs, not {index + 1}')
    port = layer.inputs[index].id
    if (layer.id, port) not in self._producer:
      raise IRError(f'{self.what}: input port {port} of {layer.describe()} '
                    'is not connected')
    src, src_port = self._producer[(layer.id, port)]
    return self.layers[src], src_port

  def consumers(self, layer: Layer, *, port: int | None = None
                ) -> list[tuple[Layer, int]]:
    """(layer, input index) pairs fed by `layer` (one output port or all)."""
    out = []
    for src_port, dst, dst_port in self._consumers.get(layer.id, []):
      if port is None or src_port == port:
        target = self.layers[dst]
        index = [p.id for p in target.inputs].index(dst_port)
        out.append((target, index))
    return out

  def output_index(self, layer: Layer, port_id: int) -> int:
    """Position of output port `port_id` among `layer`'s outputs."""
    return [p.id for p in layer.outputs].index(port_id)


# --------------------------------------------------------------------------
# Parsing.


def _int(value: str | None, what: str) -> int:
  try:
    return int(value)  # type: ignore[arg-type]
  except (TypeError, ValueError):
    raise IRError(f'{what}: expected an integer, got {value!r}') from None


def _shape(text: str | None, what: str) -> tuple[int, ...]:
  if text is None:
    raise IRError(f'{what}: missing shape')
  text = text.strip()
  if not text:
    return ()
  return tuple(_int(d.strip(), what) for d in text.split(','))


def _ports(element: ET.Element | None, what: str) -> tuple[Port, ...]:
  if element is None:
    return ()
  ports = []
  for p in element.findall('port'):
    pid = _int(p.get('id'), f'{what} port id')
    dims = tuple(_int(d.text, f'{what} port {pid} dim')
                 for d in p.findall('dim'))
    names = tuple(n.strip() for n in (p.get('names') or '').split(',')
                  if n.strip())
    ports.append(Port(pid, p.get('precision'), dims, names))
  return tuple(ports)


def _parse_layer(element: ET.Element, what: str) -> Layer:
  lid = _int(element.get('id'), f'{what}: layer id')
  name = element.get('name')
  type_ = element.get('type')
  here = f"{what}: layer {lid} ('{name}')"
  if name is None or type_ is None:
    raise IRError(f'{here} lacks a name or type attribute')
  data = element.find('data')
  return Layer(
      id=lid, name=name, type=type_, version=element.get('version') or '',
      data=dict(data.attrib) if data is not None else {},
      inputs=_ports(element.find('input'), here),
      outputs=_ports(element.find('output'), here))


def parse_xml(text: bytes, *, what: str = 'IR'
              ) -> tuple[str, str, dict[int, Layer], list[Edge]]:
  """Parses IR XML: ``(net name, IR version, layers by id, edges)``.

  Raises:
    IRError: malformed XML, unsupported IR version, or an inconsistency
      (duplicate layer id, edge to an unknown layer or port), named.
  """
  head = text[:4096]
  if b'<!DOCTYPE' in head or b'<!ENTITY' in text:
    raise IRError(f'{what}: XML with a DOCTYPE or entities is not an IR')
  try:
    root = ET.fromstring(text)
  except ET.ParseError as e:
    raise IRError(f'{what}: malformed XML ({e})') from None
  if root.tag != 'net':
    raise IRError(f"{what}: not an OpenVINO IR (root element <{root.tag}>, "
                  "expected <net>)")
  version = root.get('version')
  if version not in VERSIONS:
    raise IRError(f'{what}: IR version {version!r} is not supported '
                  f'(supported: {", ".join(VERSIONS)}); re-export it with a '
                  'current OpenVINO')
  layers_el, edges_el = root.find('layers'), root.find('edges')
  if layers_el is None or edges_el is None:
    raise IRError(f'{what}: missing <layers> or <edges>')
  layers: dict[int, Layer] = {}
  for element in layers_el.findall('layer'):
    layer = _parse_layer(element, what)
    if layer.id in layers:
      raise IRError(f'{what}: duplicate layer id {layer.id}')
    layers[layer.id] = layer
  edges = []
  for element in edges_el.findall('edge'):
    edge = Edge(*(_int(element.get(a), f'{what}: edge {a}') for a in
                  ('from-layer', 'from-port', 'to-layer', 'to-port')))
    for lid, pid, side in ((edge.src, edge.src_port, 'outputs'),
                           (edge.dst, edge.dst_port, 'inputs')):
      if lid not in layers:
        raise IRError(f'{what}: an edge refers to unknown layer {lid}')
      if pid not in [p.id for p in getattr(layers[lid], side)]:
        raise IRError(f'{what}: an edge refers to port {pid} of '
                      f'{layers[lid].describe()}, which has no such '
                      f'{side[:-1]} port')
    edges.append(edge)
  return root.get('name') or '', version, layers, edges


def const_value(layer: Layer, blob: bytes | memoryview, *, what: str = 'IR'
                ) -> np.ndarray:
  """The array a Const layer holds, sliced from the ``.bin`` contents.

  Raises:
    IRError: unknown element type, size/shape disagreement, or a blob too
      short (truncated), naming the constant.
  """
  here = f"{what}: constant '{layer.name}' (layer {layer.id})"
  et = layer.data.get('element_type')
  if et not in _ELEMENT_TYPES:
    raise IRError(f'{here} has unsupported element type {et!r} '
                  f'(supported: {", ".join(sorted(_ELEMENT_TYPES))})')
  shape = _shape(layer.data.get('shape'), here)
  offset = _int(layer.data.get('offset'), f'{here} offset')
  size = _int(layer.data.get('size'), f'{here} size')
  dtype = np.dtype(_ELEMENT_TYPES[et])
  count = int(np.prod(shape, dtype=np.int64))
  if min(shape, default=0) < 0 or offset < 0 or size != count * dtype.itemsize:
    raise IRError(f'{here}: {size} bytes at offset {offset} do not hold '
                  f'{et} {list(shape)} ({count * dtype.itemsize} bytes)')
  if offset + size > len(blob):
    raise IRError(f'{here} needs bytes {offset}..{offset + size} but the '
                  f'.bin has {len(blob)}: the .bin is truncated or not the '
                  "IR's own")
  array = np.frombuffer(blob, dtype, count, offset).reshape(shape)
  if et == 'bf16':
    array = (array.astype(np.uint32) << 16).view(np.float32)
  return array


def read(xml_path: str | os.PathLike, *,
         bin_path: str | os.PathLike | None = None) -> Graph:
  """Reads an IR: the XML graph and every constant from the ``.bin``.

  Args:
    xml_path: the ``.xml`` file.
    bin_path: the ``.bin`` file; default: `xml_path` with ``.bin``.

  Returns:
    A `Graph` whose constants are read-only numpy arrays.

  Raises:
    FileNotFoundError: a file is missing.
    IRError: see `parse_xml` and `const_value`.
  """
  xml_path = os.fspath(xml_path)
  if bin_path is None:
    bin_path = os.path.splitext(xml_path)[0] + '.bin'
  what = os.path.basename(xml_path)
  with open(xml_path, 'rb') as f:
    text = f.read()
  name, version, layers, edges = parse_xml(text, what=what)
  consts = [layer for layer in layers.values() if layer.type == 'Const']
  blob = b''
  if consts:
    with open(bin_path, 'rb') as f:
      blob = f.read()
  constants = {layer.id: const_value(layer, blob, what=what)
               for layer in consts}
  return Graph(name=name, version=version, layers=layers, edges=edges,
               constants=constants, what=what)


def op_types(graph: Graph) -> Iterable[tuple[str, str]]:
  """Sorted distinct (type, version) pairs: the IR's dialect."""
  return sorted({(layer.type, layer.version)
                 for layer in graph.layers.values()})
