"""The ID2image per-target objective (paper eq. 4), built from parts.

::

  loss = w_id * ||embed(render(latent)) - d||^2
       + w_lm * ||landmarks_fn(render(latent)) - target_landmarks||^2
       + w_hist * ||histogram_fn(render(latent)) - target_histogram||^2

with paper weights 1, 0.0006, 0.01. The terms, their weights, losses and
target keys are the rows of `losses.TERMS`; this module only sums what the
table lists. The parts are callables so that the engine does not depend on
particular models:

* ``render(variables, latent) -> image [H, W, 3]`` in [-1, 1], ONE target;
  `generator_render` builds it from any loaded generator for the 'z', 'w'
  and 'w+' latent spaces, with fixed or optimised noise.
* ``embed(variables, image) -> descriptor [D]``; `Encoder.descriptor_fn`
  builds it from an encoder module and its `InputSpec`.
* ``landmarks_fn(variables, image) -> [68, 2]`` (the image->landmark CNN).
* ``histogram_fn(image) -> [3, bins]`` (default: the soft histogram).
* the measure of any further term of `losses.TERMS`, in ``measures``.

Model variables travel in the objective's ``params`` argument as
``{'generator': ..., 'encoder': ..., 'landmarks': ...}`` (each term's
``params_key``; the last only with `landmarks_fn`). A target is
``{'descriptor': [D]}`` plus optionally ``'landmarks': [68, 2]`` and
``'histogram': [3, bins]`` (predicted from the descriptor by the heads); a
term is active when its target is present and its weight is non-zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp

from id2image_jax import errors
from id2image_jax import losses
from id2image_jax.protocols import Generator

LatentSpace = Literal['z', 'w', 'w+']


# Rematerialisation policies for `rematerialize`: what the backward pass
# keeps from the forward pass. 'dots' keeps matmul/conv outputs and
# recomputes the cheap elementwise ops (bias, activations, modulation),
# usually the best memory/time trade for StyleGAN2 at 1024 px.
REMAT_POLICIES: dict[str, Any] = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
}


def rematerialize(fn: Callable[..., Any], policy: str) -> Callable[..., Any]:
  """Wraps `fn` in `jax.checkpoint` with a named policy (`REMAT_POLICIES`).

  Trades compute for memory in the inversion step: with 'full' only the
  inputs of `fn` are stored for the backward pass; 'none' returns `fn`.
  """
  if policy not in REMAT_POLICIES:
    raise errors.UsageError(
        f'remat policy must be one of {sorted(REMAT_POLICIES)}'
        f', got {policy!r}')
  if REMAT_POLICIES[policy] is None:
    return fn
  return jax.checkpoint(fn, policy=REMAT_POLICIES[policy])


# One float field per row of `losses.TERMS`, named as the term, default its
# paper weight: ``Weights(landmarks=0.0)``, ``Weights(**config.weights)``.
Weights = dataclasses.make_dataclass(
    'Weights',
    [(t.name, float, dataclasses.field(default=t.weight))
     for t in losses.TERMS],
    frozen=True,
    namespace={'__module__': __name__, '__doc__': (
        'Loss weights of paper eq. 4, one field per term of `losses.TERMS` '
        '(defaults: `losses.DEFAULT_WEIGHTS`).')})


def make_id2image_objective(
    render: Callable[[Any, Any], jax.Array],
    embed: Callable[[Any, jax.Array], jax.Array],
    *,
    landmarks_fn: Callable[[Any, jax.Array], jax.Array] | None = None,
    histogram_fn: Callable[[jax.Array], jax.Array] | None = None,
    measures: Mapping[str, Callable[..., jax.Array]] | None = None,
    weights: Weights = Weights(),
):
  """Builds ``loss_fn(params, latent, target) -> (loss, terms)`` for `invert`.

  Args:
    render: ``render(params['generator'], latent) -> [H, W, 3]``.
    embed: ``embed(params['encoder'], image) -> [D]``.
    landmarks_fn: ``landmarks_fn(params['landmarks'], image) -> [68, 2]``;
      needed when targets carry ``'landmarks'``.
    histogram_fn: ``histogram_fn(image) -> [3, bins]``; default the
      normalised soft histogram of the [-1, 1] image on the 0..255 scale
      (10 bins, sigma 1.85), matching the histogram head's softmax output
      (`losses.generator_image_histogram`).
    measures: term name -> its measure of the render, for any term of
      `losses.TERMS` (``fn(params[term.params_key], image)``, or
      ``fn(image)`` for a term without ``params_key``); the arguments above
      are the paper's three.
    weights: term weights.

  Returns:
    The per-target objective; its aux dict holds the unweighted terms
    (``'id'``, and ``'landmarks'`` / ``'histogram'`` when active) and
    ``'id_cosine'``, the cosine of the render's descriptor to the target (a
    monitor, not a term: the score a black-box attacker sees, so histories
    of both attacks compare step by step).
  """
  given = {'id': embed, 'landmarks': landmarks_fn, 'histogram': histogram_fn,
           **(measures or {})}
  unknown = sorted(set(given) - {t.name for t in losses.TERMS})
  if unknown:
    raise ValueError(f'measures for unknown terms {unknown}: the terms are '
                     f'{[t.name for t in losses.TERMS]} (losses.TERMS)')
  measure = {t.name: given.get(t.name) or t.measure for t in losses.TERMS}
  weight = dataclasses.asdict(weights)
  identity = next(t for t in losses.TERMS if t.name == 'id')

  def loss_fn(params, latent, target):
    image = render(params['generator'], latent)
    terms, measured = {}, {}
    for term in losses.TERMS:
      if not term.always and not (term.target in target
                                  and weight[term.name]):
        continue
      fn = measure[term.name]
      if fn is None:
        raise ValueError(
            f'targets have {term.target!r} but nothing measures the '
            f'{term.name} term on the render: pass its measure in '
            f'measures={{{term.name!r}: fn}} (landmarks: landmarks_fn)')
      measured[term.name] = (fn(image) if term.params_key is None else
                             fn(params[term.params_key], image))
      terms[term.name] = term.loss(measured[term.name], target[term.target])
    total, aux = losses.objective(terms, weights=weight)
    return total, {**aux, 'id_cosine': losses.cosine_similarity(
        measured['id'], target[identity.target])}

  return loss_fn


def generator_render(generator: Generator, *,
                     latent_space: LatentSpace = 'w+',
                     noise_mode: str = 'const',
                     truncation_psi: float = 1.0,
                     resolution: int | None = None):
  """``render(variables, latent) -> image [R, R, 3]`` for ONE target.

  Works for any generator of the `protocols.Generator` contract.

  Latents (ONE target, no batch axis):

  * ``'z'``: ``{'z': [z_dim]}``, mapped with `truncation_psi`;
  * ``'w'``: ``{'w': [w_dim]}``, broadcast to all ``num_ws`` layers;
  * ``'w+'``: ``{'w': [num_ws, w_dim]}``, one w per layer;

  plus optionally ``'noise'``: a list of per-layer noise maps (no batch
  axis) that are optimised too; without it the generator's `noise_mode`
  applies ('const' = its fixed maps).

  Args:
    generator: a loaded generator (its module is used, not its variables:
      those arrive as the ``variables`` argument).
    latent_space: 'z', 'w' or 'w+'.
    noise_mode: passed to synthesis.
    truncation_psi: for 'z'.
    resolution: render at this preview resolution of the generator (cheaper;
      the encoder crops and resizes anyway); None = full.
  """
  if latent_space not in ('z', 'w', 'w+'):
    raise errors.UsageError(
        f"latent_space must be 'z', 'w' or 'w+', got "
        f'{latent_space!r}')
  generator.check_resolution(resolution)
  num_ws = generator.num_ws

  def render(variables, latent):
    if latent_space == 'z':
      ws = generator.mapping(variables, latent['z'][None],
                             truncation_psi=truncation_psi)
    elif latent_space == 'w':
      w = latent['w']
      ws = jnp.broadcast_to(w, (1, num_ws) + w.shape)
    else:
      ws = latent['w'][None]
    noise = latent.get('noise')
    if noise is not None:
      noise = [n[None] for n in noise]
    return generator.synthesis(variables, ws, noise_mode=noise_mode,
                               noise=noise, resolution=resolution)[0]

  return render


def initial_latent(w_avg: jax.Array, *, latent_space: LatentSpace,
                   num_ws: int | None = None) -> dict[str, jax.Array]:
  """The usual starting point, w_avg, shaped for `latent_space` ('w'/'w+').

  Use with ``engine.broadcast_init(initial_latent(...))``. (For 'z' start
  from ``random_init`` or a regressor instead.)
  """
  w_avg = jnp.asarray(w_avg, jnp.float32)
  if latent_space == 'w':
    return {'w': w_avg}
  if latent_space == 'w+':
    if num_ws is None:
      raise ValueError("latent_space 'w+' needs num_ws")
    return {'w': jnp.broadcast_to(w_avg, (num_ws,) + w_avg.shape)}
  raise ValueError(f"w_avg initialises 'w' or 'w+', not {latent_space!r}")
