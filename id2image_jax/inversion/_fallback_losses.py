"""PLACEHOLDER losses for the ID2image objective until `id2image_jax.losses`.

TODO(lead): delete this module and point `objective.py` at
``id2image_jax.losses`` (identity_loss, landmark_loss, histogram_loss,
image_soft_histogram) once that package is merged. These are the minimal
forms of paper eqs. 1-3, per example and unreduced, in float32.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _sq_l2(pred: chex.Array, target: chex.Array, ndims: int) -> jax.Array:
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  chex.assert_equal_shape((pred, target))
  return jnp.sum((pred - target) ** 2, axis=tuple(range(-ndims, 0)))


def identity_loss(pred: chex.Array, target: chex.Array) -> jax.Array:
  """Squared L2 between descriptors: [..., D], [..., D] -> [...] (eq. 1)."""
  return _sq_l2(pred, target, 1)


def landmark_loss(pred: chex.Array, target: chex.Array) -> jax.Array:
  """Squared L2 between landmark sets: [..., 68, 2] x2 -> [...] (eq. 2)."""
  return _sq_l2(pred, target, 2)


def histogram_loss(pred: chex.Array, target: chex.Array) -> jax.Array:
  """Squared L2 between histograms: [..., 3, bins] x2 -> [...]."""
  return _sq_l2(pred, target, 2)


def image_soft_histogram(image: chex.Array, *, bins: int = 10,
                         sigma: float = 1.85) -> jax.Array:
  """Normalised sigmoid soft histogram per RGB channel (eq. 3).

  Args:
    image: [..., H, W, 3] in [-1, 1]; binned on the 0..255 scale.
    bins: number of bins N over [0, 255].
    sigma: softness (larger is harder).

  Returns:
    [..., 3, bins], each channel's histogram divided by H*W.
  """
  x = (jnp.asarray(image, jnp.float32) + 1.0) * 127.5
  x = x.reshape(x.shape[:-3] + (-1, 3))                # [..., M, 3]
  delta = 255.0 / bins
  centres = delta * (jnp.arange(bins, dtype=jnp.float32) + 0.5)
  d = x[..., None] - centres                           # [..., M, 3, bins]
  soft = (jax.nn.sigmoid(sigma * (d + delta / 2))
          - jax.nn.sigmoid(sigma * (d - delta / 2)))
  return jnp.mean(soft, axis=-3)
