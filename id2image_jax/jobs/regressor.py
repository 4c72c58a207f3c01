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
import numpy as np
import optax

from id2image_jax import loading
from id2image_jax.analysis import regressor
from id2image_jax.analysis import train as train_lib
from id2image_jax.models import heads
from id2image_jax.reports import outputs


def _plot_loss(path: str, steps: list[int], loss: list[float], *,
               unit: str) -> None:
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(4, 3))
  ax.plot(steps, loss)
  ax.set_yscale('log')
  ax.set_xlabel(unit)
  ax.set_ylabel('latent MSE (training batches)')
  ax.set_title('ID -> latent regressor')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _cached_pairs(path: str, sampler, key, num: int, *, batch: int,
                  progress: bool) -> tuple[np.ndarray, np.ndarray]:
  """`num` pairs, drawn once and kept in `path` (a longer request extends
  the file; a rerun reads it)."""
  have = None
  if os.path.isfile(path):
    with np.load(path) as f:
      have = (f['descriptor'], f['latent'])
    if len(have[0]) >= num:
      return have[0][:num], have[1][:num]
  pairs = regressor.sample_pairs(sampler, key, num, batch=batch,
                                 progress=progress)
  tmp = path + '.tmp.npz'
  np.savez(tmp, descriptor=pairs[0], latent=pairs[1])
  os.replace(tmp, path)
  return pairs


def run(config: Any) -> dict[str, Any]:
  """Trains, evaluates and saves the regressor; returns the summary.

  ``config.pairs`` = 0 samples a fresh batch of pairs every step (cheap
  generators); > 0 draws that many pairs once (cached in
  ``workdir/pairs.npz``) and trains ``config.epochs`` over them, which
  suits generators whose images cost a second each on a CPU.
  """
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
  os.makedirs(config.workdir, exist_ok=True)
  held_out = _cached_pairs(
      os.path.join(config.workdir, 'held_out_pairs.npz'), sampler, eval_key,
      config.eval_pairs, batch=config.sample_batch, progress=config.progress)
  head_config = heads.head_config(
      'id_to_latent', hidden=tuple(config.hidden), input_dim=encoder.dim,
      out_shape=held_out[1].shape[1:])
  tx = optax.adam(config.learning_rate)
  if config.pairs:
    descriptors, latents = _cached_pairs(
        os.path.join(config.workdir, 'pairs.npz'), sampler,
        jax.random.fold_in(train_key, 1), config.pairs,
        batch=config.sample_batch, progress=config.progress)
    model, params, history = train_lib.train_head(
        train_key, head_config, descriptors, latents, tx=tx,
        batch_size=config.batch_size, num_epochs=config.epochs,
        progress=config.progress)
    steps = list(range(1, len(history.loss) + 1))
    step_unit = 'epoch'
  else:
    model, params, head_config, history = train_lib.train_id_to_latent(
        train_key, sampler, num_steps=config.steps,
        batch_size=config.batch_size, config=head_config, tx=tx,
        log_every=config.log_every, progress=config.progress)
    steps = [min((i + 1) * config.log_every, config.steps)
             for i in range(len(history.loss))]
    step_unit = 'step'
  report = regressor.evaluate(model, params, held_out, generator, encoder,
                              latent_space=config.latent_space,
                              batch=config.sample_batch)
  head_dir = os.path.join(config.workdir, 'id_to_latent')
  head_config = dict(head_config, latent_space=config.latent_space,
                     encoder=encoder.kind, generator=generator.kind)
  loading.save_head(head_dir, params, head_config,
                    source=f'{generator.source} | {encoder.source}')
  _plot_loss(os.path.join(config.workdir, 'loss.png'), steps, history.loss,
             unit=step_unit)
  summary = {
      'head': head_dir,
      'generator': generator.source,
      'encoder': f'{encoder.kind}: {encoder.source}',
      'latent_space': config.latent_space,
      'loss_history': {f'{step_unit}s': steps, 'loss': history.loss},
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
