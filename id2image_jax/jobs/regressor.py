"""``id2image regressor``: trains the ID -> latent network (paper 4.1).

An MLP (3 hidden layers x 2048, ReLU) learns to map a face descriptor to the
latent that made the face, from synthetic pairs drawn on device
(`analysis.regressor.make_sampler`); the job then measures it on held-out
pairs against the w_avg start and saves it for ``id2image invert --set
init=<out>/id_to_latent``.

``train='end_to_end'`` (configs/regressor.py:end_to_end) continues a head
through the frozen generator and encoder on real descriptors
(`analysis.end_to_end`, wired by `recipes.end_to_end`), resumable from
orbax checkpoints in ``workdir/train``, and reports the one-pass
reconstruction of held-out photos under the attacked and an independent
encoder, before and after.

`run` and `run_end_to_end` read as their phases, each a function below
them in call order.
"""

from __future__ import annotations

import dataclasses
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
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax import protocols
from id2image_jax.analysis import end_to_end
from id2image_jax.analysis import regressor
from id2image_jax.analysis import train as train_lib
from id2image_jax.jobs import common
from id2image_jax.models import heads
from id2image_jax.recipes import end_to_end as recipe
from id2image_jax.reports import outputs


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
    raise errors.UsageError(
        f"train must be 'pairs' or 'end_to_end', got "
        f'{config.train!r}')
  started = time.time()
  models = _load_models(config)
  job = _prepare(config, models)
  trained = _train(config, job)
  report = regressor.evaluate(trained.model, trained.params, job.held_out,
                              models.generator, models.encoder,
                              latent_space=config.latent_space,
                              batch=config.sample_batch)
  head_dir = _save_head(config.workdir, models, trained.params,
                        trained.head_config, latent_space=config.latent_space)
  _plot_loss(os.path.join(config.workdir, 'loss.png'), trained.steps,
             trained.loss, unit=trained.unit)
  summary = {
      'head': head_dir,
      'generator': models.generator.source,
      'encoder': f'{models.encoder.kind}: {models.encoder.source}',
      'latent_space': config.latent_space,
      'loss_history': {f'{trained.unit}s': trained.steps,
                       'loss': trained.loss},
      'held_out': report,
      'device': str(jax.devices()[0].device_kind),
      'seconds': time.time() - started,
      'config': config.to_dict(),
  }
  _write_summary(config.workdir, summary)
  _say_pairs_report(report, head_dir)
  return summary


@dataclasses.dataclass(frozen=True)
class _Models:
  """The models of a run (`_load_models`).

  Attributes:
    generator: renders the latents.
    encoder: the attacked encoder.
    judge: the independent encoder of the end-to-end report (None when
      training on pairs).
  """
  generator: protocols.Generator
  encoder: protocols.Encoder
  judge: protocols.Encoder | None


def _load_models(config: Any, *, dtype: Any = None,
                 judge_spec: str | None = None) -> _Models:
  """Loads the generator and encoder in `dtype` (None: their own), and the
  judge when `judge_spec` is given."""
  generator = loading.load_generator(config.generator,
                                     seed=config.generator_seed, dtype=dtype)
  encoder = loading.load_encoder(config.encoder,
                                 crop=tuple(config.encoder_crop) or None,
                                 dtype=dtype)
  judge = (None if judge_spec is None else
           loading.load_encoder(judge_spec))
  common.say(f'generator: {generator.source}')
  common.say(f'encoder:   {encoder.kind} ({encoder.dim}-d), {encoder.source}')
  if judge is not None:
    common.say(f'judge:     {judge.kind} ({judge.dim}-d), {judge.source}')
  return _Models(generator, encoder, judge)


@dataclasses.dataclass(frozen=True)
class _Pairs:
  """What training on synthetic pairs reads (`_prepare`).

  Attributes:
    sampler: draws (descriptor, latent) pairs on device.
    key: the training key.
    held_out: (descriptors [N, D], latents [N, ...]) of held-out pairs.
    head_config: the head to train.
  """
  sampler: Callable[..., Any]
  key: jax.Array
  held_out: tuple[np.ndarray, np.ndarray]
  head_config: dict[str, Any]


