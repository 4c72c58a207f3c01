"""Evaluation metrics for reconstructions and attribute predictions.

Image metrics (`mse`, `psnr`, `ssim`) take NHWC images with any leading dims
and return one value per image; `cosine_similarity`, `histogram_emd` and
`landmark_nme` are likewise per example. They are pure jnp (jit/vmap-able)
and compute in at least float32.

The attack-success part (`verification_scores`, `impostor_threshold`,
`tmr_at_fmr`) works on whole score sets, so it returns numpy and is not
differentiable.

Units, and how they relate to the paper's tables:
  * `psnr` and `ssim` take the images' `value_range` explicitly.
  * `histogram_emd` is in bins by default, the unit that puts numbers on the
    scale of the paper's Table 1 (~2.5-3 on 10-bin RGB histograms); see its
    docstring for the channel mean-vs-sum question.
  * `landmark_nme` is a fraction of the outer-eye-corner distance; the paper
    reports it in percent (x 100).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import chex
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax.losses import _distances

__all__ = (
    'OUTER_EYE_CORNERS',
    'bootstrap_impostor_thresholds',
    'clustered_rate_interval',
    'cosine_similarity',
    'histogram_emd',
    'impostor_threshold',
    'landmark_nme',
    'mse',
    'psnr',
    'ssim',
    'tmr_at_fmr',
    'verification_scores',
    'wilson_interval',
)

# iBUG 68-point scheme, 0-based: the outer corners of the subject's right
# (image left) and left eyes, i.e. points 37 and 46 in 1-based numbering.
OUTER_EYE_CORNERS = (36, 45)


def _float(x: chex.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _image_pair(a: chex.Array, b: chex.Array) -> tuple[jax.Array, jax.Array]:
  a, b = _float(a), _float(b)
  chex.assert_equal_shape([a, b])
  chex.assert_shape(a, (..., None, None, None))  # [..., H, W, C]
  return a, b


def _check_range(value_range: tuple[float, float]) -> float:
  low, high = value_range
  if not high > low:
    raise ValueError(f'value_range must be (low, high) with high > low, got '
                     f'{value_range}')
  return high - low


def mse(a: chex.Array, b: chex.Array) -> jax.Array:
  """Mean squared error per image, in the images' own units.

  Args:
    a: [..., H, W, C] images.
    b: [..., H, W, C] images.

  Returns:
    [...] mean over H, W and C of (a - b)^2. Scales with the square of the
    value range: images in [-1, 1] give 4x the MSE of the same images in
    [0, 1].
  """
  a, b = _image_pair(a, b)
  return jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))


def psnr(a: chex.Array, b: chex.Array, *,
         value_range: tuple[float, float]) -> jax.Array:
  """Peak signal-to-noise ratio per image, in dB.

  PSNR = 10 log10(R^2 / MSE) with R = high - low the images' dynamic range:
  value_range=(0, 1) or (0, 255) gives the usual definitions, (-1, 1)
  generator output gives the same number as after mapping it to [0, 1].

  Args:
    a: [..., H, W, C] images.
    b: [..., H, W, C] images.
    value_range: (low, high) the image values live in. Required.

  Returns:
    [...] PSNR in dB (inf for identical images).
  """
  data_range = _check_range(value_range)
  err = mse(a, b)
  return 10.0 * jnp.log10(data_range**2 / err)


def ssim(a: chex.Array, b: chex.Array, *,
         value_range: tuple[float, float],
         filter_size: int = 11,
         filter_sigma: float = 1.5,
         k1: float = 0.01,
         k2: float = 0.03) -> jax.Array:
  """Mean structural similarity per image (Wang et al. 2004), via dm_pix.

  The images are first mapped from `value_range` to [0, 1]: SSIM's luminance
  term is not shift-invariant, and its constants assume values in
  [0, data_range]. Per channel, then averaged over channels and the 'valid'
  window positions. This equals scikit-image's
  `structural_similarity(a - low, b - low, data_range=high - low,
  channel_axis=-1, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)` to ~1e-5 (float32; tests/test_metrics.py).
  skimage's default `use_sample_covariance=True` differs slightly.

  Args:
    a: [..., H, W, C] images, H and W >= filter_size.
    b: [..., H, W, C] images.
    value_range: (low, high) the image values live in. Required.
    filter_size: Gaussian window size.
    filter_sigma: Gaussian window standard deviation, in pixels.
    k1: SSIM luminance constant.
    k2: SSIM contrast constant.

  Returns:
    [...] mean SSIM, at most 1.
  """
  data_range = _check_range(value_range)
  a, b = _image_pair(a, b)
  return _ssim(a, b, value_range[0], data_range, filter_size=filter_size,
               filter_sigma=filter_sigma, k1=k1, k2=k2)


def resized_like(source: chex.Array, reference: chex.Array) -> np.ndarray:
  """`source` images at `reference`'s shape (linear, antialiased), as is
  when the shapes already agree."""
  source = np.asarray(source)
  if source.shape == np.shape(reference):
    return source
  return np.asarray(jax.image.resize(source, np.shape(reference), 'linear',
                                     antialias=True))


def pixel_measures(source: chex.Array, reconstruction: chex.Array
                   ) -> dict[str, np.ndarray]:
  """Per-image MSE ([0, 1] scale), PSNR (dB) and SSIM of generator images.

  Args:
    source: [N, H, W, C] originals in [-1, 1]; resized (linear, antialiased)
      to the reconstructions' size when it differs, so a 1024 px photo and
      a 256 px render are compared at 256 px.
    reconstruction: [N, H', W', C] reconstructions in [-1, 1].

  Returns:
    ``{'mse', 'psnr', 'ssim'}``, each [N] host numpy.
  """
  reconstruction = np.asarray(reconstruction)
  source = resized_like(source, reconstruction)
  return {'mse': np.asarray(mse((source + 1) / 2, (reconstruction + 1) / 2)),
          'psnr': np.asarray(psnr(source, reconstruction,
                                  value_range=(-1, 1))),
          'ssim': np.asarray(ssim(source, reconstruction,
                                  value_range=(-1, 1)))}


# jit: compiled once per shape for eager callers, inlined under an outer jit.
@functools.partial(jax.jit, static_argnames=('filter_size',))
def _ssim(a, b, low, data_range, *, filter_size, filter_sigma, k1, k2):
  batch = a.shape[:-3]
  # dm_pix takes [H, W, C] or [N, H, W, C]: fold any leading dims into N.
  a = ((a - low) / data_range).reshape(-1, *a.shape[-3:])
  b = ((b - low) / data_range).reshape(-1, *b.shape[-3:])
  value = dm_pix.ssim(a, b, max_val=1.0, filter_size=filter_size,
                      filter_sigma=filter_sigma, k1=k1, k2=k2)
  return value.reshape(batch)


def cosine_similarity(a: chex.Array, b: chex.Array, *,
                      eps: float = 1e-8) -> jax.Array:
  """Cosine similarity of descriptors along the last axis.

  Args:
    a: [..., D].
    b: [..., D].
    eps: norm floor; a zero vector has similarity 0.

  Returns:
    [...] values in [-1, 1].
  """
  return _distances.cosine_similarity(a, b, eps=eps)


def histogram_emd(
    pred_hist: chex.Array,
    target_hist: chex.Array,
    *,
    bin_width: float = 1.0,
    channel_reduction: Literal['mean', 'sum', 'none'] = 'mean',
) -> jax.Array:
  """Earth mover's distance between per-channel histograms.

  Each channel's histogram is normalised to sum 1, then its 1-D EMD is
  sum_k |CDF_pred(k) - CDF_target(k)| * bin_width: the mean distance that
  mass has to move. With the default bin_width=1 the unit is one bin, the
  same as `scipy.stats.wasserstein_distance(range(bins), range(bins), p, q)`.
  Pass bin_width=255 / bins for grey levels on the 0..255 scale.

  Scale of the paper's Table 1 (10-bin RGB histograms: 2.45-2.68 from ID,
  2.97 for the mean-histogram baseline): only bin units give numbers of that
  order. Grey levels would be 25.5x larger, fractions of the range 10x
  smaller. Whether the paper averages or sums its 3 channels is not stated:
  on stand-in data the mean-histogram baseline is ~0.8 bins per channel for
  tight grey face crops (skimage's LFW subset) and ~1.4 for varied colour
  photos, so 2.97 fits a channel *sum* of ~1 bin per channel at least as
  well as a mean. Report which one you use.

  Args:
    pred_hist: [..., C, bins] non-negative histograms (counts or
      frequencies; each channel is normalised here).
    target_hist: [..., C, bins] likewise.
    bin_width: distance between adjacent bin centres, in the unit wanted.
    channel_reduction: 'mean' or 'sum' of the per-channel EMDs, or 'none'
      to keep them.

  Returns:
    [...] EMD reduced over the C channels ([..., C] for 'none').
  """
  pred_hist, target_hist = _float(pred_hist), _float(target_hist)
  chex.assert_equal_shape([pred_hist, target_hist])
  chex.assert_shape(pred_hist, (..., None, None))
  if channel_reduction not in ('mean', 'sum', 'none'):
    raise ValueError("channel_reduction must be 'mean', 'sum' or 'none', got "
                     f'{channel_reduction!r}')

  def cdf(h):
    total = jnp.sum(h, axis=-1, keepdims=True)
    return jnp.cumsum(h / total, axis=-1)

  # The last CDF value is 1 for both, so it contributes nothing.
  per_channel = jnp.sum(jnp.abs(cdf(pred_hist) - cdf(target_hist))[..., :-1],
                        axis=-1) * bin_width
  if channel_reduction == 'none':
    return per_channel
  reduce = jnp.mean if channel_reduction == 'mean' else jnp.sum
  return reduce(per_channel, axis=-1)


def binary_accuracy(probs: chex.Array, labels: chex.Array) -> jax.Array:
  """1.0 where ``probs > 0.5`` agrees with the boolean `labels`, else 0.0.

  Args:
    probs: [...] predicted probability of the positive class.
    labels: [...] booleans (or 0 / 1).

  Returns:
    [...] float32 correctness (its mean is the accuracy).
  """
  chex.assert_equal_shape([probs, labels])
  predicted = jnp.asarray(probs) > 0.5
  return (predicted == jnp.asarray(labels).astype(bool)).astype(jnp.float32)


def landmark_nme(pred: chex.Array, target: chex.Array, *,
                 eye_corners: tuple[int, int] = OUTER_EYE_CORNERS) -> jax.Array:
  """Normalised mean landmark error, as a fraction of interocular distance.

  mean_i ||pred_i - target_i||_2 / ||target_36 - target_45||_2 over the 68
  iBUG points, where points 36 and 45 (0-based) are the outer eye corners of
  the *target*. Multiply by 100 for the paper's percentages (Table 1: 7.3-11%).

  Args:
    pred: [..., 68, 2] points, or flat [..., 136] as x0, y0, x1, y1, ...
    target: same shape as `pred`, same coordinate units.
    eye_corners: 0-based indices of the two points whose distance normalises.

  Returns:
    [...] NME (inf or NaN when the target's eye corners coincide).
  """
  pred, target = _float(pred), _float(target)
  chex.assert_equal_shape([pred, target])
  pred = _distances.as_points(pred, _distances.NUM_LANDMARKS)
  target = _distances.as_points(target, _distances.NUM_LANDMARKS)
  error = jnp.mean(jnp.linalg.norm(pred - target, axis=-1), axis=-1)
  i, j = eye_corners
  interocular = jnp.linalg.norm(target[..., i, :] - target[..., j, :], axis=-1)
  return error / interocular


# Attack success: verification scores and TMR at fixed FMR (numpy).


def verification_scores(
    reconstructed: chex.Array,
    targets: chex.Array,
    labels: Sequence[int] | np.ndarray,
    *,
    target_labels: Sequence[int] | np.ndarray | None = None,
    genuine: Literal['same_index', 'same_identity'] = 'same_index',
) -> tuple[np.ndarray, np.ndarray]:
  """Genuine and impostor cosine scores of reconstructions against targets.

  Scores every reconstruction against every target descriptor (one [N, M]
  similarity matrix, computed at full float32 precision so that TF32
  matmuls on GPU cannot shift thresholds; N x M floats of memory, so score
  very large sets in chunks). Impostor pairs are all pairs whose identity
  labels differ, within the evaluation set.

  Args:
    reconstructed: [N, D] descriptors of the reconstructed images (usually
      from an encoder other than the one inverted).
    targets: [M, D] descriptors of real images.
    labels: [N] identity label of each reconstruction.
    target_labels: [M] identity labels of `targets`; by default `labels`,
      i.e. targets[i] is the image that reconstructed[i] was inverted from.
    genuine: 'same_index' scores each reconstruction against its own source
      image only (pairs (i, i); needs N == M; the "type-I" attack);
      'same_identity' scores it against every target of the same identity
      (e.g. other images of the person; the "type-II" attack).

  Returns:
    (genuine_scores, impostor_scores), 1-D float64 numpy arrays.
  """
  reconstructed, targets = _float(reconstructed), _float(targets)
  chex.assert_rank([reconstructed, targets], 2)
  chex.assert_equal_shape_suffix([reconstructed, targets], 1)
  labels = np.asarray(labels)
  target_labels = labels if target_labels is None else np.asarray(
      target_labels)
  if labels.shape != reconstructed.shape[:1]:
    raise ValueError(f'labels must have shape [{reconstructed.shape[0]}], '
                     f'got {labels.shape}')
  if target_labels.shape != targets.shape[:1]:
    raise ValueError(f'target_labels must have shape [{targets.shape[0]}], '
                     f'got {target_labels.shape}')

  def unit(v):
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, -1, keepdims=True),
                                         1e-16))

  scores = jnp.einsum('nd,md->nm', unit(reconstructed), unit(targets),
                      precision=jax.lax.Precision.HIGHEST)
  scores = np.asarray(scores, np.float64)
  same = labels[:, None] == target_labels[None, :]
  if genuine == 'same_index':
    if reconstructed.shape[0] != targets.shape[0]:
      raise ValueError("genuine='same_index' needs as many targets as "
                       f'reconstructions, got {targets.shape[0]} and '
                       f'{reconstructed.shape[0]}')
    if not np.all(np.diagonal(same)):
      raise ValueError("genuine='same_index' needs target_labels[i] == "
                       'labels[i]')
    genuine_scores = np.diagonal(scores).copy()
  elif genuine == 'same_identity':
    genuine_scores = scores[same]
  else:
    raise ValueError("genuine must be 'same_index' or 'same_identity', got "
                     f'{genuine!r}')
  return genuine_scores, scores[~same]


def _scores(name: str, scores: chex.Array) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1 or not scores.size:
    raise ValueError(f'{name} must be a non-empty 1-D array, got shape '
                     f'{scores.shape}')
  if not np.all(np.isfinite(scores)):
    raise ValueError(f'{name} contains NaN or inf')
  return scores


def impostor_threshold(impostor_scores: chex.Array, fmr: float) -> float:
  """The lowest similarity threshold whose false match rate is at most `fmr`.

  A pair matches when its score >= threshold. The result t is the smallest
  value such that the fraction of impostor scores >= t is <= fmr: just above
  the (k+1)-th highest impostor score, k = floor(fmr * num_impostors). With
  ties at that score the achieved FMR is below `fmr` (the tied scores cannot
  be split).

  Args:
    impostor_scores: [I] similarity scores of different-identity pairs.
    fmr: target false match rate in (0, 1].

  Returns:
    The threshold (a float; -inf when fmr * I >= I, i.e. fmr = 1).

  Raises:
    ValueError: if fmr < 1 / I: a rate finer than the number of impostor
      pairs can resolve is not measurable, so no threshold is reported.
  """
  scores = _scores('impostor_scores', impostor_scores)
  if not 0.0 < fmr <= 1.0:
    raise ValueError(f'fmr must be in (0, 1], got {fmr}')
  n = scores.size
  allowed = fmr * n
  # fmr * n can land a rounding error below an integer (0.29 * 100 =
  # 28.999...); treat it as that integer.
  k = round(allowed) if math.isclose(allowed, round(allowed),
                                     rel_tol=1e-9) else math.floor(allowed)
  if k < 1:
    raise ValueError(
        f'fmr={fmr} is below the resolution of {n} impostor scores (1/{n}); '
        f'it needs at least {math.ceil(1 / fmr)} impostor pairs')
  if k >= n:
    return -math.inf
  # (k+1)-th highest score, then the next float up: exactly k or fewer
  # scores are strictly above it.
  kth = np.partition(scores, n - k - 1)[n - k - 1]
  return float(np.nextafter(kth, np.inf))


def tmr_at_fmr(
    genuine_scores: chex.Array,
    impostor_scores: chex.Array,
    *,
    fmrs: Sequence[float] = (1e-2, 1e-3),
) -> dict[float, float]:
  """True match rate at fixed false match rates (attack success rate).

  Args:
    genuine_scores: [G] similarity scores of same-identity pairs (for an
      inversion attack: reconstruction vs. target).
    impostor_scores: [I] similarity scores of different-identity pairs.
    fmrs: false match rates at which to set the threshold, each >= 1 / I.

  Returns:
    {fmr: fraction of genuine scores >= impostor_threshold(impostor, fmr)}.

  Raises:
    ValueError: see `impostor_threshold`.
  """
  genuine = _scores('genuine_scores', genuine_scores)
  impostor = _scores('impostor_scores', impostor_scores)
  return {fmr: float(np.mean(genuine >= impostor_threshold(impostor, fmr)))
          for fmr in fmrs}


# The normal quantile of a two-sided 95 % interval.
Z_95 = 1.959963984540054


def wilson_interval(successes: float, trials: float, *, z: float = Z_95
                    ) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95 % by default).

  Unlike the normal approximation it stays inside [0, 1] and is not empty
  at 0 or all successes (k of n accepted still leaves room below 1), which
  is where attack rates often sit.

  Args:
    successes: k (a float is allowed: an effective count, see
      `clustered_rate_interval`).
    trials: n > 0 (likewise).
    z: normal quantile of the coverage.

  Returns:
    (low, high).
  """
  if trials <= 0:
    raise ValueError(f'trials must be > 0, got {trials}')
  if not 0 <= successes <= trials:
    raise ValueError(f'successes must lie in [0, {trials}], got {successes}')
  p, n, z2 = successes / trials, float(trials), z * z
  denom = 1.0 + z2 / n
  centre = (p + z2 / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def clustered_rate_interval(hits: chex.Array, groups: chex.Array, *,
                            z: float = Z_95) -> dict[str, float]:
  """A rate over attempts that come in groups (people), with its interval.

  Attempts of one person are not independent (a well rebuilt face passes
  against all of that person's photos), so the binomial interval of all
  attempts would be too narrow. The interval is Wilson's at the effective
  number of attempts n / deff, where the design effect deff is the ratio of
  the between-people (ratio-estimator) variance of the rate to the binomial
  one (Kish). The effective number is kept within [people, attempts]: with
  one attempt per person it is the plain Wilson interval; where the rate is
  0 or 1 the variance says nothing and the number of people is used (the
  cautious end).

  Args:
    hits: [G] bool, attempt accepted.
    groups: [G] the person of each attempt.
    z: normal quantile of the coverage.

  Returns:
    ``{'rate', 'low', 'high', 'attempts', 'people', 'effective_attempts'}``.
  """
  hits = np.asarray(hits, np.float64).ravel()
  groups = np.asarray(groups).ravel()
  if hits.shape != groups.shape or not hits.size:
    raise ValueError(f'hits and groups must be non-empty and of one shape, '
                     f'got {hits.shape} and {groups.shape}')
  _, inverse = np.unique(groups, return_inverse=True)
  per_hits = np.bincount(inverse, weights=hits)
  per_size = np.bincount(inverse).astype(np.float64)
  g, c = hits.size, per_size.size
  rate = float(hits.mean())
  effective = float(c)
  if 0.0 < rate < 1.0 and c > 1:
    between = c / (c - 1) * np.sum((per_hits - rate * per_size) ** 2) / g**2
    binomial = rate * (1 - rate) / g
    effective = float(np.clip(g * binomial / between if between > 0 else g,
                              c, g))
  low, high = wilson_interval(rate * effective, effective, z=z)
  return {'rate': rate, 'low': low, 'high': high, 'attempts': int(g),
          'people': int(c), 'effective_attempts': effective}


def bootstrap_impostor_thresholds(descriptors: chex.Array,
                                  identity: chex.Array,
                                  fmrs: Sequence[float], *,
                                  num: int = 200, seed: int = 0
                                  ) -> dict[float, np.ndarray]:
  """How much the thresholds at `fmrs` move with the people who set them.

  The impostor pairs of a pool share photos and people, so resampling pairs
  would understate the spread; instead each replicate draws the pool's
  *people* with replacement (all photos of a drawn person come along; two
  copies of a person are never paired with each other) and recomputes the
  threshold (`impostor_threshold`) from the impostor pairs of the drawn
  pool, each unordered pair once.

  Args:
    descriptors: [M, D] the pool's descriptors.
    identity: [M] the person of each.
    fmrs: false match rates.
    num: replicates.
    seed: resampling seed.

  Returns:
    ``{fmr: [num] thresholds}`` (a replicate too small to resolve an FMR
    gives NaN there).
  """
  x = np.asarray(descriptors, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  cos = x @ x.T
  identity = np.asarray(identity)
  people, inverse = np.unique(identity, return_inverse=True)
  photos = [np.flatnonzero(inverse == i) for i in range(len(people))]
  rng = np.random.default_rng(seed)
  out = {fmr: np.full(num, np.nan) for fmr in fmrs}
  for b in range(num):
    drawn = rng.integers(0, len(people), len(people))
    rows = np.concatenate([photos[p] for p in drawn])
    who = inverse[rows]
    keep = np.triu(who[:, None] != who[None, :], k=1)
    pairs = cos[np.ix_(rows, rows)][keep]
    for fmr in fmrs:
      if pairs.size * fmr >= 1:
        out[fmr][b] = impostor_threshold(pairs, fmr)
  return out
