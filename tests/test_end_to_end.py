"""The ID -> latent head trained end to end (analysis/end_to_end.py) and
its job (``id2image regressor --config configs/regressor.py:end_to_end``).

The step and loop run on a toy "generator and encoder" (a fixed linear map
and tanh), the job on the demo-8 StyleGAN2 with toy conv encoders served
under ``toy:NAME`` specs, so the file runs in well under a minute.
"""

import contextlib
import io
import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from id2image_jax import checkpoints
from id2image_jax import cli
from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax import protocols
from id2image_jax.analysis import end_to_end
from id2image_jax.analysis import train as train_lib
from id2image_jax.models import heads

D, C = 6, 5  # descriptor and latent sizes of the toy problem


def _toy_descriptor_of(frozen, latent):
  """ONE latent [C] or [L, C] -> a 'descriptor' [D] (frozen: {'A': [C, D]})."""
  w = latent if latent.ndim == 1 else latent.mean(axis=0)
  return jnp.tanh(w @ frozen['A'])


def _toy(key_seed=0, *, out_shape=(C,), layer_rank=0):
  config = heads.head_config('id_to_latent', hidden=(16,), input_dim=D,
                             out_shape=out_shape, layer_rank=layer_rank)
  model = heads.build(config)
  params = model.init(jax.random.key(key_seed), jnp.zeros((1, D)))['params']
  rng = np.random.default_rng(key_seed)
  frozen = {'A': jnp.asarray(rng.normal(size=(C, D)), jnp.float32)}
  return model, params, frozen, rng


def _data(rng, n_real=8, n_synth=6, out_shape=(C,)):
  real = rng.normal(size=(n_real, D)).astype(np.float32)
  synth_d = rng.normal(size=(n_synth, D)).astype(np.float32)
  synth_z = rng.normal(size=(n_synth, *out_shape)).astype(np.float32)
  return real, synth_d, synth_z


# ----------------------------------------------------------------------------
# Step.


@pytest.mark.parametrize('identity', ['cosine', 'l2'])
def test_micro_batches_give_the_same_update(identity):
  model, params, frozen, rng = _toy()
  batch = _data(rng)
  tx = optax.adam(1e-2)
  out = []
  for micro in (0, 2):
    step = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of,
                                identity=identity, latent_weight=0.5,
                                micro_batch=micro)
    state, metrics = step(end_to_end.start_state(params, tx), frozen, *batch)
    out.append((state.params, metrics))
  chex.assert_trees_all_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)


def test_step_value_is_identity_plus_weighted_latent():
  model, params, frozen, rng = _toy()
  real, synth_d, synth_z = _data(rng)
  tx = optax.sgd(0.0)
  step = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of,
                              identity='cosine', latent_weight=0.25)
  _, metrics = step(end_to_end.start_state(params, tx), frozen, real,
                    synth_d, synth_z)
  latents = model.apply({'params': params}, real)
  rendered = jax.vmap(_toy_descriptor_of, in_axes=(None, 0))(frozen, latents)
  cos = np.sum(rendered * real, 1) / (
      np.linalg.norm(rendered, axis=1) * np.linalg.norm(real, axis=1))
  mse = np.mean((np.asarray(model.apply({'params': params}, synth_d))
                 - synth_z) ** 2)
  np.testing.assert_allclose(metrics['id_cosine'], cos.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['identity'], 1 - cos.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['latent'], mse, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], 1 - cos.mean() + 0.25 * mse,
                             rtol=1e-5)


def test_identity_gradient_reaches_the_head_through_the_frozen_models():
  model, params, frozen, rng = _toy()
  real, synth_d, synth_z = _data(rng)
  tx = optax.adam(3e-2)
  # Identity only: the head learns from what its faces score.
  step = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of,
                              latent_weight=0.0, micro_batch=4)
  state = end_to_end.start_state(params, tx)
  first = None
  for _ in range(40):
    state, metrics = step(state, frozen, real, synth_d, synth_z)
    first = first if first is not None else float(metrics['id_cosine'])
  assert float(metrics['id_cosine']) > first + 0.1, (first, metrics)


