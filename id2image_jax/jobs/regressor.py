"""``id2image regressor``: trains the ID -> latent network (paper 4.1).

An MLP (3 hidden layers x 2048, ReLU) learns to map a face descriptor to the
latent that made the face, from synthetic pairs drawn on device
(`analysis.regressor.make_sampler`); the job then measures it on held-out
pairs against the w_avg start and saves it for ``id2image invert --set
init=<out>/id_to_latent``.

``train='end_to_end'`` (configs/regressor.py:end_to_end) continues a head
through the frozen generator and encoder on real descriptors
(`analysis.end_to_end`), resumable from orbax checkpoints in
``workdir/train``, and reports the one-pass reconstruction of held-out
photos under the attacked and an independent encoder, before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from id2image_jax import checkpoints
from id2image_jax import loading
from id2image_jax.analysis import end_to_end
from id2image_jax.analysis import regressor
from id2image_jax.analysis import train as train_lib
from id2image_jax.inversion import objective
from id2image_jax.models import heads
from id2image_jax.reports import outputs


def _plot_loss(path: str, steps: list[int], loss: list[float], *,
               unit: str, label: str = 'latent MSE') -> None:
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(4, 3))
  ax.plot(steps, loss)
  ax.set_yscale('log')
  ax.set_xlabel(unit)
  ax.set_ylabel(f'{label} (training batches)')
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
  ``config.train='end_to_end'``: see `run_end_to_end`.
  """
  if config.train == 'end_to_end':
    return run_end_to_end(config)
  if config.train != 'pairs':
    raise ValueError(f"train must be 'pairs' or 'end_to_end', got "
                     f'{config.train!r}')
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


# ----------------------------------------------------------------------------
# End to end through the frozen generator and encoder.


