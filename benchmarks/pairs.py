"""Matched PyTorch / JAX models with the same weights, for the benchmarks.

Every pair is built the way the parity tests build it: the torch reference
in ``ports/`` writes a random-weight checkpoint in the public layout, and
the JAX side loads that file through the project's own converter
(`id2image_jax.models.registry`). So both sides run the same network with
the same numbers, and the JAX side is what a user gets from a real file.

Encoders with a torch reference follow the interface of
``ports/iresnet_reference.py``: ``write_checkpoint(path, config, *, seed)
-> torch module`` with ``forward_with_intermediates(x) -> (desc, dict)``.
References written in parallel (VGGFace2, VGG-Face) are imported when
present; `encoder_pair` raises `Unavailable` with a note when not.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

import common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax import protocols
from id2image_jax.models import stylegan2 as sg

# Tiny generator for --smoke: 32 px, few channels (compiles in seconds).
SMOKE_GENERATOR = {'resolution': 32, 'z_dim': 32, 'w_dim': 32,
                   'mapping_layers': 2, 'channel_base': 256,
                   'channel_max': 32}


class Unavailable(RuntimeError):
  """A model or its reference is not available here (message says why)."""


def generator_config(resolution: int, *, smoke: bool = False
                     ) -> dict[str, Any]:
  """Config-f channels at `resolution`, or the tiny smoke generator."""
  if smoke:
    return dict(SMOKE_GENERATOR)
  return dataclasses.asdict(sg.get_config(f'config-f-{resolution}')
                            if resolution in (256, 1024)
                            else sg.StyleGAN2Config(resolution=resolution))


def generator_pair(config: dict[str, Any], *, dtype: str = 'float32',
                   seed: int = 0, torch_side: bool = True):
  """(protocols.Generator, torch Generator or None), same weights.

  The torch reference writes an NVIDIA network pickle; the JAX generator is
  ported from that file. Without torch (or `torch_side` False) the JAX
  generator gets `stylegan2.init_variables` weights instead.
  """
  if not torch_side:
    gen_config = sg.as_config(config)
    variables = sg.init_variables(
        __import__('jax').random.key(seed), gen_config, w_avg_samples=64)
    return protocols.Generator(kind='stylegan2', config=gen_config,
                               module=sg.build(gen_config, dtype=dtype),
                               variables=variables,
                               source='random init'), None
  # pylint: disable-next=g-import-not-at-top
  from ports import stylegan2_reference as ref
  g = ref.reference_model(config, seed=seed)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'network-snapshot.pkl')
    ref.write_network_pickle(path, g)
    gen = loading.load_generator(path, dtype=dtype)
  return gen, g


@dataclasses.dataclass(frozen=True)
class EncoderEntry:
  """How to build one encoder pair.

  Attributes:
    kind: registry kind (also the model module's name, except dlib).
    reference: torch reference module (``write_checkpoint``), or None.
    filename: checkpoint file name in the public layout.
    config: ``config(model_module, smoke) -> dict``.
  """
  kind: str
  reference: str | None = None
  filename: str = ''
  config: Callable[[Any, bool], dict[str, Any]] | None = None


ENCODERS = {
    'iresnet50': EncoderEntry(
        'iresnet', 'ports.iresnet_reference', 'backbone.pth',
        lambda m, smoke: m.get_config(
            'r50', **({'layers': [1, 1, 1, 1], 'num_features': 64}
                      if smoke else {}))),
    'iresnet100': EncoderEntry('iresnet', 'ports.iresnet_reference',
                               'backbone.pth',
                               lambda m, smoke: m.get_config('r100')),
    'vggface2': EncoderEntry(
        'vggface2', 'ports.vggface2_reference', 'resnet50_ft_weight.pkl',
        lambda m, smoke: m.get_config(
            **({'layers': [1, 1, 1, 1]} if smoke else {}))),
    # VGG-16 has no smaller variant: full size even with --smoke.
    'vggface': EncoderEntry('vggface', 'ports.vggface_reference',
                            'vgg_face_dag.pth',
                            lambda m, smoke: m.get_config()),
    'dlib': EncoderEntry('dlib'),
}


# What --smoke changes, per encoder (for the notes of the results).
SMOKE_SIZES = {
    'iresnet50': 'IResNet-50 cut to one block per stage, 64-d descriptor',
    'iresnet100': 'IResNet-100 at full size',
    'vggface2': 'VGGFace2 ResNet-50 cut to one block per stage',
    'vggface': 'VGG-Face VGG-16 at full size',
    'dlib': 'the real dlib ResNet',
}


def import_optional(name: str):
  """Imports `name` or raises `Unavailable` saying why."""
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise Unavailable(f'{name} cannot be imported ({e}); is the test '
                      'extra (torch) installed?') from e


def encoder_pair(name: str, *, dtype: str = 'float32', smoke: bool = False,
                 seed: int = 0, torch_side: bool = True):
  """(protocols.Encoder, torch module or None) with the same weights.

  Args:
    name: a key of `ENCODERS`.
    dtype: JAX compute dtype.
    smoke: a smaller config where the encoder has one (IResNet-50 and
      VGGFace2 ResNet-50: one block per stage; IResNet 64-d descriptor).
    seed: reference weights seed.
    torch_side: build the torch reference too (needs torch).

  Raises:
    Unavailable: the model or its reference is not in this checkout, or the
      dlib model file is missing. Needs torch except for dlib (the reference
      writes the checkpoint).
  """
  if name not in ENCODERS:
    raise ValueError(f'unknown encoder {name!r}; known: {sorted(ENCODERS)}')
  entry = ENCODERS[name]
  if entry.kind == 'dlib':
    try:
      return loading.load_encoder('dlib', dtype=dtype), None
    except FileNotFoundError as e:
      raise Unavailable(str(e)) from e
  model = import_optional(f'id2image_jax.models.{entry.kind}')
  ref = import_optional(entry.reference)
  config = entry.config(model, smoke)
  with tempfile.TemporaryDirectory() as tmp:
    # The reference writes the public layout; JAX reads it the way a user's
    # real file is read (registry -> porting -> Flax variables).
    path = os.path.join(tmp, entry.filename)
    torch_model = ref.write_checkpoint(path, config, seed=seed)
    encoder = loading.load_encoder(f'{entry.kind}:{path}', dtype=dtype)
  return encoder, (torch_model.eval() if torch_side else None)


def torch_encoder_input(images, spec: preprocess.InputSpec):
  """`preprocess.to_encoder_input` in torch: NCHW [-1, 1] -> encoder input.

  Same crop box, antialiased resize (bilinear / bicubic), channel order and
  normalisation; the result is NCHW.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  h, w = images.shape[-2:]
  top, left, bottom, right = preprocess.crop_pixels(spec, h, w)
  x = (images[..., top:bottom, left:right] + 1.0) * 127.5
  if tuple(x.shape[-2:]) != tuple(spec.size):
    x = F.interpolate(x, size=tuple(spec.size),
                      mode='bilinear' if spec.method == 'linear'
                      else 'bicubic', antialias=True, align_corners=False)
  if spec.channel_order == 'BGR':
    x = x.flip(-3)
  mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device)
  std = torch.tensor(spec.std, dtype=x.dtype, device=x.device)
  return (x - mean[:, None, None]) / std[:, None, None]


def torch_descriptor(model, x):
  """Descriptor of a reference encoder (first output of the forward)."""
  if hasattr(model, 'forward_with_intermediates'):
    return model.forward_with_intermediates(x)[0]
  out = model(x)
  return out[0] if isinstance(out, (tuple, list)) else out


def random_chips(n: int, size: int, seed: int = 0) -> np.ndarray:
  """[n, size, size, 3] uint8 noise images (dlib's reference input)."""
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3),
                                              np.uint8)
