"""Descriptors far from what their encoder gives real faces (issue 23).

A descriptor file is inverted as given, but rows that are rescaled (a
normalised copy of an unnormalised encoder's output, or the reverse), come
from another network of the same size, or are random say so here: each row
is compared with a `Reference` measured on real photos
(``docs/make_descriptor_reference.py``) by two cheap statistics,

* its L2 norm, against the real norms' 0.5..99.5 percentile range, and
* its cosine to the real faces' mean descriptor, against that cosine's 0.5
  percentile: a network's descriptors share a common direction, which
  another network's (or random vectors) do not.

Measured (``separation`` in each reference file, PROVENANCE.md beside
them): no held-out real face is named; rescaled rows, a random-weight
network's and Gaussian ones all are. A FaceRes descriptor with its
dimensions shuffled passes: its 1024 non-negative dimensions are alike, so
the cosine stays; a mean squared per-dimension z-score was tried as well
and named no row that these two miss, on any of the three encoders.

The findings only inform: what is inverted stays as given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from id2image_jax import fields

# How far outside the real faces' range a statistic must fall to be named:
# the 0.5..99.5 percentile range of a few hundred photos leaves about 1 %
# of real faces just outside it, and those should not be named.
NORM_SLACK = 1.15      # factor beyond the norm range
COSINE_SLACK = 0.1     # below the cosine's 0.5 percentile
PERCENTILES = (0.5, 99.5)


@dataclasses.dataclass(frozen=True)
class Reference:
  """One encoder's descriptors of real faces, in a few numbers.

  Attributes:
    kind: the encoder kind measured.
    norm_range: (0.5, 99.5) percentiles of the L2 norm.
    norm_mean: mean L2 norm.
    norm_std: its standard deviation.
    mean_descriptor: [D] the mean descriptor.
    cosine_range: (0.5, 99.5) percentiles of the cosine to `mean_descriptor`.
    count: how many photos were measured.
    source: which photos, how, in words.
  """
  kind: str
  norm_range: tuple[float, float]
  norm_mean: float
  norm_std: float
  mean_descriptor: np.ndarray
  cosine_range: tuple[float, float]
  count: int
  source: str

  def to_json(self) -> dict[str, Any]:
    """A JSON-able dict (`from_json` reads it back)."""
    out = dataclasses.asdict(self)
    out['norm_range'] = list(self.norm_range)
    out['cosine_range'] = list(self.cosine_range)
    out['mean_descriptor'] = [float(f'{x:.6g}') for x in self.mean_descriptor]
    return out

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> Reference:
    """Reads `to_json`'s dict (further keys are provenance, ignored)."""
    values = fields.known_fields(cls, data)
    values['norm_range'] = tuple(values['norm_range'])
    values['cosine_range'] = tuple(values['cosine_range'])
    values['mean_descriptor'] = np.asarray(values['mean_descriptor'],
                                           np.float32)
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Finding:
  """One row off the encoder's distribution.

  Attributes:
    row: its index in the targets.
    name: its name.
    problems: what is off, in words (e.g. 'L2 norm 1.00, x1.7 above the
      real faces' 0.42..0.59').
  """
  row: int
  name: str
  problems: tuple[str, ...]


