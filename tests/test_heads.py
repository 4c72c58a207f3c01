"""Heads learn planted signals; steps compile once; checkpoints round-trip."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from id2image_jax import checkpoints
from id2image_jax import loading
from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax.analysis import leakage
from id2image_jax.analysis import train as train_lib
from id2image_jax.models import heads

D = 24  # descriptor size of the synthetic data


def _descriptors(seed, n):
  rng = np.random.default_rng(seed)
  # Varying norms, as real descriptors have: the l2 input norm removes them.
  x = rng.normal(size=(n, D)) * rng.uniform(0.5, 20, size=(n, 1))
  return x.astype(np.float32), rng


def _split(arrays, n_train):
  return ({k: v[:n_train] for k, v in arrays.items()},
          {k: v[n_train:] for k, v in arrays.items()})


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_attribute_head_beats_majority_baseline():
  x, rng = _descriptors(0, 1600)
  w = rng.normal(size=D)
  # Planted leakage: the sign of a projection (+ noise), with a 70/30 prior.
  score = _unit(x) @ w + 0.1 * rng.normal(size=len(x))
  y = score > np.quantile(score, 0.3)
  arrays = {'descriptor': x, 'smile': y}
  meta = {'meta': {'image_size': None}}
  train, test = _split(arrays, 1200)
  res, trained = leakage.attribute_leakage(
      jax.random.key(0), {**train, **meta}, {**test, **meta}, ['smile'],
      leakage.Training(hidden=(32, 32), batch_size=64, num_epochs=15))
  r = res['smile']
  assert 60 < r['baseline'] < 80
  assert r['accuracy'] > r['baseline'] + 12, r
  assert trained[0].history.loss[-1] < trained[0].history.loss[0]


def test_landmark_head_beats_mean_landmarks():
  x, rng = _descriptors(1, 1500)
  template = rng.uniform(0.2, 0.8, size=(68, 2)).astype(np.float32)
  # Planted leakage: a pose-like shift and scale driven by the descriptor.
  a = _unit(x) @ rng.normal(size=(D, 3)) * 0.15
  points = (template[None] * (1 + a[:, :1, None])
            + a[:, None, 1:]).astype(np.float32)
  arrays = {'descriptor': x, 'landmarks68': points,
            'landmarks68_detected': np.ones(len(x), bool)}
  meta = {'meta': {'image_size': [100, 80]}}
  train, test = _split(arrays, 1200)
  # The paper's optimiser (SGD 1e-3, batch 16) on pixels of 224-px images.
  res, head = leakage.landmark_leakage(
      jax.random.key(1), {**train, **meta}, {**test, **meta},
      leakage.Training(hidden=(64, 64), optimizer='sgd', learning_rate=1e-3,
                       batch_size=16, num_epochs=6), pixel_scale=224.0)
  assert res['nme'] < 0.4 * res['baseline'], res
  assert head.config['output_scale'] == 224.0
  assert head.test_pred.shape == (300, 68, 2)
  np.testing.assert_array_equal(head.test_rows, np.arange(300))


def test_landmarks_skip_undetected_faces():
  x, _ = _descriptors(2, 40)
  arrays = {'descriptor': x, 'landmarks68': np.zeros((40, 68, 2), np.float32),
            'landmarks68_detected': np.arange(40) % 4 != 0, 'meta': {}}
  np.testing.assert_array_equal(leakage.landmark_rows(arrays, True),
                                [i for i in range(40) if i % 4])
  assert len(leakage.landmark_rows(arrays, False)) == 40


def test_histogram_head_beats_mean_histogram():
  x, rng = _descriptors(3, 1500)
  # Planted leakage: each channel's brightness (histogram centre) follows a
  # projection of the descriptor, like lighting would.
  centre = 4.5 + 3 * np.tanh(_unit(x) @ rng.normal(size=(D, 3)) * 2)
  logits = -np.square(np.arange(10) - centre[..., None]) / 4
  hist = np.asarray(jax.nn.softmax(logits, -1), np.float32)
  arrays = {'descriptor': x, 'histogram': hist}
  meta = {'meta': {}}
  train, test = _split(arrays, 1200)
  # The paper's lr of 1e-6 would not move in a test's budget.
  res, head = leakage.histogram_leakage(
      jax.random.key(2), {**train, **meta}, {**test, **meta},
      leakage.Training(hidden=(8, 8), learning_rate=1e-2, batch_size=32,
                       num_epochs=10))
  assert res['emd'] < 0.6 * res['baseline'], res
  assert len(res['emd_per_channel']) == 3
  np.testing.assert_allclose(head.test_pred.sum(-1), 1.0, rtol=1e-5)


def test_id_to_latent_regressor_reduces_loss():
  m = jax.random.normal(jax.random.key(7), (6, 16))

  def sample_fn(key, batch):  # toy "generator + encoder"
    z = jax.random.normal(key, (batch, 6))
    return jnp.tanh(z @ m), z

  model, params, config, history = train_lib.train_id_to_latent(
      jax.random.key(3), sample_fn, num_steps=300, batch_size=64,
      config=heads.head_config('id_to_latent', hidden=(64, 64),
                               input_norm='none', out_shape=(6,),
                               input_dim=16),
      tx=optax.adam(3e-3), log_every=50)
  assert len(history.loss) == 6
  assert history.loss[-1] < 0.3 * history.loss[0], history.loss
  d, z = sample_fn(jax.random.key(99), 8)
  assert model.apply({'params': params}, d).shape == z.shape
  assert config['out_shape'] == [6]


def test_id_to_latent_default_config_from_sample_shapes():
  def sample_fn(key, batch):
    z = jax.random.normal(key, (batch, 2, 4))  # e.g. W+ [B, layers, dim]
    return z.reshape(batch, 8) * 3.0, z

  model, params, config, _ = train_lib.train_id_to_latent(
      jax.random.key(0), sample_fn, num_steps=1, batch_size=4)
  assert config['out_shape'] == [2, 4] and config['input_dim'] == 8
  assert config['hidden'] == [2048, 2048, 2048]
  out = model.apply({'params': params}, jnp.ones((3, 8)))
  assert out.shape == (3, 2, 4)


def test_train_step_compiles_once_and_donates_state():
  config = heads.head_config('attribute', hidden=(8,), out_shape=(1,),
                             input_dim=D)
  model = heads.build(config)
  tx = optax.adam(1e-3)
  state = train_lib.init_state(jax.random.key(0), model,
                               jax.ShapeDtypeStruct((4, D), jnp.float32), tx)
  step = train_lib.make_train_step(model, tx, train_lib.attribute_loss)
  x = np.ones((4, D), np.float32)
  y = np.ones((4, 1), np.float32)
  old = state
  for _ in range(3):
    state, loss = step(state, x, y)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3 and np.isfinite(float(loss))
  leaf = jax.tree.leaves(old.params)[0]
  if jax.default_backend() != 'cpu':  # CPU ignores donation
    assert leaf.is_deleted()


def test_save_and_load_head(tmp_path):
  config = heads.head_config('histogram', out_shape=(3, 10), input_dim=D)
  model = heads.build(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, D)))['params']
  loading.save_head(tmp_path / 'h', params, config)
  model2, params2, config2 = loading.load_head(tmp_path / 'h')
  assert config2 == config
  x = jax.random.normal(jax.random.key(1), (5, D))
  chex.assert_trees_all_close(model.apply({'params': params}, x),
                              model2.apply({'params': params2}, x))


def test_shipped_form_round_trips_and_checks_its_tree(tmp_path):
  from ports import ship_head  # pylint: disable=g-import-not-at-top
  config = heads.head_config('id_to_latent', hidden=(8,), out_shape=(4,),
                             input_dim=D)
  model = heads.build(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, D)))['params']
  loading.save_head(tmp_path / 'h', params, config, source='test run')
  assert ship_head.main([str(tmp_path / 'h'), str(tmp_path / 'h.npz')]) == 0
  model2, params2, config2 = loading.load_head(tmp_path / 'h.npz')
  x = jax.random.normal(jax.random.key(1), (3, D))
  chex.assert_trees_all_equal(model.apply({'params': params}, x),
                              model2.apply({'params': params2}, x))
  assert config2['out_shape'] == [4]
  # A config that does not fit the stored parameters names the leaf.
  loading.save_head_npz(tmp_path / 'bad.npz', params,
                        dict(config, hidden=(9,)), source='')
  with pytest.raises(checkpoints.CheckpointMismatchError, match='fc0'):
    loading.load_head(tmp_path / 'bad.npz')


@pytest.mark.parametrize('kind,out_shape', [
    ('attribute', (3,)), ('histogram', (3, 10)), ('landmarks', (68, 2)),
    ('id_to_latent', (4, 8))])
def test_mlp_heads_shapes_and_outputs(kind, out_shape):
  config = heads.head_config(kind, out_shape=out_shape, input_dim=D,
                             hidden=(16, 16))
  model = heads.build(config)
  x = jax.random.normal(jax.random.key(0), (2, D))
  params = jax.jit(model.init)(jax.random.key(1), x)
  out = model.apply(params, x)
  raw = model.apply(params, x, logits=True)
  assert out.shape == (2, *out_shape) and out.dtype == jnp.float32
  if kind == 'attribute':
    chex.assert_trees_all_close(out, jax.nn.sigmoid(raw))
  if kind == 'histogram':
    chex.assert_trees_all_close(out.sum(-1), jnp.ones((2, 3)), atol=1e-6)
  # bfloat16 compute runs with float32 params and a float32 result.
  out16 = heads.build(config, dtype=jnp.bfloat16).apply(params, x)
  assert out16.dtype == jnp.float32


def test_paper_head_sizes():
  def shapes(config):
    model = heads.build(config)
    params = jax.eval_shape(model.init, jax.random.key(0),
                            heads.example_input(config))['params']
    return [p['kernel'].shape for p in params.values()]

  assert shapes(heads.head_config('attribute', out_shape=(1,),
                                  input_dim=2048)) == [
                                      (2048, 256), (256, 256), (256, 256),
                                      (256, 1)]
  assert shapes(heads.head_config('landmarks', input_dim=2048)) == [
      (2048, 256), (256, 256), (256, 136)]
  assert shapes(heads.head_config('histogram', out_shape=(3, 10),
                                  input_dim=2048)) == [
                                      (2048, 8), (8, 8), (8, 30)]
  assert shapes(heads.head_config('id_to_latent', out_shape=(18, 512),
                                  input_dim=512)) == [
                                      (512, 2048), (2048, 2048), (2048, 2048),
                                      (2048, 18 * 512)]
  cnn = heads.head_config('landmarks_cnn')
  assert len(shapes(cnn)) == 7  # 5 conv + 2 FC


def test_image_cnn_layout_and_resize():
  config = heads.head_config('landmarks_cnn', channels=(4, 4, 4, 4, 8),
                             hidden=16, input_size=(32, 32))
  model = heads.build(config)
  x = jax.random.uniform(jax.random.key(0), (2, 40, 36, 3), minval=-1)
  params = jax.jit(model.init)(jax.random.key(1), x)['params']
  assert sorted(params) == ['conv0', 'conv1', 'conv2', 'conv3', 'conv4',
                            'fc0', 'out']
  assert params['fc0']['kernel'].shape == (1 * 1 * 8, 16)  # 32 / 2^5 = 1
  out = jax.jit(model.apply)({'params': params}, x)
  assert out.shape == (2, 68, 2)
  # Any input size is resized to input_size first.
  same = jax.jit(model.apply)({'params': params}, jax.image.resize(
      x, (2, 32, 32, 3), 'linear', antialias=True))
  chex.assert_trees_all_close(out, same, atol=1e-5)


def test_hard_histogram_bins_like_the_paper():
  img = np.zeros((1, 2, 5, 3), np.uint8)
  img[0, 0, :, 0] = [0, 25, 26, 254, 255]  # 25.5-wide bins: 0, 0, 1, 9, 9
  img[0, 1, :, 0] = [128, 128, 128, 128, 128]  # bin 5
  h = np.asarray(losses.image_histogram(img, value_range=(0.0, 255.0)))
  assert h.shape == (1, 3, 10)
  np.testing.assert_allclose(h[0, 0], np.array(
      [2, 1, 0, 0, 0, 5, 0, 0, 0, 2]) / 10)
  np.testing.assert_allclose(h[0, 1], np.eye(10)[0])  # all zeros -> bin 0
  np.testing.assert_allclose(h.sum(-1), 1.0)
  # Values on bin edges go to the upper bin, exactly.
  edges = np.array([51, 102, 153, 204, 50, 101, 152, 203, 255, 0], np.uint8)
  img = np.broadcast_to(edges[None, :, None], (1, 10, 3))
  np.testing.assert_allclose(
      np.asarray(losses.image_histogram(img, value_range=(0.0, 255.0)))[0, 0] * 10,
      np.bincount([2, 4, 6, 8, 1, 3, 5, 7, 9, 0], minlength=10))


def test_emd_and_nme_and_accuracy():
  p = np.eye(10)[[0]]
  q = np.eye(10)[[3]]
  np.testing.assert_allclose(metrics.histogram_emd(p, q, channel_reduction='none'), [3.0])
  np.testing.assert_allclose(metrics.histogram_emd(p, p, channel_reduction='none'), [0.0])
  target = np.zeros((68, 2), np.float32)
  target[45, 0] = 0.5  # interocular distance 0.5 * width
  pred = target + np.array([0.0, 0.1], np.float32)
  # 0.1 * 200 px of error over 0.5 * 100 px between the eyes.
  np.testing.assert_allclose(
      leakage.nme_percent(pred[None], target[None], (100.0, 200.0)), 40.0,
      rtol=1e-6)
  np.testing.assert_array_equal(
      metrics.binary_accuracy(np.array([0.9, 0.2, 0.6]),
                               np.array([True, True, False])), [1, 0, 0])


def test_bootstrap_ci_resamples_identities_not_images():
  rng = np.random.default_rng(0)
  values = rng.normal(0.3, 1.0, 60)
  lo, hi = leakage.bootstrap_ci(values, num=2000)
  assert lo < values.mean() < hi
  # Ten copies of every image of one person add no information: grouped by
  # person, the interval stays as wide; counted as independent images, it
  # would shrink about sqrt(10)-fold.
  copies = np.repeat(values, 10)
  people = np.repeat(np.arange(60), 10)
  g_lo, g_hi = leakage.bootstrap_ci(copies, groups=people, num=2000)
  naive_lo, naive_hi = leakage.bootstrap_ci(copies, num=2000)
  assert abs((g_hi - g_lo) - (hi - lo)) < 0.15 * (hi - lo)
  assert (naive_hi - naive_lo) < 0.5 * (hi - lo)


def test_diverging_training_stops_with_a_clear_error():
  x, rng = _descriptors(5, 64)
  targets = rng.uniform(0, 500, size=(64, 68, 2)).astype(np.float32)
  config = heads.head_config('landmarks', hidden=(16,), input_norm='none',
                             out_shape=(68, 2))
  with pytest.raises(train_lib.TrainingDiverged,
                     match='became (nan|inf).*lower the learning rate'):
    train_lib.train_head(jax.random.key(0), config, x * 1e3, targets,
                         tx=optax.sgd(10.0), batch_size=16, num_epochs=5)
  # The same data at a sane rate trains.
  _, _, history = train_lib.train_head(
      jax.random.key(0), config, x, targets, tx=optax.adam(1e-3),
      batch_size=16, num_epochs=2)
  assert np.isfinite(history.loss).all()
