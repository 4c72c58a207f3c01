"""The ID -> latent network (paper 4.1): synthetic pairs and its evaluation.

An MLP (3 hidden layers x 2048, ReLU) learns to map a face descriptor to the
StyleGAN2 latent that made the face, from synthetic pairs drawn on the fly:
z ~ N(0, I) -> mapping -> w -> synthesis -> encoder -> descriptor. Sampling
and the update are one jit-compiled step on device. The trained head
initialises the inversion (``id2image invert --set init=<out>/id_to_latent``;
trained by ``id2image regressor``).

`evaluate` measures what the head is worth as an initialisation, on
held-out synthetic pairs: latent error against the w_avg start, and the
identity similarity of G(predicted latent) to the target descriptor.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import tqdm

from id2image_jax import batching
from id2image_jax import metrics
from id2image_jax import protocols
from id2image_jax.inversion import objective

LATENT_SPACES = ('z', 'w', 'w+')


def _sample(generator_variables, encoder_variables, key, batch, *,
            generator: protocols.Generator, embed, latent_space: str,
            truncation_psi: float):
  """(descriptors [B, D], latents [B, ...]) of `batch` random faces."""
  z = jax.random.normal(key, (batch, generator.z_dim))
  ws = generator.mapping(generator_variables, z,
                         truncation_psi=truncation_psi)
  images = generator.synthesis(generator_variables, ws)
  descriptors = jax.vmap(embed, in_axes=(None, 0))(encoder_variables, images)
  latent = {'z': z, 'w': ws[:, 0], 'w+': ws}[latent_space]
  return descriptors, latent


def make_sampler(generator: protocols.Generator, encoder: protocols.Encoder,
                 *, latent_space: str = 'w',
                 truncation_psi: float = 1.0) -> jax.tree_util.Partial:
  """``sample(key, batch) -> (descriptors, latents)`` for the regressor.

  The models' variables are the `Partial`'s arguments, so a jitted caller
  receives them as inputs (see `train.train_id_to_latent`).

  Args:
    generator: a loaded StyleGAN2.
    encoder: a loaded face encoder.
    latent_space: what the head predicts: 'z' [z_dim], 'w' [w_dim] (the
      mapping output) or 'w+' [num_ws, w_dim] (the same w repeated).
    truncation_psi: truncation of the sampled w towards w_avg.
  """
  if latent_space not in LATENT_SPACES:
    raise ValueError(f'latent_space must be one of {LATENT_SPACES}, got '
                     f'{latent_space!r}')
  fn = lambda gv, ev, key, batch: _sample(
      gv, ev, key, batch, generator=generator, embed=encoder.descriptor_fn(),
      latent_space=latent_space, truncation_psi=truncation_psi)
  return jax.tree_util.Partial(fn, generator.variables, encoder.variables)


def sample_pairs(sampler: jax.tree_util.Partial, key: jax.Array, num: int,
                 *, batch: int, progress: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
  """`num` (descriptor, latent) pairs drawn in jitted batches of `batch`.

  Batch i uses ``fold_in(key, i)``, so the first k batches do not depend on
  `num` (a longer draw extends a shorter one).

  Returns:
    (descriptors [num, D], latents [num, ...]) float32 host arrays.
  """
  draw = jax.jit(sampler, static_argnums=1)
  out = []
  for i in tqdm.trange(-(-num // batch), disable=not progress,
                       desc='pairs', unit='batch'):
    out.append(jax.tree.map(np.asarray, draw(jax.random.fold_in(key, i),
                                             batch)))
  d, z = (np.concatenate(x)[:num] for x in zip(*out))
  return d.astype(np.float32), z.astype(np.float32)


def evaluate(model, params, pairs: tuple[np.ndarray, np.ndarray],
             generator: protocols.Generator, encoder: protocols.Encoder, *,
             latent_space: str, batch: int = 8) -> dict[str, Any]:
  """Head vs the plain start (w_avg / z = 0) on held-out pairs.

  Args:
    model, params: the trained head.
    pairs: (descriptors [N, D], latents [N, ...]) not seen in training.
    generator, encoder: what made the pairs.
    latent_space: what the head predicts.
    batch: images rendered per jitted call.

  Returns:
    ``latent_mse`` and ``id_cosine`` (target descriptor vs descriptor of the
    rendered latent), each ``{'regressor': float, 'start': float}``.
  """
  descriptors, latents = pairs
  predicted = np.asarray(model.apply({'params': params}, descriptors))
  # The latent the inversion starts from without a regressor.
  start = (np.zeros(latents.shape, np.float32) if latent_space == 'z' else
           np.broadcast_to(np.asarray(objective.initial_latent(
               generator.w_avg, latent_space=latent_space,
               num_ws=generator.num_ws)['w']), latents.shape))
  render = jax.jit(jax.vmap(objective.generator_render(
      generator, latent_space=latent_space), in_axes=(None, 0)))
  name_of = 'z' if latent_space == 'z' else 'w'
  out = {'num_pairs': len(descriptors), 'latent_mse': {}, 'id_cosine': {}}
  for name, guess in (('regressor', predicted), ('start', start)):
    out['latent_mse'][name] = float(np.mean((guess - latents) ** 2))
    images = batching.batched_apply(
        lambda x: render(generator.variables, {name_of: x}),
        np.asarray(guess, np.float32), batch)
    cos = metrics.cosine_similarity(encoder.embed(images), descriptors)
    out['id_cosine'][name] = float(np.mean(cos))
  return out
