"""PyTorch reference of the VGGFace2 ResNet-50 / SENet-50, for parity tests.

Written here from the layout of cydonia999/VGGFace2-pytorch
(``models/resnet.py``, ``models/senet.py``) with the same module names, so
its ``state_dict()`` has exactly the keys of the public
``resnet50_ft_weight.pkl`` / ``senet50_ft_weight.pkl`` (``conv1.weight``,
``layer3.4.bn2.running_var``, ``layer2.0.downsample.0.weight``,
``layer1.0.conv4.bias`` in SENet, ``fc.weight`` ...). It is independent of
`id2image_jax` on purpose: it is what the JAX port is checked against. The
training-time initialisation is left out; `randomize_` fills every parameter
and every batch-norm running statistic with random values instead, so a port
that swaps two tensors or ignores running stats cannot pass.

Write a random checkpoint laid out like the public ones::

  python ports/vggface2_reference.py --variant senet50 --out /tmp/w.pkl

``.pkl`` writes the official layout: a pickled dict of numpy arrays, without
``num_batches_tracked`` (the files were converted from Caffe before torch had
those counters); ``.pth`` writes ``torch.save(model.state_dict())``.

Benchmarks: ``reference_model(config)`` is the eval-mode torch module and
``reference_descriptor(model, x, grad=True)`` runs forward (+ backward to the
input) the way the inversion uses the encoder.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = {
    'resnet50': {'layers': (3, 4, 6, 3), 'se': False},
    'senet50': {'layers': (3, 4, 6, 3), 'se': True},
}
NUM_CLASSES = 8631  # VGGFace2 training identities: fc size in the files.
MEAN_BGR = (91.4953, 103.8827, 131.0912)
_PLANES = (64, 128, 256, 512)


class Bottleneck(nn.Module):
  """1x1/s -> 3x3 -> 1x1 (+ SE conv4/conv5), + identity, relu."""

  def __init__(self, inplanes: int, planes: int, stride: int,
               downsample: nn.Module | None, se: bool):
    super().__init__()
    width = planes * 4
    self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width)
    self.se = se
    if se:
      self.conv4 = nn.Conv2d(width, width // 16, 1, bias=True)
      self.conv5 = nn.Conv2d(width // 16, width, 1, bias=True)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.se:
      gate = F.avg_pool2d(out, kernel_size=out.size(2))
      gate = torch.sigmoid(self.conv5(F.relu(self.conv4(gate))))
      out = out * gate
    identity = x if self.downsample is None else self.downsample(x)
    return F.relu(out + identity)


class VGGFace2Net(nn.Module):
  """ResNet-50 / SENet-50 with the port's names; NCHW BGR 224x224 input."""

  def __init__(self, layers=(3, 4, 6, 3), se: bool = False,
               num_classes: int = NUM_CLASSES):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip(_PLANES, layers), start=1):
      stride = 1 if i == 1 else 2
      downsample = nn.Sequential(
          nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
          nn.BatchNorm2d(planes * 4))
      stage = [Bottleneck(inplanes, planes, stride, downsample, se)]
      stage += [Bottleneck(planes * 4, planes, 1, None, se)
                for _ in range(1, blocks)]
      setattr(self, f'layer{i}', nn.Sequential(*stage))
      inplanes = planes * 4
    self.avgpool = nn.AvgPool2d(7, stride=1)
    self.fc = nn.Linear(2048, num_classes) if num_classes else None

  def forward_with_intermediates(
      self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (2048-d descriptor, {stem, layer1..4, logits}) as NCHW/flat."""
    out = {}
    x = F.relu(self.bn1(self.conv1(x)))
    out['stem'] = x
    x = self.maxpool(x)
    for i in range(1, 5):
      x = getattr(self, f'layer{i}')(x)
      out[f'layer{i}'] = x
    x = self.avgpool(x).flatten(1)
    if self.fc is not None:
      out['logits'] = self.fc(x)
    return x, out

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.forward_with_intermediates(x)[0]


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Fills all weights and BN running stats with random values, in place.

  Scales keep activations O(1) through the blocks so that float32 parity
  errors stay meaningful: conv weights ~ N(0, 1/fan_in), the stem's 100x
  smaller because inputs are mean-subtracted pixels (O(100)); the last BN of
  each residual branch (bn3) has small scales so the identity dominates;
  running means/vars are random so a port that ignores them fails.
  """
  gen = torch.Generator().manual_seed(seed)

  def normal(t, std):
    t.copy_(torch.randn(t.shape, generator=gen) * std)

  def uniform(t, lo, hi):
    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))

  for name, m in model.named_modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      std = m.weight[0].numel() ** -0.5
      normal(m.weight, std / 100 if name == 'conv1' else std)
      if m.bias is not None:
        normal(m.bias, 0.1)
    elif isinstance(m, nn.BatchNorm2d):
      if name.endswith('bn3'):
        uniform(m.weight, 0.05, 0.25)
      else:
        uniform(m.weight, 0.5, 1.5)
      normal(m.bias, 0.1)
      normal(m.running_mean, 0.1)
      uniform(m.running_var, 0.5, 1.5)
      m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (),
                                                    generator=gen)))
  return model