def test_step_compiles_once_and_rejects_a_bad_micro_batch():
  model, params, frozen, rng = _toy()
  batch = _data(rng)
  tx = optax.adam(1e-3)
  traced = []

  def counting(frozen, latent):
    traced.append(1)
    return _toy_descriptor_of(frozen, latent)

  step = end_to_end.make_step(model, tx, descriptor_of=counting,
                              micro_batch=4)
  state = end_to_end.start_state(params, tx)
  for _ in range(3):
    state, _ = step(state, frozen, *batch)
  once = len(traced)
  state, _ = step(state, frozen, *_data(rng))  # new values, same shapes
  assert len(traced) == once
  bad = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of,
                             micro_batch=3)
  with pytest.raises(ValueError, match='micro_batch 3 does not divide'):
    bad(end_to_end.start_state(params, tx), frozen, *batch)


# ----------------------------------------------------------------------------
# W+ heads, warm start, data.


def test_w_plus_head_starts_as_the_w_head_broadcast():
  model_w, params_w, _, rng = _toy(1)
  model_p, params_p, _, _ = _toy(2, out_shape=(3, C), layer_rank=2)
  params, fresh = end_to_end.warm_start(params_p, params_w)
  assert fresh == ["['layer_down']['bias']", "['layer_down']['kernel']",
                   "['layer_up']['bias']", "['layer_up']['kernel']"]
  d = rng.normal(size=(4, D)).astype(np.float32)
  w = np.asarray(model_w.apply({'params': params_w}, d))
  wp = np.asarray(model_p.apply({'params': params}, d))
  assert wp.shape == (4, 3, C)
  np.testing.assert_allclose(wp, np.repeat(w[:, None], 3, 1), atol=1e-6)
  # Training moves the layers apart.
  tx = optax.adam(1e-2)
  step = end_to_end.make_step(model_p, tx, descriptor_of=_toy_descriptor_of)
  state = end_to_end.start_state(params, tx)
  z = rng.normal(size=(6, 3, C)).astype(np.float32)
  for _ in range(3):
    state, _ = step(state, {'A': jnp.ones((C, D))}, d,
                    rng.normal(size=(6, D)).astype(np.float32), z)
  wp = np.asarray(model_p.apply({'params': state.params}, d))
  assert np.abs(wp - wp[:, :1]).max() > 1e-4


def test_warm_start_names_what_does_not_fit():
  _, params_w, _, _ = _toy(1)
  _, params_wide, _, _ = _toy(1, out_shape=(C + 1,))
  with pytest.raises(ValueError, match=r"\['out'\]\['bias'\].*shape"):
    end_to_end.warm_start(params_wide, params_w)
  _, params_p, _, _ = _toy(2, out_shape=(3, C), layer_rank=2)
  with pytest.raises(ValueError, match='layer_down'):
    end_to_end.warm_start(params_w, params_p)


def test_layer_rank_needs_a_two_axis_output():
  model = heads.build(heads.head_config('id_to_latent', hidden=(4,),
                                        input_dim=D, out_shape=(C,),
                                        layer_rank=2))
  with pytest.raises(ValueError, match='layer_rank needs an out_shape'):
    model.init(jax.random.key(0), jnp.zeros((1, D)))


def test_latent_targets_broadcast_w_to_every_layer():
  w = np.arange(10, dtype=np.float32).reshape(2, 5)
  np.testing.assert_array_equal(end_to_end.latent_targets(w, (5,)), w)
  wp = end_to_end.latent_targets(w, (3, 5))
  assert wp.shape == (2, 3, 5) and np.all(wp == w[:, None])
  with pytest.raises(ValueError, match='cannot be targets'):
    end_to_end.latent_targets(w, (3, 4))


