"""An ONNX graph as a pure, jittable, differentiable JAX function.

`id2image_jax.porting.onnx` reads an ``.onnx`` file (safely), folds its
constant subgraphs and turns it into a JSON-able config (the nodes, the
static integer tensors, the input convention) and variables (every float
initialiser, ``params/<key>``). This module runs that config: `run_nodes`
walks the nodes in order and looks each op up in `OPS`, a table of small
pure rules, one per ONNX op (``rule(ctx, inputs, attrs) -> outputs``).

Shapes stay static under `jax.jit`: integer tensors (shapes, axes, pads,
indices) are numpy arrays, never traced. Constant subgraphs are folded at
load time; what depends on the *shape* of an activation (``Shape -> Gather
-> Unsqueeze -> Concat -> Reshape``, the way exporters spell
``x.view(x.size(0), -1)`` with a dynamic batch) is evaluated in numpy at
trace time, when every shape is known: a rule whose inputs are all numpy
runs with numpy (``ctx.xp``) and returns numpy. So any batch size works and
nothing shape-like is ever a tracer.

`OnnxEncoder` is the Flax module of the ``onnx`` encoder kind: NHWC images
in (the encoder-input convention of the project), the graph's layout
inside, ``(descriptor [B, D], {})`` out. The input convention of the file
(size, crop, channel order, normalisation) is one of `PRESETS`, guessed
from the graph's input shape by `guess_preset` and overridable field by
field (`input_spec_from`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.special
import ml_dtypes
import numpy as np

from id2image_jax import preprocess
from id2image_jax.models import dlib_resnet
from id2image_jax.models import iresnet
from id2image_jax.models import nn as tnn

# ONNX TensorProto.DataType -> numpy dtype (the types a face encoder uses).
DTYPES: dict[int, Any] = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16,
    6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64,
    12: np.uint32, 13: np.uint64, 16: ml_dtypes.bfloat16,
}
_FLOAT_TYPES = (1, 10, 11, 16)


class UnsupportedOpError(ValueError):
  """The graph uses an op (or an op's option) this interpreter lacks."""


class GraphError(ValueError):
  """A node cannot run as the graph asks (names the node)."""


# --- input conventions --------------------------------------------------------

# name -> the InputSpec fields of that convention, with where it comes from.
PRESETS: dict[str, dict[str, Any]] = {
    # insightface (arcface_torch, buffalo_l / antelopev2 packs): 112 px,
    # 5-point similarity alignment to insightface's template (here its
    # place in an FFHQ-aligned image, `iresnet.FFHQ_CROP`), RGB,
    # (x - 127.5) / 127.5.
    'arcface': {'size': (112, 112), 'crop': iresnet.FFHQ_CROP,
                'channel_order': 'RGB', 'mean': (127.5,) * 3,
                'std': (127.5,) * 3},
    # facenet-pytorch (InceptionResnetV1): 160 px MTCNN crops, RGB,
    # fixed_image_standardization (x - 127.5) / 128. The crop is an
    # estimate: the loose face box measured for dlib's chips.
    'facenet': {'size': (160, 160), 'crop': dlib_resnet.FFHQ_CROP,
                'channel_order': 'RGB', 'mean': (127.5,) * 3,
                'std': (128.0,) * 3},
    # OpenCV's SFace (FaceRecognizerSF): insightface's alignment, 112 px,
    # blobFromImage(scale 1, mean 0, swapRB) = raw RGB 0..255.
    'sface': {'size': (112, 112), 'crop': iresnet.FFHQ_CROP,
              'channel_order': 'RGB', 'mean': (0.0,) * 3,
              'std': (1.0,) * 3},
}
# Fields `--set encoder_input.FIELD=` may override.
INPUT_FIELDS = ('preset', 'size', 'crop', 'channel_order', 'mean', 'std')


def image_size(shape: Sequence[Any], layout: str) -> tuple[int, int] | None:
  """(H, W) of a graph input shape in `layout`, None where not fixed."""
  if len(shape) != 4:
    return None
  h, w = (shape[2], shape[3]) if layout == 'NCHW' else (shape[1], shape[2])
  if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
    return int(h), int(w)
  return None


def guess_layout(shape: Sequence[Any]) -> str:
  """'NHWC' when only the last axis has 3 channels, else 'NCHW' (what
  PyTorch, MXNet and Caffe exports use)."""
  if len(shape) == 4 and shape[3] == 3 and shape[1] != 3:
    return 'NHWC'
  return 'NCHW'


def guess_preset(shape: Sequence[Any], layout: str) -> tuple[str, str]:
  """(preset name, why) for a graph input shape.

  112 px inputs are insightface's convention (ArcFace and SFace share size
  and alignment; only the normalisation differs, which the shape cannot
  tell: the reason says so), 160 px FaceNet's; anything else falls back
  to arcface.
  """
  size = image_size(shape, layout)
  shown = [d if isinstance(d, int) else str(d) for d in shape]
  if size == (112, 112):
    return 'arcface', (f'guessed from the {shown} input: 112 px is '
                       'insightface\'s size (OpenCV SFace is too: set '
                       'encoder_input.preset=sface for it)')
  if size == (160, 160):
    return 'facenet', f'guessed from the {shown} input: 160 px is FaceNet\'s'
  return 'arcface', (f'default: the {shown} input matches no preset; check '
                     'the model\'s documentation')


def input_spec_from(preset: str, *,
                    overrides: Mapping[str, Any] | None = None,
                    size: tuple[int, int] | None = None
                    ) -> preprocess.InputSpec:
  """The InputSpec of `preset` with `overrides` (fields of `INPUT_FIELDS`).

  Args:
    preset: a `PRESETS` name.
    overrides: field -> value; empty values (``''``, ``()``) are ignored.
    size: the graph's fixed input size, which beats the preset's.

  Raises:
    ValueError: unknown preset or field, or an invalid value.
  """
  overrides = {k: v for k, v in (overrides or {}).items()
               if v not in ('', (), None, []) and k != 'preset'}
  unknown = sorted(set(overrides) - set(INPUT_FIELDS))
  if unknown:
    raise ValueError(f'unknown encoder_input field(s) {unknown}; fields: '
                     f'{INPUT_FIELDS}')
  if preset not in PRESETS:
    raise ValueError(f'unknown encoder_input.preset {preset!r}; presets: '
                     f'{sorted(PRESETS)}')
  fields = dict(PRESETS[preset])
  if size is not None:
    fields['size'] = size
  fields.update(overrides)
  return preprocess.InputSpec(**fields)


def describe_spec(spec: preprocess.InputSpec) -> str:
  """One line a user can compare with a model's documentation."""
  mean = ','.join(f'{m:g}' for m in spec.mean)
  std = ','.join(f'{s:g}' for s in spec.std)
  crop = ','.join(f'{c:.3f}' for c in spec.crop)
  return (f'{spec.size[0]}x{spec.size[1]} {spec.channel_order}, (x - '
          f'[{mean}]) / [{std}] on 0..255, crop [{crop}] of the FFHQ-aligned '
          'image')


# --- the graph ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
  """One ONNX node: op type, name, tensor names in / out, attributes."""
  op: str
  name: str
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  attrs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
  """What `OnnxEncoder` runs (built from a config by `graph_from_config`).

  Attributes:
    file: the model's file name (for messages).
    opset: the default-domain opset version.
    input: the image input's tensor name.
    input_shape: its declared shape (str for a symbolic dimension).
    layout: 'NCHW' or 'NHWC', the image input's layout.
    output: the descriptor's tensor name.
    nodes: in an order where every input is ready before its node.
    params: (variable key, tensor name, shape) of every float constant.
    constants: tensor name -> numpy array, the static (integer) constants.
  """
  file: str
  opset: int
  input: str
  input_shape: tuple[Any, ...]
  layout: str
  output: str
  nodes: tuple[Node, ...]
  params: tuple[tuple[str, str, tuple[int, ...]], ...]
  constants: Mapping[str, np.ndarray]

  @property
  def size(self) -> tuple[int, int] | None:
    return image_size(self.input_shape, self.layout)


def array_to_config(value: np.ndarray) -> dict[str, Any]:
  """A static tensor as JSON: dtype, shape, flat values."""
  value = np.asarray(value)
  return {'dtype': value.dtype.name, 'shape': list(value.shape),
          'values': value.ravel().tolist()}


def array_from_config(entry: Mapping[str, Any]) -> np.ndarray:
  return np.asarray(entry['values'], dtype=np.dtype(entry['dtype'])).reshape(
      tuple(entry['shape']))


def _attr_from_config(value: Any) -> Any:
  if isinstance(value, Mapping) and 'dtype' in value:
    return array_from_config(value)
  if isinstance(value, list):
    return tuple(value)
  return value


def graph_from_config(config: Mapping[str, Any]) -> Graph:
  """The `Graph` of a config written by `porting.onnx.convert`."""
  nodes = tuple(
      Node(op=n['op'], name=n['name'], inputs=tuple(n['inputs']),
           outputs=tuple(n['outputs']),
           attrs={k: _attr_from_config(v) for k, v in n['attrs'].items()})
      for n in config['nodes'])
  shape = tuple(d if isinstance(d, int) else str(d)
                for d in config['input_shape'])
  return Graph(
      file=config.get('file', 'model.onnx'), opset=int(config['opset']),
      input=config['input'], input_shape=shape, layout=config['layout'],
      output=config['output'], nodes=nodes,
      params=tuple((p[0], p[1], tuple(int(d) for d in p[2]))
                   for p in config['params']),
      constants={k: array_from_config(v)
                 for k, v in config['constants'].items()})


def abstract_variables(config: Mapping[str, Any]) -> dict[str, Any]:
  """``{'params': {key: ShapeDtypeStruct}}`` of a config (float32)."""
  return {'params': {p[0]: jax.ShapeDtypeStruct(tuple(p[2]), jnp.float32)
                     for p in config['params']}}


# --- the op rules -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Context:
  """What a rule may need besides its inputs.

  Attributes:
    node: the node being run (for messages).
    opset: the model's opset (ops changed their signature over versions).
    dtype: the compute dtype floats run in.
    xp: `numpy` when every input is static (numpy), else `jax.numpy`.
  """
  node: Node
  opset: int
  dtype: Any
  xp: Any

  def fail(self, why: str) -> GraphError:
    return GraphError(f'node {self.node.name!r} ({self.node.op}): {why}')

  def static(self, value: Any, what: str) -> np.ndarray:
    """`value` as numpy; an error naming the input if it is traced."""
    if value is None:
      raise self.fail(f'needs its {what} input')
    if isinstance(value, jax.core.Tracer) or not isinstance(
        value, (np.ndarray, np.generic)):
      raise self.fail(
          f'its {what} must be known when the graph is traced (a constant '
          'or computed from shapes), but it depends on the image values')
    return np.asarray(value)

  def ints(self, value: Any, what: str) -> list[int]:
    return [int(v) for v in self.static(value, what).ravel()]


@dataclasses.dataclass(frozen=True)
class Op:
  """A rule and whether it also runs on numpy (static evaluation)."""
  fn: Callable[[Context, list[Any], Mapping[str, Any]], Sequence[Any]]
  numpy: bool = True


OPS: dict[str, Op] = {}


def _op(*names: str, numpy: bool = True):
  def register(fn):
    for name in names:
      OPS[name] = Op(fn, numpy=numpy)
    return fn
  return register


def _axis(axis: int, rank: int) -> int:
  return axis + rank if axis < 0 else axis


def _float(ctx: Context, x: Any) -> Any:
  """Float arrays in the compute dtype (numpy ones stay numpy)."""
  if ctx.xp is np:
    return x
  return x.astype(ctx.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x


# Elementwise, numpy broadcasting (ONNX's multidirectional broadcasting).
_BINARY = {
    'Add': lambda xp: xp.add, 'Sub': lambda xp: xp.subtract,
    'Mul': lambda xp: xp.multiply, 'Pow': lambda xp: xp.power,
    'Equal': lambda xp: xp.equal, 'Less': lambda xp: xp.less,
    'Greater': lambda xp: xp.greater,
}


def _binary(name):
  def rule(ctx, inputs, attrs):
    del attrs
    a, b = inputs
    if name == 'Pow' and ctx.xp is not np:
      # x ** integer-valued float stays real for negative x, as in ORT.
      return [jnp.power(a, b.astype(a.dtype))]
    return [_BINARY[name](ctx.xp)(a, b)]
  return rule


for _name in _BINARY:
  _op(_name)(_binary(_name))


@_op('Div')
def _div(ctx, inputs, attrs):
  del attrs
  a, b = inputs
  if ctx.xp.issubdtype(a.dtype, ctx.xp.integer):
    # ONNX integer division truncates towards zero.
    q = ctx.xp.abs(a) // ctx.xp.abs(b)
    return [(q * ctx.xp.sign(a) * ctx.xp.sign(b)).astype(a.dtype)]
  return [a / b]


def _erf(xp):
  if xp is np:
    return np.vectorize(math.erf, otypes=[np.float32])
  return jax.scipy.special.erf


_UNARY: dict[str, Callable[[Any], Callable[[Any], Any]]] = {
    'Relu': lambda xp: lambda x: xp.maximum(x, xp.zeros((), x.dtype)),
    'Sigmoid': lambda xp: lambda x: 1 / (1 + xp.exp(-x)),
    'Tanh': lambda xp: xp.tanh, 'Exp': lambda xp: xp.exp,
    'Log': lambda xp: xp.log, 'Sqrt': lambda xp: xp.sqrt,
    'Abs': lambda xp: xp.abs, 'Neg': lambda xp: xp.negative,
    'Reciprocal': lambda xp: xp.reciprocal, 'Floor': lambda xp: xp.floor,
    'Ceil': lambda xp: xp.ceil, 'Erf': _erf,
    'Identity': lambda xp: lambda x: x,
    'Not': lambda xp: xp.logical_not,
}


def _unary(name):
  def rule(ctx, inputs, attrs):
    del attrs
    if name == 'Sigmoid' and ctx.xp is not np:
      return [jax.nn.sigmoid(inputs[0])]
    return [_UNARY[name](ctx.xp)(inputs[0])]
  return rule


for _name in _UNARY:
  _op(_name)(_unary(_name))


@_op('Dropout')
def _dropout(ctx, inputs, attrs):
  # Inference: the identity (the mask output is refused at load time).
  del ctx, attrs
  return [inputs[0]]


@_op('LeakyRelu')
def _leaky_relu(ctx, inputs, attrs):
  x = inputs[0]
  return [ctx.xp.where(x >= 0, x, x * attrs.get('alpha', 0.01))]


@_op('PRelu')
def _prelu(ctx, inputs, attrs):
  del attrs
  x, slope = inputs
  return [ctx.xp.where(x >= 0, x, x * slope)]


@_op('HardSigmoid')
def _hard_sigmoid(ctx, inputs, attrs):
  x = inputs[0]
  y = x * attrs.get('alpha', 0.2) + attrs.get('beta', 0.5)
  return [ctx.xp.clip(y, 0, 1).astype(x.dtype)]


@_op('HardSwish')
def _hard_swish(ctx, inputs, attrs):
  del attrs
  x = inputs[0]
  return [x * ctx.xp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)]


@_op('Softplus')
def _softplus(ctx, inputs, attrs):
  del attrs
  x = inputs[0]
  if ctx.xp is np:
    return [np.logaddexp(x, 0).astype(x.dtype)]
  return [jax.nn.softplus(x)]


@_op('Elu')
def _elu(ctx, inputs, attrs):
  x = inputs[0]
  alpha = attrs.get('alpha', 1.0)
  return [ctx.xp.where(x > 0, x, alpha * (ctx.xp.exp(x) - 1)).astype(x.dtype)]


@_op('Clip')
def _clip(ctx, inputs, attrs):
  x = inputs[0]
  if ctx.opset < 11:
    lo, hi = attrs.get('min'), attrs.get('max')
  else:
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
  if lo is not None:
    x = ctx.xp.maximum(x, ctx.xp.asarray(lo, x.dtype))
  if hi is not None:
    x = ctx.xp.minimum(x, ctx.xp.asarray(hi, x.dtype))
  return [x]


def _variadic(fn_name):
  def rule(ctx, inputs, attrs):
    del attrs
    fn = getattr(ctx.xp, fn_name)
    return [functools.reduce(fn, inputs)]
  return rule


_op('Max')(_variadic('maximum'))
_op('Min')(_variadic('minimum'))
_op('Sum')(_variadic('add'))


@_op('Where')
def _where(ctx, inputs, attrs):
  del attrs
  return [ctx.xp.where(*inputs)]


# --- shapes and indexing (all of these also run in numpy) ---------------------


@_op('Shape')
def _shape(ctx, inputs, attrs):
  del ctx
  # Static even under jit: the traced array's shape is known.
  shape = np.asarray(np.shape(inputs[0]), np.int64)
  start, end = attrs.get('start', 0), attrs.get('end')
  return [shape[start:end]]


@_op('Size')
def _size(ctx, inputs, attrs):
  del ctx, attrs
  return [np.asarray(np.size(inputs[0]), np.int64)]


@_op('Constant')
def _constant(ctx, inputs, attrs):
  del inputs
  for key in ('value', 'value_float', 'value_int', 'value_floats',
              'value_ints'):
    if key in attrs:
      dtype = np.float32 if 'float' in key else (
          np.int64 if 'int' in key else None)
      return [np.asarray(attrs[key], dtype)]
  raise ctx.fail('has no value attribute this interpreter reads')


@_op('ConstantOfShape')
def _constant_of_shape(ctx, inputs, attrs):
  shape = ctx.ints(inputs[0], 'shape')
  value = np.asarray(attrs.get('value', np.zeros((1,), np.float32)))
  return [np.full(shape, value.ravel()[0], value.dtype)]


@_op('Cast')
def _cast(ctx, inputs, attrs):
  to = int(attrs['to'])
  if to not in DTYPES:
    raise ctx.fail(f'casts to ONNX type {to}, which is not supported')
  x = inputs[0]
  if ctx.xp is np:
    return [np.asarray(x).astype(DTYPES[to])]
  # Floats run in the compute dtype whatever the file's float type; traced
  # 64-bit integers are JAX's default int (int32 unless x64 is enabled).
  if to in _FLOAT_TYPES:
    return [x.astype(ctx.dtype)]
  return [x.astype(jax.dtypes.canonicalize_dtype(DTYPES[to]))]


@_op('Reshape')
def _reshape(ctx, inputs, attrs):
  x = inputs[0]
  shape = ctx.ints(inputs[1], 'shape')
  if not attrs.get('allowzero', 0):
    # 0 copies the input's dimension.
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
  return [x.reshape(shape)]


@_op('Flatten')
def _flatten(ctx, inputs, attrs):
  del ctx
  x = inputs[0]
  axis = _axis(attrs.get('axis', 1), x.ndim)
  return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)),
                    int(np.prod(x.shape[axis:], dtype=np.int64)))]


