"""MobileStyleGAN reference: the OpenVINO runtime on an IR pair, and a writer
of tiny random-weight IR pairs in the dialect of the real files.

* `OpenVINOReference` runs ``MappingNetwork`` (z -> w) and
  ``SynthesisNetwork`` (w -> image) with the OpenVINO runtime (``pip install
  openvino``; test extra), float32 inference precision, and returns numpy:
  w [B, w_dim] and images NHWC [B, R, R, 3] (RGB, about [-1, 1]).
* `write_tiny_ir` writes a pair with the layer types, opsets, shape
  arithmetic and (PyTorch-path or numbered) constant names of random-face's
  files (Model Optimizer 2021.4 from ONNX, IR v10), for any small
  `MobileStyleGANConfig`, with random weights: the main parity test runs on
  it in seconds, without the 37 MB wheel. Written with the standard library
  and numpy; OpenVINO runs it.

Usage::

  python ports/mobilestylegan_openvino.py tiny OUT_DIR     # write a pair
  python ports/mobilestylegan_openvino.py run [DIR] --seed 0 --out x.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

if __package__ in (None, ''):  # run as a script: make id2image_jax importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from id2image_jax.models import mobilestylegan as msg

# pylint: enable=g-import-not-at-top,wrong-import-position

MAPPING = 'MappingNetwork'
SYNTHESIS = 'SynthesisNetwork'


# --------------------------------------------------------------------------
# The OpenVINO runtime.


def have_openvino() -> bool:
  """Whether the OpenVINO runtime is installed (without importing it)."""
  return importlib.util.find_spec('openvino') is not None


def import_openvino():
  """Imports the OpenVINO runtime without its model-conversion tools.

  ``import openvino`` also imports ``openvino.tools.ovc``, whose usage
  telemetry forks a process to send a network ping: unwanted here, and
  fork() in a multithreaded JAX process can deadlock. Only the runtime is
  needed to run an IR, so ovc is kept out of that import (it stays
  importable afterwards).
  """
  if 'openvino' in sys.modules:
    return sys.modules['openvino']
  blocked = 'openvino.tools.ovc' not in sys.modules
  if blocked:
    sys.modules['openvino.tools.ovc'] = None  # ImportError: ovc is optional
  try:
    import openvino  # pylint: disable=g-import-not-at-top
  finally:
    if blocked and sys.modules.get('openvino.tools.ovc', 0) is None:
      del sys.modules['openvino.tools.ovc']
  return openvino


class OpenVINOReference:
  """Runs a MobileStyleGAN IR pair with OpenVINO (CPU, float32).

  The IRs are exported for batch 1; the models are reshaped and compiled
  once per batch size.

  Args:
    mapping_xml: ``MappingNetwork.xml``.
    synthesis_xml: ``SynthesisNetwork.xml``.
    threads: CPU inference threads (None: OpenVINO's default).
  """

  def __init__(self, mapping_xml: str | os.PathLike,
               synthesis_xml: str | os.PathLike, *,
               threads: int | None = None):
    ov = import_openvino()
    self._core = ov.Core()
    # Full float32: the CPU plugin would otherwise pick bf16 on CPUs with
    # AMX / avx512_bf16.
    self._config = {'INFERENCE_PRECISION_HINT': 'f32'}
    if threads:
      self._config['INFERENCE_NUM_THREADS'] = int(threads)
    self._paths = {MAPPING: os.fspath(mapping_xml),
                   SYNTHESIS: os.fspath(synthesis_xml)}
    self._compiled = {}
    self.version = ov.get_version()

  def compiled(self, which: str, batch: int):
    """The compiled model `which` (MAPPING / SYNTHESIS) for `batch`."""
    key = (which, batch)
    if key not in self._compiled:
      model = self._core.read_model(self._paths[which])
      (param,) = model.inputs
      shape = [batch] + list(param.get_partial_shape().to_shape())[1:]
      model.reshape({param.get_any_name(): shape})
      self._compiled[key] = self._core.compile_model(model, 'CPU',
                                                     self._config)
    return self._compiled[key]

  def _run(self, which: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    compiled = self.compiled(which, x.shape[0])
    return np.asarray(compiled(x)[compiled.outputs[0]])

  def mapping(self, z: np.ndarray) -> np.ndarray:
    """z [B, z_dim] -> w [B, w_dim] (no truncation)."""
    return self._run(MAPPING, z)

  def synthesis(self, w: np.ndarray) -> np.ndarray:
    """w [B, w_dim] -> images [B, R, R, 3] NHWC float32."""
    return self._run(SYNTHESIS, w).transpose(0, 2, 3, 1)


# --------------------------------------------------------------------------
# Writing IR.


@dataclasses.dataclass(frozen=True)
class Out:
  """An output tensor: layer id, port id, shape, element type."""
  layer: int
  port: int
  shape: tuple[int, ...]
  etype: str


_PRECISION = {'f32': 'FP32', 'i64': 'I64', 'i32': 'I32'}
_NP = {np.dtype(np.float32): 'f32', np.dtype(np.int64): 'i64',
       np.dtype(np.int32): 'i32'}


def _shape_text(shape: Sequence[int]) -> str:
  return ', '.join(str(int(d)) for d in shape)


class IRWriter:
  """Builds one IR v10 graph: layers, edges and the ``.bin`` blob."""

  def __init__(self, name: str):
    self.name = name
    self._layers: list[ET.Element] = []
    self._edges: list[tuple[int, int, int, int]] = []
    self._blob = bytearray()
    self._numbered = 1000

  def number(self) -> str:
    """A fresh numeric name, as Model Optimizer gives folded constants."""
    self._numbered += 1
    return str(self._numbered)

  def _layer(self, name: str, type_: str, version: str,
             data: dict[str, str] | None) -> tuple[ET.Element, int]:
    lid = len(self._layers)
    el = ET.Element('layer', id=str(lid), name=name, type=type_,
                    version=version)
    if data is not None:
      ET.SubElement(el, 'data', {k: str(v) for k, v in data.items()})
    self._layers.append(el)
    return el, lid

  @staticmethod
  def _port(parent: ET.Element, pid: int, shape, etype, names=None):
    attrs = {'id': str(pid), 'precision': _PRECISION[etype]}
    if names:
      attrs['names'] = names
    port = ET.SubElement(parent, 'port', attrs)
    for d in shape:
      ET.SubElement(port, 'dim').text = str(int(d))

  def parameter(self, name: str, shape: Sequence[int]) -> Out:
    el, lid = self._layer(name, 'Parameter', 'opset1',
                          {'shape': _shape_text(shape),
                           'element_type': 'f32'})
    self._port(ET.SubElement(el, 'output'), 0, shape, 'f32', names=name)
    return Out(lid, 0, tuple(shape), 'f32')

  def const(self, value, name: str | None = None, *,
            dtype=np.float32) -> Out:
    value = np.array(value, dtype, order="C")  # keeps 0-d (scalars)
    etype = _NP[value.dtype]
    while len(self._blob) % 4:  # keep every constant 4-byte aligned
      self._blob.append(0)
    offset = len(self._blob)
    self._blob += value.tobytes()
    el, lid = self._layer(name or self.number(), 'Const', 'opset1', {
        'element_type': etype, 'shape': _shape_text(value.shape),
        'offset': str(offset), 'size': str(value.nbytes)})
    self._port(ET.SubElement(el, 'output'), 0, value.shape, etype)
    return Out(lid, 0, tuple(value.shape), etype)

  def op(self, type_: str, inputs: Sequence[Out],
         out_shapes: Sequence[Sequence[int]], *, name: str | None = None,
         version: str = 'opset1', data: dict[str, str] | None = None,
         etype: str = 'f32', names: str | None = None) -> list[Out]:
    el, lid = self._layer(name or f'{type_}_{len(self._layers)}', type_,
                          version, data)
    ins = ET.SubElement(el, 'input')
    for i, x in enumerate(inputs):
      self._port(ins, i, x.shape, x.etype)
      self._edges.append((x.layer, x.port, lid, i))
    outs = ET.SubElement(el, 'output')
    result = []
    for j, shape in enumerate(out_shapes):
      pid = len(inputs) + j
      self._port(outs, pid, shape, etype, names=names)
      result.append(Out(lid, pid, tuple(shape), etype))
    return result

  def op1(self, type_: str, inputs: Sequence[Out], shape: Sequence[int],
          **kw) -> Out:
    return self.op(type_, inputs, [shape], **kw)[0]

  def result(self, x: Out, name: str) -> None:
    el, lid = self._layer(name, 'Result', 'opset1', None)
    self._port(ET.SubElement(el, 'input'), 0, x.shape, x.etype)
    self._edges.append((x.layer, x.port, lid, 0))

  def write(self, xml_path: str) -> None:
    """Writes ``xml_path`` and the ``.bin`` next to it."""
    net = ET.Element('net', name=self.name, version='10')
    layers = ET.SubElement(net, 'layers')
    layers.extend(self._layers)
    edges = ET.SubElement(net, 'edges')
    for src, sport, dst, dport in self._edges:
      ET.SubElement(edges, 'edge', {'from-layer': str(src),
                                    'from-port': str(sport),
                                    'to-layer': str(dst),
                                    'to-port': str(dport)})
    ET.indent(net, '\t')
    with open(xml_path, 'wb') as f:
      f.write(b'<?xml version="1.0" ?>\n')
      f.write(ET.tostring(net))
    with open(os.path.splitext(xml_path)[0] + '.bin', 'wb') as f:
      f.write(bytes(self._blob))

  # Elementwise and shape helpers in the exporter's forms.

  def binary(self, type_: str, a: Out, b: Out, **kw) -> Out:
    shape = np.broadcast_shapes(a.shape, b.shape)
    return self.op1(type_, [a, b], shape, data={'auto_broadcast': 'numpy'},
                    **kw)

  def batch_of(self, x: Out, axis: int = 0) -> Out:
    """Unsqueeze(Gather(ShapeOf(x), axis)): a [1] i64 dim of `x`."""
    shape = self.op1('ShapeOf', [x], [len(x.shape)], version='opset3',
                     data={'output_type': 'i64'}, etype='i64')
    dim = self.op1('Gather', [shape, self.const(axis, dtype=np.int32),
                              self.const(0, dtype=np.int64)], [],
                   version='opset7', data={'batch_dims': '0'}, etype='i64')
    return self.op1('Unsqueeze', [dim, self.const([0], dtype=np.int64)],
                    [1], etype='i64')

  def concat(self, parts: Sequence[Out | int]) -> Out:
    """Concat of [1] i64 dims; ints become constants."""
    ins = [p if isinstance(p, Out) else self.const([p], dtype=np.int64)
           for p in parts]
    return self.op1('Concat', ins, [len(ins)], data={'axis': '0'},
                    etype='i64')

  def reshape(self, x: Out, pattern: Out, shape: Sequence[int]) -> Out:
    return self.op1('Reshape', [x, pattern], shape,
                    data={'special_zero': 'true'})


def _conv_data(k: int, stride: str = '1, 1') -> dict[str, str]:
  p = f'{k // 2}, {k // 2}'
  return {'strides': stride, 'dilations': '1, 1', 'pads_begin': p,
          'pads_end': p, 'auto_pad': 'explicit'}


class _Weights:
  """Random weights at scales that keep activations O(1)."""

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)

  def normal(self, shape, std=1.0, mean=0.0) -> np.ndarray:
    return (mean + std * self.rng.standard_normal(shape)).astype(np.float32)


_GAIN = math.sqrt(2.0 / (1.0 + msg.LRELU_SLOPE ** 2))


def _write_mapping(path: str, cfg: msg.MobileStyleGANConfig,
                   rnd: _Weights) -> None:
  g = IRWriter(MAPPING)
  z = g.parameter('var', (1, cfg.z_dim))
  one = g.const(np.ones((1, 1)), 'Constant_5')
  sq = g.binary('Power', z, g.const(np.full((1, 1), 2.0)), name='Pow_0')
  mean = g.op1('ReduceMean', [sq, g.const([1], 'ReduceMean_1/axis',
                                          dtype=np.int64)], (1, 1),
               data={'keep_dims': 'true'})
  x = g.binary('Add', mean, g.const(np.full((1, 1), 1e-8), 'Constant_2'))
  x = g.binary('Power', x, g.const(np.full((1, 1), 0.5)))
  x = g.binary('Power', x, g.const(np.full((1, 1), -1.0)))
  x = g.binary('Multiply', one, x)
  x = g.binary('Multiply', z, x)
  for i in range(cfg.mapping_layers):
    fan_in = x.shape[1]
    y = g.op1('MatMul', [x, g.const(rnd.normal((cfg.w_dim, fan_in),
                                               1 / math.sqrt(fan_in)))],
              (1, cfg.w_dim), data={'transpose_a': 'false',
                                    'transpose_b': 'true'})
    pattern = g.concat([1, g.batch_of(y, 1)])
    bias = g.reshape(g.const(rnd.normal((cfg.w_dim,), 0.1)), pattern,
                     (1, cfg.w_dim))
    y = g.binary('Add', y, bias)
    y = g.op1('PReLU', [y, g.const([msg.LRELU_SLOPE])], y.shape)
    last = i == cfg.mapping_layers - 1
    x = g.binary('Multiply', y, g.const(np.full((1, 1), msg.MAPPING_GAIN)),
                 **({'name': 'style', 'names': 'style'} if last else {}))
  g.result(x, 'style/sink_port_0')
  g.write(path)


class _Synthesis:
  """Writes SynthesisNetwork in the exporter's layer order and forms."""

  def __init__(self, cfg: msg.MobileStyleGANConfig, rnd: _Weights):
    self.cfg, self.rnd = cfg, rnd
    self.g = IRWriter(SYNTHESIS)
    self.style = self.g.parameter('style', (1, cfg.w_dim))

  def styles(self, module: str, c: int, *, scale: float | None,
             like: Out | None = None) -> Out:
    """Reshape(style @ W.T + b) [* scale]; `like`: take the batch from it
    (``up``), else from the style."""
    g, w_dim = self.g, self.cfg.w_dim
    y = g.op1('MatMul', [self.style, g.const(
        self.rnd.normal((c, w_dim), 0.5 / math.sqrt(w_dim)),
        f'm.{module}.modulation.weight')], (1, c),
              data={'transpose_a': 'false', 'transpose_b': 'true'})
    y = g.binary('Add', y, g.const(self.rnd.normal((1, c), 0.1, 1.0),
                                   f'm.{module}.modulation.bias'))
    batch = g.batch_of(self.style if like is None else like)
    y = g.reshape(y, g.concat([batch, -1, 1, 1]), (1, c, 1, 1))
    if scale is not None:
      y = g.binary('Multiply', y, g.const(np.full((1, 1, 1, 1), scale)))
    return y

  def styled_conv(self, module: str, x: Out, c_out: int, *,
                  depthwise: bool) -> Out:
    g, rnd = self.g, self.rnd
    _, c_in, h, w = x.shape
    x = g.binary('Multiply', self.styles(f'{module}.conv', c_in,
                                         scale=1 / math.sqrt(c_in * 9)), x)
    if depthwise:
      x = g.op1('GroupConvolution', [x, g.const(
          rnd.normal((c_in, 1, 1, 3, 3)), f'm.{module}.conv.weight_dw')],
                x.shape, data=_conv_data(3))
      x = g.op1('Convolution', [x, g.const(
          rnd.normal((c_out, c_in, 1, 1), _GAIN))], (1, c_out, h, w),
                data=_conv_data(1))
    else:
      x = g.op1('Convolution', [x, g.const(
          rnd.normal((c_out, c_in, 3, 3), _GAIN))], (1, c_out, h, w),
                data=_conv_data(3))
    x = g.binary('Add', x, g.const(rnd.normal((1, 1, h, w), 0.1)))
    x = g.binary('Add', x, g.const(rnd.normal((1, c_out, 1, 1), 0.1),
                                   f'm.{module}.bias'))
    return g.op1('PReLU', [x, g.const([msg.LRELU_SLOPE])], x.shape)

  def idwt(self, x: Out, *, name: str | None = None) -> Out:
    """pytorch_wavelets' sfb1d twice, as traced through ONNX."""
    g = self.g
    _, c4, h, w = x.shape
    c = c4 // msg.BANDS
    low, high = g.op('VariadicSplit', [
        x, g.const(1, dtype=np.int64), g.const([c, 3 * c], dtype=np.int64)],
                     [(1, c, h, w), (1, 3 * c, h, w)])
    pattern = g.concat([g.batch_of(x), c, 3, g.batch_of(x, 2),
                        g.batch_of(x, 3)])
    bands = g.op('VariadicSplit', [
        g.reshape(high, pattern, (1, c, 3, h, w)), g.const(2, dtype=np.int64),
        g.const([1, 1, 1], dtype=np.int64)], [(1, c, 1, h, w)] * 3)
    bands = [g.op1('Squeeze', [b, g.const([2], dtype=np.int64)],
                   (1, c, h, w)) for b in bands]

    def synth(y, taps, axis):
      taps = np.asarray(taps, np.float32)
      shape = (2, 1) if axis == 'h' else (1, 2)
      filt = np.broadcast_to(taps.reshape(shape), (c, 1, 1) + shape)
      out = ((1, c, 2 * y.shape[2], y.shape[3]) if axis == 'h' else
             (1, c, y.shape[2], 2 * y.shape[3]))
      return g.op1('GroupConvolutionBackpropData', [y, g.const(filt)], out,
                   data={'strides': '2, 1' if axis == 'h' else '1, 2',
                         'pads_begin': '0, 0', 'pads_end': '0, 0',
                         'dilations': '1, 1', 'auto_pad': 'explicit',
                         'output_padding': '0, 0'})

    lo = g.binary('Add', synth(low, msg.HAAR_LO, 'h'),
                  synth(bands[0], msg.HAAR_HI, 'h'))
    hi = g.binary('Add', synth(bands[1], msg.HAAR_LO, 'h'),
                  synth(bands[2], msg.HAAR_HI, 'h'))
    kw = {'name': name, 'names': name} if name else {}
    return g.binary('Add', synth(lo, msg.HAAR_LO, 'w'),
                    synth(hi, msg.HAAR_HI, 'w'), **kw)

  def write(self, path: str) -> None:
    cfg, g, rnd = self.cfg, self.g, self.rnd
    c0 = cfg.channels[0]
    # ConstantInput.repeat, as ONNX Expand + Tile.
    batch = g.batch_of(self.style)
    ones = g.op1('ShapeOf', [g.concat([batch, 1, 1, 1])], [1],
                 version='opset3', data={'output_type': 'i64'}, etype='i64')
    fill = g.op1('Broadcast', [g.const([1], dtype=np.int64), ones], [4],
                 version='opset3', data={'mode': 'numpy'}, etype='i64')
    x = g.op1('Broadcast', [g.const(rnd.normal((1, c0, 4, 4)),
                                    'm.input.input'), fill], (1, c0, 4, 4),
              version='opset3', data={'mode': 'bidirectional'})
    x = g.op1('Tile', [x, g.concat([batch, 1, 1, 1])], x.shape)
    x = self.styled_conv('conv1', x, c0, depthwise=False)
    for i in range(cfg.num_blocks):
      c_out = cfg.channels[i + 1]
      up = self.styles(f'layers.{i}.up', x.shape[1], scale=None, like=x)
      x = self.idwt(g.binary('Multiply', up, x))
      x = self.styled_conv(f'layers.{i}.conv1', x, c_out, depthwise=True)
      x = self.styled_conv(f'layers.{i}.conv2', x, c_out, depthwise=True)
    c = x.shape[1]
    module = f'layers.{cfg.num_blocks - 1}.to_img'
    x = g.binary('Multiply', self.styles(f'{module}.conv', c,
                                         scale=1 / math.sqrt(c)), x)
    bands = msg.BANDS * cfg.img_channels
    x = g.op1('Convolution', [x, g.const(rnd.normal((bands, c, 1, 1)),
                                         f'm.{module}.conv.weight')],
              (1, bands) + x.shape[2:], data=_conv_data(1))
    x = g.binary('Add', x, g.const(rnd.normal((1, bands, 1, 1), 0.1),
                                   f'm.{module}.bias'))
    g.result(self.idwt(x, name='img'), 'img/sink_port_0')
    g.write(path)


# The default tiny pair: z_dim != w_dim, a channel change, 32 px.
TINY = msg.MobileStyleGANConfig(resolution=32, z_dim=12, w_dim=16,
                                mapping_layers=3, channels=(16, 16, 8))


def write_tiny_ir(directory: str | os.PathLike, *,
                  config: msg.MobileStyleGANConfig = TINY, seed: int = 0
                  ) -> tuple[str, str]:
  """Writes a random-weight MobileStyleGAN IR pair into `directory`.

  Args:
    directory: created if missing.
    config: architecture (``preview_heads`` is ignored: the real export
      has no intermediate heads).
    seed: numpy seed of the weights.

  Returns:
    Paths of ``MappingNetwork.xml`` and ``SynthesisNetwork.xml`` (each with
    its ``.bin``).
  """
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  rnd = _Weights(seed)
  paths = (os.path.join(directory, f'{MAPPING}.xml'),
           os.path.join(directory, f'{SYNTHESIS}.xml'))
  _write_mapping(paths[0], config, rnd)
  _Synthesis(config, rnd).write(paths[1])
  return paths


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='cmd', required=True)
  tiny = sub.add_parser('tiny', help='write a tiny random-weight IR pair')
  tiny.add_argument('out_dir')
  tiny.add_argument('--seed', type=int, default=0)
  run = sub.add_parser('run', help='z -> w -> image with OpenVINO')
  run.add_argument('ir_dir', nargs='?', default=None,
                   help='directory with the IR pair (default: random-face)')
  run.add_argument('--seed', type=int, default=0)
  run.add_argument('--batch', type=int, default=1)
  run.add_argument('--out', default=None, help='.npz for z, w, images')
  args = parser.parse_args(argv)
  if args.cmd == 'tiny':
    for p in write_tiny_ir(args.out_dir, seed=args.seed):
      print(p)
    return 0
  if args.ir_dir is None:
    from id2image_jax.porting import mobilestylegan as pm  # pylint: disable=g-import-not-at-top
    paths = pm.default_files()
  else:
    paths = tuple(os.path.join(args.ir_dir, f'{n}.xml')
                  for n in (MAPPING, SYNTHESIS))
  ref = OpenVINOReference(*paths)
  z_dim = ref.compiled(MAPPING, 1).inputs[0].get_shape()[1]
  z = np.random.default_rng(args.seed).standard_normal(
      (args.batch, z_dim)).astype(np.float32)
  w = ref.mapping(z)
  img = ref.synthesis(w)
  print(f'OpenVINO {ref.version}: w {w.shape}, images {img.shape}, range '
        f'[{img.min():.3f}, {img.max():.3f}]')
  if args.out:
    np.savez(args.out, z=z, w=w, images=img)
  return 0


if __name__ == '__main__':
  sys.exit(main())
