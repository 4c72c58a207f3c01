"""Reads networks saved by dlib's DNN toolkit (``serialize(net, out)``).

Pure numpy: dlib is not needed.

dlib writes a network as nested objects (``dlib/dnn/core.h``): the loss layer
writes its version, its own details and then its subnetwork; every
``add_layer`` writes its version and then *its subnetwork first*, and only
afterwards its own layer details, flags and (usually empty) cached tensors.
So a file lists all wrapper versions from the output inwards, then the input
layer, then the layers' details from the input outwards. Tag and skip layers
(``tag1``, ``skip1``) write just a version, and ``add_prev_`` does not record
which tag it reads: the wiring of the graph is not in the file. Reading
therefore needs the expected layer sequence (`Expect`), and every layer found
is checked against it, with an error naming the layer index, what was
expected and what was found.

Primitive encodings (``dlib/serialize.h``):

* integers: a control byte (bit 7 = negative, low 4 bits = byte count n)
  followed by n little-endian magnitude bytes; unsigned types reject bit 7;
* floats (the *portable* format): the ``float_details`` pair, i.e. a signed
  integer mantissa followed by a signed 16-bit exponent, both as integers
  above (mantissa first: the comment in serialize.h says exponent first,
  the code and the files disagree with it); the value is ``mantissa * 2**exponent`` except for the exponents
  32000 / 32001 / 32002 which mean +inf / -inf / NaN;
* bool: the ASCII byte ``'1'`` or ``'0'``;
* strings: an unsigned length then the raw bytes;
* tensors (``dlib/cuda/tensor.h``): version, then num_samples, k, nr, nc;
  version 2 stores raw little-endian IEEE float32 values, version 1 (dlib
  before 2016) the portable float format per value (decoded vectorised by
  `decode_floats`); alias tensors store only their shape.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from id2image_jax.porting.safe_load import CheckpointError

# float_details exponents that encode non-finite values (dlib/float_details.h).
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
# Bits of an integer control byte that dlib never sets; the old ASCII float
# format always has one of them set (digits, '-', 'i', 'n', 'N').
_RESERVED_BITS = 0x70

# Byte sizes of the C++ types dlib deserialises into (LP64, as in dlib-bin).
_INT, _LONG, _INT16 = 4, 8, 2

# Layer kinds that are pure wrappers (version only, no details).
MARKERS = ('tag', 'skip')


class DlibFormatError(CheckpointError):
  """The stream is not a dlib network of the expected structure."""


# --------------------------------------------------------------------------
# Primitives.
# --------------------------------------------------------------------------


class Reader:
  """Sequential reader of dlib's serialization primitives.

  Every method names what it reads (`what`) so that errors say which field
  of which layer was bad and at which byte offset.
  """

  def __init__(self, data: bytes, *, source: str = 'dlib stream'):
    self.data = memoryview(data)
    self.array = np.frombuffer(data, np.uint8)
    self.pos = 0
    self.source = source

  def error(self, message: str, at: int | None = None) -> DlibFormatError:
    at = self.pos if at is None else at
    return DlibFormatError(f'{self.source}: {message} (at byte {at} of '
                           f'{len(self.data)})')

  def _take(self, n: int, what: str) -> memoryview:
    if self.pos + n > len(self.data):
      raise self.error(f'truncated: needed {n} byte(s) for {what}, only '
                       f'{len(self.data) - self.pos} left')
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def int(self, what: str, *, nbytes: int = _LONG,
          signed: bool = True) -> int:
    """An integer of a C++ type `nbytes` wide (``ser_helper::unpack_int``)."""
    start = self.pos
    ctrl = self._take(1, what)[0]
    if signed:
      size, negative = ctrl & 0x0F, bool(ctrl & 0x80)
    else:  # dlib masks only the reserved bits, so a sign bit is an error.
      size, negative = ctrl & 0x8F, False
    if size == 0 or size > nbytes:
      kind = 'signed' if signed else 'unsigned'
      raise self.error(f'bad integer control byte 0x{ctrl:02x} for {what} '
                       f'({nbytes}-byte {kind} integer)', start)
    value = int.from_bytes(self._take(size, what), 'little')
    return -value if negative else value

  def uint(self, what: str, *, nbytes: int = _LONG) -> int:
    return self.int(what, nbytes=nbytes, signed=False)

  def bool(self, what: str) -> bool:
    ch = self._take(1, what)[0]
    if ch not in (ord('0'), ord('1')):
      raise self.error(f'expected a bool (ASCII 0/1) for {what}, found byte '
                       f'0x{ch:02x}', self.pos - 1)
    return ch == ord('1')

  def float(self, what: str) -> float:
    """One portable float, as the double dlib would reconstruct."""
    if self.pos < len(self.data) and self.data[self.pos] & _RESERVED_BITS:
      raise self.error(f'{what} uses dlib\'s pre-2013 text float format, '
                       'which is not supported')
    mantissa = self.int(f'{what} (mantissa)', nbytes=8)
    exponent = self.int(f'{what} (exponent)', nbytes=_INT16)
    return _float_value(mantissa, exponent)

  def string(self, what: str, *, max_len: int = 1 << 16) -> str:
    size = self.uint(f'{what} (length)')
    if size > max_len:
      raise self.error(f'implausible string length {size} for {what}',
                       self.pos)
    raw = bytes(self._take(size, what))
    try:
      return raw.decode('ascii')
    except UnicodeDecodeError:
      raise self.error(f'{what} is not an ASCII string: {raw[:40]!r}',
                       self.pos - size) from None

  def version(self, what: str, allowed: Sequence[int]) -> int:
    start = self.pos
    version = self.int(f'{what} version', nbytes=_INT)
    if version not in allowed:
      raise self.error(f'unexpected {what} version {version}, expected '
                       f'{" or ".join(map(str, allowed))}', start)
    return version

  def shape(self, what: str) -> tuple[int, int, int, int]:
    dims = tuple(self.int(f'{what} {d}', nbytes=8)
                 for d in ('num_samples', 'k', 'nr', 'nc'))
    if min(dims) < 0:
      raise self.error(f'negative dimension in {what}: {dims}')
    return dims

  def tensor(self, what: str) -> np.ndarray:
    """A ``resizable_tensor`` -> float32 array [num_samples, k, nr, nc]."""
    version = self.version(f'{what} tensor', (1, 2))
    shape = self.shape(what)
    count = math.prod(shape)
    if version == 2:  # Raw little-endian IEEE float32.
      raw = self._take(4 * count, f'{what} ({count} float32 values)')
      values = np.frombuffer(raw, '<f4').astype(np.float32)
    else:
      values, self.pos = decode_floats(self.array, self.pos, count,
                                       what=what, source=self.source)
    return values.reshape(shape)

  def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
    """An ``alias_tensor``: only a shape (a view into a layer's params)."""
    self.version(f'{what} alias_tensor', (1,))
    return self.shape(what)


def _float_value(mantissa: int, exponent: int) -> float:
  if exponent < _EXP_INF:
    return math.ldexp(float(mantissa), exponent)
  if exponent == _EXP_INF:
    return math.inf
  if exponent == _EXP_NINF:
    return -math.inf
  return math.nan


def decode_floats(buf: np.ndarray, start: int, count: int, *,
                  what: str = 'floats',
                  source: str = 'dlib stream') -> tuple[np.ndarray, int]:
  """Decodes `count` consecutive portable floats, vectorised.

  Each value is ``[ctrl][mantissa bytes][ctrl][exponent bytes]`` with
  variable lengths, so value i+1 starts where value i ends. The start of the
  value that would begin at any byte p is a function ``next(p)`` computable
  for all p at once; composing it 64 times (6 squarings) gives jumps that a
  short Python loop follows for every 64th value, and 63 vectorised steps of
  ``next`` fill in the rest. Cost: a few passes over the bytes.

  Args:
    buf: the whole stream as uint8.
    start: offset of the first value.
    count: number of values.
    what: names the values in errors.
    source: names the stream in errors.

  Returns:
    (float32 [count], offset just past the last value). Values are rebuilt
    as dlib's ``float_details`` does for ``float``: ``ldexp(float(m), e)``.

  Raises:
    DlibFormatError: truncated stream or invalid control bytes.
  """
  if count == 0:
    return np.zeros((0,), np.float32), start
  # A value takes at most 1 + 8 + 1 + 2 bytes. Indices fit in int32.
  window = buf[start:min(len(buf), start + 12 * count)]
  if len(window) == 0:
    raise DlibFormatError(f'{source}: truncated: {what} needs {count} '
                          'portable floats, the stream ends first')
  pos = _value_starts(window, count)

  def check(ok, message, where):
    if not np.all(ok):
      bad = int(where[np.argmin(ok)])
      raise DlibFormatError(f'{source}: {message} in {what} (at byte '
                            f'{start + bad})')

  truncated = f'truncated: {what} needs {count} portable floats'
  mctrl, epos, ectrl = _control_bytes(window, pos, check, truncated)
  mantissa = _signed(window, pos, mctrl)
  exponent = _signed(window, epos, ectrl)
  end = start + int(epos[-1] + 1 + (ectrl[-1] & 0x0F))
  return _rebuild_floats(mantissa, exponent), end


def _value_starts(window: np.ndarray, count: int) -> np.ndarray:
  """int32 [count]: where each of `count` consecutive values starts (a
  position >= len(window) where the window ends first)."""
  n = len(window)
  exp_at = np.arange(1, n + 1, dtype=np.int32) + (window & 0x0F)
  exp_len = window[np.minimum(exp_at, n - 1)] & 0x0F
  # next(p), with n as an absorbing "ran off the end" sentinel.
  nxt = np.empty(n + 1, np.int32)
  np.minimum(exp_at + 1 + exp_len, n, out=nxt[:n])
  nxt[n] = n
  del exp_at, exp_len
  stride = 64
  jump = nxt
  for _ in range(6):  # next composed 2**6 = 64 times
    jump = jump[jump]
  lanes = -(-count // stride)
  coarse = np.empty(lanes, np.int64)
  p = 0
  for i in range(lanes):
    coarse[i] = p
    p = jump[p]
  del jump
  pos = np.empty((lanes, stride), np.int32)
  pos[:, 0] = coarse
  for k in range(1, stride):
    pos[:, k] = nxt[pos[:, k - 1]]
  return pos.reshape(-1)[:count]


def _control_bytes(window: np.ndarray, pos: np.ndarray,
                   check: Callable[..., None], truncated: str):
  """(mantissa control bytes, exponent positions, exponent control bytes)
  of the values at `pos`, each checked (`check` raises naming the byte;
  `truncated` is its message for a value past the window's end)."""
  n = len(window)
  check(pos < n, truncated, np.minimum(pos, n))
  mctrl = window[pos]
  check((mctrl & _RESERVED_BITS) == 0, 'text-format float (unsupported)',
        pos)
  msize = mctrl & 0x0F
  check((msize >= 1) & (msize <= 8), 'bad mantissa control byte', pos)
  epos = pos + 1 + msize
  check(epos < n, truncated, pos)
  ectrl = window[epos]
  esize = ectrl & 0x0F
  check((esize >= 1) & (esize <= 2), 'bad exponent control byte', epos)
  # The window holds 12 bytes per value, the most a value can take, so a
  # value running past it means the stream itself ended.
  check(epos + esize < n, truncated, epos)
  return mctrl, epos, ectrl


def _signed(window: np.ndarray, at: np.ndarray,
            ctrl: np.ndarray) -> np.ndarray:
  """int64: the little-endian magnitudes after each control byte at `at`
  (its low nibble: the length), negated where its top bit is set."""
  size = ctrl & 0x0F
  n = len(window)
  value = np.zeros(len(at), np.uint64)
  for j in range(int(size.max())):
    byte = window[np.minimum(at + 1 + j, n - 1)].astype(np.uint64)
    byte[size <= j] = 0
    value |= byte << np.uint64(8 * j)
  value = value.astype(np.int64)
  return np.where(ctrl & 0x80, -value, value)


def _rebuild_floats(mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
  """float32 ``ldexp(m, e)``, with dlib's exponent codes for inf/nan."""
  finite = exponent < _EXP_INF
  values = np.ldexp(mantissa.astype(np.float32),
                    np.where(finite, exponent, 0).astype(np.int32))
  values = np.where(exponent == _EXP_INF, np.float32(np.inf), values)
  values = np.where(exponent == _EXP_NINF, np.float32(-np.inf), values)
  values = np.where(exponent >= _EXP_NAN, np.float32(np.nan), values)
  return values.astype(np.float32)


# --------------------------------------------------------------------------
# Layer details (dlib/dnn/layers.h, input.h, loss.h).
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Layer:
  """One layer as found in the file.

  Attributes:
    index: dlib's own numbering (``layer<index>`` when a net is printed):
      0 is the loss, 1 the outermost layer, the input layer is last.
    kind: 'con', 'affine', 'relu', 'max_pool', 'avg_pool', 'add_prev', 'fc',
      'tag', 'skip', 'input_rgb_image_sized' or 'loss_metric'.
    version: the version string found ('con_4', ...); '' for tag/skip.
    name: the name the expected layout gave it ('' if none).
    attrs: hyperparameters (ints, floats, bools).
    arrays: parameters as float32 numpy arrays, in dlib's layout: con
      ``filters`` [out, in, kh, kw] and ``biases`` [out]; affine ``gamma`` /
      ``beta`` [C]; fc ``weights`` [in, out] and ``biases`` [out].
  """
  index: int
  kind: str
  version: str
  name: str = ''
  attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _multipliers(r: Reader, what: str, attrs: dict) -> None:
  for field in ('learning_rate_multiplier', 'weight_decay_multiplier',
                'bias_learning_rate_multiplier',
                'bias_weight_decay_multiplier'):
    attrs[field] = r.float(f'{what} {field}')


def _split_params(r: Reader, what: str, params: np.ndarray,
                  parts: Sequence[tuple[str, tuple[int, ...]]]) -> dict:
  """Cuts a layer's flat params tensor into its named alias views."""
  flat = params.reshape(-1)
  want = sum(math.prod(s) for _, s in parts)
  if flat.size != want:
    raise r.error(f'{what}: params hold {flat.size} values, its views '
                  f'{[(k, s) for k, s in parts]} need {want}')
  out, offset = {}, 0
  for key, shape in parts:
    size = math.prod(shape)
    out[key] = flat[offset:offset + size].reshape(shape)
    offset += size
  return out


def _read_con(r: Reader, version: str, what: str):
  attrs: dict[str, Any] = {}
  params = r.tensor(f'{what} params')
  attrs['num_filters'] = r.int(f'{what} num_filters')
  attrs['nr'] = r.int(f'{what} nr')
  attrs['nc'] = r.int(f'{what} nc')
  attrs['stride_y'] = r.int(f'{what} stride_y', nbytes=_INT)
  attrs['stride_x'] = r.int(f'{what} stride_x', nbytes=_INT)
  attrs['padding_y'] = r.int(f'{what} padding_y', nbytes=_INT)
  attrs['padding_x'] = r.int(f'{what} padding_x', nbytes=_INT)
  filters = r.alias_tensor(f'{what} filters')
  biases = r.alias_tensor(f'{what} biases')
  _multipliers(r, what, attrs)
  attrs['use_bias'] = r.bool(f'{what} use_bias') if version != 'con_4' else (
      True)
  attrs['use_relu'] = r.bool(f'{what} use_relu') if version == 'con_6' else (
      False)
  parts = [('filters', filters)]
  if attrs['use_bias']:
    parts.append(('biases', (math.prod(biases),)))
  return attrs, _split_params(r, what, params, parts)


def _affine_arrays(r: Reader, what: str, params: np.ndarray, gamma, beta):
  return _split_params(r, what, params, [('gamma', (math.prod(gamma),)),
                                         ('beta', (math.prod(beta),))])


def _read_affine(r: Reader, version: str, what: str):
  params = r.tensor(f'{what} params')
  gamma = r.alias_tensor(f'{what} gamma')
  beta = r.alias_tensor(f'{what} beta')
  attrs = {'mode': r.int(f'{what} mode', nbytes=_INT)}
  attrs['disabled'] = r.bool(f'{what} disabled') if version == 'affine_2' else (
      False)
  return attrs, _affine_arrays(r, what, params, gamma, beta)


def _read_bn_as_affine(r: Reader, version: str, what: str):
  """A batch-norm layer, folded to affine exactly as ``affine_(bn_)`` does."""
  params = r.tensor(f'{what} params')
  gamma = r.alias_tensor(f'{what} gamma')
  beta = r.alias_tensor(f'{what} beta')
  for field in ('means', 'invstds'):
    r.tensor(f'{what} {field}')
  running_means = r.tensor(f'{what} running_means').reshape(-1)
  running_vars = r.tensor(f'{what} running_variances').reshape(-1)
  r.uint(f'{what} num_updates')
  r.float(f'{what} running_stats_window_size')
  attrs: dict[str, Any] = {}
  _multipliers(r, what, attrs)
  eps = r.float(f'{what} eps')
  arrays = _affine_arrays(r, what, params, gamma, beta)
  if running_means.size != arrays['gamma'].size or (
      running_vars.size != arrays['gamma'].size):
    raise r.error(f'{what}: running statistics do not match gamma')
  scale = arrays['gamma'] / np.sqrt(running_vars + np.float32(eps))
  arrays = {'gamma': scale.astype(np.float32),
            'beta': (arrays['beta'] - scale * running_means).astype(
                np.float32)}
  attrs.update(mode=0 if version == 'bn_con2' else 1, disabled=False,
               folded_from_bn=True, eps=eps)
  return attrs, arrays


def _read_relu(r: Reader, version: str, what: str):
  return {'disabled': r.bool(f'{what} disabled')
          if version == 'relu_2' else False}, {}


def _read_pool(r: Reader, version: str, what: str):
  del version
  attrs = {'nr': r.int(f'{what} nr'), 'nc': r.int(f'{what} nc')}
  for field in ('stride_y', 'stride_x', 'padding_y', 'padding_x'):
    attrs[field] = r.int(f'{what} {field}', nbytes=_INT)
  return attrs, {}


def _read_add_prev(r: Reader, version: str, what: str):
  del r, version, what
  return {}, {}


def _read_fc(r: Reader, version: str, what: str):
  attrs: dict[str, Any] = {}
  attrs['num_outputs'] = r.uint(f'{what} num_outputs')
  attrs['num_inputs'] = r.uint(f'{what} num_inputs')
  params = r.tensor(f'{what} params')
  weights = r.alias_tensor(f'{what} weights')
  biases = r.alias_tensor(f'{what} biases')
  attrs['bias_mode'] = r.int(f'{what} bias_mode', nbytes=_INT)
  _multipliers(r, what, attrs)
  attrs['use_bias'] = r.bool(f'{what} use_bias') if version == 'fc_3' else True
  shape = (attrs['num_inputs'], attrs['num_outputs'])
  if weights != shape + (1, 1):
    raise r.error(f'{what}: weights view {weights} does not match '
                  f'num_inputs x num_outputs {shape}')
  parts = [('weights', shape)]
  if attrs['bias_mode'] == 0 and attrs['use_bias']:  # FC_HAS_BIAS
    parts.append(('biases', (math.prod(biases),)))
  return attrs, _split_params(r, what, params, parts)


def _read_input_rgb_image_sized(r: Reader, version: str, what: str):
  del version
  attrs = {c: float(np.float32(r.float(f'{what} {c}')))
           for c in ('avg_red', 'avg_green', 'avg_blue')}
  attrs['nr'] = r.uint(f'{what} nr')
  attrs['nc'] = r.uint(f'{what} nc')
  return attrs, {}


def _read_loss_metric(r: Reader, version: str, what: str):
  if version == 'loss_metric_':  # Values that used to be hard coded.
    return {'margin': 0.1, 'distance_threshold': 0.75}, {}
  return {'margin': float(np.float32(r.float(f'{what} margin'))),
          'distance_threshold': float(np.float32(
              r.float(f'{what} dist_thresh')))}, {}


_Reader = Callable[[Reader, str, str], tuple[dict, dict]]

# version string -> (kind, reader). Versions are the ones dlib itself accepts.
LAYER_READERS: dict[str, tuple[str, _Reader]] = {
    'con_4': ('con', _read_con),
    'con_5': ('con', _read_con),
    'con_6': ('con', _read_con),
    'affine_': ('affine', _read_affine),
    'affine_2': ('affine', _read_affine),
    'bn_con2': ('affine', _read_bn_as_affine),
    'bn_fc2': ('affine', _read_bn_as_affine),
    'relu_': ('relu', _read_relu),
    'relu_2': ('relu', _read_relu),
    'max_pool_2': ('max_pool', _read_pool),
    'avg_pool_2': ('avg_pool', _read_pool),
    'add_prev_': ('add_prev', _read_add_prev),
    'fc_2': ('fc', _read_fc),
    'fc_3': ('fc', _read_fc),
    'input_rgb_image_sized': ('input_rgb_image_sized',
                              _read_input_rgb_image_sized),
}
LOSS_READERS: dict[str, tuple[str, _Reader]] = {
    'loss_metric_': ('loss_metric', _read_loss_metric),
    'loss_metric_2': ('loss_metric', _read_loss_metric),
}


def _versions_of(kind: str, table: Mapping[str, tuple[str, Any]]) -> str:
  return ' or '.join(repr(v) for v, (k, _) in table.items() if k == kind)


# --------------------------------------------------------------------------
# Network structure (dlib/dnn/core.h).
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expect:
  """One expected layer, outermost first (as dlib prints a network).

  Attributes:
    kind: a `Layer.kind`; 'tag' and 'skip' are the version-only wrappers.
    name: a name for the layer's arrays (e.g. ``stage1_block0/conv1``).
    attrs: hyperparameters that must match exactly (e.g. ``num_filters``).
  """
  kind: str
  name: str = ''
  attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _read_details(r: Reader, index: int, expect: Expect,
                  table: Mapping[str, tuple[str, _Reader]]) -> Layer:
  label = f'layer<{index}>' + (f' ({expect.name})' if expect.name else '')
  start = r.pos
  version = r.string(f'{label} version string', max_len=256)
  if version not in table or table[version][0] != expect.kind:
    found = (f'{table[version][0]} layer ({version!r})'
             if version in table else f'{version!r}')
    raise r.error(f'{label}: expected {expect.kind} layer '
                  f'({_versions_of(expect.kind, table) or "unsupported"}), '
                  f'found {found}', start)
  kind, reader = table[version]
  attrs, arrays = reader(r, version, label)
  for key, want in expect.attrs.items():
    if attrs.get(key) != want:
      raise r.error(f'{label} {kind}: expected {key}={want!r}, found '
                    f'{attrs.get(key)!r}', start)
  return Layer(index, kind, version, expect.name, attrs, arrays)


def _read_layer_state(r: Reader, label: str, version: int,
                      on_input: bool) -> None:
  """The bookkeeping an add_layer writes after its details (discarded)."""
  for field in ('this_layer_setup_called', 'gradient_input_is_stale',
                'get_output_and_gradient_input_disabled'):
    r.bool(f'{label} {field}')
  r.tensor(f'{label} x_grad')
  r.tensor(f'{label} cached_output')
  if on_input:
    r.tensor(f'{label} grad_final')
    if version >= 3:
      r.uint(f'{label} sample_expansion_factor', nbytes=_INT)
  elif version >= 2:
    r.tensor(f'{label} params_grad')


def read_network(data: bytes, layout: Sequence[Expect], *,
                 loss: str = 'loss_metric',
                 source: str = 'dlib stream') -> list[Layer]:
  """Reads a serialized ``add_loss_layer<loss, layout...>`` network.

  Args:
    data: the whole file.
    layout: the expected layers below the loss, outermost first, ending with
      the input layer (the layer above it must be a real layer, not a tag).
    loss: expected loss kind.
    source: names the stream in errors (e.g. the file path).

  Returns:
    Layers in dlib's numbering: ``[loss, layer<1>, ..., input]``.

  Raises:
    DlibFormatError: naming the layer index, what was expected and what was
      found, or the byte offset where the stream is truncated or corrupt.
  """
  layout = list(layout)
  if len(layout) < 2 or layout[-1].kind != 'input_rgb_image_sized' or (
      layout[-2].kind in MARKERS + ('input_rgb_image_sized',)):
    raise ValueError('layout must end with a layer on top of the input '
                     'layer input_rgb_image_sized')
  r = Reader(data, source=source)
  r.version('add_loss_layer', (1,))
  loss_layer = _read_details(r, 0, Expect(loss), LOSS_READERS)

  # Wrapper versions, outermost first, down to the layer on the input.
  versions = []
  for i, e in enumerate(layout[:-1], start=1):
    label = f'layer<{i}>' + (f' ({e.name})' if e.name else '')
    if e.kind in MARKERS:
      versions.append(r.version(f'{label} add_{e.kind}_layer', (1,)))
    elif i == len(layout) - 1:
      versions.append(r.version(f'{label} add_layer (on the input)', (2, 3)))
    else:
      versions.append(r.version(f'{label} add_layer', (1, 2)))

  n = len(layout)
  found: list[Layer | None] = [None] * (n + 1)
  found[n] = _read_details(r, n, layout[-1], LAYER_READERS)
  for i in range(n - 1, 0, -1):  # Details unwind from the input outwards.
    e = layout[i - 1]
    if e.kind in MARKERS:
      found[i] = Layer(i, e.kind, '', e.name)
      continue
    found[i] = _read_details(r, i, e, LAYER_READERS)
    _read_layer_state(r, f'layer<{i}>', versions[i - 1],
                      on_input=i == n - 1)
  if r.pos != len(r.data):
    raise r.error(f'{len(r.data) - r.pos} unexpected trailing byte(s) after '
                  'the network')
  return [loss_layer] + found[1:]


def read_file(path: str | os.PathLike, layout: Sequence[Expect], *,
              loss: str = 'loss_metric') -> list[Layer]:
  """`read_network` on a file (read whole; dlib .dat files are not zipped)."""
  with open(path, 'rb') as f:
    data = f.read()
  return read_network(data, layout, loss=loss, source=os.fspath(path))