@_op('Transpose')
def _transpose(ctx, inputs, attrs):
  x = inputs[0]
  perm = attrs.get('perm')
  return [ctx.xp.transpose(x, tuple(perm) if perm is not None else None)]


def _axes(ctx, inputs, attrs, index, rank) -> list[int] | None:
  """Axes from the attribute (older opsets) or the `index`-th input."""
  if 'axes' in attrs:
    axes = list(attrs['axes'])
  elif len(inputs) > index and inputs[index] is not None:
    axes = ctx.ints(inputs[index], 'axes')
  else:
    return None
  return [_axis(a, rank) for a in axes]


@_op('Unsqueeze')
def _unsqueeze(ctx, inputs, attrs):
  x = inputs[0]
  axes = (list(attrs['axes']) if 'axes' in attrs
          else ctx.ints(inputs[1], 'axes'))
  rank = x.ndim + len(axes)
  for a in sorted(_axis(a, rank) for a in axes):
    x = ctx.xp.expand_dims(x, a)
  return [x]


@_op('Squeeze')
def _squeeze(ctx, inputs, attrs):
  x = inputs[0]
  axes = _axes(ctx, inputs, attrs, 1, x.ndim)
  if axes is None:
    axes = [i for i, d in enumerate(x.shape) if d == 1]
  return [ctx.xp.squeeze(x, tuple(axes))]


