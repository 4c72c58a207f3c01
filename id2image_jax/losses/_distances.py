"""Per-example distances for the ID2image losses (eqs. 1, 2 and the histogram
loss of section 4.2).

All are unreduced: they reduce only the feature axes and keep every leading
axis, so batching (`jax.vmap` or leading dims), weighting and averaging stay
with the caller. They compute in at least float32, so bfloat16 inputs give
float32 losses.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

# iBUG 300-W / dlib 68-point scheme used by the paper's landmark networks.
NUM_LANDMARKS = 68


def _float(x: chex.Array) -> jax.Array:
  x = jnp.asarray(x)
  chex.assert_type(x, float)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _pair(pred: chex.Array, target: chex.Array) -> tuple[jax.Array, jax.Array]:
  pred, target = _float(pred), _float(target)
  chex.assert_equal_shape([pred, target])
  return pred, target


def squared_l2(pred: chex.Array, target: chex.Array) -> jax.Array:
  """Squared Euclidean distance over the last axis.

  Args:
    pred: [..., D].
    target: [..., D].

  Returns:
    [...] sum_d (pred - target)^2.
  """
  pred, target = _pair(pred, target)
  chex.assert_shape(pred, (..., None))
  return jnp.sum(jnp.square(pred - target), axis=-1)


def cosine_similarity(pred: chex.Array, target: chex.Array, *,
                      eps: float = 1e-8) -> jax.Array:
  """Cosine of the angle between vectors along the last axis.

  Args:
    pred: [..., D].
    target: [..., D].
    eps: norms are floored at `eps`, so a zero vector has similarity 0 and a
      finite gradient instead of NaN.

  Returns:
    [...] values in [-1, 1].
  """
  pred, target = _pair(pred, target)
  chex.assert_shape(pred, (..., None))

  def unit(v):
    # Floor the squared norm rather than the norm so sqrt's gradient at 0
    # is never evaluated.
    norm2 = jnp.sum(jnp.square(v), axis=-1, keepdims=True)
    return v * jax.lax.rsqrt(jnp.maximum(norm2, eps * eps))

  return jnp.sum(unit(pred) * unit(target), axis=-1)


def cosine_distance(pred: chex.Array, target: chex.Array, *,
                    eps: float = 1e-8) -> jax.Array:
  """1 - cosine similarity along the last axis.

  Args:
    pred: [..., D].
    target: [..., D].
    eps: norm floor, see `cosine_similarity`.

  Returns:
    [...] values in [0, 2].
  """
  return 1.0 - cosine_similarity(pred, target, eps=eps)


def identity_loss(pred: chex.Array, target: chex.Array, *,
                  kind: Literal['l2', 'cosine'] = 'l2') -> jax.Array:
  """ID loss between descriptors (ID2image eq. 1).

  Args:
    pred: [..., D] descriptors of the generated images, E(g(z)).
    target: [..., D] target descriptors d.
    kind: 'l2' is the paper's ||E(g(z)) - d||_2^2 on raw descriptors (their
      scale, e.g. whether the encoder L2-normalises, sets the loss scale that
      the weights in `DEFAULT_WEIGHTS` assume); 'cosine' is 1 - cos, which is
      invariant to descriptor scale (for unit vectors, l2 = 2 * cosine).

  Returns:
    [...] per-example loss.
  """
  if kind == 'l2':
    return squared_l2(pred, target)
  if kind == 'cosine':
    return cosine_distance(pred, target)
  raise ValueError(f"kind must be 'l2' or 'cosine', got {kind!r}")


def as_points(landmarks: jax.Array, num_points: int) -> jax.Array:
  """[..., P, 2] or flat [..., 2P] (x0, y0, x1, y1, ...) -> [..., P, 2]."""
  if landmarks.ndim >= 2 and landmarks.shape[-2:] == (num_points, 2):
    return landmarks
  if landmarks.ndim >= 1 and landmarks.shape[-1] == 2 * num_points:
    return landmarks.reshape(*landmarks.shape[:-1], num_points, 2)
  raise AssertionError(
      f'expected landmarks of shape [..., {num_points}, 2] or '
      f'[..., {2 * num_points}], got {landmarks.shape}')


def landmark_loss(pred: chex.Array, target: chex.Array, *,
                  num_points: int = NUM_LANDMARKS) -> jax.Array:
  """Landmark loss (ID2image eq. 2): summed squared coordinate error.

  The loss is in squared coordinate units (the paper does not state them;
  its weight 0.0006 suggests pixel coordinates of the encoder crop). Use the
  same convention for both arguments.

  Args:
    pred: [..., P, 2] (x, y) points, or flat [..., 2P] as x0, y0, x1, ...
      (what an MLP with 136 outputs emits).
    target: same shape as `pred`.
    num_points: P; 68 for the iBUG scheme the paper uses.

  Returns:
    [...] sum over points and coordinates of squared differences.
  """
  pred, target = _pair(pred, target)
  pred = as_points(pred, num_points)
  target = as_points(target, num_points)
  return jnp.sum(jnp.square(pred - target), axis=(-2, -1))


def histogram_loss(pred_hist: chex.Array, target_hist: chex.Array) -> jax.Array:
  """Histogram loss (ID2image section 4.2): ||H(g(z)) - h||_2^2.

  Args:
    pred_hist: [..., C, bins] histograms of the generated images, e.g.
      `image_soft_histogram(images, value_range=(-1, 1))`.
    target_hist: [..., C, bins] target histograms (normalised the same way:
      the paper's ID -> histogram head predicts normalised histograms).

  Returns:
    [...] squared L2 distance summed over channels and bins.
  """
  pred_hist, target_hist = _pair(pred_hist, target_hist)
  chex.assert_shape(pred_hist, (..., None, None))
  return jnp.sum(jnp.square(pred_hist - target_hist), axis=(-2, -1))
