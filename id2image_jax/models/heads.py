"""Heads of the leakage study and the inversion (paper sections 3 and 4.1).

* descriptor -> binary attribute(s): MLP, 3 x 256 ReLU, sigmoid (3.1);
* descriptor -> RGB histogram: MLP, 2 x 8 ReLU, softmax per channel (3.2);
* descriptor -> 68 landmarks: MLP, 256 ReLU hidden layers, 136 outputs (3.3);
* image -> 68 landmarks: CNN, 5 conv + 2 FC, ReLU (3.3);
* descriptor -> StyleGAN2 latent: MLP, 3 x 2048 ReLU (4.1).

Variants are data: `HEADS` holds the paper's layouts and `build(config)`
turns a JSON-able config (`head_config`) back into a module, which is what
`id2image_jax.checkpoints` stores next to the weights.

Layer counts. The paper's "3 fully connected layers with 256 hidden neurons
and a sigmoid output layer" (attributes) reads as three hidden layers plus
the output layer, and "a three-layer MLP ... with 256 neurons per hidden
layer and 136 outputs" (landmarks) as two hidden layers plus the output
layer; both are one config field away from the other reading.

Every head returns its prediction (probabilities, normalised histograms,
coordinates, latents) by default and its pre-activation outputs with
``logits=True``, which the losses use for numerical stability.

Landmark coordinates are (x, y) normalised to [0, 1] of the image (pixel
centres at (i + 0.5) / size; see `id2image_jax.data.dlib_landmarks`). Their
heads may set ``output_scale`` (e.g. 224) so that the last layer works in
pixels, as the paper's did; predictions stay normalised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Output = Literal['sigmoid', 'softmax', 'linear']
InputNorm = Literal['l2', 'none']


def activate(x: jax.Array, output: Output) -> jax.Array:
  """Maps pre-activation outputs to predictions.

  Args:
    x: [B, *out_shape] head outputs.
    output: ``'sigmoid'`` (probabilities), ``'softmax'`` (over the last
      axis, e.g. the bins of each channel) or ``'linear'``.

  Returns:
    Same shape as `x`.
  """
  if output == 'sigmoid':
    return jax.nn.sigmoid(x)
  if output == 'softmax':
    return jax.nn.softmax(x, axis=-1)
  if output == 'linear':
    return x
  raise ValueError(f'unknown output {output!r}')


def _normalise(x: jax.Array, input_norm: InputNorm) -> jax.Array:
  if input_norm == 'l2':
    # Face descriptors are compared by angle and their norms vary by encoder
    # (VGGFace2's are in the hundreds); on the sphere of radius sqrt(D)
    # each coordinate has unit scale, whatever the encoder.
    x32 = x.astype(jnp.float32)
    norm = jnp.linalg.norm(x32, axis=-1, keepdims=True)
    return (x32 * jnp.sqrt(x.shape[-1]) / jnp.maximum(norm, 1e-12)).astype(
        x.dtype)
  if input_norm == 'none':
    return x
  raise ValueError(f'unknown input_norm {input_norm!r}')


class MLP(nn.Module):
  """Descriptor [B, D] -> [B, *out_shape] with ReLU hidden layers.

  Attributes:
    hidden: widths of the hidden layers.
    out_shape: shape of one output, e.g. (1,), (3, 10), (68, 2), (18, 512).
    output: activation of the prediction (`activate`).
    input_norm: ``'l2'`` rescales each descriptor to norm sqrt(D) first;
      ``'none'`` uses it as is.
    output_scale: the last layer's outputs are divided by this, i.e. it
      works in units of 1 / output_scale (see `ImageCNN`).
    layer_rank: 0, or for an ``out_shape`` (L, C) (a W+ latent: L layers
      of C) the rank of per-layer offsets: the prediction is one C-vector
      (layer ``out``, as in a W head) broadcast over the L rows plus
      ``layer_up(layer_down(h))`` reshaped to (L, C), with ``layer_down``
      of width `layer_rank` and ``layer_up`` zero-initialised. A full
      L x C output layer would hold 6.0 M weights for MobileStyleGAN's
      23 x 512 (24 MB); rank 32 holds 0.4 M, and a head initialised from a
      W head renders the W head's faces until training moves the offsets.
    dtype: compute dtype (parameters stay float32).
  """
  hidden: Sequence[int]
  out_shape: Sequence[int]
  output: Output = 'linear'
  input_norm: InputNorm = 'l2'
  output_scale: float = 1.0
  layer_rank: int = 0
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, logits: bool = False) -> jax.Array:
    chex.assert_rank(x, 2)  # [B, D]
    x = _normalise(x, self.input_norm)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'fc{i}')(x))
    out_shape = tuple(int(s) for s in self.out_shape)
    if self.layer_rank:
      x = self._shared_plus_offsets(x, out_shape)
    else:
      x = nn.Dense(math.prod(out_shape), dtype=self.dtype, name='out')(x)
      x = x.astype(jnp.float32).reshape(x.shape[:1] + out_shape)
    x = x / self.output_scale
    return x if logits else activate(x, self.output)

  def _shared_plus_offsets(self, h: jax.Array, out_shape: tuple[int, ...]
                           ) -> jax.Array:
    """[B, hidden] -> [B, L, C]: a shared row plus low-rank offsets."""
    if len(out_shape) != 2:
      raise ValueError(f'layer_rank needs an out_shape (layers, width), got '
                       f'{out_shape}')
    layers, width = out_shape
    shared = nn.Dense(width, dtype=self.dtype, name='out')(h)
    code = nn.Dense(self.layer_rank, dtype=self.dtype, name='layer_down')(h)
    offsets = nn.Dense(layers * width, dtype=self.dtype, name='layer_up',
                       kernel_init=nn.initializers.zeros)(code)
    shared = shared.astype(jnp.float32)[:, None, :]      # [B, 1, C]
    offsets = offsets.astype(jnp.float32).reshape(-1, layers, width)
    return shared + offsets                              # [B, L, C]


class ImageCNN(nn.Module):
  """Image [B, H, W, 3] in [-1, 1] -> [B, *out_shape]: 5 conv + 2 FC, ReLU.

  Each conv is 3x3 with stride 2 and symmetric padding 1, so a 128x128 input
  ends at 4x4 before the fully connected layers. Inputs of another size are
  resized (antialiased) to `input_size` first, so generator images of any
  resolution can be fed directly.

  Attributes:
    out_shape: e.g. (68, 2) for landmarks.
    channels: output channels of the 5 convs.
    hidden: width of the first fully connected layer.
    input_size: (height, width) the network runs at.
    output: activation of the prediction (`activate`).
    output_scale: the last layer's outputs are divided by this. Landmark
      heads predict [0, 1] coordinates; with output_scale=224 the last layer
      works in pixels of a 224-pixel image, as the paper's regressors did,
      so that its optimiser settings (SGD 1e-3 on a pixel MSE) carry over.
    dtype: compute dtype.
  """
  out_shape: Sequence[int]
  channels: Sequence[int] = (32, 64, 128, 256, 256)
  hidden: int = 256
  input_size: Sequence[int] = (128, 128)
  output: Output = 'linear'
  output_scale: float = 1.0
  dtype: Any = None

  @nn.compact
  def __call__(self, images: jax.Array, *, logits: bool = False
               ) -> jax.Array:
    chex.assert_rank(images, 4)  # [B, H, W, 3]
    chex.assert_axis_dimension(images, -1, 3)
    x = images.astype(self.dtype or jnp.float32)
    size = tuple(int(s) for s in self.input_size)
    if x.shape[1:3] != size:
      x = jax.image.resize(x, x.shape[:1] + size + x.shape[3:], 'linear',
                           antialias=True)
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                  dtype=self.dtype, name=f'conv{i}')(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name='fc0')(x))
    n = 1
    for s in self.out_shape:
      n *= int(s)
    x = nn.Dense(n, dtype=self.dtype, name='out')(x)
    x = x.astype(jnp.float32).reshape(x.shape[:1] + tuple(self.out_shape))
    x = x / self.output_scale
    return x if logits else activate(x, self.output)


# The paper's layouts. `out_shape` entries that depend on the task (number of
# attributes, bins, latent shape) are filled in by `head_config`.
HEADS: dict[str, dict[str, Any]] = {
    'attribute': {'arch': 'mlp', 'hidden': (256, 256, 256),
                  'output': 'sigmoid', 'input_norm': 'l2'},
    'histogram': {'arch': 'mlp', 'hidden': (8, 8), 'output': 'softmax',
                  'input_norm': 'l2'},
    'landmarks': {'arch': 'mlp', 'hidden': (256, 256), 'output': 'linear',
                  'input_norm': 'l2', 'out_shape': (68, 2)},
    'landmarks_cnn': {'arch': 'cnn', 'channels': (32, 64, 128, 256, 256),
                      'hidden': 256, 'input_size': (128, 128),
                      'output': 'linear', 'out_shape': (68, 2)},
    'attribute_cnn': {'arch': 'cnn', 'channels': (32, 64, 128, 256, 256),
                      'hidden': 256, 'input_size': (128, 128),
                      'output': 'sigmoid'},
    'id_to_latent': {'arch': 'mlp', 'hidden': (2048, 2048, 2048),
                     'output': 'linear', 'input_norm': 'l2',
                     'out_shape': (512,)},
}


def _jsonable(v):
  return list(v) if isinstance(v, tuple) else v


def head_config(kind: str, **overrides: Any) -> dict[str, Any]:
  """The JSON-able config of a paper head, with fields overridden.

  Args:
    kind: a key of `HEADS`.
    **overrides: fields to change or fill, e.g. ``out_shape=(3,)``,
      ``input_dim=2048`` (recorded so a checkpoint can be restored without
      data), ``hidden=(512,)``, ``attributes=['Smiling']``.

  Returns:
    A dict with ``kind`` and every field `build` needs.
  """
  if kind not in HEADS:
    raise ValueError(f'unknown head {kind!r}; known: {sorted(HEADS)}')
  config = dict(HEADS[kind], kind=kind)
  config.update(overrides)
  if 'out_shape' not in config:
    raise ValueError(f'head {kind!r} needs out_shape=...')
  return {k: _jsonable(v) for k, v in config.items()}


def build(config: Mapping[str, Any], *, dtype: Any = None) -> nn.Module:
  """Builds the module of a `head_config` dict (or a checkpoint's config).

  Args:
    config: ``arch`` ('mlp' or 'cnn') and that architecture's fields; other
      fields (``kind``, ``input_dim``, task metadata) are ignored.
    dtype: compute dtype.

  Returns:
    An `MLP` or `ImageCNN`.
  """
  arch = config.get('arch')
  out_shape = tuple(int(s) for s in config['out_shape'])
  if arch == 'mlp':
    return MLP(hidden=tuple(int(h) for h in config['hidden']),
               out_shape=out_shape, output=config.get('output', 'linear'),
               input_norm=config.get('input_norm', 'l2'),
               output_scale=float(config.get('output_scale', 1.0)),
               layer_rank=int(config.get('layer_rank', 0)), dtype=dtype)
  if arch == 'cnn':
    return ImageCNN(out_shape=out_shape,
                    channels=tuple(int(c) for c in config['channels']),
                    hidden=int(config['hidden']),
                    input_size=tuple(int(s) for s in config['input_size']),
                    output=config.get('output', 'linear'),
                    output_scale=float(config.get('output_scale', 1.0)),
                    dtype=dtype)
  raise ValueError(f'unknown head arch {arch!r}')


def example_input(config: Mapping[str, Any]) -> jax.ShapeDtypeStruct:
  """Shape of a one-example input, for ``init`` / ``jax.eval_shape``."""
  if config.get('arch') == 'cnn':
    h, w = (int(s) for s in config['input_size'])
    return jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  if 'input_dim' not in config:
    raise ValueError('an MLP head config needs input_dim (the descriptor '
                     'size) to be restored')
  return jax.ShapeDtypeStruct((1, int(config['input_dim'])), jnp.float32)