def _arch(config: Mapping[str, Any]) -> tuple[tuple[int, ...], bool]:
  table = VARIANTS.get(config.get('variant', 'resnet50'), {})
  layers = config.get('layers') or table['layers']
  se = config.get('se', table.get('se', False))
  return tuple(int(n) for n in layers), bool(se)


def reference_model(config: Mapping[str, Any], *,
                    seed: int = 0) -> VGGFace2Net:
  """The torch module for `config`, random weights, eval mode, float32.

  Args:
    config: ``variant`` ('resnet50' / 'senet50') or ``layers`` + ``se``;
      optional ``num_classes`` (default 8631 as in the public files, 0 for
      no fc).
    seed: seeds `randomize_`.

  Returns:
    An eval-mode `VGGFace2Net` taking [N, 3, 224, 224] mean-subtracted BGR.
  """
  layers, se = _arch(config)
  # Built on the meta device: torch's default initialisation would be
  # overwritten by `randomize_` anyway (which fills every tensor).
  with torch.device('meta'):
    model = VGGFace2Net(
        layers, se, num_classes=int(config.get('num_classes', NUM_CLASSES)))
  return randomize_(model.to_empty(device='cpu'), seed).eval()


def write_checkpoint(path: str, config: Mapping[str, Any], *,
                     seed: int = 0, fmt: str | None = None) -> VGGFace2Net:
  """Writes random weights in the public layout and returns the model.

  Args:
    path: output file.
    config: as `reference_model`.
    seed: seeds `randomize_`.
    fmt: 'pkl' (official: pickled ``{key: numpy array}``, no
      ``num_batches_tracked``) or 'pth' (``torch.save(state_dict())``);
      default from the suffix of `path` ('.pth' / '.pt' -> 'pth').

  Returns:
    The eval-mode torch model whose weights were written.
  """
  model = reference_model(config, seed=seed)
  if fmt is None:
    fmt = 'pth' if str(path).endswith(('.pth', '.pt')) else 'pkl'
  if fmt == 'pth':
    torch.save(model.state_dict(), path)
  elif fmt == 'pkl':
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()
               if not k.endswith('num_batches_tracked')}
    with open(path, 'wb') as f:
      pickle.dump(weights, f, protocol=2)
  else:
    raise ValueError(f'fmt must be pkl or pth, got {fmt!r}')
  return model


def to_input(images_rgb01: np.ndarray) -> torch.Tensor:
  """[N, 224, 224, 3] RGB in [-1, 1] -> [N, 3, 224, 224] mean-free BGR."""
  x = (np.asarray(images_rgb01, np.float32) + 1.0) * 127.5
  x = x[..., ::-1] - np.asarray(MEAN_BGR, np.float32)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def reference_descriptor(model: nn.Module, x: torch.Tensor, *,
                         grad: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
  """Descriptors of a batch, and optionally d(sum of descriptors)/d(input).

  Args:
    model: an eval-mode `VGGFace2Net`.
    x: [N, 3, 224, 224] preprocessed input (see `to_input`).
    grad: also run backward to the input, as an inversion step does.

  Returns:
    (descriptor [N, 2048], input gradient [N, 3, 224, 224] or None).
  """
  if not grad:
    with torch.no_grad():
      return model(x), None
  x = x.detach().requires_grad_(True)
  desc = model(x)
  desc.sum().backward()
  return desc.detach(), x.grad


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variant', default='resnet50',
                      choices=sorted(VARIANTS))
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True,
                      help='output path: .pkl (official layout) or .pth')
  args = parser.parse_args()
  write_checkpoint(args.out, {'variant': args.variant}, seed=args.seed)
  print(f'wrote random VGGFace2 {args.variant} weights to {args.out}')


if __name__ == '__main__':
  main()
