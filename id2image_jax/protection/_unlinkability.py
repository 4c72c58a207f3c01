"""Unlinkability (ISO/IEC 30136; Gomez-Barrero et al. 2018, IEEE TIFS 13).

Can an attacker tell that two protected templates, stored by two systems
under different keys, belong to the same person? From the scores of
*mated* pairs (same person, one template from each key) and *non-mated*
pairs (different people), on score bins s:

* ``LR(s) = p(s | mated) / p(s | non-mated)`` (bin probabilities);
* the local measure ``D(s) = 2 * omega LR(s) / (1 + omega LR(s)) - 1``
  where ``omega LR(s) > 1``, else 0 (omega: prior ratio of mated to
  non-mated pairs, 1 by default); a bin with mated but no non-mated scores
  has ``D = 1``;
* the global measure ``D<->sys = sum_s p(s | mated) D(s)``, in [0, 1]:
  0 means fully unlinkable, 1 fully linkable.

Bins: `bins` equal bins over the range of all scores (10, as in the
authors' benchmark), or over `score_range`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def local_linkability(mated: Any, non_mated: Any, *, bins: int = 10,
                      omega: float = 1.0,
                      score_range: tuple[float, float] | None = None
                      ) -> dict[str, np.ndarray]:
  """D(s) per score bin (module docstring).

  Args:
    mated: [M] scores of mated pairs across the two keys.
    non_mated: [N] scores of non-mated pairs.
    bins: number of equal score bins.
    omega: prior ratio p(mated) / p(non-mated).
    score_range: (low, high) of the bins; default the scores' range.

  Returns:
    ``{'edges' [bins + 1], 'local' [bins], 'p_mated' [bins],
    'p_non_mated' [bins]}``.
  """
  mated = _scores('mated', mated)
  non_mated = _scores('non_mated', non_mated)
  if bins < 1:
    raise ValueError(f'bins must be >= 1, got {bins}')
  if not omega > 0:
    raise ValueError(f'omega must be > 0, got {omega}')
  if score_range is None:
    both = np.concatenate([mated, non_mated])
    low, high = float(both.min()), float(both.max())
    if low == high:  # every score equal: one bin holds them all
      low, high = low - 0.5, high + 0.5
  else:
    low, high = map(float, score_range)
  edges = np.linspace(low, high, bins + 1)
  p_m = np.histogram(mated, edges)[0] / mated.size
  p_nm = np.histogram(non_mated, edges)[0] / non_mated.size
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = omega * p_m / p_nm
    local = np.where(ratio > 1, 2 * ratio / (1 + ratio) - 1, 0.0)
  local = np.where((p_nm == 0) & (p_m > 0), 1.0, local)
  return {'edges': edges, 'local': local, 'p_mated': p_m,
          'p_non_mated': p_nm}


def unlinkability(mated: Any, non_mated: Any, *, bins: int = 10,
                  omega: float = 1.0,
                  score_range: tuple[float, float] | None = None
                  ) -> dict[str, Any]:
  """D<->sys of two keys' templates (module docstring).

  Args: as `local_linkability`.

  Returns:
    ``{'d_sys', 'num_mated', 'num_non_mated', 'bins', 'omega', 'edges',
    'local'}`` (lists, JSON-ready).
  """
  out = local_linkability(mated, non_mated, bins=bins, omega=omega,
                          score_range=score_range)
  return {'d_sys': float(np.sum(out['p_mated'] * out['local'])),
          'num_mated': int(np.size(mated)),
          'num_non_mated': int(np.size(non_mated)),
          'bins': int(bins), 'omega': float(omega),
          'edges': out['edges'].tolist(), 'local': out['local'].tolist()}


def _scores(name: str, values: Any) -> np.ndarray:
  values = np.asarray(values, np.float64).ravel()
  if not values.size:
    raise ValueError(f'{name}: no scores')
  if not np.all(np.isfinite(values)):
    raise ValueError(f'{name}: scores hold NaN or inf')
  return values
