"""Random init and w_avg shared by the generators (`generator_init`)."""

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax.models import generator_init
from id2image_jax.models import mobilestylegan as msg
from id2image_jax.models import stylegan2 as sg

TINY = sg.StyleGAN2Config(resolution=8, z_dim=8, w_dim=8, mapping_layers=2,
                          channel_base=64, channel_max=8)


def _const_normal_rest_three(path, shape):
  del shape
  return (lambda draw: 2.0 * draw) if path[-1] == 'const' else 3.0


def test_random_variables_follow_leaf_init():
  gen = sg.build(TINY)
  variables = generator_init.random_variables(
      jax.random.key(0), gen, _const_normal_rest_three, w_avg_samples=0)
  abstract = generator_init.abstract_variables(gen)
  assert jax.tree.structure(variables) == jax.tree.structure(abstract)
  const = np.asarray(variables['params']['synthesis']['b4']['const'])
  assert const.shape == (4, 4, 8)
  assert 1.0 < const.std() < 3.0  # 2 x N(0, 1) over 128 values
  rest = [np.asarray(x) for path, x in
          jax.tree_util.tree_leaves_with_path(variables)
          if path[-1].key != 'const']
  assert rest and all((x == 3.0).all() for x in rest)
  assert all(x.dtype == np.float32 for x in rest)


def test_w_avg_is_the_mean_w_of_random_z():
  gen = msg.build(msg.get_config('demo-32'))
  variables = msg.init_variables(jax.random.key(5), gen.config,
                                 w_avg_samples=16)
  _, avg_key = jax.random.split(jax.random.key(5))
  z = jax.random.normal(avg_key, (16, gen.config.z_dim))
  ws = gen.apply(variables, z, method='mapping')
  want = jnp.mean(ws[:, 0], axis=0)
  np.testing.assert_allclose(variables['buffers']['mapping']['w_avg'], want,
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      generator_init.mean_w(gen, variables['params'], z), want, rtol=1e-6,
      atol=1e-7)