@_op('Concat')
def _concat(ctx, inputs, attrs):
  parts = [v for v in inputs if v is not None]
  axis = _axis(attrs['axis'], parts[0].ndim)
  return [ctx.xp.concatenate(parts, axis=axis)]


@_op('Gather')
def _gather(ctx, inputs, attrs):
  x, indices = inputs
  axis = _axis(attrs.get('axis', 0), x.ndim)
  # Negative indices count from the end; static ones stay numpy.
  xp = np if _is_static(indices) else jnp
  indices = xp.where(indices < 0, indices + x.shape[axis], indices)
  return [ctx.xp.take(x, indices, axis=axis)]


def _slice_params(ctx, inputs, attrs, rank):
  if ctx.opset < 10:
    starts, ends = list(attrs['starts']), list(attrs['ends'])
    axes = list(attrs.get('axes', range(len(starts))))
    steps = [1] * len(starts)
  else:
    starts = ctx.ints(inputs[1], 'starts')
    ends = ctx.ints(inputs[2], 'ends')
    axes = (ctx.ints(inputs[3], 'axes') if len(inputs) > 3 and
            inputs[3] is not None else list(range(len(starts))))
    steps = (ctx.ints(inputs[4], 'steps') if len(inputs) > 4 and
             inputs[4] is not None else [1] * len(starts))
  return starts, ends, [_axis(a, rank) for a in axes], steps


