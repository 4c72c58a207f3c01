"""Every op of the ONNX interpreter against ONNX Runtime, on tiny graphs.

Each case is a one- to four-node graph built with ``onnx.helper`` around
one image-like float input ``x``; its other inputs are initialisers or
Constant nodes (what exporters write). The graph goes through the same
path as a real model (`porting.onnx.read_model` -> folding -> config as
JSON -> `onnx_graph.apply_graph` under `jax.jit`) and is compared with ONNX
Runtime on the same input: float32 relative max error <= 1e-4 (the
issue's bound), and a bfloat16 bound measured here. A test fails when an op
of `onnx_graph.OPS` has no case.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax.models import onnx_graph
from id2image_jax.porting import onnx as onnx_port

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
helper = onnx.helper
numpy_helper = onnx.numpy_helper
FLOAT = onnx.TensorProto.FLOAT

# float32: max |ours - ORT| <= 1e-4 * max |ORT| (the bound).
F32_RELATIVE = 1e-4
# Measured float32 worst case over the cases below: 4.1e-7 (Conv with
# SAME_UPPER padding). bfloat16 compute (8 mantissa bits) vs ORT float32:
# measured worst case 8.4e-3 (LayerNormalization; Softmax 8.1e-3, MatMul
# 6.6e-3); bound 2e-2.
BF16_RELATIVE = 2e-2


@dataclasses.dataclass(frozen=True)
class OpCase:
  """A tiny graph: ``nodes`` reading ``x`` (shape `shape`) and `inits`.

  Attributes:
    name: the test id; the op it covers is ``ops`` (default: its prefix).
    nodes: onnx NodeProtos; the graph output is ``y``.
    shape: the declared input shape (a str is a symbolic dimension).
    inits: initialiser name -> numpy array.
    opset: default-domain opset.
    batch: the concrete batch size fed where ``shape[0]`` is symbolic.
    bf16: also checked in bfloat16 (not where rounding moves a discrete
      result: floor, comparisons, casts to int).
    ops: the ops this case covers.
  """
  name: str
  nodes: tuple
  shape: tuple = (2, 3, 8, 8)
  inits: dict = dataclasses.field(default_factory=dict)
  opset: int = 13
  batch: int = 2
  bf16: bool = True
  ops: tuple = ()

  @property
  def covers(self) -> tuple[str, ...]:
    return self.ops or (self.name.split('-')[0],)


def _n(op, inputs, outputs=('y',), **attrs):
  return helper.make_node(op, list(inputs), list(outputs), **attrs)


def _rng(seed=0):
  return np.random.default_rng(seed)


def _w(*shape, seed=1, scale=1.0):
  return (_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _i64(*values):
  return np.asarray(values, np.int64)


def _unary(op, pre=None, **attrs):
  """``y = op(x)``, optionally of a positive ``pre(x)``."""
  if pre is None:
    return OpCase(op, (_n(op, ['x'], **attrs),))
  return OpCase(op, (_n('Abs', ['x'], ['a']), _n('Add', ['a', 'one'], ['p']),
                     _n(op, ['p'], **attrs)),
                inits={'one': np.ones((), np.float32)}, ops=(op,))


def _binary(op, shape_b=(1, 3, 1, 8)):
  return OpCase(op, (_n(op, ['x', 'b']),),
                inits={'b': _w(*shape_b) + (3.0 if op == 'Div' else 0.0)})


def _compare(op):
  # A comparison (bool) cast back to float, so the output is checkable.
  return OpCase(op, (_n('Floor', ['x'], ['f']), _n(op, ['f', 'b'], ['c']),
                     _n('Cast', ['c'], to=FLOAT)),
                inits={'b': np.zeros((1, 3, 1, 1), np.float32)},
                bf16=False, ops=(op,))


CASES: tuple[OpCase, ...] = (
    # Elementwise, with numpy broadcasting.
    _binary('Add'), _binary('Sub'), _binary('Mul'), _binary('Div'),
    OpCase('Pow', (_n('Pow', ['x', 'e']),),
           inits={'e': np.asarray(2.0, np.float32)}),
    OpCase('Pow-sqrt', (_n('Abs', ['x'], ['a']), _n('Pow', ['a', 'e'])),
           inits={'e': np.asarray(0.5, np.float32)}),
    _compare('Equal'), _compare('Less'), _compare('Greater'),
    OpCase('Not', (_n('Less', ['x', 'z'], ['c']), _n('Not', ['c'], ['d']),
                   _n('Cast', ['d'], to=FLOAT)),
           inits={'z': np.zeros((), np.float32)}, bf16=False,
           ops=('Not',)),
    OpCase('Where', (_n('Greater', ['x', 'z'], ['c']),
                     _n('Where', ['c', 'x', 'b'])),
           inits={'z': np.zeros((), np.float32), 'b': _w(1, 3, 1, 1)}),
    _unary('Relu'), _unary('Sigmoid'), _unary('Tanh'), _unary('Exp'),
    _unary('Log', pre=True), _unary('Sqrt', pre=True), _unary('Abs'),
    _unary('Neg'), _unary('Reciprocal', pre=True),
    dataclasses.replace(_unary('Floor'), bf16=False),
    dataclasses.replace(_unary('Ceil'), bf16=False),
    _unary('Erf'), _unary('Identity'), _unary('Softplus'),
    _unary('Elu', alpha=0.7), _unary('LeakyRelu', alpha=0.2),
    _unary('HardSigmoid', alpha=0.3, beta=0.4),
    dataclasses.replace(_unary('HardSwish'), opset=14),
    OpCase('Dropout', (_n('Dropout', ['x']),)),
    OpCase('PRelu', (_n('PRelu', ['x', 's']),),
           inits={'s': _w(3, 1, 1, scale=0.3)}),
    OpCase('Clip-opset6', (_n('Clip', ['x'], min=-0.5, max=0.7),), opset=6),
    OpCase('Clip', (_n('Clip', ['x', 'lo', '']),),
           inits={'lo': np.asarray(-0.2, np.float32)}, opset=11),
    OpCase('Max', (_n('Max', ['x', 'b', 'c']),),
           inits={'b': _w(1, 3, 1, 1), 'c': _w(8, seed=2)}),
    OpCase('Min', (_n('Min', ['x', 'b']),), inits={'b': _w(1, 3, 1, 1)}),
    OpCase('Sum', (_n('Sum', ['x', 'b', 'x']),), inits={'b': _w(8)}),
    # Shapes and indexing: `x.view(x.size(0), -1)` with a dynamic batch, as
    # exporters write it (evaluated in numpy at trace time).
    OpCase('Shape', (_n('Shape', ['x'], ['s']),
                     _n('Gather', ['s', 'zero'], ['b'], axis=0),
                     _n('Unsqueeze', ['b', 'ax'], ['u']),
                     _n('Concat', ['u', 'minus1'], ['shape'], axis=0),
                     _n('Reshape', ['x', 'shape'])),
           shape=('N', 3, 4, 4), batch=3,
           inits={'zero': _i64(0).reshape(()), 'ax': _i64(0),
                  'minus1': _i64(-1)},
           ops=('Shape', 'Gather', 'Unsqueeze', 'Concat', 'Reshape')),
    OpCase('Shape-slice', (_n('Shape', ['x'], ['s'], start=1, end=3),
                           _n('Reshape', ['x', 'full'], ['r']),
                           _n('Reshape', ['r', 's2']),
                           _n('Concat', ['m1', 's'], ['s2'], axis=0)),
           opset=15, inits={'full': _i64(-1), 'm1': _i64(-1)}),
    OpCase('Size', (_n('Size', ['x'], ['n']), _n('Cast', ['n'], ['f'],
                                                  to=FLOAT),
                    _n('Mul', ['x', 'f']))),
    OpCase('Constant', (_n('Constant', [], ['c'], value=numpy_helper
                           .from_array(_w(8), 'c')),
                        _n('Mul', ['x', 'c']))),
    OpCase('ConstantOfShape', (
        _n('Shape', ['x'], ['s']),
        _n('ConstantOfShape', ['s'], ['c'], value=numpy_helper.from_array(
            np.asarray([1.5], np.float32))), _n('Mul', ['x', 'c'])),
           shape=('N', 3, 4, 4), batch=1),
    OpCase('Cast', (_n('Cast', ['x'], ['i'], to=onnx.TensorProto.INT32),
                    _n('Cast', ['i'], to=FLOAT)), bf16=False),
    OpCase('Reshape-zero', (_n('Reshape', ['x', 's']),),
           inits={'s': _i64(0, -1, 8)}),
    OpCase('Flatten', (_n('Flatten', ['x'], axis=2),)),
    OpCase('Transpose', (_n('Transpose', ['x'], perm=[0, 2, 3, 1]),)),
    OpCase('Unsqueeze-opset11', (_n('Unsqueeze', ['x'], axes=[0, -1]),),
           opset=11),
    OpCase('Squeeze', (_n('Unsqueeze', ['x', 'a'], ['u']),
                       _n('Squeeze', ['u', 'a'])),
           inits={'a': _i64(2)}),
    OpCase('Squeeze-all', (_n('Squeeze', ['x']),), shape=(1, 3, 1, 8)),
    OpCase('Gather-negative', (_n('Gather', ['x', 'i'], axis=1),),
           inits={'i': _i64(2, 0, -1)}),
    OpCase('Slice', (_n('Slice', ['x', 'st', 'en', 'ax', 'sp']),),
           inits={'st': _i64(1, -1), 'en': _i64(100, -1000),
                  'ax': _i64(2, 3), 'sp': _i64(2, -3)}),
    OpCase('Slice-opset9', (_n('Slice', ['x'], starts=[1], ends=[-1],
                                axes=[1]),), opset=9),
    OpCase('Split', (_n('Split', ['x', 'sp'], ['a', 'b'], axis=3),
                     _n('Concat', ['b', 'a'], axis=3)),
           inits={'sp': _i64(3, 5)}),
    OpCase('Split-even', (_n('Split', ['x'], ['a', 'b'], axis=1),
                          _n('Sub', ['a', 'b'])), shape=(2, 4, 3, 3),
           opset=11),
    OpCase('Expand', (_n('Expand', ['x', 's']),), shape=(2, 1, 4),
           inits={'s': _i64(2, 3, 1)}),
    OpCase('Tile', (_n('Tile', ['x', 'r']),), inits={'r': _i64(1, 2, 1, 3)}),
    OpCase('Range', (_n('Shape', ['x'], ['s']),
                     _n('Gather', ['s', 'last'], ['n'], axis=0),
                     _n('Range', ['zero', 'n', 'one'], ['r']),
                     _n('Cast', ['r'], ['f'], to=FLOAT),
                     _n('Add', ['x', 'f'])),
           inits={'last': _i64(3).reshape(()), 'zero': _i64(0).reshape(()),
                  'one': _i64(1).reshape(())}),
    # Reductions and normalisations.
    OpCase('ReduceMean', (_n('ReduceMean', ['x'], axes=[2, 3]),),
           opset=11),
    OpCase('ReduceMean-opset18', (_n('ReduceMean', ['x', 'a'], keepdims=0),),
           inits={'a': _i64(1)}, opset=18),
    OpCase('ReduceSum', (_n('ReduceSum', ['x', 'a'], keepdims=0),),
           inits={'a': _i64(-1)}),
    OpCase('ReduceMax', (_n('ReduceMax', ['x'], axes=[1]),)),
    OpCase('ReduceMin', (_n('ReduceMin', ['x'], keepdims=0),)),
    OpCase('ReduceL1', (_n('ReduceL1', ['x'], axes=[3]),)),
    OpCase('ReduceL2', (_n('ReduceL2', ['x'], axes=[1]),)),
    OpCase('LpNormalization', (_n('LpNormalization', ['x'], axis=1),)),
    OpCase('LpNormalization-p1', (_n('LpNormalization', ['x'], axis=-1,
                                     p=1),)),
    OpCase('Softmax-opset11', (_n('Softmax', ['x'], axis=2),), opset=11),
    OpCase('Softmax', (_n('Softmax', ['x'], axis=1),)),
    OpCase('LogSoftmax', (_n('LogSoftmax', ['x']),)),
    OpCase('BatchNormalization', (_n('BatchNormalization',
                                     ['x', 's', 'b', 'm', 'v'],
                                     epsilon=1e-3),),
           inits={'s': _w(3), 'b': _w(3, seed=2), 'm': _w(3, seed=3),
                  'v': np.abs(_w(3, seed=4)) + 0.5}),
    OpCase('InstanceNormalization', (_n('InstanceNormalization',
                                        ['x', 's', 'b']),),
           inits={'s': _w(3), 'b': _w(3, seed=2)}),
    OpCase('LayerNormalization', (_n('LayerNormalization', ['x', 's', 'b'],
                                     axis=-2),),
           inits={'s': _w(8, 8), 'b': _w(8, seed=2)}, opset=17),
    # Dense and convolutional layers.
    OpCase('MatMul', (_n('MatMul', ['x', 'w']),), inits={'w': _w(8, 5)}),
    OpCase('MatMul-folded-transpose', (_n('Transpose', ['w'], ['wt']),
                                       _n('MatMul', ['x', 'wt'])),
           inits={'w': _w(5, 8)}, ops=('MatMul', 'Transpose')),
    OpCase('Gemm', (_n('Flatten', ['x'], ['f']),
                    _n('Gemm', ['f', 'w', 'c'], transB=1, alpha=0.5,
                       beta=2.0)),
           inits={'w': _w(5, 192, scale=0.1), 'c': _w(5)}),
    OpCase('Gemm-transA', (_n('Reshape', ['x', 's'], ['f']),
                           _n('Gemm', ['f', 'w'], transA=1)),
           inits={'s': _i64(8, -1), 'w': _w(8, 4)}, opset=11),
    OpCase('Conv', (_n('Conv', ['x', 'w', 'b'], pads=[1, 1, 1, 1]),),
           inits={'w': _w(4, 3, 3, 3, scale=0.3), 'b': _w(4)}),
    OpCase('Conv-strided', (_n('Conv', ['x', 'w'], strides=[2, 2],
                               pads=[0, 0, 1, 1], kernel_shape=[3, 3]),),
           shape=(2, 3, 9, 8), inits={'w': _w(4, 3, 3, 3, scale=0.3)}),
    OpCase('Conv-grouped', (_n('Conv', ['x', 'w'], group=3,
                               dilations=[2, 2], pads=[2, 2, 2, 2]),),
           inits={'w': _w(6, 1, 3, 3, scale=0.3)}),
    OpCase('Conv-same-upper', (_n('Conv', ['x', 'w'], strides=[2, 2],
                                  auto_pad='SAME_UPPER'),),
           shape=(2, 3, 7, 7), inits={'w': _w(2, 3, 4, 4, scale=0.3)}),
    OpCase('Conv-1d', (_n('Conv', ['x', 'w'], pads=[1, 0]),),
           shape=(2, 3, 8), inits={'w': _w(4, 3, 2, scale=0.3)}),
    OpCase('MaxPool', (_n('MaxPool', ['x'], kernel_shape=[3, 3],
                          strides=[2, 2], pads=[1, 1, 1, 1]),)),
    OpCase('MaxPool-ceil', (_n('MaxPool', ['x'], kernel_shape=[3, 3],
                               strides=[2, 2], ceil_mode=1),),
           shape=(2, 3, 8, 9), opset=11),
    OpCase('AveragePool', (_n('AveragePool', ['x'], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1]),)),
    OpCase('AveragePool-include-pad-ceil', (
        _n('AveragePool', ['x'], kernel_shape=[2, 2], strides=[2, 2],
           pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),),
           shape=(2, 3, 7, 8), opset=11),
    OpCase('GlobalAveragePool', (_n('GlobalAveragePool', ['x']),)),
    OpCase('GlobalMaxPool', (_n('GlobalMaxPool', ['x']),)),
    OpCase('Pad', (_n('Pad', ['x', 'p', 'v']),),
           inits={'p': _i64(0, 0, 1, 2, 0, 0, 2, -1),
                  'v': np.asarray(0.5, np.float32)}, opset=11),
    OpCase('Pad-reflect', (_n('Pad', ['x', 'p'], mode='reflect'),),
           inits={'p': _i64(0, 0, 2, 1, 0, 0, 1, 2)}, opset=11),
    OpCase('Pad-edge', (_n('Pad', ['x', 'p'], mode='edge'),),
           inits={'p': _i64(0, 0, 1, 1, 0, 0, 1, 1)}, opset=13),
    OpCase('Pad-opset2', (_n('Pad', ['x'], pads=[0, 0, 1, 1, 0, 0, 1, 1],
                             value=-1.0),), opset=2),
)


def _model(case: OpCase):
  inits = [numpy_helper.from_array(np.asarray(v), k)
           for k, v in case.inits.items()]
  graph = helper.make_graph(
      list(case.nodes), case.name,
      [helper.make_tensor_value_info('x', FLOAT, list(case.shape))],
      [helper.make_tensor_value_info('y', FLOAT, None)], initializer=inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid(
      '', case.opset)])
  model.ir_version = 7 if case.opset < 15 else 8
  return model


def _input(case: OpCase, seed: int = 0) -> np.ndarray:
  shape = tuple(case.batch if isinstance(d, str) else d for d in case.shape)
  return (_rng(seed).standard_normal(shape) * 1.5).astype(np.float32)


def _ours(path: str):
  """The model through the kind's path; `fn(x, dtype)` under jit."""
  folded = onnx_port.fold_to_config(onnx_port.read_model(path))
  config = json.loads(json.dumps(folded.config))  # what meta.json keeps
  graph = onnx_graph.graph_from_config(config)
  params = onnx_port.port_params(folded.params, config)['params']

  @jax.jit
  def f32(x):
    return onnx_graph.apply_graph(graph, params, x)

  @jax.jit
  def bf16(x):
    return onnx_graph.apply_graph(graph, params, x.astype(jnp.bfloat16),
                                  dtype=jnp.bfloat16)
  return {'float32': f32, 'bfloat16': bf16}


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """case name -> (our functions, ORT session), built once per case."""
  cache = {}

  def get(case):
    if case.name not in cache:
      path = str(tmp_path_factory.mktemp('ops') / f'{case.name}.onnx')
      onnx.save(_model(case), path)
      cache[case.name] = (_ours(path), ort.InferenceSession(
          path, providers=['CPUExecutionProvider']))
    return cache[case.name]
  return get


