"""PyTorch reference of insightface arcface_torch's IResNet, for parity tests.

Written here from insightface ``recognition/arcface_torch/backbones/
iresnet.py`` (commit 7fadd420) with the same module names, so its
``state_dict()`` has exactly the keys of a public arcface_torch
``backbone.pth`` (``conv1.weight``, ``layer3.7.bn2.running_var``,
``layer2.0.downsample.0.weight``, ``fc.weight``, ``features.weight`` ...).
It is independent of `id2image_jax` on purpose: it is what the JAX port is
checked against. Dropout, fp16 autocast, gradient checkpointing and the
training-time initialisation are left out; `torch_reference.randomize_`
fills every parameter and every batch-norm running statistic with random
values instead, so a port that swaps two tensors or ignores running stats
cannot pass.

Write a random checkpoint laid out like the public ones::

  python ports/iresnet_reference.py --variant r50 --out /tmp/backbone.pth

Benchmarks: ``reference_model(config)`` returns the eval-mode torch module;
tests: ``write_reference(path, config, seed=)`` writes the file and returns
the reference as an NHWC callable (`torch_reference.nhwc`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ports import torch_reference  # pylint: disable=g-import-not-at-top

# Same table as arcface_torch's iresnet18..iresnet200.
VARIANTS = {
    'r18': (2, 2, 2, 2),
    'r34': (3, 4, 6, 3),
    'r50': (3, 4, 14, 3),
    'r100': (3, 13, 30, 3),
    'r200': (6, 26, 60, 6),
}
_EPS = 1e-5
_WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
  """bn1 -> conv1 -> bn2 -> prelu -> conv2(stride) -> bn3, + identity."""

  def __init__(self, inplanes: int, planes: int, stride: int,
               downsample: nn.Module | None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=_EPS)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=_EPS)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=_EPS)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    identity = x if self.downsample is None else self.downsample(x)
    return out + identity


class IResNet(nn.Module):
  """arcface_torch IResNet with its parameter names; NCHW, 112x112 input."""

  def __init__(self, layers, num_features: int = 512, use_fc: bool = True,
               use_features: bool = True):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(64, eps=_EPS)
    self.prelu = nn.PReLU(64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip(_WIDTHS, layers), start=1):
      downsample = nn.Sequential(
          nn.Conv2d(inplanes, planes, 1, 2, bias=False),
          nn.BatchNorm2d(planes, eps=_EPS))
      stage = [IBasicBlock(inplanes, planes, 2, downsample)]
      stage += [IBasicBlock(planes, planes, 1, None)
                for _ in range(1, blocks)]
      setattr(self, f'layer{i}', nn.Sequential(*stage))
      inplanes = planes
    self.bn2 = nn.BatchNorm2d(512, eps=_EPS)
    self.fc = nn.Linear(512 * 7 * 7, num_features) if use_fc else None
    self.features = (nn.BatchNorm1d(num_features, eps=_EPS)
                     if use_features else None)

  def forward_with_intermediates(
      self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (descriptor, {stem, layer1..4, flatten, fc}) as NCHW/flat."""
    out = {}
    x = self.prelu(self.bn1(self.conv1(x)))
    out['stem'] = x
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
      out[f'layer{i}'] = x
    x = torch.flatten(self.bn2(x), 1)
    out['flatten'] = x
    if self.fc is not None:
      x = self.fc(x)
      if self.features is not None:
        out['fc'] = x
        x = self.features(x)
    return x, out

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.forward_with_intermediates(x)[0]


def _layers(config: Mapping[str, Any]) -> tuple[int, ...]:
  if config.get('layers') is not None:
    return tuple(int(n) for n in config['layers'])
  return VARIANTS[config.get('variant', 'r50')]


def reference_model(config: Mapping[str, Any], *, seed: int = 0) -> IResNet:
  """The torch module for `config`, random weights, eval mode, float32.

  Args:
    config: ``variant`` or ``layers``, optional ``num_features``, ``use_fc``,
      ``use_features`` (the fields of `id2image_jax.models.iresnet`).
    seed: seeds `torch_reference.randomize_`.

  Returns:
    An eval-mode `IResNet` taking [N, 3, 112, 112] RGB in [-1, 1].
  """
  return torch_reference.instantiate(
      IResNet, _layers(config), seed=seed,
      num_features=int(config.get('num_features', 512)),
      use_fc=bool(config.get('use_fc', True)),
      use_features=bool(config.get('use_features', True)))


def write_checkpoint(path: str, config: Mapping[str, Any], *,
                     seed: int = 0) -> IResNet:
  """Saves ``torch.save(model.state_dict())`` like arcface_torch does."""
  model = reference_model(config, seed=seed)
  torch_reference.save(model, path, fmt='pth')
  return model


write_reference = torch_reference.reference_writer(write_checkpoint)


def main():
  parser = torch_reference.parser(__doc__, VARIANTS, default='r50')
  parser.add_argument('--num-features', type=int, default=512)
  args = parser.parse_args()
  write_checkpoint(args.out, {'variant': args.variant,
                              'num_features': args.num_features},
                   seed=args.seed)
  print(f'wrote random arcface_torch {args.variant} state dict to {args.out}')


if __name__ == '__main__':
  main()