@_op('Slice')
def _slice(ctx, inputs, attrs):
  x = inputs[0]
  starts, ends, axes, steps = _slice_params(ctx, inputs, attrs, x.ndim)
  index = [slice(None)] * x.ndim
  for start, end, axis, step in zip(starts, ends, axes, steps):
    if step == 0:
      raise ctx.fail('a slice step of 0')
    dim = x.shape[axis]
    # ONNX clamps to [0, dim] (step > 0) or [-1, dim - 1] (step < 0), where
    # -1 means "before the first element", which Python spells None.
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
      start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
      start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
    index[axis] = slice(start, None if end < 0 else end, step)
  return [x[tuple(index)]]


@_op('Split')
def _split(ctx, inputs, attrs):
  x = inputs[0]
  axis = _axis(attrs.get('axis', 0), x.ndim)
  if 'split' in attrs:
    sizes = list(attrs['split'])
  elif len(inputs) > 1 and inputs[1] is not None:
    sizes = ctx.ints(inputs[1], 'split')
  else:
    n = attrs.get('num_outputs', len(ctx.node.outputs))
    each = -(-x.shape[axis] // n)
    sizes = [min(each, x.shape[axis] - i * each) for i in range(n)]
  cuts = np.cumsum(sizes)[:-1].tolist()
  return ctx.xp.split(x, cuts, axis=axis)


@_op('Expand')
def _expand(ctx, inputs, attrs):
  del attrs
  x = inputs[0]
  shape = np.broadcast_shapes(x.shape, tuple(ctx.ints(inputs[1], 'shape')))
  return [ctx.xp.broadcast_to(x, shape)]


@_op('Tile')
def _tile(ctx, inputs, attrs):
  del attrs
  return [ctx.xp.tile(inputs[0], ctx.ints(inputs[1], 'repeats'))]


@_op('Range')
def _range(ctx, inputs, attrs):
  del attrs
  start, limit, delta = (ctx.static(v, n) for v, n in zip(
      inputs, ('start', 'limit', 'delta')))
  return [np.arange(start, limit, delta, dtype=np.asarray(start).dtype)]


# --- reductions and normalisations ------------------------------------------


def _reduce(kind):
  def rule(ctx, inputs, attrs):
    x = inputs[0]
    axes = _axes(ctx, inputs, attrs, 1, x.ndim)
    if axes is None or not axes:
      if attrs.get('noop_with_empty_axes', 0):
        return [x]
      axes = list(range(x.ndim))
    keep = bool(attrs.get('keepdims', 1))
    axes = tuple(axes)
    xp = ctx.xp
    if kind == 'mean':
      return [xp.mean(x, axis=axes, keepdims=keep)]
    if kind == 'sum':
      return [xp.sum(x, axis=axes, keepdims=keep)]
    if kind == 'max':
      return [xp.max(x, axis=axes, keepdims=keep)]
    if kind == 'min':
      return [xp.min(x, axis=axes, keepdims=keep)]
    if kind == 'l1':
      return [xp.sum(xp.abs(x), axis=axes, keepdims=keep)]
    return [xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keep))]  # l2
  return rule


