"""What every job works through: a loaded `Generator` and a loaded `Encoder`.

Each pairs a Flax module with its variables and the few facts the engine,
the regressor and the evaluation need, so that a new generator or encoder
kind (a module, a porter and one row in `id2image_jax.loading.KINDS`) needs
no change anywhere else.

Generator modules (StyleGAN2, MobileStyleGAN) share one call contract::

  module.apply(v, z [B, z_dim], method='mapping', truncation_psi=)
      -> ws [B, num_ws, w_dim]
  module.apply(v, ws, method='synthesis', resolution=)
      -> images [B, R, R, 3], RGB in about [-1, 1]
  (generators with noise inputs also take noise_mode= and noise=)

with ``variables['buffers']['mapping']['w_avg']`` the mean w, and a config
with ``z_dim``, ``w_dim``, ``num_ws``, ``resolution`` and
``preview_resolutions`` (smaller outputs synthesis can stop at, cheaper).

Encoder modules follow ``module.apply(v, x) -> (descriptor [B, D],
intermediates)`` on inputs made by `preprocess.to_encoder_input`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import batching
from id2image_jax import preprocess

LATENT_SPACES = ('z', 'w', 'w+')


@dataclasses.dataclass(frozen=True, eq=False)
class Generator:
  """A loaded generator.

  Attributes:
    kind: its row in the kinds table ('stylegan2', 'mobilestylegan').
    config: the model's config dataclass.
    module: the Flax module (see the module docstring for the contract).
    variables: ``{'params': ..., 'buffers': ...}``.
    source: where the weights came from, in words.
    is_demo: True for a randomly initialised generator (not a face model).
    noise_maps: the fixed per-layer noise maps that ``noise_mode='const'``
      renders, in layer order; empty for generators without noise inputs.
  """
  kind: str
  config: Any
  module: Any
  variables: Any
  source: str
  is_demo: bool = False
  noise_maps: tuple[Any, ...] = ()

  @property
  def z_dim(self) -> int:
    return int(self.config.z_dim)

  @property
  def w_dim(self) -> int:
    return int(self.config.w_dim)

  @property
  def num_ws(self) -> int:
    return int(self.config.num_ws)

  @property
  def resolution(self) -> int:
    return int(self.config.resolution)

  @property
  def preview_resolutions(self) -> tuple[int, ...]:
    return tuple(self.config.preview_resolutions)

  @property
  def w_avg(self) -> jax.Array:
    return self.variables['buffers']['mapping']['w_avg']

  def latent_shape(self, latent_space: str) -> tuple[int, ...]:
    """Shape of ONE target's latent in `latent_space` ('z', 'w', 'w+')."""
    shapes = {'z': (self.z_dim,), 'w': (self.w_dim,),
              'w+': (self.num_ws, self.w_dim)}
    if latent_space not in shapes:
      raise ValueError(f'latent_space must be one of {LATENT_SPACES}, got '
                       f'{latent_space!r}')
    return shapes[latent_space]

  def check_resolution(self, resolution: int | None) -> int:
    """`resolution` (None = full) if synthesis can produce it."""
    if resolution is None or resolution == self.resolution:
      return self.resolution
    if resolution not in self.preview_resolutions:
      raise ValueError(
          f'the {self.kind} generator renders at {self.resolution} px or at '
          f'the preview sizes {list(self.preview_resolutions)}, not '
          f'{resolution}')
    return int(resolution)

  def mapping(self, variables: Any, z: jax.Array, *,
              truncation_psi: float | jax.Array = 1.0) -> jax.Array:
    """[B, z_dim] -> ws [B, num_ws, w_dim]."""
    return self.module.apply(variables, z, method='mapping',
                             truncation_psi=truncation_psi)

  def synthesis(self, variables: Any, ws: jax.Array, *,
                noise_mode: str = 'const', noise: Any = None,
                resolution: int | None = None) -> jax.Array:
    """ws [B, num_ws, w_dim] -> images [B, R, R, 3] in about [-1, 1].

    `noise_mode` / `noise` reach generators with noise inputs only; the
    others render their one fixed ('const') image.
    """
    kwargs = {}
    if noise_mode != 'const' or noise is not None:
      if not self.noise_maps:
        raise ValueError(f'the {self.kind} generator has no noise inputs '
                         f'(noise_mode={noise_mode!r}, noise given: '
                         f'{noise is not None})')
      kwargs = {'noise_mode': noise_mode, 'noise': noise}
    return self.module.apply(variables, ws, method='synthesis',
                             resolution=resolution, **kwargs)

  def render_ws(self, ws: np.ndarray, *, batch_size: int = 16,
                resolution: int | None = None) -> np.ndarray:
    """Host images of host ws, in jitted fixed-size batches."""
    return batching.batched_apply(
        functools.partial(_synthesis_jit, self, self.variables,
                          resolution=resolution),
        np.asarray(ws, np.float32), batch_size)


