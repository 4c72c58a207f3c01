"""The ID2image objective and its StyleGAN2 / encoder adapters (toy models)."""

import dataclasses
import os
import types

import flax.linen as nn
import inversion_toy as toy
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from id2image_jax import cli
from id2image_jax import inversion
from id2image_jax import losses
from id2image_jax import protocols
from id2image_jax.data import targets as targets_lib
from id2image_jax.evaluation import arms
from id2image_jax.inversion import objective as obj
from id2image_jax.preprocess import InputSpec
from id2image_jax.preprocess import to_encoder_input

NUM_WS, W_DIM, Z_DIM = 3, 4, 5


class FakeStyleGAN2(nn.Module):
  """The generator contract: mapping(z) -> ws, synthesis(ws) -> images."""

  def setup(self):
    self.map = nn.Dense(W_DIM)
    self.syn = nn.Dense(8 * 8 * 3)

  def mapping(self, z, truncation_psi=1.0):
    w = self.map(z) * truncation_psi
    return jnp.broadcast_to(w[:, None], (z.shape[0], NUM_WS, W_DIM))

  def synthesis(self, ws, noise_mode='const', noise=None, resolution=None):
    del resolution  # one resolution only
    x = self.syn(ws.reshape(ws.shape[0], -1)).reshape(-1, 8, 8, 3)
    if noise is not None:                 # per-layer maps [B, 8, 8, 1]
      x = x + 0.1 * sum(noise)
    elif noise_mode == 'const':
      x = x + 0.01
    return jnp.tanh(x)

  def __call__(self, z):
    return self.synthesis(self.mapping(z))


G = FakeStyleGAN2()
# The loaded-generator view the engine works through (`protocols.Generator`).
GEN = protocols.Generator(
    kind='fake', module=G, variables=None, source='test',
    noise_maps=(np.zeros((8, 8, 1), np.float32),) * 2,
    config=types.SimpleNamespace(z_dim=Z_DIM, w_dim=W_DIM, num_ws=NUM_WS,
                                 resolution=8, preview_resolutions=()))


@pytest.fixture(scope='module')
def g_vars():
  # numpy draws in init's shapes: compiling flax's initialisers is slow.
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: (0.5 * rng.normal(size=s.shape)).astype(np.float32),
      jax.eval_shape(G.init, jax.random.key(0), jnp.zeros((1, Z_DIM))))


def test_latent_spaces(g_vars):
  rng = np.random.default_rng(0)
  w = rng.normal(size=(W_DIM,)).astype(np.float32)
  z = rng.normal(size=(Z_DIM,)).astype(np.float32)
  w_space = obj.generator_render(GEN, latent_space='w')
  wplus = obj.generator_render(GEN, latent_space='w+')
  z_space = obj.generator_render(GEN, latent_space='z')
  image = w_space(g_vars, {'w': w})
  assert image.shape == (8, 8, 3)
  np.testing.assert_allclose(
      image, wplus(g_vars, {'w': np.tile(w, (NUM_WS, 1))}), rtol=1e-6)
  np.testing.assert_allclose(z_space(g_vars, {'z': z}),
                             G.apply(g_vars, z[None])[0], rtol=1e-6)
  # Optimised noise reaches the image and gets a gradient.
  noise = [np.zeros((8, 8, 1), np.float32)] * 2
  grad = jax.grad(lambda n: jnp.sum(wplus(
      g_vars, {'w': jnp.tile(w, (NUM_WS, 1)), 'noise': n})))(noise)
  assert all(np.abs(g).sum() > 0 for g in grad)
  with pytest.raises(ValueError, match='latent_space'):
    obj.generator_render(GEN, latent_space='s')
  with pytest.raises(ValueError, match='preview sizes'):
    obj.generator_render(GEN, latent_space='w', resolution=4)
  assert obj.initial_latent(w, latent_space='w+',
                            num_ws=NUM_WS)['w'].shape == (NUM_WS, W_DIM)


