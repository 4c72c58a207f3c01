"""What the generators share about their variables: shapes, init, w_avg.

StyleGAN2 and MobileStyleGAN both map z to W+ rows with a ``mapping`` method
(``ws [B, num_ws, w_dim]``, rows equal, truncated towards the buffer
``buffers/mapping/w_avg``), and both are initialised randomly for demos and
tests the same way: every random leaf drawn in one ``jax.random.normal``
call over the abstract tree (one threefry draw per parameter, as
``Generator.init`` does, takes XLA ~15 s to compile on CPU even for a 16 px
model), then ``w_avg`` set to the mean w of random z so that truncation
behaves as with a trained checkpoint. Each generator says only how each
leaf starts (`LeafInit`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (variable path names, shape) -> a constant to fill the leaf with, or a
# function from a standard normal draw of the leaf's shape to its values.
LeafInit = Callable[[tuple[str, ...], tuple[int, ...]],
                    float | Callable[[np.ndarray], np.ndarray]]


def mean_w(generator: nn.Module, params: Any, z: jax.Array) -> jax.Array:
  """Mean mapped w of the latents `z`, without truncation.

  Args:
    generator: a generator module (``mapping`` method, ``config.w_dim``).
    params: its ``params`` (the mapping part is used).
    z: [N, z_dim] latents.

  Returns:
    [w_dim] float32.
  """
  w_dim = generator.config.w_dim
  variables = {'params': params, 'buffers': {'mapping': {
      'w_avg': jnp.zeros((w_dim,), jnp.float32)}}}
  ws = jax.jit(functools.partial(generator.apply, method='mapping'))(
      variables, z)
  return jnp.mean(ws[:, 0], axis=0)


def abstract_variables(generator: nn.Module) -> dict:
  """Shapes/dtypes of the variables (``jax.ShapeDtypeStruct`` leaves).

  Args:
    generator: a generator module (called on z [B, ``config.z_dim``]).

  Returns:
    ``{'params': ..., 'buffers': ...}``, nothing computed.
  """
  z = jnp.zeros((1, generator.config.z_dim), jnp.float32)
  return jax.eval_shape(lambda key: generator.init({'params': key}, z),
                        jax.random.key(0))


def random_variables(key: jax.Array, generator: nn.Module,
                     leaf_init: LeafInit, *, w_avg_samples: int) -> dict:
  """Random variables of `generator`, drawn as the module docstring says.

  Args:
    key: typed PRNG key.
    generator: the module the variables are for (``config.z_dim``; a
      ``buffers/mapping/w_avg`` variable).
    leaf_init: how each leaf starts (`LeafInit`).
    w_avg_samples: number of random z whose mean w becomes ``w_avg``; 0
      leaves it as `leaf_init` made it.

  Returns:
    ``{'params': ..., 'buffers': ...}`` of float32 arrays.
  """
  normal_key, avg_key = jax.random.split(key)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(
      abstract_variables(generator))
  names = [tuple(k.key for k in path) for path, _ in leaves]
  inits = [leaf_init(n, x.shape) for n, (_, x) in zip(names, leaves)]
  sizes = [int(np.prod(x.shape)) if callable(init) else 0
           for (_, x), init in zip(leaves, inits)]
  draws = np.asarray(jax.random.normal(normal_key, (sum(sizes),),
                                       jnp.float32))
  offsets = np.cumsum([0] + sizes)
  values = []
  for (_, x), init, start in zip(leaves, inits, offsets):
    if callable(init):
      v = init(draws[start:start + x.size].reshape(x.shape))
    else:
      v = np.full(x.shape, init, np.float32)
    values.append(jnp.asarray(v))
  variables = jax.tree_util.tree_unflatten(treedef, values)
  if w_avg_samples:
    zs = jax.random.normal(avg_key, (w_avg_samples, generator.config.z_dim))
    variables['buffers']['mapping']['w_avg'] = mean_w(
        generator, variables['params'], zs)
  return variables