def _descriptor_file(path: str, *, field: str, dim: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(descriptor [N, D] float32, key [N]) of an `id2image embed` file, the
  rows that are finite."""
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f'{field}: no descriptor file at {path!r}; make it with `id2image '
        'embed` (configs/regressor.py docstring)')
  with np.load(path, allow_pickle=False) as f:
    if 'descriptor' not in f.files:
      raise ValueError(f'{field}: {path} has no "descriptor" array (has '
                       f'{sorted(f.files)})')
    d = np.asarray(f['descriptor'], np.float32)
    keys = (np.asarray(f['key']).astype(str) if 'key' in f.files else
            np.arange(len(d)).astype(str))
  if d.ndim != 2 or d.shape[1] != dim:
    raise ValueError(f'{field}: {path} holds descriptors of shape {d.shape}, '
                     f'the encoder gives {dim}-d ones')
  finite = np.all(np.isfinite(d), axis=1)
  if not finite.all():
    print(f'{field}: skipped {int((~finite).sum())} non-finite rows of {path}'
          f': {[str(k) for k in keys[~finite][:5]]}')
  return d[finite], keys[finite]


def _held_out(config: Any, dim: int, eval_dim: int
              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(attacked [N, D], independent [N, D'], keys) of the same photos."""
  d, keys = _descriptor_file(config.eval_descriptors,
                             field='eval_descriptors', dim=dim)
  ref, ref_keys = _descriptor_file(config.eval_reference,
                                   field='eval_reference', dim=eval_dim)
  row_of = {k: i for i, k in enumerate(ref_keys)}
  both = [i for i, k in enumerate(keys) if k in row_of]
  if not both:
    raise ValueError(f'eval_descriptors {config.eval_descriptors} and '
                     f'eval_reference {config.eval_reference} share no key')
  if config.eval_size and config.eval_size < len(both):
    pick = np.random.default_rng(config.seed).choice(
        len(both), config.eval_size, replace=False)
    both = [both[i] for i in np.sort(pick)]
  return (d[both], ref[[row_of[keys[i]] for i in both]],
          [str(keys[i]) for i in both])


def _start_head(config: Any, generator, encoder, space: str):
  """(module, params, head config, source) of the head training starts
  from, shaped for `space` (a W head starts a W+ one)."""
  path = (loading.shipped_regressor(generator.kind, encoder.kind)
          if config.init_head == 'auto' else config.init_head)
  if config.init_head == 'auto' and not path:
    raise FileNotFoundError(
        f'init_head=auto: no shipped ID->latent head for {generator.kind} + '
        f'{encoder.kind}; train one (`id2image regressor`) and pass '
        'init_head=DIR, or init_head= to start fresh')
  out_shape = generator.latent_shape(space)
  if path:
    _, start, start_config = loading.load_head(path, what='init_head')
    if int(start_config.get('input_dim', encoder.dim)) != encoder.dim:
      raise ValueError(f'init_head {path} reads {start_config["input_dim"]}'
                       f'-d descriptors, the encoder gives {encoder.dim}')
    hidden = tuple(start_config['hidden'])
  else:
    start, hidden = None, tuple(config.hidden)
  head_config = heads.head_config(
      'id_to_latent', hidden=hidden, input_dim=encoder.dim,
      out_shape=out_shape,
      layer_rank=config.layer_rank if space == 'w+' else 0)
  model = heads.build(head_config)
  params = model.init(jax.random.key(config.seed),
                      jnp.zeros((1, encoder.dim)))['params']
  fresh = []
  if start is not None:
    params, fresh = end_to_end.warm_start(params, start)
  print(f'start: {path or "fresh"}' + (f' (new: {fresh})' if fresh else ''))
  return model, params, head_config, path or 'fresh'


def _sha1(*arrays: Any) -> str:
  h = hashlib.sha1()
  for x in jax.tree.leaves(arrays):
    x = np.ascontiguousarray(np.asarray(x))
    h.update(f'{x.dtype}{x.shape}'.encode())
    h.update(x.tobytes())
  return h.hexdigest()


def _cached_json(path: str, tag: Mapping[str, Any],
                 compute: Callable[[], Any]) -> Any:
  """``compute()``, kept in `path` with `tag`; a rerun with the same tag
  reads it back."""
  tag = json.loads(json.dumps(dict(tag)))
  if os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get('tag') == tag:
      return saved['value']
  value = compute()
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump({'tag': tag, 'value': value}, f)
  os.replace(tmp, path)
  return value


# Fields that change what training computes (a resumed run must match them;
# `steps` is not one: a longer run continues a shorter one; nor are
# `micro_batch` and `remat`, which change memory, not the update, beyond
# float rounding).
_FINGERPRINT = ('generator', 'generator_seed', 'encoder', 'encoder_crop',
                'latent_space', 'truncation_psi', 'layer_rank', 'pairs',
                'batch_size', 'learning_rate', 'seed', 'identity_loss',
                'latent_weight', 'real_batch', 'compute_dtype')


def _evaluate(model, params, frozen, held_out, *, render, scorers,
              batch: int) -> dict[str, Any]:
  attacked, reference, _ = held_out
  cos = end_to_end.one_pass_cosines(
      model, params, frozen, attacked,
      {name: (fn, attacked if name == 'attacked' else reference)
       for name, fn in scorers.items()}, render=render, batch=batch)
  return {name: {'mean': float(np.mean(c)), 'median': float(np.median(c)),
                 'per_photo': [round(float(x), 5) for x in c]}
          for name, c in cos.items()}


def run_end_to_end(config: Any) -> dict[str, Any]:
  """Trains the ID -> latent head end to end; returns the summary.

  From ``config.init_head``, each step renders ``real_batch`` faces from
  the predictions for real descriptors and takes the identity loss of
  their descriptors, plus ``latent_weight`` x the latent MSE on
  ``batch_size`` synthetic pairs (``pairs`` drawn once, cached in
  ``workdir/pairs.npz``). Checkpoints go to ``workdir/train`` every
  ``checkpoint_every`` steps: rerunning the command resumes. The held-out
  report (``workdir/summary.json``) gives the one-pass cosine under the
  attacked encoder and ``eval_encoder``, for the start head and the
  trained one.
  """
  started = time.time()
  dtype = jnp.dtype(config.compute_dtype)
  space = config.latent_space
  if space not in ('w', 'w+'):
    raise ValueError(f"latent_space must be 'w' or 'w+' end to end, got "
                     f'{space!r}')
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed, dtype=dtype)
  crop = tuple(config.encoder_crop) or None
  encoder = loading.load_encoder(config.encoder, crop=crop, dtype=dtype)
  judge = loading.load_encoder(config.eval_encoder)
  print(f'generator: {generator.source}')
  print(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  print(f'judge:     {judge.kind} ({judge.dim}-d), {judge.source}')
  real, _ = _descriptor_file(config.real_descriptors,
                             field='real_descriptors', dim=encoder.dim)
  held_out = _held_out(config, encoder.dim, judge.dim)
  print(f'real descriptors: {len(real)} ({config.real_descriptors}); '
        f'held out: {len(held_out[0])} ({config.eval_descriptors})')
  os.makedirs(config.workdir, exist_ok=True)
  key = jax.random.key(config.seed)
  pair_key, real_key, synth_key = jax.random.split(key, 3)
  sampler = regressor.make_sampler(generator, encoder, latent_space='w',
                                   truncation_psi=config.truncation_psi)
  synth_d, synth_w = _cached_pairs(
      os.path.join(config.workdir, 'pairs.npz'), sampler, pair_key,
      config.pairs, batch=config.sample_batch, progress=config.progress)
  model, params, head_config, start_source = _start_head(
      config, generator, encoder, space)
  synth_z = end_to_end.latent_targets(synth_w, head_config['out_shape'])

  render_one = objective.generator_render(generator, latent_space=space)
  embed_one = encoder.descriptor_fn()

  def descriptor_of(frozen, latent):
    image = render_one(frozen['generator'], {'w': latent})
    return embed_one(frozen['encoder'], image)

  frozen = {'generator': generator.variables, 'encoder': encoder.variables}
  tx = optax.adam(config.learning_rate)
  step_fn = end_to_end.make_step(
      model, tx, descriptor_of=objective.rematerialize(descriptor_of,
                                                       config.remat),
      identity=config.identity_loss, latent_weight=config.latent_weight,
      micro_batch=config.micro_batch)

  def batch_of(t):
    rows = end_to_end.batch_rows(real_key, t, len(real), config.real_batch)
    pairs = end_to_end.batch_rows(synth_key, t, len(synth_d),
                                  config.batch_size)
    return real[rows], synth_d[pairs], synth_z[pairs]

  # Held-out scoring: the attacked encoder against the input descriptor,
  # the judge against the same photo's own descriptor.
  eval_frozen = {**frozen, 'judge': judge.variables}
  attacked_batch, judge_batch = encoder.batch_fn(), judge.batch_fn()
  scorers = {'attacked': lambda f, x: attacked_batch(f['encoder'], x),
             'judge': lambda f, x: judge_batch(f['judge'], x)}
  render_batch = jax.vmap(lambda v, w: render_one(v['generator'], {'w': w}),
                          in_axes=(None, 0))

  def evaluate(p):
    return _evaluate(model, p, eval_frozen, held_out, render=render_batch,
                     scorers=scorers, batch=config.sample_batch)

  fingerprint = {k: config[k] for k in _FINGERPRINT}
  fingerprint['real_descriptors'] = _sha1(real)
  fingerprint['pairs_sha1'] = _sha1(synth_d, synth_w)
  fingerprint['start'] = _sha1(params)
  store = checkpoints.TrainCheckpoints(
      os.path.join(config.workdir, 'train'), fingerprint)
  try:
    state = end_to_end.start_state(params, tx)
    history = []
    restored = store.restore(jax.eval_shape(lambda: state))
    if restored is not None:
      _, state, meta = restored
      history = meta['history']
      print(f'resumed at step {int(state.step)} from {store.directory}')
    # The start head's score: once per (head, held-out set, judge).
    start_eval = _cached_json(
        os.path.join(config.workdir, 'start_eval.json'),
        {'head': fingerprint['start'], 'judge': judge.kind,
         'held_out': _sha1(held_out[0], held_out[1])},
        lambda: evaluate(params))
    print(f'held out at 0 steps ({start_source}): attacked '
          f'{start_eval["attacked"]["mean"]:.4f}, {judge.kind} '
          f'{start_eval["judge"]["mean"]:.4f}')

    def save(st, hist):
      store.save(int(st.step), st, {'history': hist})

    stamps, cpu_stamps = [], []

    def timed_step(*args):
      # `train` reads each step's metrics before the next call, so the
      # time between calls is a whole step (the first one compiles). CPU
      # time of the process (all threads) says what a step costs on a
      # shared machine, where wall time says how busy the others are.
      stamps.append(time.perf_counter())
      cpu_stamps.append(time.process_time())
      return step_fn(*args)

    timer = time.perf_counter()
    first = int(state.step)
    state, history = end_to_end.train(
        state, timed_step, frozen, batch_of, num_steps=config.steps,
        history=history, save=save, save_every=config.checkpoint_every,
        progress=config.progress)
    train_seconds = time.perf_counter() - timer
    step_seconds = np.diff(stamps + [time.perf_counter()]).tolist()
    step_cpu = np.diff(cpu_stamps + [time.process_time()]).tolist()
  finally:
    store.close()
  # No step taken (e.g. --steps 0): the head is the start head.
  trained_eval = (start_eval if int(state.step) == 0 else
                  evaluate(state.params))
  head_dir = os.path.join(config.workdir, 'id_to_latent')
  head_config = dict(head_config, latent_space=space, encoder=encoder.kind,
                     generator=generator.kind, training='end_to_end',
                     steps=int(state.step))
  loading.save_head(head_dir, jax.tree.map(np.asarray, state.params),
                    head_config,
                    source=f'{generator.source} | {encoder.source} | '
                    f'end to end from {os.path.basename(start_source)}')
  if history:
    _plot_loss(os.path.join(config.workdir, 'loss.png'),
               list(range(1, len(history) + 1)),
               [h['loss'] for h in history], unit='step',
               label='identity + latent loss')
  summary = {
      'head': head_dir,
      'train': 'end_to_end',
      'start': start_source,
      'generator': generator.source,
      'encoder': f'{encoder.kind}: {encoder.source}',
      'judge': f'{judge.kind}: {judge.source}',
      'latent_space': space,
      'num_real': len(real),
      'num_pairs': len(synth_d),
      'history': history,
      'held_out': {'num_photos': len(held_out[0]), 'keys': held_out[2],
                   'start': start_eval, 'trained': trained_eval},
      'steps_this_run': int(state.step) - first,
      'train_seconds_this_run': train_seconds,
      # The first step of a run compiles; the others are steady state.
      'step_seconds_this_run': {
          'first': step_seconds[0] if step_seconds else None,
          'median_of_rest': (float(np.median(step_seconds[1:]))
                             if len(step_seconds) > 1 else None),
          'cpu_median_of_rest': (float(np.median(step_cpu[1:]))
                                 if len(step_cpu) > 1 else None)},
      'load_average_1min': os.getloadavg()[0],
      'device': str(jax.devices()[0].device_kind),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  with open(os.path.join(config.workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  s, t = start_eval, trained_eval
  timing = summary['step_seconds_this_run']
  print(f'steps {first} -> {int(state.step)} in {train_seconds:.0f} s'
        + (f' ({timing["median_of_rest"]:.2f} s wall, '
           f'{timing["cpu_median_of_rest"]:.2f} s CPU per step after the '
           'first)' if timing['median_of_rest'] else ''))
  print(f'held-out photos: {len(held_out[0])}; one-pass identity cosine\n'
        f'  {encoder.kind:>10} (attacked)     start {s["attacked"]["mean"]:.4f}'
        f'  trained {t["attacked"]["mean"]:.4f}\n'
        f'  {judge.kind:>10} (independent)  start {s["judge"]["mean"]:.4f}'
        f'  trained {t["judge"]["mean"]:.4f}\n'
        f'head: {head_dir} (use: id2image invert --set init={head_dir})')
  return summary