def _landmarks(m, image):
  return (image.reshape(-1) @ m).reshape(68, 2)


def test_weighted_terms_match_hand_computation(g_vars):
  params = toy.make_params()
  rng = np.random.default_rng(1)
  lm_proj = rng.normal(size=(8 * 8 * 3, 136)).astype(np.float32) * 0.1
  render = obj.generator_render(GEN, latent_space='w+')
  embed = lambda v, image: toy.embed(v, image)
  loss_fn = obj.make_id2image_objective(render, embed,
                                        landmarks_fn=_landmarks)
  latent = {'w': rng.normal(size=(NUM_WS, W_DIM)).astype(np.float32)}
  target = {'descriptor': rng.normal(size=(6,)).astype(np.float32),
            'landmarks': rng.normal(size=(68, 2)).astype(np.float32),
            'histogram': np.full((3, 10), 0.1, np.float32)}
  p = {'generator': g_vars, 'encoder': params['e'], 'landmarks': lm_proj}
  total, terms = loss_fn(p, latent, target)

  image = np.asarray(render(g_vars, latent))
  d = np.asarray(toy.embed(params['e'], image))
  lm = image.reshape(-1) @ lm_proj
  x = (image + 1) * 127.5
  c = 25.5 * (np.arange(10) + 0.5)
  sig = lambda v: 1 / (1 + np.exp(-1.85 * v))
  hist = np.stack([(sig(x[..., ch].reshape(-1, 1) - c + 12.75)
                    - sig(x[..., ch].reshape(-1, 1) - c - 12.75)).sum(0)
                   for ch in range(3)])
  hist /= hist.sum(-1, keepdims=True)  # the default histogram is normalised
  want = {'id': np.sum((d - target['descriptor']) ** 2),
          'landmarks': np.sum((lm - target['landmarks'].reshape(-1)) ** 2),
          'histogram': np.sum((hist - 0.1) ** 2)}
  for k, v in want.items():
    np.testing.assert_allclose(terms[k], v, rtol=2e-4)
  np.testing.assert_allclose(
      terms['id_cosine'], d @ target['descriptor'] / np.linalg.norm(d)
      / np.linalg.norm(target['descriptor']), rtol=2e-4)
  np.testing.assert_allclose(
      total, want['id'] + 0.0006 * want['landmarks'] + 0.01 *
      want['histogram'], rtol=2e-4)

  # Terms follow the targets present and the non-zero weights.
  _, only_id = loss_fn(p, latent, {'descriptor': target['descriptor']})
  assert set(only_id) == {'id', 'id_cosine'}
  no_lm = obj.make_id2image_objective(
      render, embed, weights=obj.Weights(landmarks=0.0))
  assert set(no_lm(p, latent, target)[1]) == {'id', 'histogram',
                                              'id_cosine'}
  with pytest.raises(ValueError, match='nothing measures the landmarks'):
    obj.make_id2image_objective(render, embed)(p, latent, target)


