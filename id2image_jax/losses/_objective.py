"""Weighted sum of loss terms (ID2image eq. 4)."""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from id2image_jax.losses._terms import DEFAULT_WEIGHTS


def objective(
    terms: Mapping[str, chex.Array],
    *,
    weights: Mapping[str, chex.Numeric] = DEFAULT_WEIGHTS,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of per-example loss terms (ID2image eq. 4).

  Shaped for `jax.value_and_grad(..., has_aux=True)`: a loss function can end
  with `return objective(terms, weights=w)` and get the unweighted terms back
  as aux for logging.

  Args:
    terms: name -> [...] per-example loss, all of the same shape (e.g.
      {'id': [N], 'landmarks': [N]} for an ablation without the histogram).
    weights: name -> weight (a float, or an array broadcastable to the terms'
      shape for per-example weights). Every term needs a weight; weights of
      absent terms are ignored, so `DEFAULT_WEIGHTS` serves every ablation.

  Returns:
    (total, terms): total is the [...] weighted sum; terms is a dict of the
    input terms, unweighted.

  Raises:
    ValueError: if `terms` is empty or a term has no weight.
  """
  if not terms:
    raise ValueError('objective needs at least one loss term')
  missing = sorted(set(terms) - set(weights))
  if missing:
    raise ValueError(f'no weight for loss term(s) {missing}; weights are given '
                     f'for {sorted(weights)}')
  names = sorted(terms)  # A fixed summation order: same total every call.
  values = [jnp.asarray(terms[name]) for name in names]
  chex.assert_equal_shape(values)
  total = sum(weights[name] * value for name, value in zip(names, values))
  return total, dict(terms)