def _prepare(config: Any, models: _Models) -> _Pairs:
  """The pair sampler, the held-out pairs (drawn once, kept in
  ``workdir/held_out_pairs.npz``) and the head's config."""
  sampler = regressor.make_sampler(models.generator, models.encoder,
                                   latent_space=config.latent_space,
                                   truncation_psi=config.truncation_psi)
  train_key, eval_key = jax.random.split(jax.random.key(config.seed))
  os.makedirs(config.workdir, exist_ok=True)
  held_out = _cached_pairs(
      os.path.join(config.workdir, 'held_out_pairs.npz'), sampler, eval_key,
      config.eval_pairs, batch=config.sample_batch, progress=config.progress)
  head_config = heads.head_config(
      'id_to_latent', hidden=tuple(config.hidden),
      input_dim=models.encoder.dim, out_shape=held_out[1].shape[1:])
  return _Pairs(sampler, train_key, held_out, head_config)


@dataclasses.dataclass(frozen=True)
class _Trained:
  """A head trained on pairs (`_train`) and its loss curve.

  Attributes:
    model: the head.
    params: its trained parameters.
    head_config: its `heads.head_config`.
    steps: the epochs or steps the loss was logged at.
    unit: 'epoch' or 'step'.
    loss: the latent MSE on the training batches, one per entry of steps.
  """
  model: Any
  params: Any
  head_config: dict[str, Any]
  steps: list[int]
  unit: str
  loss: list[float]


def _train(config: Any, job: _Pairs) -> _Trained:
  """Trains ``epochs`` over ``pairs`` pairs drawn once (kept in
  ``workdir/pairs.npz``), or ``steps`` steps of fresh pairs."""
  tx = optax.adam(config.learning_rate)
  if config.pairs:
    descriptors, latents = _cached_pairs(
        os.path.join(config.workdir, 'pairs.npz'), job.sampler,
        jax.random.fold_in(job.key, 1), config.pairs,
        batch=config.sample_batch, progress=config.progress)
    model, params, history = train_lib.train_head(
        job.key, job.head_config, descriptors, latents, tx=tx,
        batch_size=config.batch_size, num_epochs=config.epochs,
        progress=config.progress)
    return _Trained(model, params, job.head_config,
                    list(range(1, len(history.loss) + 1)), 'epoch',
                    history.loss)
  model, params, head_config, history = train_lib.train_id_to_latent(
      job.key, job.sampler, num_steps=config.steps,
      batch_size=config.batch_size, config=job.head_config, tx=tx,
      log_every=config.log_every, progress=config.progress)
  steps = [min((i + 1) * config.log_every, config.steps)
           for i in range(len(history.loss))]
  return _Trained(model, params, head_config, steps, 'step', history.loss)


def _save_head(workdir: str, models: _Models, params: Any,
               head_config: Mapping[str, Any], *, latent_space: str,
               source_note: str = '', **fields: Any) -> str:
  """Saves the head as ``workdir/id_to_latent``, its config naming the
  models (and `fields`); returns the directory."""
  head_dir = os.path.join(workdir, 'id_to_latent')
  config = dict(head_config, latent_space=latent_space,
                encoder=models.encoder.kind, generator=models.generator.kind,
                **fields)
  loading.save_head(head_dir, params, config,
                    source=f'{models.generator.source} | '
                    f'{models.encoder.source}{source_note}')
  return head_dir


def _write_summary(workdir: str, summary: Mapping[str, Any]) -> None:
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)


def _say_pairs_report(report: Mapping[str, Any], head_dir: str) -> None:
  """The held-out latent MSE and cosine, and how to use the head."""
  mse, cos = report['latent_mse'], report['id_cosine']
  common.say(f'held-out pairs: {report["num_pairs"]}\n'
             f'  latent MSE       regressor {mse["regressor"]:.4f}  '
             f'(start {mse["start"]:.4f})\n'
             f'  identity cosine  regressor {cos["regressor"]:.4f}  '
             f'(start {cos["start"]:.4f})\n'
             f'head: {head_dir} (use: id2image invert --set init={head_dir})')


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


