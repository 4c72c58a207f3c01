"""Small, named layout conversions from PyTorch/Caffe/TF tensors to Flax.

Each takes and returns numpy arrays; rule tables refer to them by name so a
reader sees what happens to every checkpoint key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def identity(x: np.ndarray) -> np.ndarray:
  return x


def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight [out, in, kh, kw] -> Flax Conv kernel [kh, kw, in, out]."""
  if w.ndim != 4:
    raise ValueError(f'conv weight must be 4-D [O, I, H, W], got {w.shape}')
  return np.transpose(w, (2, 3, 1, 0))


def linear_to_dense(w: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> Flax Dense kernel [in, out]."""
  if w.ndim != 2:
    raise ValueError(f'linear weight must be 2-D [out, in], got {w.shape}')
  return w.T


def depthwise_to_grouped(w: np.ndarray) -> np.ndarray:
  """TF depthwise filter [kh, kw, C, 1] -> Flax grouped kernel [kh, kw, 1, C].

  With multiplier 1 the element order is unchanged: a reshape.
  """
  if w.ndim != 4 or w.shape[3] != 1:
    raise ValueError(f'depthwise filter must be [kh, kw, C, 1], got '
                     f'{w.shape}')
  return w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])


def reshape(*shape: int) -> Callable[[np.ndarray], np.ndarray]:
  """A transform that reshapes (sizes must agree), e.g. a [1,C,1,1] bias -> [C]."""
  def fn(x: np.ndarray) -> np.ndarray:
    return np.reshape(x, shape)
  fn.__name__ = f'reshape{shape}'
  return fn


def flatten(x: np.ndarray) -> np.ndarray:
  """Any shape -> 1-D (e.g. [1, C, 1, 1] biases or per-channel scalars)."""
  return np.reshape(x, (-1,))


def chw_to_hwc(x: np.ndarray) -> np.ndarray:
  """[..., C, H, W] constants/feature maps -> [..., H, W, C]."""
  return np.moveaxis(x, -3, -1)


def linear_chw_to_dense(w: np.ndarray, channels: int, height: int,
                        width: int) -> np.ndarray:
  """torch Linear after ``flatten`` of NCHW -> Dense after flatten of NHWC.

  torch flattens a [C, H, W] feature map channel-major, so input column
  ``c * H * W + h * W + w`` of the Linear weight [out, C*H*W] meets feature
  (c, h, w). A Flax model flattening NHWC feeds row ``(h * W + w) * C + c``
  of its Dense kernel instead; this reorders the columns accordingly and
  transposes, giving [H*W*C, out]. (VGG's fc6 on the 512x7x7 pool5 map.)

  Args:
    w: [out, channels * height * width] torch Linear weight.
    channels, height, width: the feature map that torch flattened.

  Returns:
    [height * width * channels, out] Dense kernel for an NHWC flatten.
  """
  if w.ndim != 2 or w.shape[1] != channels * height * width:
    raise ValueError(f'linear weight must be 2-D [out, {channels}*{height}*'
                     f'{width}={channels * height * width}], got {w.shape}')
  out = w.shape[0]
  w = np.reshape(w, (out, channels, height, width))
  return np.reshape(np.transpose(w, (2, 3, 1, 0)), (-1, out))
