"""Ports MobileStyleGAN from its OpenVINO IR (PyPI random-face) to Flax.

The weights that ship (``random-face==2021.7.21.1``: ``MappingNetwork`` and
``SynthesisNetwork`` ``.xml``/``.bin``, float32, exported from
bes-dev/MobileStyleGAN.pytorch through ONNX by Model Optimizer 2021.4) are
two OpenVINO IR graphs. `id2image_jax.porting.openvino_ir` reads them as
data and `id2image_jax.porting.openvino_patterns` matches patterns of
operations in them; nothing is executed.

Naming constants from the graph structure
------------------------------------------
IR constants are named by the exporter, not by module path: the plain
parameters keep their PyTorch names (``m.layers.3.conv1.bias``), but the
folded ones are numbered (``Mul_106_copy`` = pointwise weight x
demodulation, ``1560`` = noise map x noise weight, ``173`` = mapping weight
x equalised-lr gain). The porter therefore ignores names and walks the graph
backwards from its Result, matching each stage against a pattern of
operations (`_block`, `_styled_conv`, `_idwt`, ... below: a Const at a
given input of a given operation *is* a role). Blocks are counted from the
output, so a key is stable whatever the exporter called the constant:

  mapping:   Result <- Multiply(gain) <- PReLU(slope) <- Add(Reshape(bias))
             <- MatMul(weight) <- ... (fc{L-1} .. fc0) <- pixel norm
             (Power, ReduceMean, Add eps, Power 0.5, Power -1) <- Parameter
  synthesis: Result <- inverse DWT (6 GroupConvolutionBackpropData with
             Haar filters, 2 VariadicSplit, Squeeze) <- Add(to_img bias) <-
             Convolution(to_img weight) <- Multiply(styles) <- block{n-1}
             <- ... <- block0 <- conv1 <- Tile(Broadcast(const))
             block:  PReLU <- Add(bias) <- Add(noise) <- Convolution
             (pointwise) <- GroupConvolution(depthwise) <- Multiply(styles)
             [conv2], the same [conv1], inverse DWT <- Multiply(styles) [up]
             styles: Multiply(scale) <- Reshape <- Add(bias) <- MatMul
             (weight, transpose_b) <- the style Parameter

Each Const gets a key: the PyTorch state-dict path for parameters
(``synthesis.layers.3.conv1.conv.weight_dw``: every IR constant that kept
its PyTorch name gets exactly that key, a test checks it), with a suffix
for the folded ones (``conv.weight_demod``, ``conv.weight_permute_demod``,
``noise.scaled_noise``; mapping ``fc{i}.weight`` / ``bias`` carry the
equalised-lr gains); ``...act.slope``, ``...modulation.scale``,
``...idwt.*`` and ``...idwt.split.*`` / ``bands.*`` for structural
constants (`STRUCTURE`: checked against the config, then ignored); and
``plumbing.<graph>.<name>#<id>`` for shape arithmetic (ShapeOf / Gather /
Concat inputs, ignored); `expected_keys` lists the parameter keys. The keys
then go through the same strict rule table machinery as every porter
(`id2image_jax.porting.rules.port`): every Flax variable filled, every key
used or explicitly ignored, shapes checked. A layer the patterns do not
reach (an extra output, a dangling constant) is an error naming it; so is a
structural constant with another value.

The IR has no ``w_avg`` (random-face averages 4096 unseeded samples at run
time): `convert` computes it from `W_AVG_SAMPLES` fixed-seed z. The IR
takes one w for all layers; the Flax model also takes W+ (see
`id2image_jax.models.mobilestylegan`). The PyTorch model's intermediate
``to_img`` heads are not in the IR (unused by its output), so the port has
``preview_heads=False``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax import errors
from id2image_jax import package_files
from id2image_jax.models import generator_init
from id2image_jax.models import mobilestylegan as msg
from id2image_jax.porting import layout
from id2image_jax.porting import openvino_ir
from id2image_jax.porting.openvino_patterns import Const
from id2image_jax.porting.openvino_patterns import Env
from id2image_jax.porting.openvino_patterns import Matcher
from id2image_jax.porting.openvino_patterns import NoMatch
from id2image_jax.porting.openvino_patterns import Op
from id2image_jax.porting.openvino_patterns import Parameter
from id2image_jax.porting.openvino_patterns import Shape
from id2image_jax.porting.openvino_patterns import Source
from id2image_jax.porting.openvino_patterns import Tensor
from id2image_jax.porting.openvino_patterns import graph_output
from id2image_jax.porting.openvino_patterns import keyed_constants
from id2image_jax.porting.openvino_patterns import repeat
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port
from id2image_jax.porting.rules import require_keys

KIND = 'mobilestylegan'
PACKAGE = package_files.Package(
    registry='pypi', name='random-face', version='2021.7.21.1',
    filename='random_face-2021.7.21.1-py3-none-any.whl',
    sha256='e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5',
    licence='Apache-2.0 (random-face, MobileStyleGAN.pytorch); weights '
    'distilled from NVIDIA StyleGAN2 FFHQ (NVIDIA Source Code License: '
    'non-commercial)')
MEMBERS = ('random_face/data/MappingNetwork.xml',
           'random_face/data/MappingNetwork.bin',
           'random_face/data/SynthesisNetwork.xml',
           'random_face/data/SynthesisNetwork.bin')
# random-face's own n_samples (configs/config.json), here with a fixed seed.
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
# Relative tolerance of structural constants (float32 exports of exact
# values such as 1/sqrt(4608)).
_RTOL = 1e-6


# --------------------------------------------------------------------------
# Graph patterns (`id2image_jax.porting.openvino_patterns`).


_MATMUL = (('transpose_a', 'false'), ('transpose_b', 'true'))


def _conv_attrs(k: int) -> tuple[tuple[str, str], ...]:
  p = f'{k // 2},{k // 2}'
  return (('strides', '1,1'), ('dilations', '1,1'), ('pads_begin', p),
          ('pads_end', p))


def _up_attrs(axis: str) -> tuple[tuple[str, str], ...]:
  return (('strides', '2,1' if axis == 'h' else '1,2'),
          ('pads_begin', '0,0'), ('pads_end', '0,0'),
          ('output_padding', '0,0'))


def _styles(role: str, *, scaled: bool = True) -> Op:
  """``scale * reshape(style @ W.T + b)`` (unscaled for ``up``); `role`
  is the module owning ``modulation``."""
  linear = Op('Add', (
      Op('MatMul', (Parameter('style'),
                    Const(f'{role}.modulation.weight')), attrs=_MATMUL),
      Const(f'{role}.modulation.bias')), commutative=True)
  styles = Op('Reshape', (linear, Shape()))
  if not scaled:
    return styles
  return Op('Multiply', (styles, Const(f'{role}.modulation.scale')),
            commutative=True)


def _styled_conv(role: str, x: Any, *, depthwise: bool) -> Op:
  """PyTorch StyledConv2d: modulate, conv, + noise, + bias, leaky ReLU."""
  modulated = Op('Multiply', (_styles(f'{role}.conv'), x), commutative=True)
  if depthwise:
    conv = Op('Convolution', (
        Op('GroupConvolution', (modulated,
                                Const(f'{role}.conv.weight_dw')),
           attrs=_conv_attrs(3)),
        Const(f'{role}.conv.weight_permute_demod')), attrs=_conv_attrs(1))
  else:
    conv = Op('Convolution', (modulated,
                              Const(f'{role}.conv.weight_demod')),
              attrs=_conv_attrs(3))
  noisy = Op('Add', (conv, Const(f'{role}.noise.scaled_noise')),
             commutative=True)
  biased = Op('Add', (noisy, Const(f'{role}.bias')), commutative=True)
  return Op('PReLU', (biased, Const(f'{role}.act.slope')))


def _idwt(role: str, x: Any) -> Op:
  """pytorch_wavelets DWTInverse (db1) of the 4C channels of `x`; `role`
  is the DWTInverse module (``idwt``, ``layers.<i>.up.idwt``)."""
  split = Op('VariadicSplit', (x, Const(f'{role}.split.axis'),
                               Const(f'{role}.split.lengths')),
             bind=f'{role}/split')
  low = dataclasses.replace(split, port=0)
  high = Op('Reshape', (dataclasses.replace(split, port=1), Shape()))
  bands = Op('VariadicSplit', (high, Const(f'{role}.bands.axis'),
                               Const(f'{role}.bands.lengths')),
             bind=f'{role}/bands')

  def band(k):
    return Op('Squeeze', (dataclasses.replace(bands, port=k),
                          Const(f'{role}.bands.squeeze{k}')))

  def synth(x_, name, axis):
    return Op('GroupConvolutionBackpropData',
              (x_, Const(f'{role}.{name}')), attrs=_up_attrs(axis))

  lo = Op('Add', (synth(low, 'll_h', 'h'), synth(band(0), 'lh_h', 'h')))
  hi = Op('Add', (synth(band(1), 'hl_h', 'h'), synth(band(2), 'hh_h', 'h')))
  return Op('Add', (synth(lo, 'lo_w', 'w'), synth(hi, 'hi_w', 'w')))


def _to_img(role: str, x: Any) -> Op:
  """PyTorch MultichannelIamge: modulated 1x1 conv + bias."""
  modulated = Op('Multiply', (_styles(f'{role}.conv'), x), commutative=True)
  conv = Op('Convolution', (modulated, Const(f'{role}.conv.weight')),
            attrs=_conv_attrs(1))
  return Op('Add', (conv, Const(f'{role}.bias')), commutative=True)


def _block(role: str, x: Any) -> Op:
  """MobileSynthesisBlock without its head: up, conv1, conv2."""
  up = _idwt(f'{role}.up.idwt', Op('Multiply', (
      _styles(f'{role}.up', scaled=False), x), commutative=True))
  conv1 = _styled_conv(f'{role}.conv1', up, depthwise=True)
  return _styled_conv(f'{role}.conv2', conv1, depthwise=True)


_FIRST = _styled_conv('conv1', Op('Tile', (
    Op('Broadcast', (Const('input.input'), Shape())), Shape())),
                      depthwise=False)
_PIXEL_NORM = Op('Multiply', (Parameter('z'), Op('Multiply', (
    Const('norm.one'),
    Op('Power', (Op('Power', (Op('Add', (
        Op('ReduceMean', (Op('Power', (Parameter('z'),
                                       Const('norm.exponent'))),
                          Const('norm.axes'))),
        Const('norm.eps')), commutative=True),
                              Const('norm.sqrt'))),
                 Const('norm.reciprocal')))), commutative=True)),
                 commutative=True)


def _dense(role: str, x: Any) -> Op:
  """EqualLinear + fused leaky ReLU, gains folded by the export."""
  linear = Op('Add', (
      Op('MatMul', (x, Const(f'{role}.weight')), attrs=_MATMUL),
      Op('Reshape', (Const(f'{role}.bias'), Shape()))), commutative=True)
  act = Op('PReLU', (linear, Const(f'{role}.act.slope')))
  return Op('Multiply', (act, Const(f'{role}.act.gain')), commutative=True)


# --------------------------------------------------------------------------
# Reading an IR pair into keyed arrays.


def read_mapping(graph: openvino_ir.Graph) -> Source:
  """Keys the constants of a MappingNetwork IR (``mapping.*``).

  Args:
    graph: the parsed ``MappingNetwork.xml``.

  Returns:
    A `Source` holding every constant of the graph under its key.

  Raises:
    PortingError: the graph is not a MobileStyleGAN mapping network (names
      the layer where the walk stopped, or the unreached layers).
  """
  matcher = Matcher(graph)
  layers, env = repeat(matcher, lambda k, x: _dense(f'F{k}', x),
                       _PIXEL_NORM, graph_output(graph), Env())
  if not layers:
    raise PortingError(f'{graph.what}: no mapping layers found')

  def rename(role):
    m = re.fullmatch(r'F(\d+)\.(.*)', role)
    if m:
      return f'mapping.fc{layers - 1 - int(m.group(1))}.{m.group(2)}'
    return f'mapping.{role}'

  return keyed_constants(graph, env, rename, model='MobileStyleGAN')


def read_synthesis(graph: openvino_ir.Graph) -> Source:
  """Keys the constants of a SynthesisNetwork IR (``synthesis.*``).

  Args:
    graph: the parsed ``SynthesisNetwork.xml``.

  Returns:
    A `Source` holding every constant of the graph under its key.

  Raises:
    PortingError: the graph is not a MobileStyleGAN synthesis network
      (names the layer where the walk stopped, or the unreached layers).
  """
  matcher = Matcher(graph)
  try:
    env = matcher.match(_idwt('idwt', _to_img('B0.to_img', Tensor('x0'))),
                        *graph_output(graph), Env())
  except NoMatch as e:
    raise PortingError(f'{graph.what}: {e.message}') from None
  lid, out = env.binds['x0']
  blocks, env = repeat(matcher, lambda k, x: _block(f'B{k}', x), _FIRST,
                       (graph.layers[lid], out), env)
  if not blocks:
    raise PortingError(f'{graph.what}: no synthesis blocks found')

  def rename(role):
    m = re.fullmatch(r'B(\d+)\.(.*)', role)
    if m:
      return (f'synthesis.layers.{blocks - 1 - int(m.group(1))}.'
              f'{m.group(2)}')
    return f'synthesis.{role}'

  return keyed_constants(graph, env, rename, model='MobileStyleGAN')


def read_source(mapping_xml: str | os.PathLike,
                synthesis_xml: str | os.PathLike) -> Source:
  """Reads both IRs (``.bin`` next to each ``.xml``) into one `Source`.

  Args:
    mapping_xml: ``MappingNetwork.xml``.
    synthesis_xml: ``SynthesisNetwork.xml``.

  Returns:
    The keyed constants of both graphs.

  Raises:
    FileNotFoundError, IRError, PortingError: see `convert`.
  """
  mapping = read_mapping(openvino_ir.read(mapping_xml))
  synthesis = read_synthesis(openvino_ir.read(synthesis_xml))
  return Source({**mapping.arrays, **synthesis.arrays},
                {**mapping.names, **synthesis.names})


# --------------------------------------------------------------------------
# Config inference, structural checks and the rule table.


def _count(arrays: Mapping[str, Any], pattern: str) -> int:
  n = 0
  while pattern.format(n) in arrays:
    n += 1
  return n


def infer_config(source: Source, *, what: str = 'MobileStyleGAN IR'
                 ) -> msg.MobileStyleGANConfig:
  """Architecture from the keyed constants' shapes.

  Raises:
    PortingError: a constant needed to infer it is missing (named), or the
      shapes describe no MobileStyleGAN.
  """
  a = source.arrays
  layers = _count(a, 'mapping.fc{}.weight')
  blocks = _count(a, 'synthesis.layers.{}.conv1.conv.weight_permute_demod')
  last = f'synthesis.layers.{blocks - 1}.to_img.conv.weight'
  require_keys(a, ['mapping.fc0.weight', 'synthesis.input.input', last],
               what=what)
  channels = [int(a['synthesis.input.input'].shape[1])]
  channels += [int(a[f'synthesis.layers.{i}.conv1.conv.'
                     'weight_permute_demod'].shape[0])
               for i in range(blocks)]
  try:
    return msg.MobileStyleGANConfig(
        resolution=2 ** (len(channels) + 2),
        z_dim=int(a['mapping.fc0.weight'].shape[1]),
        w_dim=int(a[f'mapping.fc{layers - 1}.weight'].shape[0]),
        mapping_layers=layers, channels=tuple(channels),
        img_channels=int(a[last].shape[0]) // msg.BANDS)
  except ValueError as e:
    raise PortingError(f'{what}: {e}') from None


def _fan_in(config: msg.MobileStyleGANConfig, block: str | None,
            module: str) -> int:
  """in_channels * k * k of a modulated conv (`block` None: top level)."""
  c = config.channels
  if block is None:
    return c[0] * (9 if module == 'conv1' else 1)
  i = int(block)
  if module == 'conv1':
    return c[i] // msg.BANDS * 9
  return c[i + 1] * (9 if module == 'conv2' else 1)


def _idwt_channels(config: msg.MobileStyleGANConfig, block: str | None
                   ) -> int:
  """Output channels C of an inverse DWT (it reads 4C)."""
  if block is None:
    return config.img_channels
  return config.channels[int(block)] // msg.BANDS


_HAAR = {'ll_h': msg.HAAR_LO, 'lh_h': msg.HAAR_HI, 'hl_h': msg.HAAR_LO,
         'hh_h': msg.HAAR_HI, 'lo_w': msg.HAAR_LO, 'hi_w': msg.HAAR_HI}


def _haar_filter(config, block, name):
  taps = np.asarray(_HAAR[name])
  c = _idwt_channels(config, block)
  along_h = name.endswith('_h')
  return np.broadcast_to(taps.reshape((2, 1) if along_h else (1, 2)),
                         (c, 1, 1) + ((2, 1) if along_h else (1, 2)))


_BLOCK = r'synthesis\.(?:layers\.(\d+)\.)?'
# Structural constants: key regex -> value(config, *groups). Checked by
# `check_structure` (then ignored by the rule table).
STRUCTURE = (
    (r'.*\.act\.slope', lambda c: msg.LRELU_SLOPE),
    (r'mapping\.fc\d+\.act\.gain', lambda c: msg.MAPPING_GAIN),
    (r'mapping\.norm\.one', lambda c: 1.0),
    (r'mapping\.norm\.exponent', lambda c: 2.0),
    (r'mapping\.norm\.eps', lambda c: 1e-8),
    (r'mapping\.norm\.sqrt', lambda c: 0.5),
    (r'mapping\.norm\.reciprocal', lambda c: -1.0),
    (r'mapping\.norm\.axes', lambda c: 1),
    (_BLOCK + r'(conv1|conv2|to_img1?)\.conv\.modulation\.scale',
     lambda c, b, m: 1 / math.sqrt(_fan_in(c, b, m))),
    (_BLOCK + r'(?:up\.)?idwt\.(ll_h|lh_h|hl_h|hh_h|lo_w|hi_w)',
     _haar_filter),
    (_BLOCK + r'(?:up\.)?idwt\.split\.axis', lambda c, b: 1),
    (_BLOCK + r'(?:up\.)?idwt\.split\.lengths',
     lambda c, b: [_idwt_channels(c, b), 3 * _idwt_channels(c, b)]),
    (_BLOCK + r'(?:up\.)?idwt\.bands\.axis', lambda c, b: 2),
    (_BLOCK + r'(?:up\.)?idwt\.bands\.lengths', lambda c, b: [1, 1, 1]),
    (_BLOCK + r'(?:up\.)?idwt\.bands\.squeeze\d', lambda c, b: [2]),
)


def expected_value(key: str, config: msg.MobileStyleGANConfig
                   ) -> np.ndarray | None:
  """The value a structural constant must hold.

  Args:
    key: a constant's key.
    config: the architecture (style scales and band splits depend on it).

  Returns:
    float64 array, or None when `key` is not structural (see `STRUCTURE`).
  """
  for pattern, fn in STRUCTURE:
    m = re.fullmatch(pattern, key)
    if m:
      return np.asarray(fn(config, *m.groups()), np.float64)
  return None


def check_structure(source: Source, config: msg.MobileStyleGANConfig, *,
                    what: str = 'MobileStyleGAN IR') -> None:
  """Structural constants (slopes, gains, style scales, Haar filters,
  band splits) must be what the Flax model computes.

  Raises:
    PortingError: naming each constant that differs.
  """
  bad = []
  for key, value in sorted(source.arrays.items()):
    want = expected_value(key, config)
    if want is None:
      continue
    value = np.asarray(value, np.float64)
    if want.ndim == 0 and value.size == 1:
      value = value.reshape(())
    if value.shape != want.shape:
      bad.append(f'{key}: shape {value.shape}, expected {want.shape}')
    elif not np.allclose(value, want, rtol=_RTOL, atol=0):
      bad.append(f'{key}: {np.ravel(value)[:4].tolist()}, expected '
                 f'{np.ravel(want)[:4].tolist()}')
  if bad:
    raise PortingError(f'{what}: {len(bad)} structural constant(s) differ '
                       'from MobileStyleGAN: ' + '; '.join(bad[:12]))


def _depthwise(x: np.ndarray) -> np.ndarray:
  """GroupConvolution weight [C, 1, 1, kh, kw] -> [kh, kw, 1, C]."""
  if x.ndim != 5 or x.shape[1:3] != (1, 1):
    raise ValueError(f'expected a depthwise weight [C, 1, 1, kh, kw], got '
                     f'{x.shape}')
  return np.transpose(x[:, 0], (2, 3, 1, 0))


def _pointwise(x: np.ndarray) -> np.ndarray:
  """1x1 conv weight [O, I, 1, 1] -> dense kernel [I, O]."""
  if x.ndim != 4 or x.shape[2:] != (1, 1):
    raise ValueError(f'expected a 1x1 conv weight [O, I, 1, 1], got '
                     f'{x.shape}')
  return x[:, :, 0, 0].T


def _noise_map(x: np.ndarray) -> np.ndarray:
  """[1, 1, H, W] -> [H, W]."""
  if x.ndim != 4 or x.shape[:2] != (1, 1):
    raise ValueError(f'expected a [1, 1, H, W] noise map, got {x.shape}')
  return x[0, 0]


def _const_input(x: np.ndarray) -> np.ndarray:
  """[1, C, 4, 4] -> [4, 4, C]."""
  if x.ndim != 4 or x.shape[0] != 1:
    raise ValueError(f'expected a [1, C, H, W] constant, got {x.shape}')
  return layout.chw_to_hwc(x[0])


_L = r'synthesis\.layers\.(\d+)'
RULES = (
    Rule(r'mapping\.fc(\d+)\.weight', r'params/mapping/fc\1/kernel',
         layout.linear_to_dense),
    Rule(r'mapping\.fc(\d+)\.bias', r'params/mapping/fc\1/bias',
         layout.flatten),
    Rule(r'synthesis\.input\.input', 'params/synthesis/const', _const_input),
    # Top level: conv1 (full 3x3) and the optional to_img1 head.
    Rule(r'synthesis\.(conv1|to_img1)\.conv\.modulation\.weight',
         r'params/synthesis/\1/affine/kernel', layout.linear_to_dense),
    Rule(r'synthesis\.(conv1|to_img1)\.conv\.modulation\.bias',
         r'params/synthesis/\1/affine/bias', layout.flatten),
    Rule(r'synthesis\.conv1\.conv\.weight_demod',
         'params/synthesis/conv1/weight', layout.conv_oihw_to_hwio),
    Rule(r'synthesis\.to_img1\.conv\.weight',
         'params/synthesis/to_img1/weight', _pointwise),
    Rule(r'synthesis\.(conv1|to_img1)\.bias', r'params/synthesis/\1/bias',
         layout.flatten),
    Rule(r'synthesis\.conv1\.noise\.scaled_noise',
         'buffers/synthesis/conv1/noise', _noise_map),
    # Blocks.
    Rule(rf'{_L}\.up\.modulation\.weight',
         r'params/synthesis/block\1/up/affine/kernel', layout.linear_to_dense),
    Rule(rf'{_L}\.up\.modulation\.bias',
         r'params/synthesis/block\1/up/affine/bias', layout.flatten),
    Rule(rf'{_L}\.(conv[12]|to_img)\.conv\.modulation\.weight',
         r'params/synthesis/block\1/\2/affine/kernel',
         layout.linear_to_dense),
    Rule(rf'{_L}\.(conv[12]|to_img)\.conv\.modulation\.bias',
         r'params/synthesis/block\1/\2/affine/bias', layout.flatten),
    Rule(rf'{_L}\.(conv[12])\.conv\.weight_dw',
         r'params/synthesis/block\1/\2/depthwise', _depthwise),
    Rule(rf'{_L}\.(conv[12])\.conv\.weight_permute_demod',
         r'params/synthesis/block\1/\2/pointwise', _pointwise),
    Rule(rf'{_L}\.to_img\.conv\.weight',
         r'params/synthesis/block\1/to_img/weight', _pointwise),
    Rule(rf'{_L}\.(conv[12]|to_img)\.bias',
         r'params/synthesis/block\1/\2/bias', layout.flatten),
    Rule(rf'{_L}\.(conv[12])\.noise\.scaled_noise',
         r'buffers/synthesis/block\1/\2/noise', _noise_map),
)
# Shape arithmetic, and the structural constants `check_structure` checks:
# deliberately not ported.
IGNORED = (r'plumbing\..*',) + tuple(p for p, _ in STRUCTURE)


def expected_keys(config: msg.MobileStyleGANConfig) -> list[str]:
  """Parameter keys (no structural ones) an IR pair of `config` has."""
  keys = []
  for i in range(config.mapping_layers):
    keys += [f'mapping.fc{i}.weight', f'mapping.fc{i}.bias']
  mod = ('conv.modulation.weight', 'conv.modulation.bias')
  keys += ['synthesis.input.input'] + [
      f'synthesis.conv1.{n}' for n in
      mod + ('conv.weight_demod', 'bias', 'noise.scaled_noise')]
  for i in range(config.num_blocks):
    p = f'synthesis.layers.{i}'
    keys += [f'{p}.up.modulation.weight', f'{p}.up.modulation.bias']
    for c in ('conv1', 'conv2'):
      keys += [f'{p}.{c}.{n}' for n in
               mod + ('conv.weight_dw', 'conv.weight_permute_demod', 'bias',
                      'noise.scaled_noise')]
  last = f'synthesis.layers.{config.num_blocks - 1}.to_img'
  keys += [f'{last}.{n}' for n in mod + ('conv.weight', 'bias')]
  return keys


# --------------------------------------------------------------------------
# Conversion.


def mean_w(config: msg.MobileStyleGANConfig, params: Mapping[str, Any], *,
           samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED
           ) -> np.ndarray:
  """Mean mapped w over fixed-seed z, without truncation.

  Args:
    config: architecture.
    params: ported ``params`` (the mapping part is used).
    samples: number of z.
    seed: numpy seed of the z.

  Returns:
    [w_dim] float32 numpy array.
  """
  z = np.random.default_rng(seed).standard_normal(
      (samples, config.z_dim)).astype(np.float32)
  return np.asarray(generator_init.mean_w(msg.build(config), params, z),
                    np.float32)


def _name_constants(error: PortingError, source: Source) -> PortingError:
  """Adds the IR constants behind the keys an error message mentions."""
  text = str(error)
  named = [f'{k} = {v}' for k, v in sorted(source.names.items())
           if re.search(rf'(?<![\w.]){re.escape(k)}(?![\w.])', text)]
  if not named:
    return error
  return PortingError(f'{text}\n  IR constants: ' + '; '.join(named[:12]))


def convert_source(source: Source, *, what: str = 'MobileStyleGAN IR',
                   w_avg_samples: int = W_AVG_SAMPLES
                   ) -> tuple[dict[str, Any], dict]:
  """Ports a keyed `Source` to ``(config dict, variables)`` (see `convert`).

  Args:
    source: from `read_source`.
    what: names the files in messages.
    w_avg_samples: z samples for ``w_avg`` (fixed seed `W_AVG_SEED`).
  """
  config = infer_config(source, what=what)
  try:
    require_keys(source.arrays, expected_keys(config), what=what)
    check_structure(source, config, what=what)
    abstract = msg.abstract_variables(config)
    del abstract['buffers']['mapping']  # the IR has no w_avg
    variables = port(source.arrays, RULES, abstract, ignore=IGNORED,
                     what=what)
  except PortingError as e:
    raise _name_constants(e, source) from None
  variables['buffers']['mapping'] = {
      'w_avg': mean_w(config, variables['params'], samples=w_avg_samples)}
  return dataclasses.asdict(config), variables


def convert(mapping_xml: str | os.PathLike, synthesis_xml: str | os.PathLike,
            *, w_avg_samples: int = W_AVG_SAMPLES
            ) -> tuple[dict[str, Any], dict]:
  """Reads a MobileStyleGAN IR pair and ports it.

  Args:
    mapping_xml: ``MappingNetwork.xml`` (its ``.bin`` next to it).
    synthesis_xml: ``SynthesisNetwork.xml`` (its ``.bin`` next to it).
    w_avg_samples: z samples for ``w_avg``.

  Returns:
    ``(config, variables)``: a JSON-able `MobileStyleGANConfig` dict and
    ``{'params': ..., 'buffers': ...}`` of float32 numpy arrays.

  Raises:
    FileNotFoundError: a file is missing.
    IRError: an IR file is malformed or truncated (named).
    PortingError: the graphs are not MobileStyleGAN, or constants are
      missing, unknown, mis-shaped or have unexpected values (named, with
      the IR constant behind each key).
  """
  what = (f'{os.path.basename(os.fspath(mapping_xml))} + '
          f'{os.path.basename(os.fspath(synthesis_xml))}')
  return convert_source(read_source(mapping_xml, synthesis_xml), what=what,
                        w_avg_samples=w_avg_samples)


def default_files() -> tuple[str, str]:
  """(MappingNetwork.xml, SynthesisNetwork.xml) of the pinned random-face
  wheel, fetched into the cache on first use (their .bin alongside).

  Raises:
    FileNotFoundError: offline and not cached; says what to put where.
  """
  paths = package_files.fetch(PACKAGE, MEMBERS)
  return str(paths[0]), str(paths[2])


IR_FILES = ('MappingNetwork.xml', 'SynthesisNetwork.xml')


def ir_pair(path: str | os.PathLike) -> tuple[str, str]:
  """(MappingNetwork.xml, SynthesisNetwork.xml) named by `path`: the
  directory holding them, or either file (the other beside it).

  Raises:
    FileNotFoundError: says which file is missing where.
  """
  path = os.fspath(path)
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  pair = tuple(os.path.join(folder, name) for name in IR_FILES)
  missing = [p for p in pair if not os.path.isfile(p)]
  if missing:
    raise errors.MissingInputError(
        f'MobileStyleGAN IR not found: {", ".join(missing)} (the pair '
        f'{IR_FILES} and their .bin files, as in the random-face wheel)')
  return pair


def read_files(path: str | os.PathLike) -> Source:
  """`read_source` of the IR pair that `path` names (see `ir_pair`)."""
  return read_source(*ir_pair(path))
