"""PyTorch reference of VGG-Face (vgg_face_dag), for parity tests.

Written here from the layout of Samuel Albanie's PyTorch import of the
MatConvNet VGG-Face model (``Vgg_face_dag`` in ``vgg_face_dag.py``), with the
same module names, so its ``state_dict()`` has exactly the keys and shapes of
the public ``vgg_face_dag.pth``: ``conv1_1.weight`` [64, 3, 3, 3] ..
``conv5_3.bias`` [512], ``fc6.weight`` [4096, 25088], ``fc7.weight``
[4096, 4096], ``fc8.weight`` [2622, 4096] and biases. The forward is the
public one: 3x3 convs (padding 1) with ReLU, 2x2 max pools, pool5 flattened
with ``view(N, -1)`` (C, H, W order), fc6 -> ReLU -> dropout -> fc7 -> ReLU
-> dropout -> fc8. It is independent of `id2image_jax` on purpose: it is what
the JAX port is checked against. `torch_reference.randomize_` fills every
parameter with random values (biases included) so a port that swaps or
mis-orders tensors cannot pass.

Write a random checkpoint laid out like the public one (~530 MB)::

  python ports/vggface_reference.py --out /tmp/vgg_face_dag.pth

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

VARIANTS = {'vgg16': ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))}
MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)


class VggFaceDag(nn.Module):
  """vgg_face_dag with its parameter names; NCHW, 224x224 RGB - mean."""

  def __init__(self, stages=VARIANTS['vgg16'], num_features: int = 4096,
               num_classes: int = 2622):
    super().__init__()
    self.meta = {'mean': list(MEAN_RGB), 'std': [1, 1, 1],
                 'imageSize': [224, 224, 3]}
    self.stages = tuple(stages)
    in_channels = 3
    for i, (channels, convs) in enumerate(self.stages, start=1):
      for j in range(1, convs + 1):
        setattr(self, f'conv{i}_{j}',
                nn.Conv2d(in_channels, channels, 3, 1, 1))
        in_channels = channels
    self.fc6 = nn.Linear(in_channels * 7 * 7, num_features)
    self.fc7 = nn.Linear(num_features, num_features)
    self.fc8 = nn.Linear(num_features, num_classes) if num_classes else None
    self.pool = nn.MaxPool2d(2, 2, 0)

  def forward_with_intermediates(
      self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (fc7 after ReLU, {pool1..pool5 NCHW, fc6, fc7[, fc8]})."""
    out = {}
    for i, (_, convs) in enumerate(self.stages, start=1):
      for j in range(1, convs + 1):
        x = torch.relu(getattr(self, f'conv{i}_{j}')(x))
      x = self.pool(x)
      out[f'pool{i}'] = x
    x = x.view(x.size(0), -1)
    # Dropout layers of the public model are the identity in eval mode.
    x = torch.relu(self.fc6(x))
    out['fc6'] = x
    x = torch.relu(self.fc7(x))
    out['fc7'] = x
    if self.fc8 is not None:
      out['fc8'] = self.fc8(x)
    return out['fc7'], out

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.forward_with_intermediates(x)[1]
    return out['fc8'] if 'fc8' in out else out['fc7']


def reference_model(config: Mapping[str, Any], *, seed: int = 0
                    ) -> VggFaceDag:
  """The torch module for `config`, random weights, eval mode, float32.

  He-normal weights (gain 2: std sqrt(2 / fan_in)) keep ReLU activations at
  a steady scale through the 16 layers; conv1_1 is further divided by 100
  because its input is on the 0..255 scale minus the mean, so activations
  stay O(1); biases ~ N(0, 0.1) so that a dropped or misplaced bias shows
  (`torch_reference.randomize_`).

  Args:
    config: ``variant`` or ``stages``, optional ``num_features`` and
      ``num_classes`` (the fields of `id2image_jax.models.vggface`; here
      ``num_classes`` defaults to 2622 as in the public file, since fc8 is
      always saved there).
    seed: seeds the random weights.

  Returns:
    An eval-mode `VggFaceDag` taking [N, 3, 224, 224] RGB minus the mean.
  """
  stages = config.get('stages') or VARIANTS[config.get('variant', 'vgg16')]
  num_classes = config.get('num_classes')
  return torch_reference.instantiate(
      VggFaceDag, tuple((int(c), int(n)) for c, n in stages), seed=seed,
      gain=2.0, input_layer='conv1_1',
      num_features=int(config.get('num_features', 4096)),
      num_classes=2622 if num_classes is None else int(num_classes))


def write_checkpoint(path: str, config: Mapping[str, Any], *,
                     seed: int = 0) -> VggFaceDag:
  """Saves ``torch.save(model.state_dict())`` like vgg_face_dag.pth."""
  model = reference_model(config, seed=seed)
  torch_reference.save(model, path, fmt='pth')
  return model


write_reference = torch_reference.reference_writer(write_checkpoint)


def main():
  args = torch_reference.parser(__doc__).parse_args()
  write_checkpoint(args.out, {'variant': 'vgg16'}, seed=args.seed)
  print(f'wrote random vgg_face_dag state dict to {args.out}')


if __name__ == '__main__':
  main()
