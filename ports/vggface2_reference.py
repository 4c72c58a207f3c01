"""PyTorch reference of the VGGFace2 ResNet-50 / SENet-50, for parity tests.

Written here from the layout of cydonia999/VGGFace2-pytorch
(``models/resnet.py``, ``models/senet.py``) with the same module names, so
its ``state_dict()`` has exactly the keys of the public
``resnet50_ft_weight.pkl`` / ``senet50_ft_weight.pkl`` (``conv1.weight``,
``layer3.4.bn2.running_var``, ``layer2.0.downsample.0.weight``,
``layer1.0.conv4.bias`` in SENet, ``fc.weight`` ...). It is independent of
`id2image_jax` on purpose: it is what the JAX port is checked against. The
training-time initialisation is left out; `torch_reference.randomize_` fills
every parameter and every batch-norm running statistic with random values
instead, so a port that swaps two tensors or ignores running stats cannot
pass.

Write a random checkpoint laid out like the public ones::

  python ports/vggface2_reference.py --variant senet50 --out /tmp/w.pkl

``.pkl`` writes the official layout: a pickled dict of numpy arrays, without
``num_batches_tracked`` (the files were converted from Caffe before torch had
those counters); ``.pth`` writes ``torch.save(model.state_dict())``.
``write_reference(path, config, seed=)`` writes the file and returns the
reference as an NHWC callable (`torch_reference.nhwc`), for the tests.

Benchmarks: ``reference_model(config)`` is the eval-mode torch module and
``reference_descriptor(model, x, grad=True)`` runs forward (+ backward to the
input) the way the inversion uses the encoder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ports import torch_reference  # pylint: disable=g-import-not-at-top

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


def _arch(config: Mapping[str, Any]) -> tuple[tuple[int, ...], bool]:
  table = VARIANTS.get(config.get('variant', 'resnet50'), {})
  layers = config.get('layers') or table['layers']
  se = config.get('se', table.get('se', False))
  return tuple(int(n) for n in layers), bool(se)


def reference_model(config: Mapping[str, Any], *,
                    seed: int = 0) -> VGGFace2Net:
  """The torch module for `config`, random weights, eval mode, float32.

  The stem's weights are 100x smaller because its inputs are
  mean-subtracted pixels (O(100)); see `torch_reference.randomize_`.

  Args:
    config: ``variant`` ('resnet50' / 'senet50') or ``layers`` + ``se``;
      optional ``num_classes`` (default 8631 as in the public files, 0 for
      no fc).
    seed: seeds the random weights.

  Returns:
    An eval-mode `VGGFace2Net` taking [N, 3, 224, 224] mean-subtracted BGR.
  """
  layers, se = _arch(config)
  return torch_reference.instantiate(
      VGGFace2Net, layers, se, seed=seed, input_layer='conv1',
      num_classes=int(config.get('num_classes', NUM_CLASSES)))


def write_checkpoint(path: str, config: Mapping[str, Any], *,
                     seed: int = 0, fmt: str | None = None) -> VGGFace2Net:
  """Writes random weights in the public layout and returns the model.

  Args:
    path: output file.
    config: as `reference_model`.
    seed: seeds the random weights.
    fmt: 'pkl' (official: pickled ``{key: numpy array}``, no
      ``num_batches_tracked``) or 'pth' (``torch.save(state_dict())``);
      default from the suffix of `path` ('.pth' / '.pt' -> 'pth').

  Returns:
    The eval-mode torch model whose weights were written.
  """
  model = reference_model(config, seed=seed)
  torch_reference.save(model, path, fmt=fmt)
  return model


write_reference = torch_reference.reference_writer(write_checkpoint)


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
  parser = torch_reference.parser(
      __doc__, VARIANTS, default='resnet50',
      out_help='output path: .pkl (official layout) or .pth')
  args = parser.parse_args()
  write_checkpoint(args.out, {'variant': args.variant}, seed=args.seed)
  print(f'wrote random VGGFace2 {args.variant} weights to {args.out}')


if __name__ == '__main__':
  main()
