"""``id2image regressor``: trains the ID -> latent network (paper 4.1).

An MLP (3 hidden layers x 2048, ReLU) learns to map a face descriptor to the
latent that made the face, from synthetic pairs drawn on device
(`analysis.regressor.make_sampler`); the job then measures it on held-out
pairs against the w_avg start and saves it for ``id2image invert --set
init=<out>/id_to_latent``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import optax

from id2image_jax import loading
from id2image_jax.analysis import regressor
from id2image_jax.analysis import train as train_lib
from id2image_jax.models import heads
from id2image_jax.reports import inversion as inversion_report


def _plot_loss(path: str, steps: list[int], loss: list[float]) -> None:
  plt = inversion_report.pyplot()
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
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed)
  encoder = loading.load_encoder(config.encoder,
                                 crop=tuple(config.encoder_crop) or None)
  print(f'generator: {generator.source}')
  print(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  sampler = regressor.make_sampler(generator, encoder,
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
  report = regressor.evaluate(model, params, sampler, generator, encoder,
                    key=eval_key, num=config.eval_pairs,
                    latent_space=config.latent_space)
  os.makedirs(config.workdir, exist_ok=True)
  head_dir = os.path.join(config.workdir, 'id_to_latent')
  head_config = dict(head_config, latent_space=config.latent_space,
                     encoder=encoder.kind)
  loading.save_head(head_dir, params, head_config,
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