@functools.partial(jax.jit, static_argnums=0, static_argnames='resolution')
def _synthesis_jit(generator, variables, ws, *, resolution):
  return generator.synthesis(variables, ws, resolution=resolution)


def encoder_descriptor(module: Any, spec: preprocess.InputSpec
                       ) -> Callable[[Any, jax.Array], jax.Array]:
  """``fn(variables, image [H, W, 3] in [-1, 1]) -> [D]``, ONE image."""
  def descriptor(variables, image):
    x = preprocess.to_encoder_input(image[None], spec)
    return module.apply(variables, x)[0][0]
  return descriptor


@dataclasses.dataclass(frozen=True, eq=False)
class Encoder:
  """A loaded face encoder.

  Attributes:
    kind: its row in the kinds table ('dlib', 'iresnet', ...).
    config: JSON-able model config (as stored in converted checkpoints).
    module: the Flax module, ``module.apply(variables, x) -> (desc, inter)``.
    variables: its variables (params, batch_stats).
    spec: how generator images become its input (`preprocess.InputSpec`).
    dim: descriptor size.
    source: where the weights came from, in words.
  """
  kind: str
  config: dict
  module: Any
  variables: Any
  spec: preprocess.InputSpec
  dim: int
  source: str
  # Gradients flow through `descriptor_fn` (`BlackBoxEncoder`: they do not).
  differentiable: ClassVar[bool] = True

  def descriptor_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``fn(variables, image [H, W, 3] in [-1, 1]) -> [dim]``, one image."""
    return encoder_descriptor(self.module, self.spec)

  def query_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """What a score-only attacker may call: `descriptor_fn` itself."""
    return self.descriptor_fn()

  def batch_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``fn(variables, images [B, H, W, 3]) -> [B, dim]``; uint8 images in
    0..255 or float images in [-1, 1] (the generator's range)."""
    module, spec = self.module, self.spec

    def embed(variables, images):
      if images.dtype == np.uint8:
        images = preprocess.uint8_to_unit_range(images)
      return module.apply(variables,
                          preprocess.to_encoder_input(images, spec))[0]
    return embed

  @functools.cached_property
  def _embed_jit(self):
    return jax.jit(self.batch_fn())

  def embed(self, images: Any, *, batch_size: int = 32) -> np.ndarray:
    """Descriptors of generator-style images, in fixed-size jitted batches.

    Args:
      images: [N, H, W, 3] RGB in [-1, 1], finite.
      batch_size: images per compiled call (the last batch is padded).

    Returns:
      [N, dim] float32 numpy descriptors.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected [N, H, W, 3] images, got {images.shape}')
    if not len(images):
      return np.zeros((0, self.dim), np.float32)
    bad = np.flatnonzero(~np.isfinite(images).all(axis=(1, 2, 3)))
    if bad.size:
      raise ValueError(f'images {bad.tolist()[:10]} hold NaN or Inf values')
    return batching.batched_apply(
        functools.partial(self._embed_jit, self.variables), images,
        batch_size)


class NotDifferentiableError(TypeError):
  """A gradient was asked of a black-box encoder."""


@dataclasses.dataclass(frozen=True, eq=False)
class BlackBoxEncoder:
  """An encoder that can only be queried: images in, descriptors out.

  Same interface as `Encoder` for everything that needs no gradients
  (`embed`, `batch_fn`, `query_fn`, usable inside `jax.jit` / `jax.vmap`
  through `jax.pure_callback`), but `descriptor_fn` raises: no
  differentiable function exists (e.g. an ONNX file whose ops only ONNX
  Runtime runs). ``differentiable`` is False and `why_blackbox` says why.

  Attributes:
    kind: its kind ('onnx').
    config: its JSON-able input / output facts.
    spec: how generator images become its input.
    dim: descriptor size.
    source: where it came from, in words.
    run: host function ``run(x [B, H, W, 3] float32 encoder input) ->
      [B, dim]`` float32.
    why_blackbox: why it runs as a black box, in words.
  """
  kind: str
  config: dict
  spec: preprocess.InputSpec
  dim: int
  source: str
  run: Callable[[np.ndarray], np.ndarray]
  why_blackbox: str
  differentiable: ClassVar[bool] = False
  module: ClassVar[Any] = None

  @property
  def variables(self) -> dict:
    """No variables a JAX function could differentiate: ``{}``."""
    return {}

  def descriptor_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    raise NotDifferentiableError(
        f'the {self.kind} encoder is a black box ({self.why_blackbox}): it '
        'has no differentiable descriptor function, so white-box attacks '
        'cannot run on it; query_fn() gives scores without gradients')

  def _host(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    lead = x.shape[:-3]
    out = self.run(x.reshape((-1,) + x.shape[-3:]))
    return np.asarray(out, np.float32).reshape(lead + (self.dim,))

  def _call(self, x: jax.Array) -> jax.Array:
    """[..., H, W, 3] encoder input -> [..., dim] by a host callback
    (batched under vmap; no JVP rule: a gradient through it is an error)."""
    out = jax.ShapeDtypeStruct(x.shape[:-3] + (self.dim,), jnp.float32)
    return jax.pure_callback(self._host, out, x.astype(jnp.float32),
                             vmap_method='expand_dims')

  def query_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``fn(variables, image [H, W, 3] in [-1, 1]) -> [dim]``, one image,
    without gradients."""
    spec = self.spec

    def query(variables, image):
      del variables
      return self._call(preprocess.to_encoder_input(image[None], spec))[0]
    return query

  def batch_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """Like `Encoder.batch_fn`, without gradients."""
    spec = self.spec

    def embed(variables, images):
      del variables
      if images.dtype == np.uint8:
        images = preprocess.uint8_to_unit_range(images)
      return self._call(preprocess.to_encoder_input(images, spec))
    return embed

  @functools.cached_property
  def _embed_jit(self):
    return jax.jit(self.batch_fn())

  def embed(self, images: Any, *, batch_size: int = 32) -> np.ndarray:
    """As `Encoder.embed`: [N, H, W, 3] in [-1, 1] -> [N, dim] numpy."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected [N, H, W, 3] images, got {images.shape}')
    if not len(images):
      return np.zeros((0, self.dim), np.float32)
    bad = np.flatnonzero(~np.isfinite(images).all(axis=(1, 2, 3)))
    if bad.size:
      raise ValueError(f'images {bad.tolist()[:10]} hold NaN or Inf values')
    return batching.batched_apply(
        functools.partial(self._embed_jit, {}), images, batch_size)


@dataclasses.dataclass(frozen=True, eq=False)
class LandmarkNet:
  """A loaded image -> 68-landmark network.

  Attributes:
    apply: ``apply(variables, images [B, H, W, 3] in [-1, 1]) -> [B, 68, 2]``,
      (x, y) normalised to [0, 1] of the image; differentiable, jittable.
    variables: its variables.
    source: where it came from, in words.
  """
  apply: Callable[[Any, jax.Array], jax.Array]
  variables: Any
  source: str

  @functools.cached_property
  def _apply_jit(self):
    return jax.jit(self.apply)

  def predict(self, images: Any, *, batch_size: int = 32) -> np.ndarray:
    """[N, H, W, 3] host images in [-1, 1] -> [N, 68, 2] host landmarks."""
    images = np.nan_to_num(np.asarray(images, np.float32), nan=0.0)
    return batching.batched_apply(
        functools.partial(self._apply_jit, self.variables), images,
        batch_size)


@dataclasses.dataclass(frozen=True, eq=False)
class AttributeNet:
  """A loaded image -> attributes network (a labeller).

  Attributes:
    kind: its row in the kinds table.
    apply: ``apply(variables, images [B, H, W, 3] in [-1, 1]) -> {name:
      [B, ...]}`` with names from ``age_years`` [B], ``male_prob`` [B],
      ``expression_probs`` [B, 7], ``race_probs`` [B, 5].
    variables: its variables.
    labels: name -> class labels of a ``*_probs`` output.
    source: where it came from, in words.
  """
  kind: str
  apply: Callable[[Any, jax.Array], dict[str, jax.Array]]
  variables: Any
  labels: dict[str, tuple[str, ...]]
  source: str

  @functools.cached_property
  def _apply_jit(self):
    return jax.jit(self.apply)

  def predict(self, images: Any, *, batch_size: int = 32
              ) -> dict[str, np.ndarray]:
    """[N, H, W, 3] host images in [-1, 1] -> {name: [N, ...]} on the host."""
    images = np.nan_to_num(np.asarray(images, np.float32), nan=0.0)
    return batching.batched_apply(
        functools.partial(self._apply_jit, self.variables), images,
        batch_size)