# ----------------------------------------------------------------------------
# End to end through the frozen generator and encoder.


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
  if config.latent_space not in recipe.LATENT_SPACES:
    raise errors.UsageError(
        f"latent_space must be 'w' or 'w+' end to end, got "
        f'{config.latent_space!r}')
  models = _load_models(config, dtype=jnp.dtype(config.compute_dtype),
                        judge_spec=config.eval_encoder)
  job = _prepare_end_to_end(config, models)
  done = _train_end_to_end(job)
  head_dir = _save_head(
      config.workdir, models, jax.tree.map(np.asarray, done.state.params),
      job.head.config, latent_space=config.latent_space,
      source_note=f' | end to end from {os.path.basename(job.start_source)}',
      training='end_to_end', steps=int(done.state.step))
  if done.history:
    _plot_loss(os.path.join(config.workdir, 'loss.png'),
               list(range(1, len(done.history) + 1)),
               [h['loss'] for h in done.history], unit='step',
               label='identity + latent loss')
  summary = _end_to_end_summary(job, done, head_dir,
                                seconds=time.time() - started)
  _write_summary(config.workdir, summary)
  _say_end_to_end_report(job, done, head_dir)
  return summary


@dataclasses.dataclass(frozen=True)
class _EndToEnd:
  """What end-to-end training reads: made by `_prepare_end_to_end`.

  Attributes:
    config: the regressor config.
    models: generator, attacked encoder and judge.
    real: [R, D] real descriptors (the identity term).
    held_out: the held-out photos under the encoder and the judge.
    keys: the run's PRNG keys.
    synth_descriptors: [S, D] synthetic pair descriptors (latent term).
    synth_latents: [S, C] their w.
    head: the head at step 0.
    start_source: where it came from: a path, or 'fresh'.
  """
  config: Any
  models: _Models
  real: np.ndarray
  held_out: recipe.HeldOut
  keys: recipe.Keys
  synth_descriptors: np.ndarray
  synth_latents: np.ndarray
  head: recipe.Head
  start_source: str


def _prepare_end_to_end(config: Any, models: _Models) -> _EndToEnd:
  """Reads the real and held-out descriptors, draws the synthetic pairs
  (once, kept in ``workdir/pairs.npz``) and builds the start head."""
  real, _ = _descriptor_file(config.real_descriptors,
                             field='real_descriptors', dim=models.encoder.dim)
  held_out = _held_out(config, models.encoder.dim, models.judge.dim)
  common.say(f'real descriptors: {len(real)} ({config.real_descriptors}); '
             f'held out: {len(held_out.attacked)} '
             f'({config.eval_descriptors})')
  os.makedirs(config.workdir, exist_ok=True)
  keys = recipe.run_keys(jax.random.key(config.seed))
  sampler = regressor.make_sampler(models.generator, models.encoder,
                                   latent_space='w',
                                   truncation_psi=config.truncation_psi)
  synth_d, synth_w = _cached_pairs(
      os.path.join(config.workdir, 'pairs.npz'), sampler, keys.pairs,
      config.pairs, batch=config.sample_batch, progress=config.progress)
  head, start_source = _start_head(config, models)
  return _EndToEnd(config, models, real, held_out, keys, synth_d, synth_w,
                   head, start_source)


def _start_head(config: Any, models: _Models) -> tuple[recipe.Head, str]:
  """The head training starts from (``init_head``: 'auto', a path, or ''
  for fresh) and its source; a W head starts a W+ one."""
  generator, encoder = models.generator, models.encoder
  path = (loading.shipped_regressor(generator.kind, encoder.kind)
          if config.init_head == 'auto' else config.init_head)
  if config.init_head == 'auto' and not path:
    raise FileNotFoundError(
        f'init_head=auto: no shipped ID->latent head for {generator.kind} + '
        f'{encoder.kind}; train one (`id2image regressor`) and pass '
        'init_head=DIR, or init_head= to start fresh')
  start, hidden = None, tuple(config.hidden)
  if path:
    _, start, start_config = loading.load_head(path, what='init_head')
    if int(start_config.get('input_dim', encoder.dim)) != encoder.dim:
      raise errors.BadInputError(
          f'init_head {path} reads {start_config["input_dim"]}'
          f'-d descriptors, the encoder gives {encoder.dim}')
    hidden = tuple(start_config['hidden'])
  head, fresh = recipe.start_head(
      jax.random.key(config.seed), start, input_dim=encoder.dim,
      out_shape=generator.latent_shape(config.latent_space), hidden=hidden,
      layer_rank=config.layer_rank)
  common.say(f'start: {path or "fresh"}'
             + (f' (new: {fresh})' if fresh else ''))
  return head, path or 'fresh'