def test_encoder_descriptor_preprocesses():
  params = toy.make_params()
  spec = InputSpec(size=(8, 8), mean=(127.5,) * 3, std=(127.5,) * 3)
  image = np.random.default_rng(3).uniform(-1, 1, (16, 16, 3)).astype(
      np.float32)
  got = protocols.encoder_descriptor(toy.E, spec)(params['e'], image)
  want = toy.E.apply(params['e'], to_encoder_input(image[None], spec))[0][0]
  assert got.shape == (toy.DESCRIPTOR_DIM,)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_id2image_inversion_end_to_end(g_vars):
  """Descriptors of known w+ latents are matched better after inversion."""
  params = toy.make_params()
  render = obj.generator_render(GEN, latent_space='w+')
  loss_fn = obj.make_id2image_objective(render, toy.embed)
  rng = np.random.default_rng(4)
  true_w = rng.normal(size=(6, NUM_WS, W_DIM)).astype(np.float32)
  p = {'generator': g_vars, 'encoder': params['e']}
  descriptors = jax.vmap(lambda w: toy.embed(params['e'], render(
      g_vars, {'w': w})))(true_w)
  images = jax.vmap(lambda w: render(g_vars, {'w': w}))(true_w)
  targets = {'descriptor': np.asarray(descriptors),
             'histogram': np.asarray(jax.vmap(
                 lambda im: losses.image_soft_histogram(
                     im, value_range=(-1.0, 1.0)))(images))}
  init = inversion.broadcast_init(obj.initial_latent(
      np.zeros(W_DIM, np.float32), latent_space='w+', num_ws=NUM_WS))
  result = toy.invert(loss_fn, p, targets, init=init, steps=40,
                      chunk_size=4, tx=optax.adam(0.05),
                      compute_dtype=jnp.bfloat16, progress=False)
  assert set(result.history) == {'loss', 'id', 'histogram', 'id_cosine'}
  assert np.all(result.final['loss'] < 0.5 * result.history['loss'][:, 0])
  # The monitor is the cosine the descriptors have; it rises as id falls.
  cos = result.history['id_cosine']
  assert np.all((-1 <= cos) & (cos <= 1.0001))
  assert np.all(result.final['id_cosine'] > cos[:, 0])


@pytest.mark.parametrize('policy', ['none', 'dots', 'full'])
def test_rematerialize_keeps_values_and_gradients(policy):
  variables = G.init(jax.random.key(0), jnp.zeros((1, Z_DIM)))
  render = obj.generator_render(GEN, latent_space='w+')
  w = jax.random.normal(jax.random.key(1), (NUM_WS, W_DIM))

  def loss(fn, w):
    return jnp.sum(fn(variables, w) ** 2)

  want = jax.value_and_grad(lambda w: loss(render, {'w': w}))(w)
  remat = obj.rematerialize(render, policy)
  got = jax.jit(jax.value_and_grad(lambda w: loss(remat, {'w': w})))(w)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)
  if policy == 'none':
    assert remat is render
  else:
    assert 'remat' in str(jax.make_jaxpr(
        lambda w: loss(remat, {'w': w}))(w))


def test_rematerialize_rejects_unknown_policy():
  with pytest.raises(ValueError, match='remat policy'):
    obj.rematerialize(lambda x: x, 'everything')


def test_every_list_of_terms_is_the_table():
  # Adding a term is a row of losses.TERMS (+ its loss and Targets field):
  # each place that names terms must follow the table.
  names = [t.name for t in losses.TERMS]
  assert len(set(names)) == len(names) and names[0] == 'id'
  assert list(losses.DEFAULT_WEIGHTS) == names
  assert [f.name for f in dataclasses.fields(obj.Weights)] == names
  assert dataclasses.asdict(obj.Weights()) == dict(losses.DEFAULT_WEIGHTS)
  config = os.path.join(cli.config_dir(), 'invert.py')
  assert set(cli.load_config(config).weights) == set(names)
  assert dict(cli.load_config(config + ':paper').weights) == dict(
      losses.DEFAULT_WEIGHTS)
  assert arms.TERMS == tuple(names)
  assert arms.parse_arm('+'.join(t.short for t in losses.TERMS)) == tuple(
      names)
  fields = {f.name for f in dataclasses.fields(targets_lib.Targets)}
  assert set(losses.AUX_TERMS) <= fields, 'a Targets field per term'
  assert losses.AUX_TERMS == tuple(t.name for t in losses.TERMS
                                   if not t.always)
  # A term is measured by a model (params_key) or by its own measure, or
  # is the identity term (the encoder given to the objective).
  for t in losses.TERMS:
    assert t.always or (t.params_key is None) == (t.measure is not None), t


def test_objective_refuses_a_measure_of_no_term():
  with pytest.raises(ValueError, match=r"unknown terms \['colour'\]"):
    obj.make_id2image_objective(lambda v, x: x, toy.embed,
                                measures={'colour': lambda im: im})
