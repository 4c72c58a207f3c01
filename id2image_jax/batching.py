"""One padded-batch loop for every "apply a jitted function to N rows" job.

Embedding images, predicting with a head, rendering latents: each maps N
host rows through a compiled function in fixed-size batches. Padding the
last batch to the same size (by repeating its last row: real data, so the
padding computes finite values) keeps one compiled shape for any N.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


# Rows of images per call in `map_row_blocks` callers: a test set's 1024 px
# renders (290 are 3.6 GB as float32) and SSIM's intermediates over all of
# them at once would not fit in host memory. Embedding takes a multiple of
# `Encoder.embed`'s batch of 32.
IMAGE_ROW_BLOCK = 16
EMBED_ROW_BLOCK = 64


def num_rows(tree: Any, *, what: str = 'inputs') -> int:
  """The common leading size of every leaf of `tree`.

  Raises:
    ValueError: leaves disagree, or one is a scalar.
  """
  sizes = {np.shape(x)[0] if np.ndim(x) else None
           for x in jax.tree.leaves(tree)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f'every leaf of {what} needs the same leading row '
                     f'axis, got leading sizes {sorted(map(str, sizes))}')
  return sizes.pop()


def pad_rows(rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """`rows` padded to `size` by repeating the last one, and the real mask."""
  rows = np.asarray(rows)
  pad = np.full(size - len(rows), rows[-1], rows.dtype)
  return np.concatenate([rows, pad]), np.arange(size) < len(rows)


def batched_apply(fn: Callable[[Any], Any], xs: Any, batch: int, *,
                  pad_small: bool = False) -> Any:
  """``fn`` over the rows of `xs` in batches of exactly `batch` rows.

  Args:
    fn: maps a pytree of [batch, ...] arrays to a pytree of [batch, ...]
      arrays (typically jitted: it sees one shape only).
    xs: pytree of host arrays with leaves [N, ...], N >= 1.
    batch: rows per call.
    pad_small: also pad when N < `batch`. By default a single short batch
      is passed as is: nothing else is compiled, so padding would only add
      work; sharded callers need every batch to fill the device mesh.

  Returns:
    ``fn``'s outputs for the N rows, as (writable) host numpy, leaves
    [N, ...].
  """
  if batch < 1:
    raise ValueError(f'batch must be >= 1, got {batch}')
  xs = jax.tree.map(np.asarray, xs)
  n = num_rows(xs)
  if n == 0:
    raise ValueError('nothing to apply the function to (0 rows)')
  if n <= batch and not (pad_small and n < batch):
    return jax.tree.map(np.array, fn(xs))  # a writable host copy
  # Written into one preallocated result: collecting the batches and
  # concatenating would hold every output twice (a test set's 1024 px
  # renders are GBs).
  result = None
  for start in range(0, n, batch):
    rows = np.arange(start, min(start + batch, n))
    padded, _ = pad_rows(rows, batch)
    out = jax.tree.map(lambda y, k=len(rows): np.asarray(y)[:k],
                       fn(jax.tree.map(lambda x: x[padded], xs)))
    if result is None:
      result = jax.tree.map(
          lambda y: np.empty((n,) + y.shape[1:], y.dtype), out)
    for dst, src in zip(jax.tree.leaves(result), jax.tree.leaves(out)):
      dst[start:start + len(rows)] = src
  return result


def map_row_blocks(fn: Callable[..., Any], arrays: Sequence[Any],
                   rows: np.ndarray, block: int) -> Any:
  """``fn(*[a[rows] for a in arrays])``, computed `block` rows at a time.

  For per-row work on host arrays too large to index at once: a test set
  of 1024 px renders (290 of them are 3.6 GB as float32) and the
  intermediates of, say, SSIM over all of them would not fit in memory.

  Args:
    fn: maps [K, ...] arrays (one per entry of `arrays`) to a pytree of
      [K, ...] arrays, each row depending only on the same rows of its
      inputs.
    arrays: host arrays with a leading row axis.
    rows: the rows to compute (>= 1).
    block: rows per call.

  Returns:
    ``fn``'s outputs for `rows`, concatenated, as host numpy.
  """
  if block < 1:
    raise ValueError(f'block must be >= 1, got {block}')
  rows = np.asarray(rows)
  if not rows.size:
    raise ValueError('nothing to apply the function to (0 rows)')
  parts = [jax.tree.map(np.asarray,
                        fn(*[np.asarray(a)[rows[i:i + block]]
                             for a in arrays]))
           for i in range(0, rows.size, block)]
  return jax.tree.map(lambda *ys: np.concatenate(ys), *parts)