@dataclasses.dataclass(frozen=True)
class _Done:
  """What `_train_end_to_end` did.

  Attributes:
    state: the training state at the last step.
    history: the metrics of every step since step 0.
    first: the step this run started from (> 0 when resumed).
    start_eval: the held-out scores of the start head.
    trained_eval: those of the trained head.
    train_seconds: wall time of this run's steps.
    step_seconds: `recipe.TimedStep.seconds` of this run.
  """
  state: train_lib.TrainState
  history: list[dict[str, float]]
  first: int
  start_eval: dict[str, Any]
  trained_eval: dict[str, Any]
  train_seconds: float
  step_seconds: dict[str, float | None]


def _train_end_to_end(job: _EndToEnd) -> _Done:
  """Resumes from ``workdir/train`` (or starts), scores the start head
  (once per head and held-out set), trains to ``steps`` with checkpoints
  and scores the trained head."""
  config, models, head = job.config, job.models, job.head
  synth_z = end_to_end.latent_targets(job.synth_latents,
                                      head.config['out_shape'])
  tx = optax.adam(config.learning_rate)
  step = recipe.TimedStep(recipe.make_step(head.model, tx, models.generator,
                                           models.encoder, config))
  batch_of = recipe.batch_fn(job.keys, job.real, job.synth_descriptors,
                             synth_z, real_batch=config.real_batch,
                             batch_size=config.batch_size)
  score = recipe.held_out_scorer(
      head.model, models.generator, models.encoder, models.judge,
      job.held_out, latent_space=config.latent_space,
      batch=config.sample_batch)
  fingerprint = recipe.fingerprint(
      config, real=job.real, synth_descriptors=job.synth_descriptors,
      synth_latents=job.synth_latents, start_params=head.params)
  store = checkpoints.TrainCheckpoints(
      os.path.join(config.workdir, 'train'), fingerprint)
  try:
    state, history = _restore(store, end_to_end.start_state(head.params, tx))
    start_eval = _start_eval(job, score, fingerprint['start'])
    timer = time.perf_counter()
    first = int(state.step)
    state, history = end_to_end.train(
        state, step, recipe.frozen(models.generator, models.encoder),
        batch_of, num_steps=config.steps, history=history,
        save=lambda st, hist: store.save(int(st.step), st,
                                         {'history': hist}),
        save_every=config.checkpoint_every, progress=config.progress)
    train_seconds = time.perf_counter() - timer
    step_seconds = step.seconds()
  finally:
    store.close()
  # No step taken (e.g. --steps 0): the head is the start head.
  trained_eval = (start_eval if int(state.step) == 0 else
                  score(state.params))
  return _Done(state, history, first, start_eval, trained_eval,
               train_seconds, step_seconds)


def _restore(store: checkpoints.TrainCheckpoints,
             state: train_lib.TrainState
             ) -> tuple[train_lib.TrainState, list[dict[str, float]]]:
  """(state, history) of the last checkpoint, or (`state`, [])."""
  restored = store.restore(jax.eval_shape(lambda: state))
  if restored is None:
    return state, []
  _, state, meta = restored
  common.say(f'resumed at step {int(state.step)} from {store.directory}')
  return state, meta['history']


def _start_eval(job: _EndToEnd, score: Callable[[Any], dict[str, Any]],
                head_digest: str) -> dict[str, Any]:
  """The start head's held-out scores, kept in ``workdir/start_eval.json``
  per (head, held-out set, judge): a resumed run reads them back."""
  judge = job.models.judge
  start_eval = _cached_json(
      os.path.join(job.config.workdir, 'start_eval.json'),
      {'head': head_digest, 'judge': judge.kind,
       'held_out': recipe.digest(job.held_out.attacked,
                                 job.held_out.reference)},
      lambda: score(job.head.params))
  common.say(f'held out at 0 steps ({job.start_source}): attacked '
             f'{start_eval["attacked"]["mean"]:.4f}, {judge.kind} '
             f'{start_eval["judge"]["mean"]:.4f}')
  return start_eval


