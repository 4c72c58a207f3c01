"""The terms of the ID2image objective (paper eq. 4), as one table.

Every place that lists the terms reads `TERMS`: `DEFAULT_WEIGHTS`;
`inversion.objective` (its `Weights` and the per-target loss);
`recipes.inversion` (the per-row targets the engine gets); the fields of
`data.targets.Targets` (one per term beyond the identity, checked by a
test); ``configs/invert.py`` (``weights``); `evaluation.arms` (the names of
the ablation arms, e.g. ``'id+lm+hist'``).

Adding a term is a row here and its per-example loss (`_distances.py`),
plus a `Targets` field of the term's name; when a model measures the
reconstruction (as the landmark network does), `recipes.inversion` also
says where that model comes from. README, "How to add an objective term".
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from collections.abc import Mapping

import chex
import jax

from id2image_jax.losses import _distances
from id2image_jax.losses import _histogram


def generator_image_histogram(image: chex.Array) -> jax.Array:
  """The histogram term's measure: the normalised soft histogram of a
  [-1, 1] generator image on the 0..255 scale (10 bins, sigma 1.85), what
  the ID -> histogram head predicts (its softmax output).

  Args:
    image: [..., H, W, 3] in [-1, 1].

  Returns:
    [..., 3, 10].
  """
  return _histogram.image_soft_histogram(image, value_range=(-1.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Term:
  """One term of the objective.

  Attributes:
    name: its key in weights, loss histories, reports and `Targets`.
    weight: its paper weight (the default).
    loss: ``loss(measured [..., ...], target [..., ...]) -> [...]``, per
      example and unreduced.
    target: the key of its per-target array in the engine's targets (the
      identity term compares with ``'descriptor'``).
    short: its label in ablation arm names ('id+lm+hist').
    aliases: further names an arm may use for it.
    params_key: the entry of the objective's ``params`` that holds the
      variables its measure takes (``measure(params[params_key], image)``),
      or None for a measure of the image alone (``measure(image)``).
    measure: the measure of a model-free term (None: the caller gives it).
    always: computed whatever its weight and targets (the identity term,
      which every inversion has).
  """
  name: str
  weight: float
  loss: Callable[[chex.Array, chex.Array], jax.Array]
  target: str
  short: str
  aliases: tuple[str, ...] = ()
  params_key: str | None = None
  measure: Callable[[chex.Array], jax.Array] | None = None
  always: bool = False


# Paper eq. 4: w1 = 1 (ID), w2 = 0.0006 (landmarks), w3 = 0.01 (histogram).
TERMS: tuple[Term, ...] = (
    Term('id', 1.0, _distances.identity_loss, target='descriptor',
         short='id', params_key='encoder', always=True),
    Term('landmarks', 0.0006, _distances.landmark_loss, target='landmarks',
         short='lm', aliases=('lms',), params_key='landmarks'),
    Term('histogram', 0.01, _distances.histogram_loss, target='histogram',
         short='hist', measure=generator_image_histogram),
)

# Read-only so that no caller can change the defaults of everyone else.
DEFAULT_WEIGHTS: Mapping[str, float] = types.MappingProxyType(
    {t.name: t.weight for t in TERMS})
# The terms whose targets come beside the descriptor (`Targets` fields,
# predicted by descriptor heads or measured on the originals).
AUX_TERMS: tuple[str, ...] = tuple(t.name for t in TERMS if not t.always)
