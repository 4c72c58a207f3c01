"""Comparison scores of protected templates (higher = more similar).

* `cosine_score`: real-valued templates (partial, quantised, projected,
  PolyProtected, noisy);
* `hamming_similarity`: binary templates (sign, BioHash): the fraction of
  bits that agree, 1 - normalised Hamming distance. For +-1 templates it
  equals ``(1 + cos) / 2``, so the cosine an attacker optimises orders
  candidates exactly as the system's Hamming score does.

`score_matrix` scores every row of one set against every row of another
(float64 numpy, for thresholds and ROC curves).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import losses

ScoreKind = Literal['cosine', 'hamming']
SCORE_KINDS = ('cosine', 'hamming')


def cosine_score(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[..., T], [..., T] -> [...]`` cosine similarity (broadcasting)."""
  return losses.cosine_similarity(*jnp.broadcast_arrays(a, b))


def hamming_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[..., T], [..., T] -> [...]`` fraction of agreeing bits (broadcasting).

  A bit is 1 where the template value is > 0 (BioHash's rule), so +-1 and
  0/1 encodings score alike.
  """
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape[-1] != b.shape[-1]:
    raise ValueError(f'templates differ in length: {a.shape[-1]} vs '
                     f'{b.shape[-1]}')
  a, b = jnp.broadcast_arrays(a, b)
  return jnp.mean((a > 0) == (b > 0), axis=-1, dtype=jnp.float32)


def score_fn(kind: ScoreKind):
  """The pairwise score of a kind ('cosine' | 'hamming')."""
  if kind == 'cosine':
    return cosine_score
  if kind == 'hamming':
    return hamming_similarity
  raise ValueError(f'score must be one of {SCORE_KINDS}, got {kind!r}')


def score_matrix(kind: ScoreKind, a, b) -> np.ndarray:
  """[N, M] float64 scores of every row of `a` [N, T] against `b` [M, T]."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f'expected [N, T] and [M, T] templates, got {a.shape} '
                     f'and {b.shape}')
  if kind == 'cosine':
    def unit(x):
      return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return unit(a) @ unit(b).T
  if kind == 'hamming':
    pa, pb = (a > 0).astype(np.float64), (b > 0).astype(np.float64)
    agree = pa @ pb.T + (1 - pa) @ (1 - pb).T
    return agree / a.shape[1]
  raise ValueError(f'score must be one of {SCORE_KINDS}, got {kind!r}')
