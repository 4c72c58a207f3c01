"""Tiny stand-ins for the generator and encoder used by the engine tests.

A random conv "generator" (latent [8] -> image [8, 8, 3] in [-1, 1]) and an
MLP "encoder" (image -> descriptor [6]): small enough to compile in well
under a second on CPU, real enough (conv, dense, tanh) to exercise vmap,
grad and sharding the way the StyleGAN2 / face-encoder objective does.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import inversion

LATENT_DIM = 8
DESCRIPTOR_DIM = 6


class ToyGenerator(nn.Module):

  @nn.compact
  def __call__(self, w):  # [B, LATENT_DIM] -> [B, 8, 8, 3]
    x = nn.tanh(nn.Dense(4 * 4 * 8)(w)).reshape(w.shape[0], 4, 4, 8)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.tanh(nn.Conv(3, (3, 3))(x))


class ToyEncoder(nn.Module):

  @nn.compact
  def __call__(self, x):  # [B, 8, 8, 3] -> ([B, DESCRIPTOR_DIM], {})
    h = nn.tanh(nn.Dense(32)(x.reshape(x.shape[0], -1)))
    return nn.Dense(DESCRIPTOR_DIM)(h), {'hidden': h}


G = ToyGenerator()
E = ToyEncoder()


def make_params(seed=0):
  """Random variables {'g': ..., 'e': ...} as host numpy.

  Drawn with numpy into the shapes of `init` (found by `jax.eval_shape`):
  compiling flax's initialisers (threefry + truncated normal) costs seconds
  on CPU, drawing with numpy costs nothing.
  """
  shapes = jax.eval_shape(lambda: {
      'g': G.init(jax.random.key(0), jnp.zeros((1, LATENT_DIM))),
      'e': E.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))})
  rng = np.random.default_rng(seed)

  def draw(s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 10
    return (rng.normal(size=s.shape) / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree.map(draw, shapes)


def render(variables, latent):
  return G.apply(variables, latent['w'][None])[0]


def embed(variables, image):
  return E.apply(variables, image[None])[0][0]


def objective(params, latent, target):
  """Squared descriptor error plus a small latent prior; aux = the terms."""
  d = embed(params['e'], render(params['g'], latent))
  ident = jnp.sum((d.astype(jnp.float32) - target['descriptor']) ** 2)
  prior = 1e-3 * jnp.sum(latent['w'].astype(jnp.float32) ** 2)
  return ident + prior, {'id': ident, 'prior': prior}


def noisy_objective(key, params, latent, target):
  """Stochastic variant: noise on the latent before rendering."""
  w = latent['w'] + 0.01 * jax.random.normal(key, latent['w'].shape,
                                             latent['w'].dtype)
  return objective(params, {'w': w}, target)


@jax.jit
def _descriptors(params, w):
  return jax.vmap(lambda w: embed(params['e'], render(params['g'], {'w': w}))
                  )(w)


def make_targets(n, seed=1, params=None):
  """Descriptors of random latents: reachable targets (host numpy)."""
  params = make_params() if params is None else params
  w = np.random.default_rng(seed).normal(size=(n, LATENT_DIM)).astype(
      np.float32)
  return {'descriptor': np.array(_descriptors(params, w))}, w


def init_latents(n, seed=2):
  return {'w': 0.1 * np.random.default_rng(seed).normal(
      size=(n, LATENT_DIM)).astype(np.float32)}


_OPTION_FIELDS = {f.name for f in dataclasses.fields(inversion.InvertOptions)}


def invert(objective_fn, params, targets, *, key=None, **kwargs):
  """`inversion.invert` with the options as keyword arguments (tests only).

  ``key`` defaults to ``jax.random.key(0)``; keywords naming
  `InvertOptions` fields become the options, the rest go to `invert`.
  """
  options = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTION_FIELDS}
  return inversion.invert(
      jax.random.key(0) if key is None else key, objective_fn, params,
      targets, options=inversion.InvertOptions(**options), **kwargs)