def test_batch_rows_depend_on_the_step_only():
  key = jax.random.key(0)
  a = end_to_end.batch_rows(key, 3, 20, 8)
  assert len(set(a.tolist())) == 8 and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(a, end_to_end.batch_rows(key, 3, 20, 8))
  assert not np.array_equal(a, end_to_end.batch_rows(key, 4, 20, 8))
  with pytest.raises(ValueError, match='a batch of 21 rows from 20'):
    end_to_end.batch_rows(key, 0, 20, 21)


# ----------------------------------------------------------------------------
# Loop and checkpoints.


def test_loop_resumes_to_the_same_state(tmp_path):
  model, params, frozen, rng = _toy()
  real, synth_d, synth_z = _data(rng, n_real=16, n_synth=12)
  tx = optax.adam(1e-2)
  step = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of,
                              micro_batch=2)
  key = jax.random.key(1)

  def batch_of(t):
    rows = end_to_end.batch_rows(key, t, 16, 4)
    pairs = end_to_end.batch_rows(key, t, 12, 4)
    return real[rows], synth_d[pairs], synth_z[pairs]

  straight, hist = end_to_end.train(end_to_end.start_state(params, tx), step,
                                    frozen, batch_of, num_steps=5)
  assert len(hist) == 5 and set(hist[0]) == {'loss', 'identity', 'latent',
                                              'id_cosine'}
  store = checkpoints.TrainCheckpoints(tmp_path / 'run', {'lr': 1e-2})
  saved = []

  def save(state, history):
    saved.append(int(state.step))
    store.save(int(state.step), state, {'history': history})

  end_to_end.train(end_to_end.start_state(params, tx), step, frozen,
                   batch_of, num_steps=3, save=save, save_every=2)
  assert saved == [2, 3]
  store.close()
  # A new process: open the run again, restore, continue to step 5.
  store = checkpoints.TrainCheckpoints(tmp_path / 'run', {'lr': 1e-2})
  abstract = jax.eval_shape(lambda: end_to_end.start_state(params, tx))
  at, state, meta = store.restore(abstract)
  assert at == 3 and int(state.step) == 3 and len(meta['history']) == 3
  resumed, hist2 = end_to_end.train(state, step, frozen, batch_of,
                                    num_steps=5, history=meta['history'])
  store.close()
  chex.assert_trees_all_equal(resumed.params, straight.params)
  assert hist2 == hist
  with pytest.raises(ValueError, match='history holds 3 steps, the state is '
                     'at step 0'):
    end_to_end.train(end_to_end.start_state(params, tx), step, frozen,
                     batch_of, num_steps=5, history=hist[:3])


def test_loop_stops_on_a_non_finite_loss():
  model, params, frozen, rng = _toy()
  real, synth_d, synth_z = _data(rng)
  tx = optax.adam(1e-2)
  step = end_to_end.make_step(model, tx, descriptor_of=_toy_descriptor_of)
  synth_z[0, 0] = np.nan
  with pytest.raises(train_lib.TrainingDiverged, match='at step 1'):
    end_to_end.train(end_to_end.start_state(params, tx), step, frozen,
                     lambda t: (real, synth_d, synth_z), num_steps=2)


def test_train_checkpoints_refuse_another_run_and_another_shape(tmp_path):
  _, params, _, _ = _toy()
  tx = optax.adam(1e-3)
  store = checkpoints.TrainCheckpoints(tmp_path, {'lr': 1e-3, 'seed': 0})
  assert store.restore(jax.eval_shape(
      lambda: end_to_end.start_state(params, tx))) is None
  store.save(1, end_to_end.start_state(params, tx), {})
  store.close()
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='differs in: seed'):
    checkpoints.TrainCheckpoints(tmp_path, {'lr': 1e-3, 'seed': 1})
  _, wider, _, _ = _toy(out_shape=(C + 1,))
  store = checkpoints.TrainCheckpoints(tmp_path, {'lr': 1e-3, 'seed': 0})
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"params/out/bias'\]: saved \(5,\), model expects "
                     r"\(6,\)"):
    store.restore(jax.eval_shape(lambda: end_to_end.start_state(wider, tx)))
  store.close()