for _name, _kind in (('ReduceMean', 'mean'), ('ReduceSum', 'sum'),
                     ('ReduceMax', 'max'), ('ReduceMin', 'min'),
                     ('ReduceL1', 'l1'), ('ReduceL2', 'l2')):
  _op(_name)(_reduce(_kind))


@_op('LpNormalization')
def _lp_normalization(ctx, inputs, attrs):
  x = inputs[0]
  axis = attrs.get('axis', -1)
  p = attrs.get('p', 2)
  if p not in (1, 2):
    raise ctx.fail(f'p={p}: only p = 1 or 2 exist in ONNX')
  xp = ctx.xp
  norm = (xp.sum(xp.abs(x), axis=axis, keepdims=True) if p == 1 else
          xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True)))
  return [x / norm]


@_op('Softmax', 'LogSoftmax')
def _softmax(ctx, inputs, attrs):
  x = inputs[0]
  log = ctx.node.op == 'LogSoftmax'
  default = 1 if ctx.opset < 13 else -1
  axis = _axis(attrs.get('axis', default), x.ndim)
  xp = ctx.xp
  shape = x.shape
  if ctx.opset < 13:
    # Before opset 13 the input is coerced to 2-D at `axis`.
    x = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
    axis = 1
  z = x - xp.max(x, axis=axis, keepdims=True)
  lse = xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))
  y = z - lse if log else xp.exp(z - lse)
  return [y.reshape(shape)]


