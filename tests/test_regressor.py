"""The ``id2image regressor`` job (paper 4.1) and its use as the init."""

import json

import jax
import numpy as np
import pytest

from id2image_jax import cli
from id2image_jax import loading
from id2image_jax.analysis import regressor

_TINY = ['--set', 'generator=demo:demo-8', '--set', 'progress=False']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  out = tmp_path_factory.mktemp('regressor')
  assert cli.main(['regressor', *_TINY, '--out', str(out), '--steps', '24',
                   '--set', 'batch_size=8', '--set', 'hidden=(64, 64)',
                   '--set', 'eval_pairs=8', '--set', 'log_every=6']) == 0
  with open(out / 'summary.json') as f:
    return out, json.load(f)


def test_job_trains_saves_and_reports(trained):
  out, summary = trained
  loss = summary['loss_history']['loss']
  assert summary['loss_history']['steps'] == [6, 12, 18, 24]
  assert np.all(np.isfinite(loss)) and loss[-1] < loss[0], loss
  held = summary['held_out']
  assert held['num_pairs'] == 8
  for measure in ('latent_mse', 'id_cosine'):
    for arm in ('regressor', 'start'):
      assert np.isfinite(held[measure][arm]), (measure, arm)
  assert (out / 'loss.png').exists()
  model, params, config = loading.load_head(out / 'id_to_latent')
  assert config['latent_space'] == 'w' and config['hidden'] == [64, 64]
  assert model.apply({'params': params}, np.zeros((2, 128), np.float32)).shape == (2, 16)


def test_pairs_mode_draws_once_and_trains_epochs(tmp_path):
  args = ['regressor', *_TINY, '--out', str(tmp_path), '--set', 'pairs=48',
          '--set', 'epochs=3', '--set', 'batch_size=8', '--set',
          'hidden=(32,)', '--set', 'eval_pairs=8']
  assert cli.main(args) == 0
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  assert summary['loss_history']['epochs'] == [1, 2, 3]
  with np.load(tmp_path / 'pairs.npz') as f:
    assert f['descriptor'].shape == (48, 128) and f['latent'].shape == (
        48, 16)
    first = f['descriptor'].copy()
  # A rerun reads the cached pairs instead of drawing new ones; a smaller
  # request is a prefix of them.
  stamp = (tmp_path / 'pairs.npz').stat().st_mtime_ns
  args[args.index('pairs=48')] = 'pairs=40'
  assert cli.main(args) == 0
  assert (tmp_path / 'pairs.npz').stat().st_mtime_ns == stamp
  d, _ = regressor.sample_pairs(
      regressor.make_sampler(loading.load_generator('demo:demo-8'),
                             loading.load_encoder('dlib'),
                             truncation_psi=0.7),
      jax.random.fold_in(jax.random.split(jax.random.key(0))[0], 1), 8,
      batch=8)  # the job's sample_batch
  np.testing.assert_allclose(d, first[:8], rtol=1e-5, atol=1e-5)


def test_invert_starts_from_the_regressor(trained, tmp_path):
  out, _ = trained
  run = tmp_path / 'invert'
  assert cli.main(['invert', *_TINY, '--set', 'chunk_size=4',
                   '--set', f'init={out / "id_to_latent"}', '--steps', '2',
                   '--num-targets', '3', '--out', str(run)]) == 0
  with open(run / 'summary.json') as f:
    summary = json.load(f)
  assert summary['num_done'] == 3
  assert np.isfinite(summary['quality_at_init']['id_cosine'])


def test_sampler_passes_weights_as_arguments():
  generator = loading.load_generator('demo:demo-8')
  encoder = loading.load_encoder('dlib')
  sampler = regressor.make_sampler(generator, encoder, latent_space='w+')
  # The models' weights are leaves of the sampler, i.e. jit inputs.
  assert len(jax.tree.leaves(sampler)) == (
      len(jax.tree.leaves(generator.variables))
      + len(jax.tree.leaves(encoder.variables)))
  d, w = jax.eval_shape(lambda k: sampler(k, 3), jax.random.key(0))
  assert d.shape == (3, 128)
  assert w.shape == (3, generator.config.num_ws, generator.config.w_dim)
  with pytest.raises(ValueError, match='latent_space'):
    regressor.make_sampler(generator, encoder, latent_space='s')


def test_paper_variant():
  config = cli.load_config(cli.config_dir() + '/regressor.py:paper')
  assert tuple(config.hidden) == (2048, 2048, 2048)
  assert config.generator == '' and config.encoder == ''
