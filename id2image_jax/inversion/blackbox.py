"""A black-box attacker: inversion from similarity scores alone.

The attacker of Vec2Face's threat model may only *query* the face
recognition system: send an image, read back its similarity to the stored
template. No weights, no gradients. `nes_objective` turns such a score into
an objective for the ordinary engine (`engine.invert` with
``stochastic=True``): each step draws ``population`` Gaussian directions
``eps_i`` around the latent ``w`` and queries the images of ``w + sigma
eps_i`` and ``w - sigma eps_i`` (antithetic pairs) plus ``w`` itself, so
``2 * population + 1`` queries per target and step, and estimates the
gradient of ``f = 1 - score`` as (Wierstra et al. 2014, natural evolution
strategies; Salimans et al. 2017)::

  g = sum_i (f(w + sigma eps_i) - f(w - sigma eps_i)) eps_i
      / (2 * population * sigma)

The objective returns a surrogate whose value is ``f(w)`` and whose
gradient is ``g``, so the engine's Adam, vmap over targets, sharding and
resume apply unchanged; every query of one step is one batched call to the
score function, vmapped over targets by the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from id2image_jax import errors
from id2image_jax import losses

# score_fn(encoder_variables, images [K, H, W, 3], target) -> [K] similarity.
ScoreFn = Callable[[Any, jax.Array, Any], jax.Array]


def queries_per_step(population: int) -> int:
  """Score queries one target costs per step: the antithetic pairs + w."""
  return 2 * population + 1


def cosine_score(embed: Callable[[Any, jax.Array], jax.Array]) -> ScoreFn:
  """The system's answer: cosine of each image's descriptor with the
  stored template ``target['descriptor']``.

  Args:
    embed: ``embed(variables, image [H, W, 3]) -> [D]`` (one image).
  """
  def score(variables, images, target):
    d = jax.vmap(embed, in_axes=(None, 0))(variables, images)
    return losses.cosine_similarity(
        d, jnp.broadcast_to(target['descriptor'], d.shape))
  return score


def nes_objective(score_fn: ScoreFn,
                  render: Callable[[Any, Any], jax.Array], *,
                  population: int, sigma: float):
  """``loss_fn(key, params, latent, target)`` estimating gradients by NES.

  Args:
    score_fn: the only access to the system (`ScoreFn`), e.g.
      `cosine_score`; called once per step on ``2 * population + 1`` images.
    render: ``render(params['generator'], latent) -> image [H, W, 3]``.
    population: antithetic pairs per step.
    sigma: perturbation scale in latent units.

  Returns:
    The objective, for `engine.invert(..., options=InvertOptions(...,
    stochastic=True))`. Its aux terms: ``score`` (similarity at the current
    latent) and ``queries`` (this step's queries, `queries_per_step`).
  """
  if population < 1 or sigma <= 0:
    raise errors.UsageError(
        f'population must be >= 1 and sigma > 0, got '
        f'{population}, {sigma}')
  k = queries_per_step(population)

  def loss_fn(key, params, latent, target):
    flat, unravel = ravel_pytree(latent)
    # The queries carry no gradient: nothing is differentiated through the
    # generator or the system (which may not be differentiable at all).
    base = jax.lax.stop_gradient(flat)
    eps = jax.random.normal(key, (population, flat.size), flat.dtype)
    points = jnp.concatenate([base + sigma * eps, base - sigma * eps,
                              base[None]])
    images = jax.vmap(lambda p: render(params['generator'], unravel(p)))(
        points)
    f = 1.0 - score_fn(params['encoder'], images, target)
    grad = ((f[:population] - f[population:2 * population]) @ eps) / (
        2 * population * sigma)
    # Value f(w), gradient `grad`: what the optimiser needs.
    surrogate = f[-1] + jnp.vdot(grad, flat - base)
    return surrogate, {'score': 1.0 - f[-1],
                       'queries': jnp.asarray(k, jnp.float32)}

  return loss_fn
