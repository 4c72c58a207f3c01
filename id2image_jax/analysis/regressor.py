"""The ``id2image regressor`` job: the ID -> latent network (paper 4.1).

An MLP (3 hidden layers x 2048, ReLU) learns to map a face descriptor to the
StyleGAN2 latent that made the face, from synthetic pairs drawn on the fly:
z ~ N(0, I) -> mapping -> w -> synthesis -> encoder -> descriptor. Sampling
and the update are one jit-compiled step on device. The trained head
initialises the inversion (``id2image invert --set init=<out>/id_to_latent``).

The job also measures what the head is worth as an initialisation, on
held-out synthetic pairs: latent error against the w_avg start, and the
identity similarity of G(predicted latent) to the target descriptor.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from id2image_jax import metrics
from id2image_jax.analysis import train as train_lib
from id2image_jax.models import heads
from id2image_jax.models import registry

LATENT_SPACES = ('z', 'w', 'w+')


def _sample(generator_variables, encoder_variables, key, batch, *,
            generator: registry.Generator, embed, latent_space: str,
            truncation_psi: float):
  """(descriptors [B, D], latents [B, ...]) of `batch` random faces."""
  module = generator.module
  z = jax.random.normal(key, (batch, generator.config.z_dim))
  ws = module.apply(generator_variables, z, method='mapping',
                    truncation_psi=truncation_psi)
  images = module.apply(generator_variables, ws, method='synthesis',
                        noise_mode='const')
  descriptors = jax.vmap(embed, in_axes=(None, 0))(encoder_variables, images)
  latent = {'z': z, 'w': ws[:, 0], 'w+': ws}[latent_space]
  return descriptors, latent


def make_sampler(generator: registry.Generator, encoder: registry.Encoder,
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


def _baseline_latent(generator: registry.Generator, latent_space: str):
  """The latent the inversion starts from without a regressor."""
  if latent_space == 'z':
    return jnp.zeros((generator.config.z_dim,))
  w_avg = generator.w_avg
  if latent_space == 'w+':
    return jnp.broadcast_to(w_avg, (generator.config.num_ws, w_avg.shape[-1]))
  return w_avg


def _render(generator: registry.Generator, latents: jax.Array,
            latent_space: str) -> jax.Array:
  module, variables = generator.module, generator.variables
  if latent_space == 'z':
    ws = module.apply(variables, latents, method='mapping')
  elif latent_space == 'w':
    ws = jnp.broadcast_to(latents[:, None], (latents.shape[0],
                                              generator.config.num_ws,
                                              latents.shape[-1]))
  else:
    ws = latents
  return module.apply(variables, ws, method='synthesis', noise_mode='const')


def evaluate(model, params, sampler, generator: registry.Generator,
             encoder: registry.Encoder, *, key: jax.Array, num: int,
             latent_space: str) -> dict[str, Any]:
  """Head vs the plain start (w_avg / z = 0) on `num` held-out pairs.

  Returns:
    ``latent_mse`` and ``id_cosine`` (target descriptor vs descriptor of the
    rendered latent), each ``{'regressor': float, 'start': float}``.
  """
  descriptors, latents = jax.jit(sampler, static_argnums=1)(key, num)
  predicted = model.apply({'params': params}, descriptors)
  start = jnp.broadcast_to(_baseline_latent(generator, latent_space),
                           latents.shape)
  out = {'num_pairs': int(num), 'latent_mse': {}, 'id_cosine': {}}
  for name, guess in (('regressor', predicted), ('start', start)):
    out['latent_mse'][name] = float(jnp.mean((guess - latents) ** 2))
    images = jax.jit(_render, static_argnums=(0, 2))(generator, guess,
                                                     latent_space)
    cos = metrics.cosine_similarity(encoder.embed(np.asarray(images)),
                                    np.asarray(descriptors))
    out['id_cosine'][name] = float(jnp.mean(cos))
  return out


def _plot_loss(path: str, steps: list[int], loss: list[float]) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4, 3))
  ax.plot(steps, loss)
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('latent MSE (training batches)')
  ax.set_title('ID -> latent regressor')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run(config: Any) -> dict[str, Any]:
  """Trains, evaluates and saves the regressor; returns the summary."""
  started = time.time()
  generator = registry.load_generator(config.generator,
                                      seed=config.generator_seed)
  encoder = registry.load_encoder(config.encoder,
                                  crop=tuple(config.encoder_crop) or None)
  print(f'generator: {generator.source}')
  print(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  sampler = make_sampler(generator, encoder,
                         latent_space=config.latent_space,
                         truncation_psi=config.truncation_psi)
  train_key, eval_key = jax.random.split(jax.random.key(config.seed))
  _, latent = jax.eval_shape(lambda k: sampler(k, 1), eval_key)
  head_config = heads.head_config(
      'id_to_latent', hidden=tuple(config.hidden), input_dim=encoder.dim,
      out_shape=tuple(latent.shape[1:]))
  model, params, head_config, history = train_lib.train_id_to_latent(
      train_key, sampler, num_steps=config.steps,
      batch_size=config.batch_size, config=head_config,
      tx=optax.adam(config.learning_rate), log_every=config.log_every,
      progress=config.progress)
  report = evaluate(model, params, sampler, generator, encoder,
                    key=eval_key, num=config.eval_pairs,
                    latent_space=config.latent_space)
  os.makedirs(config.workdir, exist_ok=True)
  head_dir = os.path.join(config.workdir, 'id_to_latent')
  head_config = dict(head_config, latent_space=config.latent_space,
                     encoder=encoder.kind)
  train_lib.save_head(head_dir, params, head_config,
                      source=f'{generator.source} | {encoder.source}')
  steps = [min((i + 1) * config.log_every, config.steps)
           for i in range(len(history.loss))]
  _plot_loss(os.path.join(config.workdir, 'loss.png'), steps, history.loss)
  summary = {
      'head': head_dir,
      'generator': generator.source,
      'encoder': f'{encoder.kind}: {encoder.source}',
      'latent_space': config.latent_space,
      'loss_history': {'steps': steps, 'loss': history.loss},
      'held_out': report,
      'device': str(jax.devices()[0].device_kind),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  with open(os.path.join(config.workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  mse, cos = report['latent_mse'], report['id_cosine']
  print(f'held-out pairs: {report["num_pairs"]}\n'
        f'  latent MSE       regressor {mse["regressor"]:.4f}  '
        f'(start {mse["start"]:.4f})\n'
        f'  identity cosine  regressor {cos["regressor"]:.4f}  '
        f'(start {cos["start"]:.4f})\n'
        f'head: {head_dir} (use: id2image invert --set init={head_dir})')
  return summary
