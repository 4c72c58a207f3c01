"""The ablation arms of paper Table 2, as data: which loss terms each uses.

An arm is named by its terms joined with '+': ``'id'``, ``'id+lm'``,
``'id+lm+hist'`` (each term's ``short`` label in `losses.TERMS`, or its
name or an alias: ``lm`` = ``landmarks``, ``hist`` = ``histogram``). Its
weights are the config's eq. 4 weights for the terms it names and 0 for the
others.

A term can only be used when its targets (and, for landmarks, the
image->landmark model) exist. `plan_arms` decides what actually runs:

* a term that is unavailable is dropped from the arm, and the arm is
  reported under the name of the terms that really ran (``'id+lm+hist'``
  without landmarks runs, and is labelled, as ``'id+hist'``), with the reason;
* an arm that ends up with the same terms as an earlier arm is skipped
  (``'id+lm'`` without landmarks would be ``'id'`` again), with the reason.

So no column of a report ever claims a term that was not optimised.

The arm ``'nes'`` is the score-only attacker: the identity term alone, but
estimated from similarity queries (`inversion.blackbox`), not gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence

from id2image_jax import errors
from id2image_jax import losses

TERMS = tuple(t.name for t in losses.TERMS)
_ALIASES = {alias: t.name for t in losses.TERMS
            for alias in (t.name, t.short, *t.aliases)}
_SHORT = {t.name: t.short for t in losses.TERMS}
# The arm of the attacker who may only query similarity scores.
SCORES_ONLY = 'nes'


@dataclasses.dataclass(frozen=True)
class ArmPlan:
  """What one requested arm becomes.

  Attributes:
    requested: the arm as configured, e.g. 'id+lm+hist'.
    terms: the terms that run, in `TERMS` order (empty when skipped).
    weights: eq. 4 weights, one per term of `TERMS` (0 = off).
    dropped: term -> why it could not be used.
    skipped: why the whole arm does not run ('' when it runs).
    scores_only: the score-only attacker (`SCORES_ONLY`): its identity term
      is estimated from similarity queries, not differentiated.
  """
  requested: str
  terms: tuple[str, ...]
  weights: dict[str, float]
  dropped: dict[str, str]
  skipped: str = ''
  scores_only: bool = False

  @property
  def name(self) -> str:
    """The label of what runs (e.g. 'id+hist'), or the requested name."""
    if self.scores_only:
      return SCORES_ONLY
    return arm_name(self.terms) if self.terms else self.requested

  @property
  def runs(self) -> bool:
    return not self.skipped


def parse_arm(arm: str) -> tuple[str, ...]:
  """'id+lm+hist' -> ('id', 'landmarks', 'histogram') in `TERMS` order.

  Raises:
    ValueError: an unknown term, or an arm without the identity term (every
      arm of the paper's ablation optimises the ID loss).
  """
  parts = [p.strip().lower() for p in str(arm).split('+') if p.strip()]
  unknown = [p for p in parts if p not in _ALIASES]
  if unknown or not parts:
    raise errors.UsageError(
        f'arm {arm!r}: unknown term(s) {unknown}; use terms '
        f'{sorted(_ALIASES)} joined with "+", e.g. id+lm+hist')
  terms = {_ALIASES[p] for p in parts}
  if 'id' not in terms:
    raise errors.UsageError(
        f'arm {arm!r} has no identity term: every arm needs id')
  return tuple(t for t in TERMS if t in terms)


def arm_name(terms: Sequence[str]) -> str:
  """('id', 'histogram') -> 'id+hist'."""
  return '+'.join(_SHORT[t] for t in TERMS if t in terms)


def arm_weights(terms: Sequence[str],
                weights: Mapping[str, float]) -> dict[str, float]:
  """The eq. 4 weights of `terms`, 0.0 for every other term."""
  return {t: float(weights[t]) if t in terms else 0.0 for t in TERMS}


def plan_arms(arms: Sequence[str], weights: Mapping[str, float],
              unavailable: Mapping[str, str]) -> list[ArmPlan]:
  """Decides which arms run with which terms (see the module docstring).

  Args:
    arms: requested arm names, in order.
    weights: the eq. 4 weight of each term.
    unavailable: term -> reason, for terms that cannot be used.

  Returns:
    One `ArmPlan` per requested arm, in order.
  """
  if not arms:
    raise errors.UsageError('no arms to evaluate (config.arms is empty)')
  plans, seen = [], {}
  for arm in arms:
    if str(arm).strip().lower() == SCORES_ONLY:
      plans.append(ArmPlan(arm, ('id',), arm_weights(('id',), weights), {},
                           scores_only=True))
      continue
    wanted = parse_arm(arm)
    dropped = {t: unavailable[t] for t in wanted if t in unavailable}
    zero = {t: 'its weight is 0' for t in wanted
            if t not in dropped and not weights[t]}
    dropped.update(zero)
    terms = tuple(t for t in wanted if t not in dropped)
    if 'id' not in terms:
      plans.append(ArmPlan(arm, (), arm_weights((), weights), dropped,
                           skipped='the identity term is unavailable: '
                           + dropped.get('id', '?')))
      continue
    if terms in seen:
      plans.append(ArmPlan(
          arm, (), arm_weights((), weights), dropped,
          skipped=f'without {", ".join(dropped)} it is the same as arm '
          f'{seen[terms]!r}'))
      continue
    seen[terms] = arm
    plans.append(ArmPlan(arm, terms, arm_weights(terms, weights), dropped))
  return plans