@_op('BatchNormalization', numpy=False)
def _batch_norm(ctx, inputs, attrs):
  if len(ctx.node.outputs) > 1:
    raise UnsupportedOpError(
        f'node {ctx.node.name!r}: BatchNormalization in training mode')
  x, scale, bias, mean, var = inputs
  eps = attrs.get('epsilon', 1e-5)
  shape = (1, -1) + (1,) * (x.ndim - 2)
  # Folded into one multiply-add, as ORT does.
  a = scale * jax.lax.rsqrt(var.astype(jnp.float32) + eps).astype(var.dtype)
  b = bias - mean * a
  return [x * a.reshape(shape) + b.reshape(shape)]


@_op('InstanceNormalization', numpy=False)
def _instance_norm(ctx, inputs, attrs):
  del ctx
  x, scale, bias = inputs
  eps = attrs.get('epsilon', 1e-5)
  axes = tuple(range(2, x.ndim))
  mean = x.mean(axes, keepdims=True)
  var = ((x - mean) ** 2).mean(axes, keepdims=True)
  shape = (1, -1) + (1,) * (x.ndim - 2)
  return [(x - mean) * jax.lax.rsqrt(var + eps) * scale.reshape(shape)
          + bias.reshape(shape)]


@_op('LayerNormalization', numpy=False)
def _layer_norm(ctx, inputs, attrs):
  if len(ctx.node.outputs) > 1:
    raise UnsupportedOpError(
        f'node {ctx.node.name!r}: LayerNormalization with mean / inv-std '
        'outputs')
  x, scale = inputs[0], inputs[1]
  bias = inputs[2] if len(inputs) > 2 else None
  axis = _axis(attrs.get('axis', -1), x.ndim)
  axes = tuple(range(axis, x.ndim))
  mean = x.mean(axes, keepdims=True)
  var = ((x - mean) ** 2).mean(axes, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + attrs.get('epsilon', 1e-5)) * scale
  return [y if bias is None else y + bias]


# --- dense and convolutional layers -----------------------------------------


@_op('MatMul')
def _matmul(ctx, inputs, attrs):
  del attrs
  return [ctx.xp.matmul(*inputs)]


@_op('Gemm')
def _gemm(ctx, inputs, attrs):
  a, b = inputs[0], inputs[1]
  c = inputs[2] if len(inputs) > 2 else None
  if attrs.get('transA', 0):
    a = a.T
  if attrs.get('transB', 0):
    b = b.T
  y = ctx.xp.matmul(a, b)
  alpha, beta = attrs.get('alpha', 1.0), attrs.get('beta', 1.0)
  if alpha != 1.0:
    y = y * alpha
  if c is not None:
    y = y + (c * beta if beta != 1.0 else c)
  return [y]


def _spatial_pads(ctx, attrs, x_spatial, kernel, strides, dilations):
  """(begin, end) per spatial axis from ``pads`` or ``auto_pad``."""
  n = len(kernel)
  auto = attrs.get('auto_pad', 'NOTSET')
  if isinstance(auto, bytes):
    auto = auto.decode()
  if auto in ('NOTSET', ''):
    pads = list(attrs.get('pads', [0] * (2 * n)))
    return list(zip(pads[:n], pads[n:]))
  if auto == 'VALID':
    return [(0, 0)] * n
  if auto not in ('SAME_UPPER', 'SAME_LOWER'):
    raise ctx.fail(f'auto_pad={auto!r}')
  out = []
  for size, k, s, d in zip(x_spatial, kernel, strides, dilations):
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    small, big = total // 2, total - total // 2
    out.append((small, big) if auto == 'SAME_UPPER' else (big, small))
  return out


def _spatial_letters(n: int) -> str:
  return 'DHW'[-n:] if n <= 3 else ''.join(chr(ord('a') + i)
                                           for i in range(n))


