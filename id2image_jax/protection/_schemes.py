"""Template protection schemes: pure, jittable ``[..., D] -> [..., T]``.

Every scheme is ``protect(key, descriptors, **params) -> templates``: the
typed key first (the project's convention; issue 21 wrote
``protect(descriptors, key)``), options keyword-only and static (they fix
the template size, so `jax.jit` them with `functools.partial`). One key
protects every row: it is the *system key* of cancelable biometrics, a
reusable secret, not a random draw to be consumed, so each scheme works on
``jax.random.clone(key)`` and calling it twice with one key (enrolment,
then a probe) is the intended use. Schemes without a secret take
``key=None``.

Sources (the definitions followed, in the papers' own terms):

* partial templates: the first k of D dimensions, or a keyed random subset
  of k (the "partial embeddings" of FEM, AAAI 2026, and PartialFace);
* `quantise`: symmetric uniform quantisation to ``bits`` per value
  (int8, 4-bit; 1 bit is the sign), as stored-template compression does;
* `projection`: a keyed random orthonormal projection, the cancelable
  transform of random-projection schemes (Teoh et al. 2006; Jin et al.
  2004);
* `biohash`: BioHashing (Teoh, Ngo & Goh 2004, *Pattern Recognition* 37):
  inner products with a token's Gram-Schmidt-orthonormalised random
  vectors, thresholded at tau = 0, one bit each;
* `polyprotect`: PolyProtect (Hahn & Marcel 2022, *IEEE T-BIOM*):
  overlapping windows of m consecutive elements of the (normalised)
  embedding, each mapped to ``sum_j c_j v_j ** e_j`` with key-drawn
  non-zero integer coefficients in [-R, R] and exponents a permutation of
  1..m; the last window is zero-padded;
* `gaussian_noise`: the unit template plus isotropic Gaussian noise of
  expected norm ``scale``.

Binary and quantised outputs carry a straight-through gradient (identity
for the rounding / sign): the values are exact, the gradient is that of
the input, so an attacker can differentiate through them (Bengio et al.
2013).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _check(descriptors: jax.Array) -> jax.Array:
  descriptors = jnp.asarray(descriptors)
  if descriptors.ndim < 1:
    raise ValueError('descriptors must be [..., D], got a scalar')
  if not jnp.issubdtype(descriptors.dtype, jnp.floating):
    descriptors = descriptors.astype(jnp.float32)
  return descriptors


def _reusable(key: jax.Array | None, scheme: str) -> jax.Array:
  if key is None:
    raise ValueError(f'{scheme} needs a key (the system key): got None')
  return jax.random.clone(key)


def _straight_through(exact: jax.Array, surrogate: jax.Array) -> jax.Array:
  """`exact` in the forward pass, d surrogate in the backward pass.

  ``surrogate - stop_gradient(surrogate)`` is exactly 0, so the values are
  those of `exact` bit for bit.
  """
  return exact + (surrogate - jax.lax.stop_gradient(surrogate))


def unit(descriptors: jax.Array) -> jax.Array:
  """[..., D] scaled to unit L2 norm (zero rows stay zero)."""
  descriptors = _check(descriptors)
  norm2 = jnp.sum(jnp.square(descriptors), axis=-1, keepdims=True)
  return descriptors * jax.lax.rsqrt(jnp.maximum(norm2, 1e-24))


def identity(key: jax.Array | None, descriptors: jax.Array) -> jax.Array:
  """No protection: the descriptors themselves (the reference)."""
  del key
  return _check(descriptors)


def partial_first(key: jax.Array | None, descriptors: jax.Array, *,
                  k: int) -> jax.Array:
  """The first `k` dimensions: ``[..., D] -> [..., k]``."""
  del key
  descriptors = _check(descriptors)
  _in_range('k', k, 1, descriptors.shape[-1])
  return descriptors[..., :k]


def subset_indices(key: jax.Array, dim: int, k: int) -> jax.Array:
  """[k] sorted indices of a keyed random subset of ``range(dim)``."""
  _in_range('k', k, 1, dim)
  order = jax.random.permutation(_reusable(key, 'partial_random'), dim)
  return jnp.sort(order[:k])


def partial_random(key: jax.Array, descriptors: jax.Array, *,
                   k: int) -> jax.Array:
  """A keyed random subset of `k` dimensions, in their original order."""
  descriptors = _check(descriptors)
  rows = subset_indices(key, descriptors.shape[-1], k)
  return jnp.take(descriptors, rows, axis=-1)


def sign(descriptors: jax.Array) -> jax.Array:
  """+1 where >= 0, else -1, with a straight-through (identity) gradient."""
  descriptors = _check(descriptors)
  exact = jnp.where(descriptors >= 0, 1.0, -1.0).astype(descriptors.dtype)
  return _straight_through(exact, descriptors)


def quantise(key: jax.Array | None, descriptors: jax.Array, *,
             bits: int) -> jax.Array:
  """Symmetric uniform quantisation to `bits` per value, per template.

  With ``L = 2 ** (bits - 1) - 1`` levels each side (127 for int8, 7 for
  4 bits), ``q = round(x * L / max|x|)``: integers in [-L, L], stored as
  floats so that a straight-through gradient can pass (the per-template
  scale ``max|x| / L`` is not kept: cosine scores do not need it).
  ``bits=1`` is the sign (+-1).

  Returns:
    [..., D] integer-valued templates.
  """
  del key
  descriptors = _check(descriptors)
  _in_range('bits', bits, 1, 16)
  if bits == 1:
    return sign(descriptors)
  levels = 2 ** (bits - 1) - 1
  peak = jnp.max(jnp.abs(descriptors), axis=-1, keepdims=True)
  scaled = descriptors * (levels / jnp.maximum(peak, 1e-12))
  return _straight_through(jnp.round(scaled), scaled)


def orthonormal_matrix(key: jax.Array, dim: int, num: int) -> jax.Array:
  """[dim, num] with orthonormal columns, drawn from the key.

  The Gram-Schmidt orthonormalisation of `num` Gaussian vectors (QR with
  the signs fixed so that R has a positive diagonal: the unique
  Gram-Schmidt result), as BioHashing prescribes.
  """
  _in_range('num', num, 1, dim)
  gauss = jax.random.normal(_reusable(key, 'projection'), (dim, num),
                            jnp.float32)
  q, r = jnp.linalg.qr(gauss)
  return q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)


def projection(key: jax.Array, descriptors: jax.Array, *,
               dim: int = 0) -> jax.Array:
  """``x @ Q``: a keyed random orthonormal projection to `dim` (0: D).

  With ``dim = D`` the map is a rotation: cosines are kept exactly and
  whoever has the key inverts it exactly (``x = y Q^T``).
  """
  descriptors = _check(descriptors)
  d = descriptors.shape[-1]
  q = orthonormal_matrix(key, d, dim or d)
  return jnp.einsum('...d,dk->...k', descriptors, q.astype(descriptors.dtype),
                    precision=jax.lax.Precision.HIGHEST)


def biohash(key: jax.Array, descriptors: jax.Array, *,
            bits: int) -> jax.Array:
  """BioHashing (Teoh, Ngo & Goh 2004): ``sign(<x, r_i>)``, i < bits.

  The r_i are the token's (the key's) orthonormalised random vectors, the
  threshold tau is 0; bit i is 1 where ``<x, r_i> > 0`` and is stored here
  as +1 (0 as -1), so Hamming and cosine scores agree.

  Returns:
    [..., bits] of +-1 (straight-through gradient).
  """
  return sign(projection(key, descriptors, dim=bits))


def polyprotect_key(key: jax.Array, *, m: int,
                    coefficient_range: int = 50
                    ) -> tuple[jax.Array, jax.Array]:
  """PolyProtect's secret: (coefficients [m], exponents [m]).

  Coefficients are drawn uniformly from the non-zero integers in
  [-coefficient_range, coefficient_range]; exponents are a random
  permutation of 1..m (Hahn & Marcel 2022).
  """
  _in_range('m', m, 1, 64)
  _in_range('coefficient_range', coefficient_range, 1, 10 ** 6)
  k_mag, k_sign, k_exp = jax.random.split(_reusable(key, 'polyprotect'), 3)
  magnitude = jax.random.randint(k_mag, (m,), 1, coefficient_range + 1)
  negative = jax.random.bernoulli(k_sign, 0.5, (m,))
  coefficients = jnp.where(negative, -magnitude, magnitude)
  exponents = jax.random.permutation(k_exp, m) + 1
  return coefficients, exponents


def polyprotect_windows(dim: int, *, m: int, overlap: int) -> np.ndarray:
  """[P, m] indices into the zero-padded embedding, one row per element
  of the protected template (windows of m, consecutive ones sharing
  `overlap` elements, until every element of the D is used)."""
  _in_range('m', m, 1, dim)
  _in_range('overlap', overlap, 0, m - 1)
  step = m - overlap
  count = 1 + max(0, math.ceil((dim - m) / step))
  return np.arange(count)[:, None] * step + np.arange(m)[None, :]


def polyprotect_map(v: jax.Array, coefficients: jax.Array,
                    exponents: jax.Array, *, overlap: int) -> jax.Array:
  """PolyProtect's mapping with explicit secrets (no normalisation).

  ``p_i = sum_j coefficients[j] * w_i[j] ** exponents[j]`` over the i-th
  window `w_i` of `polyprotect_windows` (zero-padded at the end).

  Args:
    v: [..., D] embeddings.
    coefficients: [m] non-zero integers.
    exponents: [m] positive integers, at most m (a permutation of 1..m).
    overlap: elements shared by consecutive windows (< m).

  Returns:
    [..., P] templates.
  """
  v = _check(v)
  m = int(np.shape(coefficients)[0])
  d = v.shape[-1]
  windows = polyprotect_windows(d, m=m, overlap=overlap)
  padded = jnp.pad(v, [(0, 0)] * (v.ndim - 1)
                   + [(0, int(windows.max()) + 1 - d)])
  w = padded[..., windows]  # [..., P, m]
  # Integer powers by repeated products (exact, defined for negative v,
  # differentiable), then each position's own exponent picked out.
  powers = jnp.stack([w ** (i + 1) for i in range(m)], axis=-1)
  pick = jax.nn.one_hot(jnp.asarray(exponents) - 1, m, dtype=v.dtype)
  chosen = jnp.einsum('...pji,ji->...pj', powers, pick)
  return jnp.einsum('...pj,j->...p', chosen,
                    jnp.asarray(coefficients).astype(v.dtype))


def polyprotect(key: jax.Array, descriptors: jax.Array, *, m: int = 5,
                overlap: int = 2, coefficient_range: int = 50) -> jax.Array:
  """PolyProtect (Hahn & Marcel 2022) of the unit-normalised embedding.

  `polyprotect_map` with the key's coefficients and exponents
  (`polyprotect_key`); the embedding is normalised first, as in the
  authors' benchmark, so the template does not depend on its scale.

  Returns:
    [..., P] real templates, P = 1 + ceil((D - m) / (m - overlap)).
  """
  v = unit(descriptors)
  _in_range('m', m, 1, v.shape[-1])
  coefficients, exponents = polyprotect_key(
      key, m=m, coefficient_range=coefficient_range)
  return polyprotect_map(v, coefficients, exponents, overlap=overlap)


def gaussian_noise(key: jax.Array, descriptors: jax.Array, *,
                   scale: float) -> jax.Array:
  """``x / |x| + scale * n / sqrt(D)``, n ~ N(0, I): noise of expected
  squared norm ``scale ** 2`` on a unit template (a fresh draw per row;
  the key is the randomness, not a secret)."""
  v = unit(descriptors)
  if not scale >= 0:
    raise ValueError(f'scale must be >= 0, got {scale}')
  noise = jax.random.normal(_reusable(key, 'noise'), v.shape, v.dtype)
  return v + (scale / math.sqrt(v.shape[-1])) * noise


def _in_range(name: str, value: int, low: int, high: int) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
    raise ValueError(f'{name} must be an integer, got {value!r}')
  if not low <= value <= high:
    raise ValueError(f'{name} must be in [{low}, {high}], got {value}')