def _cosines(descriptors: np.ndarray, direction: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(descriptors, axis=1) * np.linalg.norm(direction)
  return descriptors @ direction / np.maximum(norms, 1e-12)


def statistics(descriptors: np.ndarray, reference: Reference
               ) -> dict[str, np.ndarray]:
  """Per-row statistics the check compares.

  Args:
    descriptors: [N, D].
    reference: the encoder's `Reference` (its mean descriptor).

  Returns:
    ``{'norm': [N], 'cosine_to_mean': [N]}``.
  """
  descriptors = np.asarray(descriptors, np.float64)
  return {'norm': np.linalg.norm(descriptors, axis=1),
          'cosine_to_mean': _cosines(descriptors, reference.mean_descriptor)}


def measure_reference(descriptors: np.ndarray, *, kind: str, source: str
                      ) -> Reference:
  """The `Reference` of an encoder's descriptors of real faces [N, D]."""
  descriptors = np.asarray(descriptors, np.float64)
  norms = np.linalg.norm(descriptors, axis=1)
  mean = descriptors.mean(axis=0)
  cosines = _cosines(descriptors, mean)
  return Reference(
      kind=kind,
      norm_range=tuple(float(x) for x in np.percentile(norms, PERCENTILES)),
      norm_mean=float(norms.mean()), norm_std=float(norms.std()),
      mean_descriptor=mean.astype(np.float32),
      cosine_range=tuple(float(x)
                         for x in np.percentile(cosines, PERCENTILES)),
      count=len(descriptors), source=source)


def _norm_problem(norm: float, reference: Reference) -> str | None:
  low, high = reference.norm_range
  real = f"the real faces' {low:.3g}..{high:.3g}"
  if norm > high * NORM_SLACK:
    return f'L2 norm {norm:.3g}, x{norm / high:.2g} above {real}'
  if norm < low / NORM_SLACK:
    factor = f'x{low / norm:.2g}' if norm > 0 else 'zero,'
    return f'L2 norm {norm:.3g}, {factor} below {real}'
  return None


def _cosine_problem(cosine: float, reference: Reference) -> str | None:
  low = reference.cosine_range[0]
  if cosine < low - COSINE_SLACK:
    return (f'cosine to the mean {reference.kind} descriptor {cosine:.2f} '
            f'(real faces >= {low:.2f}): not like this encoder\'s')
  return None


def check(descriptors: np.ndarray, reference: Reference, *,
          names: Sequence[str] | None = None) -> list[Finding]:
  """The rows whose norm or direction is far from real faces'.

  Args:
    descriptors: [N, D] as they will be inverted; non-finite rows are
      skipped (they are reported elsewhere).
    reference: the encoder's `Reference`, of the same D.
    names: [N] row names (default: row numbers).

  Returns:
    One `Finding` per row that is off, in row order.

  Raises:
    ValueError: the descriptors are not [N, D] of the reference's D.
  """
  descriptors = np.asarray(descriptors)
  dim = len(reference.mean_descriptor)
  if descriptors.ndim != 2 or descriptors.shape[1] != dim:
    raise ValueError(f'expected [N, {dim}] descriptors, got '
                     f'{descriptors.shape}')
  names = list(names) if names is not None else [
      str(i) for i in range(len(descriptors))]
  finite = np.isfinite(descriptors).all(axis=1)
  stats = statistics(np.where(finite[:, None], descriptors, 0.0), reference)
  findings = []
  for row in np.flatnonzero(finite):
    norm = stats['norm'][row]
    # A zero row has no direction: its norm says all.
    problems = (_norm_problem(norm, reference),
                _cosine_problem(stats['cosine_to_mean'][row], reference)
                if norm > 0 else None)
    if any(problems):
      findings.append(Finding(int(row), names[row],
                              tuple(p for p in problems if p)))
  return findings


def describe(findings: Sequence[Finding], total: int, *,
             kind: str = 'this encoder', limit: int = 3) -> str:
  """One warning naming the first `limit` offending rows and their count,
  for descriptors meant for the `kind` encoder."""
  shown = '; '.join(f'row {f.row} ({f.name}): {", ".join(f.problems)}'
                    for f in findings[:limit])
  more = (f'; and {len(findings) - limit} more' if len(findings) > limit
          else '')
  return (f'{len(findings)} of {total} target descriptor(s) look unlike '
          f'{kind}\'s descriptors of real faces (rescaled, another '
          f'encoder\'s, or random?); inverted as given: {shown}{more}')


def report(findings: Sequence[Finding] | None, total: int, *,
           reference: Reference | None, why_not: str = '') -> dict[str, Any]:
  """The findings as the JSON reports record them.

  Args:
    findings: `check`'s result; None when the check was not possible.
    total: rows checked.
    reference: what they were compared with (None: not possible).
    why_not: why the check was not possible, in words.
  """
  if findings is None or reference is None:
    return {'checked': False, 'why_not': why_not}
  return {
      'checked': True, 'rows': total, 'flagged': len(findings),
      'reference': {'kind': reference.kind,
                    'norm_range': list(reference.norm_range),
                    'cosine_range': list(reference.cosine_range),
                    'count': reference.count, 'source': reference.source},
      'findings': [{'row': f.row, 'name': f.name,
                    'problems': list(f.problems)} for f in findings],
  }