@_op('Conv', numpy=False)
def _conv(ctx, inputs, attrs):
  x, w = inputs[0], inputs[1]
  bias = inputs[2] if len(inputs) > 2 else None
  n = x.ndim - 2
  kernel = tuple(attrs.get('kernel_shape', w.shape[2:]))
  strides = tuple(attrs.get('strides', (1,) * n))
  dilations = tuple(attrs.get('dilations', (1,) * n))
  pads = _spatial_pads(ctx, attrs, x.shape[2:], kernel, strides, dilations)
  s = _spatial_letters(n)
  y = jax.lax.conv_general_dilated(
      x, w.astype(x.dtype), window_strides=strides, padding=pads,
      rhs_dilation=dilations, feature_group_count=attrs.get('group', 1),
      dimension_numbers=('NC' + s, 'OI' + s, 'NC' + s))
  if bias is not None:
    y = y + bias.astype(y.dtype).reshape((1, -1) + (1,) * n)
  return [y]


def _pool_output(size, k, s, d, begin, end, ceil_mode):
  """ONNX's pool output length; like PyTorch (and ORT), a ceil-mode window
  that would start in the end padding is dropped."""
  span = size + begin + end - ((k - 1) * d + 1)
  out = (-(-span // s) if ceil_mode else span // s) + 1
  if ceil_mode and (out - 1) * s >= size + begin:
    out -= 1
  return out


def _pool(ctx, x, attrs, *, init, op):
  """reduce_window over the spatial axes with ONNX's pads and ceil_mode.

  Returns (window sums / maxima, the padding per axis with the ceil-mode
  extra, the explicit pads) for AveragePool's divisor.
  """
  n = x.ndim - 2
  kernel = tuple(attrs['kernel_shape'])
  strides = tuple(attrs.get('strides', (1,) * n))
  dilations = tuple(attrs.get('dilations', (1,) * n))
  pads = _spatial_pads(ctx, attrs, x.shape[2:], kernel, strides, dilations)
  ceil = bool(attrs.get('ceil_mode', 0))
  config = []
  for size, k, s, d, (b, e) in zip(x.shape[2:], kernel, strides, dilations,
                                   pads):
    out = _pool_output(size, k, s, d, b, e, ceil)
    config.append((b, (out - 1) * s + (k - 1) * d + 1 - size - b))
  padded = jax.lax.pad(x, jnp.asarray(init, x.dtype),
                       [(0, 0, 0)] * 2 + [(b, e, 0) for b, e in config])
  y = jax.lax.reduce_window(padded, jnp.asarray(init, x.dtype), op,
                            (1, 1) + kernel, (1, 1) + strides, 'VALID',
                            window_dilation=(1, 1) + dilations)
  return y, config, pads, (kernel, strides, dilations)


@_op('MaxPool', numpy=False)
def _max_pool(ctx, inputs, attrs):
  if len(ctx.node.outputs) > 1:
    raise UnsupportedOpError(f'node {ctx.node.name!r}: MaxPool with an '
                             'Indices output')
  x = inputs[0]
  y, *_ = _pool(ctx, x, attrs, init=-jnp.inf, op=jax.lax.max)
  return [y]


@_op('AveragePool', numpy=False)
def _average_pool(ctx, inputs, attrs):
  x = inputs[0]
  total, config, pads, (kernel, strides, dil) = _pool(
      ctx, x, attrs, init=0.0, op=jax.lax.add)
  spatial = x.shape[2:]
  ones = jnp.ones((1, 1) + spatial, x.dtype)
  if attrs.get('count_include_pad', 0):
    # The explicit pads count; what ceil_mode adds beyond them does not.
    ones = jnp.pad(ones, [(0, 0)] * 2 + list(pads), constant_values=1.0)
    extra = [(0, e - pe) for (_, e), (_, pe) in zip(config, pads)]
  else:
    extra = config
  count = jax.lax.reduce_window(
      jax.lax.pad(ones, jnp.zeros((), x.dtype),
                  [(0, 0, 0)] * 2 + [(b, e, 0) for b, e in extra]),
      jnp.zeros((), x.dtype), jax.lax.add, (1, 1) + kernel,
      (1, 1) + strides, 'VALID', window_dilation=(1, 1) + dil)
  return [total / count]


@_op('GlobalAveragePool', numpy=False)
def _global_average_pool(ctx, inputs, attrs):
  del ctx, attrs
  x = inputs[0]
  return [x.mean(tuple(range(2, x.ndim)), keepdims=True)]


@_op('GlobalMaxPool', numpy=False)
def _global_max_pool(ctx, inputs, attrs):
  del ctx, attrs
  x = inputs[0]
  return [x.max(tuple(range(2, x.ndim)), keepdims=True)]


@_op('Pad')
def _pad(ctx, inputs, attrs):
  x = inputs[0]
  mode = attrs.get('mode', 'constant')
  mode = mode.decode() if isinstance(mode, bytes) else mode
  if ctx.opset < 11:
    pads, value = list(attrs['pads']), attrs.get('value', 0.0)
    axes = list(range(x.ndim))
  else:
    pads = ctx.ints(inputs[1], 'pads')
    value = (inputs[2] if len(inputs) > 2 and inputs[2] is not None
             else 0)
    axes = (_axes(ctx, inputs, {}, 3, x.ndim) or list(range(x.ndim)))
  n = len(axes)
  widths = [(0, 0)] * x.ndim
  for i, axis in enumerate(axes):
    widths[axis] = (pads[i], pads[i + n])
  # Negative pads crop.
  crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0))
               for i, (b, e) in enumerate(widths))
  x = x[crop]
  widths = [(max(b, 0), max(e, 0)) for b, e in widths]
  xp = ctx.xp
  if mode == 'constant':
    value = xp.asarray(value, x.dtype).reshape(())
    return [xp.pad(x, widths, mode='constant', constant_values=value)]
  if mode in ('reflect', 'edge'):
    return [xp.pad(x, widths, mode=mode)]
  raise ctx.fail(f'Pad mode {mode!r}')