# ----------------------------------------------------------------------------
# The job, on demo-8 with toy encoders.


class _ToyEncoder(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):  # [B, 16, 16, 3] -> ([B, dim], {})
    h = nn.tanh(nn.Conv(4, (3, 3), strides=(2, 2))(x))
    return nn.Dense(self.dim)(h.reshape(h.shape[0], -1)), {}


@pytest.fixture(scope='module')
def toy_encoders():
  """``toy:NAME`` specs load toy encoders (12-d, 16 px)."""
  real, cache = loading.load_encoder, {}

  def load(spec='dlib', *, dtype=None, crop=None, input_overrides=None):
    if not spec.startswith('toy:'):
      return real(spec, dtype=dtype, crop=crop,
                  input_overrides=input_overrides)
    if spec not in cache:
      module = _ToyEncoder(12)
      variables = module.init(jax.random.key(len(cache)),
                              jnp.zeros((1, 16, 16, 3)))
      cache[spec] = protocols.Encoder(
          kind='toy', config={'dim': 12}, module=module, variables=variables,
          spec=preprocess.InputSpec(size=(16, 16)), dim=12,
          source=f'toy encoder {spec}')
    return cache[spec]
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loading, 'load_encoder', load)
    yield cache


def _descriptor_files(directory, *, n_real=24, n_eval=6, dim=12):
  rng = np.random.default_rng(0)
  paths = {}
  for name, n, d in (('real', n_real, dim), ('eval', n_eval, dim),
                     ('judge', n_eval + 2, dim)):
    paths[name] = str(directory / f'{name}.npz')
    keys = np.array([f'{i:06d}.jpg' for i in range(n)])
    if name == 'judge':  # other order, two more photos: matched by key
      keys = keys[::-1]
    desc = rng.normal(size=(n, d)).astype(np.float32)
    if name == 'real':
      desc[3] = np.nan  # skipped and counted
    np.savez(paths[name], descriptor=desc, key=keys)
  return paths


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  return _descriptor_files(tmp_path_factory.mktemp('descriptors'))


def _args(directory, files, *extra):
  return ['regressor', '--config',
          cli.config_dir() + '/regressor.py:end_to_end',
          '--generator', 'demo:demo-8', '--encoder', 'toy:a',
          '--out', str(directory / 'run'),
          '--set', 'eval_encoder=toy:b', '--set', 'init_head=',
          '--set', 'hidden=(16,)', '--set', 'pairs=8',
          '--set', 'batch_size=4', '--set', 'real_batch=4',
          '--set', 'micro_batch=2', '--set', 'sample_batch=4',
          '--set', 'checkpoint_every=2', '--set', 'progress=False',
          '--set', f'real_descriptors={files["real"]}',
          '--set', f'eval_descriptors={files["eval"]}',
          '--set', f'eval_reference={files["judge"]}', *extra]


def _summary(directory):
  with open(directory / 'run' / 'summary.json') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def straight(tmp_path_factory, toy_encoders, files):
  """4 steps in one go, and what the job printed."""
  directory = tmp_path_factory.mktemp('straight')
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert cli.main(_args(directory, files, '--steps', '4')) == 0
  return directory, printed.getvalue()