def _relative_error(got, want) -> float:
  got = np.asarray(got, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  scale = max(float(np.abs(want).max()), 1e-6)
  return float(np.abs(got - want).max()) / scale


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_op_matches_onnxruntime_float32(case, compiled):
  ours, session = compiled(case)
  x = _input(case)
  want = session.run(['y'], {'x': x})[0]
  assert float(np.abs(want).max()) > 0.1  # not vacuously close
  got = ours['float32'](x)
  assert np.asarray(got).dtype == np.float32
  assert _relative_error(got, want) <= F32_RELATIVE


@pytest.mark.parametrize('case', [c for c in CASES if c.bf16],
                         ids=lambda c: c.name)
def test_op_bfloat16_within_measured_bound(case, compiled):
  ours, session = compiled(case)
  x = _input(case, seed=1)
  want = session.run(['y'], {'x': x})[0]
  got = ours['bfloat16'](x)
  assert _relative_error(np.asarray(got, np.float32), want) <= BF16_RELATIVE


def test_every_supported_op_has_a_case():
  covered = {op for case in CASES for op in case.covers}
  assert not set(onnx_graph.OPS) - covered, sorted(
      set(onnx_graph.OPS) - covered)
  assert not covered - set(onnx_graph.OPS), sorted(
      covered - set(onnx_graph.OPS))
  # The ops the issue names for insightface's and common CNN exports.
  required = {'Conv', 'BatchNormalization', 'PRelu', 'Relu', 'Add', 'Sub',
              'Mul', 'Div', 'Flatten', 'Reshape', 'Transpose', 'Gemm',
              'MatMul', 'MaxPool', 'AveragePool', 'GlobalAveragePool',
              'Concat', 'Sigmoid', 'Clip', 'Pad', 'ReduceMean', 'ReduceL2',
              'LpNormalization', 'Identity', 'Constant'}
  assert required <= set(onnx_graph.OPS), required - set(onnx_graph.OPS)


def test_dynamic_batch_runs_at_any_batch_size(compiled):
  case = next(c for c in CASES if c.name == 'Shape')
  ours, session = compiled(case)
  for batch in (1, 5):
    x = _input(dataclasses.replace(case, batch=batch))
    want = session.run(['y'], {'x': x})[0]
    assert want.shape == (batch, 48)
    assert _relative_error(ours['float32'](x), want) <= F32_RELATIVE


def test_constant_subgraphs_are_folded_at_load(tmp_path):
  # Constant -> Mul and Transpose(weight) -> MatMul: only what reads the
  # image is left, and the transposed weight is the parameter.
  case = next(c for c in CASES if c.name == 'MatMul-folded-transpose')
  path = str(tmp_path / 'm.onnx')
  onnx.save(_model(case), path)
  config = onnx_port.fold_to_config(onnx_port.read_model(path)).config
  assert [n['op'] for n in config['nodes']] == ['MatMul']
  assert [p[2] for p in config['params']] == [[8, 5]]
  case = next(c for c in CASES if c.name == 'Constant')
  onnx.save(_model(case), path)
  config = onnx_port.fold_to_config(onnx_port.read_model(path)).config
  assert [n['op'] for n in config['nodes']] == ['Mul']
