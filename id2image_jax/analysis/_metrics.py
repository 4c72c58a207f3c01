"""Labels and metrics of the leakage study (paper section 3), per example.

TODO(lead): `emd_1d`, `landmark_nme` and `binary_accuracy` duplicate what
id2image_jax/metrics.py is growing (EMD, landmark NME); unify them there and
import them from here. `hard_histogram` is the non-differentiable twin of
losses' soft histogram (paper eq. 3 with a step function).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

# Outer eye corners in the 0-based iBUG 68-point scheme: the interocular
# distance of the paper's landmark error.
LEFT_EYE_OUTER = 36
RIGHT_EYE_OUTER = 45


def hard_histogram(images: chex.Array, *, num_bins: int = 10,
                   value_range: tuple[float, float] = (0.0, 255.0)
                   ) -> jax.Array:
  """Normalised per-channel intensity histogram (paper 3.2).

  Bins are as in the paper's soft histogram: width
  ``delta = (max - min) / num_bins``, bin k covers
  ``[min + k delta, min + (k + 1) delta)``, with the maximum itself counted
  in the last bin.

  Args:
    images: [..., H, W, C] intensities in `value_range` (uint8 images on the
      default 0..255 scale).
    num_bins: bins per channel.
    value_range: (min, max) of the intensities.

  Returns:
    [..., C, num_bins] float32, each channel's bins summing to 1.
  """
  images = jnp.asarray(images)
  chex.assert_rank(images, {3, 4, 5, 6})
  lo, hi = value_range
  x = images.astype(jnp.float32)
  *batch, h, w, c = x.shape
  x = x.reshape(-1, h * w, c)
  # Multiply before dividing: for integer intensities on a bin edge (51 =
  # 2 x 25.5) the quotient is then exact and lands in the upper bin.
  idx = jnp.floor((x - lo) * num_bins / (hi - lo)).astype(jnp.int32)
  idx = jnp.clip(idx, 0, num_bins - 1)
  # Compare-and-sum rather than a scatter-add (bincount): XLA fuses the
  # comparison into the reduction, and it avoids the atomics contention of
  # millions of pixels scattered into 30 bins on GPU and slow scatters on
  # TPU.
  bins = jnp.arange(num_bins, dtype=jnp.int32)
  counts = jnp.sum((idx[..., None] == bins).astype(jnp.int32), axis=1)
  hist = counts.astype(jnp.float32) / (h * w)  # [B, C, num_bins]
  return hist.reshape(*batch, c, num_bins)


def emd_1d(p: chex.Array, q: chex.Array) -> jax.Array:
  """Earth mover's distance between 1-D histograms of equal mass.

  For distributions on the same evenly spaced bins the EMD is the L1
  distance of the cumulative sums, here in units of one bin width.

  Args:
    p: [..., N] histogram.
    q: [..., N] histogram with the same total as `p`.

  Returns:
    [...] distances in bins.
  """
  chex.assert_equal_shape([p, q])
  return jnp.sum(jnp.abs(jnp.cumsum(jnp.asarray(p) - jnp.asarray(q),
                                    axis=-1)), axis=-1)


def landmark_nme(pred: chex.Array, target: chex.Array, *,
                 scale: tuple[float, float] = (1.0, 1.0),
                 left: int = LEFT_EYE_OUTER,
                 right: int = RIGHT_EYE_OUTER) -> jax.Array:
  """Mean point-to-point error over the interocular distance of `target`.

  Args:
    pred: [..., P, 2] (x, y) landmarks.
    target: [..., P, 2] ground truth in the same units.
    scale: (sx, sy) multiplied into x and y first; pass (width, height) for
      coordinates normalised to [0, 1] so that distances are isotropic on
      non-square images.
    left: index of the left outer eye corner.
    right: index of the right outer eye corner.

  Returns:
    [...] error as a fraction of the interocular distance (x100 for %).
  """
  chex.assert_equal_shape([pred, target])
  chex.assert_axis_dimension(target, -1, 2)
  s = jnp.asarray(scale, jnp.float32)
  pred = jnp.asarray(pred, jnp.float32) * s
  target = jnp.asarray(target, jnp.float32) * s
  err = jnp.linalg.norm(pred - target, axis=-1).mean(axis=-1)
  iod = jnp.linalg.norm(target[..., left, :] - target[..., right, :],
                        axis=-1)
  return err / jnp.maximum(iod, 1e-12)


def binary_accuracy(probs: chex.Array, labels: chex.Array) -> jax.Array:
  """1.0 where ``probs > 0.5`` agrees with the boolean `labels`, else 0.0.

  Args:
    probs: [...] predicted probability of the positive class.
    labels: [...] booleans (or 0 / 1).

  Returns:
    [...] float32 correctness.
  """
  chex.assert_equal_shape([probs, labels])
  predicted = jnp.asarray(probs) > 0.5
  return (predicted == jnp.asarray(labels).astype(bool)).astype(jnp.float32)