def test_job_trains_reports_and_the_head_initialises_invert(
    tmp_path, straight):
  directory, printed = straight
  assert 'skipped 1 non-finite rows' in printed
  summary = _summary(directory)
  assert summary['num_real'] == 23 and summary['num_pairs'] == 8
  assert len(summary['history']) == 4
  held = summary['held_out']
  assert held['num_photos'] == 6
  for when in ('start', 'trained'):
    for scorer in ('attacked', 'judge'):
      got = held[when][scorer]
      assert len(got['per_photo']) == 6 and np.isfinite(got['mean'])
  assert (directory / 'run' / 'loss.png').exists()
  head = directory / 'run' / 'id_to_latent'
  model, params, config = loading.load_head(head)
  assert config['training'] == 'end_to_end' and config['steps'] == 4
  assert model.apply({'params': params}, np.zeros((2, 12))).shape == (2, 16)
  # Wherever the shipped head loads: the inversion's init.
  assert cli.main(['invert', '--generator', 'demo:demo-8', '--encoder',
                   'toy:a', '--set', f'init={head}', '--steps', '1',
                   '--num-targets', '2', '--set', 'progress=False',
                   '--out', str(tmp_path / 'invert')]) == 0
  with open(tmp_path / 'invert' / 'summary.json') as f:
    assert json.load(f)['num_done'] == 2


def test_job_resumes_where_it_stopped(tmp_path, straight, files):
  # The same run interrupted after step 2 (its checkpoint), then rerun.
  assert cli.main(_args(tmp_path, files, '--steps', '2')) == 0
  assert cli.main(_args(tmp_path, files, '--steps', '4')) == 0
  a, b = _summary(straight[0]), _summary(tmp_path)
  assert b['steps_this_run'] == 2
  assert a['history'] == b['history']
  _, pa, _ = loading.load_head(straight[0] / 'run' / 'id_to_latent')
  _, pb, _ = loading.load_head(tmp_path / 'run' / 'id_to_latent')
  chex.assert_trees_all_equal(pa, pb)
  # Another setting is another run: refused, naming the field.
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match='latent_weight'):
    cli.main(_args(tmp_path, files, '--steps', '5', '--set',
                   'latent_weight=2.0'))


def test_job_w_plus_head_inverts_in_w_plus(tmp_path, toy_encoders, files):
  assert cli.main(_args(tmp_path, files, '--steps', '2', '--set',
                        'latent_space=w+', '--set', 'layer_rank=3')) == 0
  head = tmp_path / 'run' / 'id_to_latent'
  model, params, config = loading.load_head(head)
  assert config['latent_space'] == 'w+' and config['layer_rank'] == 3
  num_ws = loading.load_generator('demo:demo-8').num_ws
  assert model.apply({'params': params}, np.zeros((1, 12))).shape == (
      1, num_ws, 16)
  assert cli.main(['invert', '--generator', 'demo:demo-8', '--encoder',
                   'toy:a', '--set', f'init={head}', '--steps', '1',
                   '--set', 'latent_space=w+', '--num-targets', '2',
                   '--set', 'progress=False',
                   '--out', str(tmp_path / 'invert')]) == 0


def test_job_names_a_missing_or_wrong_descriptor_file(tmp_path,
                                                      toy_encoders, files):
  with pytest.raises(FileNotFoundError, match='real_descriptors.*nowhere'):
    cli.main(_args(tmp_path, {**files, 'real': str(tmp_path / 'nowhere')},
                   '--steps', '1'))
  wrong = _descriptor_files(tmp_path, dim=7)
  with pytest.raises(ValueError, match='eval_reference.*7.*12-d'):
    cli.main(_args(tmp_path, {**files, 'judge': wrong['judge']},
                   '--steps', '1'))
  with pytest.raises(ValueError, match="train must be 'pairs' or"):
    cli.main(_args(tmp_path, files, '--set', 'train=both'))


def test_end_to_end_variant():
  config = cli.load_config(cli.config_dir() + '/regressor.py:end_to_end')
  assert config.train == 'end_to_end'
  assert config.generator == 'mobilestylegan' and config.init_head == 'auto'
  assert config.real_batch % config.micro_batch == 0
  assert 'train' in config.real_descriptors
  assert 'validation' in config.eval_descriptors