# --- running a graph ----------------------------------------------------------


def _is_static(value: Any) -> bool:
  return value is None or isinstance(value, (np.ndarray, np.generic))


def run_node(node: Node, inputs: list[Any], *, opset: int,
             dtype: Any = jnp.float32) -> list[Any]:
  """Runs one node: in numpy if every input is numpy and the op allows it.

  Raises:
    UnsupportedOpError: the op is not in `OPS`.
    GraphError: the node cannot run on these inputs (names it).
  """
  op = OPS.get(node.op)
  if op is None:
    raise UnsupportedOpError(f'op {node.op} (node {node.name!r}) is not '
                             'supported')
  if op.numpy and all(_is_static(v) for v in inputs):
    ctx = Context(node, opset, dtype, np)
    outputs = [np.asarray(v) for v in op.fn(ctx, inputs, node.attrs)]
  else:
    ctx = Context(node, opset, dtype, jnp)
    # Static floats join traced arrays in the compute dtype; integers stay
    # numpy (they are shapes, axes, indices).
    inputs = [v if v is None or (_is_static(v) and not np.issubdtype(
        np.asarray(v).dtype, np.floating)) else _float(ctx, jnp.asarray(v))
              for v in inputs]
    try:
      outputs = list(op.fn(ctx, inputs, node.attrs))
    except (TypeError, ValueError) as e:
      if isinstance(e, (GraphError, UnsupportedOpError)):
        raise
      raise ctx.fail(str(e)) from e
  if len(outputs) < len([o for o in node.outputs if o]):
    raise GraphError(f'node {node.name!r} ({node.op}): gives '
                     f'{len(outputs)} output(s), the graph wants '
                     f'{len(node.outputs)}')
  return outputs


def run_nodes(nodes: Sequence[Node], values: Mapping[str, Any], *,
              opset: int, dtype: Any = jnp.float32) -> dict[str, Any]:
  """Runs `nodes` in order on `values` (tensor name -> array).

  Returns:
    Every tensor by name, the inputs included.
  """
  env = dict(values)
  for node in nodes:
    inputs = [env[name] if name else None for name in node.inputs]
    for name, value in zip(node.outputs, run_node(node, inputs, opset=opset,
                                                  dtype=dtype)):
      if name:
        env[name] = value
  return env


def apply_graph(graph: Graph, params: Mapping[str, Any], x: jax.Array, *,
                dtype: Any = jnp.float32) -> jax.Array:
  """The graph's descriptor output for input `x` (in the graph's layout)."""
  values = dict(graph.constants)
  for key, name, _ in graph.params:
    values[name] = params[key].astype(dtype)
  values[graph.input] = x
  env = run_nodes(graph.nodes, values, opset=graph.opset, dtype=dtype)
  return env[graph.output]


class OnnxEncoder(nn.Module):
  """An ONNX face encoder: ``(x [B, H, W, 3]) -> (descriptor [B, D], {})``.

  Attributes:
    graph: the `Graph` (from the config by `graph_from_config`).
    channel_order: of the input, for messages ('RGB' / 'BGR').
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
  """
  graph: Graph
  channel_order: str = 'RGB'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Embeds preprocessed faces.

    Args:
      x: [B, H, W, 3] from `preprocess.to_encoder_input` with the kind's
        input spec; (H, W) must be the graph's when it fixes them.

    Returns:
      descriptor: [B, D] in `dtype` (the graph's first output, flattened
        after the batch axis); intermediates: {} (an ONNX file names no
        layers worth tapping).
    """
    g = self.graph
    x = jnp.asarray(x)
    size = g.size or (x.shape[1:3] if x.ndim == 4 else (0, 0))
    tnn.check_image_input(x, size, model=f'ONNX model {g.file}',
                          channels=self.channel_order, batched=True)
    params = {key: self.param(key, nn.initializers.zeros_init(), shape,
                              jnp.float32)
              for key, _, shape in g.params}
    x = x.astype(self.dtype)
    if g.layout == 'NCHW':
      x = jnp.transpose(x, (0, 3, 1, 2))
    y = jnp.asarray(apply_graph(g, params, x, dtype=self.dtype))
    return y.reshape(y.shape[0], -1).astype(self.dtype), {}


def build(config: Mapping[str, Any], *, dtype: Any = jnp.float32
          ) -> OnnxEncoder:
  """The module of a config written by `porting.onnx.convert`."""
  return OnnxEncoder(graph=graph_from_config(config),
                     channel_order=config['input_spec']['channel_order'],
                     dtype=dtype or jnp.float32)


def input_spec(config: Mapping[str, Any]) -> preprocess.InputSpec:
  """The input convention stored in the config (preset + overrides)."""
  return preprocess.InputSpec(**config['input_spec'])
