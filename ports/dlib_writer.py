"""A writer of dlib's serialization format, the reference for its reader.

Written from dlib's own specification (dlib/serialize.h, float_details.h,
cuda/tensor.h), independently of `id2image_jax.porting.dlib_format`, so the
tests can write files of any layout (versions, precisions, truncations) and
check that the reader gets back exactly what was written::

  from ports.dlib_writer import Writer, tiny_network
  data, arrays = tiny_network(np.random.default_rng(0))
"""

from __future__ import annotations

import math

import numpy as np


class Writer:
  """Appends dlib-serialized primitives to a byte buffer."""

  def __init__(self):
    self.out = bytearray()

  def int(self, value: int, *, signed: bool = True):
    negative = value < 0
    assert signed or not negative
    magnitude = -value if negative else value
    raw = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8),
                             'little')
    self.out.append(len(raw) | (0x80 if negative else 0))
    self.out += raw
    return self

  def float(self, value: float, *, digits: int = 24):
    """float_details of a C float (digits=24) or double (53)."""
    if math.isnan(value):
      mantissa, exponent = 0, 32002
    elif math.isinf(value):
      mantissa, exponent = 0, 32000 if value > 0 else 32001
    else:
      frac, exp = math.frexp(value)
      mantissa, exponent = int(frac * (1 << digits)), exp - digits
      for _ in range(8):  # Shift off low zero bytes, as dlib does.
        if mantissa & 0xFF:
          break
        mantissa >>= 8
        exponent += 8
    self.int(mantissa)
    self.int(exponent)
    return self

  def bool(self, value: bool):
    self.out += b'1' if value else b'0'
    return self

  def string(self, value: str):
    self.int(len(value), signed=False)
    self.out += value.encode('ascii')
    return self

  def tensor(self, values, shape=None, *, version: int = 2):
    values = np.asarray(values, np.float32)
    shape = values.shape if shape is None else shape
    shape = (1,) * (4 - len(shape)) + tuple(shape) if len(shape) < 4 else shape
    self.int(version)
    for d in shape:
      self.int(d)
    if version == 2:
      self.out += values.astype('<f4').tobytes()
    else:
      for v in values.reshape(-1):
        self.float(float(v))
    return self

  def alias(self, *shape: int):
    self.int(1)
    for d in (tuple(shape) + (1, 1, 1, 1))[:4]:
      self.int(d)
    return self

  def bytes(self) -> bytes:
    return bytes(self.out)


def layer_state(w: Writer, *, on_input: bool):
  """The empty training state every layer of a saved net carries."""
  w.bool(True).bool(True).bool(False)
  w.tensor([], (0, 0, 0, 0)).tensor([], (0, 0, 0, 0))
  if on_input:
    w.tensor([], (0, 0, 0, 0)).int(1, signed=False)  # grad_final, factor
  else:
    w.tensor([], (0, 0, 0, 0))  # params_grad


def multipliers(w: Writer):
  """Learning-rate and weight-decay multipliers of a layer (doubles)."""
  for v in (1.0, 1.0, 1.0, 0.0):
    w.float(v, digits=53)


def write_con(w, filters, biases, stride, padding, *, version='con_4'):
  """A ``con_`` layer's details: filters [O, I, kh, kw] and biases [O]."""
  out, cin, kh, kw = filters.shape
  w.string(version)
  w.tensor(np.concatenate([filters.reshape(-1), biases]),
           (filters.size + biases.size, 1, 1, 1))
  w.int(out).int(kh).int(kw).int(stride).int(stride)
  w.int(padding).int(padding)
  w.alias(out, cin, kh, kw).alias(1, out)
  multipliers(w)


def tiny_network(rng, *, con_version='con_4', add_layer_version=2,
                 tensor_version=2):
  """loss_metric<fc_no_bias<4, avg_pool_everything<relu<add_prev1<
  affine<con<2,3,3,1,1, tag1<con<2,3,3,2,2, input_rgb_image_sized<9>>>>>>>>>>
  serialized by hand, with the arrays written into it."""
  arrays = {
      'fc.weights': rng.normal(size=(2, 4)).astype(np.float32),
      'affine.gamma': rng.normal(size=2).astype(np.float32),
      'affine.beta': rng.normal(size=2).astype(np.float32),
      'conv2.filters': rng.normal(size=(2, 2, 3, 3)).astype(np.float32),
      'conv2.biases': rng.normal(size=2).astype(np.float32),
      'conv1.filters': rng.normal(size=(2, 3, 3, 3)).astype(np.float32),
      'conv1.biases': rng.normal(size=2).astype(np.float32),
  }
  w = Writer()
  w.int(1).string('loss_metric_2').float(0.04).float(0.6)
  # Wrapper versions, outermost first: fc, avg, relu, add_prev, affine,
  # con, tag, con (on the input).
  for v in (add_layer_version,) * 6 + (1, 3):
    w.int(v)
  w.string('input_rgb_image_sized')
  for v in (122.782, 117.001, 104.298):
    w.float(v)
  w.int(9, signed=False).int(9, signed=False)
  # Details, from the input outwards.
  f1 = arrays['conv1.filters']
  w.string(con_version)
  w.tensor(np.concatenate([f1.reshape(-1), arrays['conv1.biases']]),
           (f1.size + 2, 1, 1, 1), version=tensor_version)
  w.int(2).int(3).int(3).int(2).int(2).int(0).int(0)
  w.alias(2, 3, 3, 3).alias(1, 2)
  multipliers(w)
  if con_version in ('con_5', 'con_6'):
    w.bool(True)
  if con_version == 'con_6':
    w.bool(False)
  layer_state(w, on_input=True)
  write_con(w, arrays['conv2.filters'], arrays['conv2.biases'], 1, 1)
  layer_state(w, on_input=False)
  w.string('affine_')
  w.tensor(np.concatenate([arrays['affine.gamma'], arrays['affine.beta']]),
           (4, 1, 1, 1))
  w.alias(1, 2).alias(1, 2).int(0)
  layer_state(w, on_input=False)
  w.string('add_prev_')
  layer_state(w, on_input=False)
  w.string('relu_')
  layer_state(w, on_input=False)
  w.string('avg_pool_2').int(0).int(0).int(1).int(1).int(0).int(0)
  layer_state(w, on_input=False)
  w.string('fc_2').int(4, signed=False).int(2, signed=False)
  w.tensor(arrays['fc.weights'].reshape(-1), (8, 1, 1, 1))
  w.alias(2, 4).alias(0, 0, 0, 0).int(1)
  multipliers(w)
  layer_state(w, on_input=False)
  return w.bytes(), arrays