def _end_to_end_summary(job: _EndToEnd, done: _Done, head_dir: str, *,
                        seconds: float) -> dict[str, Any]:
  """The run's ``summary.json``."""
  models = job.models
  return {
      'head': head_dir,
      'train': 'end_to_end',
      'start': job.start_source,
      'generator': models.generator.source,
      'encoder': f'{models.encoder.kind}: {models.encoder.source}',
      'judge': f'{models.judge.kind}: {models.judge.source}',
      'latent_space': job.config.latent_space,
      'num_real': len(job.real),
      'num_pairs': len(job.synth_descriptors),
      'history': done.history,
      'held_out': {'num_photos': len(job.held_out.attacked),
                   'keys': job.held_out.keys,
                   'start': done.start_eval, 'trained': done.trained_eval},
      'steps_this_run': int(done.state.step) - done.first,
      'train_seconds_this_run': done.train_seconds,
      # The first step of a run compiles; the others are steady state.
      'step_seconds_this_run': done.step_seconds,
      'load_average_1min': os.getloadavg()[0],
      'device': str(jax.devices()[0].device_kind),
      'seconds': seconds,
      'config': job.config.to_dict(),
  }


def _say_end_to_end_report(job: _EndToEnd, done: _Done,
                           head_dir: str) -> None:
  """The steps and their time, the held-out cosines, how to use the
  head."""
  s, t = done.start_eval, done.trained_eval
  timing = done.step_seconds
  encoder, judge = job.models.encoder, job.models.judge
  common.say(f'steps {done.first} -> {int(done.state.step)} in '
             f'{done.train_seconds:.0f} s'
             + (f' ({timing["median_of_rest"]:.2f} s wall, '
                f'{timing["cpu_median_of_rest"]:.2f} s CPU per step after '
                'the first)' if timing['median_of_rest'] else ''))
  common.say(
      f'held-out photos: {len(job.held_out.attacked)}; one-pass identity '
      f'cosine\n'
      f'  {encoder.kind:>10} (attacked)     start {s["attacked"]["mean"]:.4f}'
      f'  trained {t["attacked"]["mean"]:.4f}\n'
      f'  {judge.kind:>10} (independent)  start {s["judge"]["mean"]:.4f}'
      f'  trained {t["judge"]["mean"]:.4f}\n'
      f'head: {head_dir} (use: id2image invert --set init={head_dir})')


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
      raise errors.BadInputError(
          f'{field}: {path} has no "descriptor" array (has '
          f'{sorted(f.files)})')
    d = np.asarray(f['descriptor'], np.float32)
    keys = (np.asarray(f['key']).astype(str) if 'key' in f.files else
            np.arange(len(d)).astype(str))
  if d.ndim != 2 or d.shape[1] != dim:
    raise errors.BadInputError(
        f'{field}: {path} holds descriptors of shape {d.shape}, '
        f'the encoder gives {dim}-d ones')
  finite = np.all(np.isfinite(d), axis=1)
  if not finite.all():
    common.say(f'{field}: skipped {int((~finite).sum())} non-finite rows of '
               f'{path}: {[str(k) for k in keys[~finite][:5]]}')
  return d[finite], keys[finite]


def _held_out(config: Any, dim: int, eval_dim: int) -> recipe.HeldOut:
  """The held-out photos' descriptors under both encoders, matched by key
  (``eval_size`` of them, drawn with ``seed``)."""
  d, keys = _descriptor_file(config.eval_descriptors,
                             field='eval_descriptors', dim=dim)
  ref, ref_keys = _descriptor_file(config.eval_reference,
                                   field='eval_reference', dim=eval_dim)
  row_of = {k: i for i, k in enumerate(ref_keys)}
  both = [i for i, k in enumerate(keys) if k in row_of]
  if not both:
    raise errors.BadInputError(
        f'eval_descriptors {config.eval_descriptors} and '
        f'eval_reference {config.eval_reference} share no key')
  if config.eval_size and config.eval_size < len(both):
    pick = np.random.default_rng(config.seed).choice(
        len(both), config.eval_size, replace=False)
    both = [both[i] for i in np.sort(pick)]
  return recipe.HeldOut(d[both], ref[[row_of[keys[i]] for i in both]],
                        [str(keys[i]) for i in both])


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
