"""What the PyTorch encoder references in ``ports/`` share.

``iresnet_reference.py``, ``vggface_reference.py`` and
``vggface2_reference.py`` each define a torch module with the public
checkpoint's names; this module gives them the rest, independently of
`id2image_jax` (it is what the JAX ports are checked against):

* `instantiate`: build on the meta device and fill EVERY parameter and
  buffer with random values (`randomize_`), so that a port that swaps two
  tensors or ignores batch-norm running statistics cannot pass;
* `save`: the public file layouts (``torch.save(state_dict)`` or the
  official pickle of numpy arrays);
* `nhwc`: the module as the callable the encoder contract test compares
  with, ``x [N, H, W, C] numpy -> (descriptor, intermediates)``;
* `parser`: the command line of the ``python ports/<x>_reference.py``
  scripts that write a random checkpoint.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, *, gain: float = 1.0,
               input_layer: str | None = None) -> nn.Module:
  """Fills all weights, biases and BN running stats with random values.

  Scales keep activations O(1) through 16-100+ layers so that float32
  parity stays meaningful: conv / linear weights N(0, gain / fan_in) (gain
  2 is He-normal for ReLU nets), `input_layer`'s 100x smaller because its
  input is mean-subtracted pixels (O(100)); biases N(0, 0.1) so a dropped
  bias shows; BN scales in [0.5, 1.5] except the residual branch's last BN
  (``bn3``) in [0.05, 0.25] so the identity dominates; running means
  N(0, 0.1), variances in [0.5, 1.5]; PReLU slopes in [0, 0.5].

  Args:
    model: the module, filled in place.
    seed: seeds the draws.
    gain: weight variance times fan-in.
    input_layer: name of the layer that sees the pixels, or None.

  Returns:
    `model`.

  Raises:
    ValueError: a parameter or buffer of a module type not handled here
      (it would keep whatever memory `instantiate` left in it).
  """
  gen = torch.Generator().manual_seed(seed)
  filled = set()

  def normal(name, t, std):
    t.copy_(torch.randn(t.shape, generator=gen) * std)
    filled.add(name)

  def uniform(name, t, lo, hi):
    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    filled.add(name)

  for name, m in model.named_modules():
    key = f'{name}.' if name else ''
    if isinstance(m, (nn.Conv2d, nn.Linear)):
      std = (gain / m.weight[0].numel()) ** 0.5
      normal(key + 'weight', m.weight,
             std / 100 if name == input_layer else std)
      if m.bias is not None:
        normal(key + 'bias', m.bias, 0.1)
    elif isinstance(m, _BATCH_NORMS):
      uniform(key + 'weight', m.weight,
              *((0.05, 0.25) if name.endswith('bn3') else (0.5, 1.5)))
      normal(key + 'bias', m.bias, 0.1)
      normal(key + 'running_mean', m.running_mean, 0.1)
      uniform(key + 'running_var', m.running_var, 0.5, 1.5)
      m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (),
                                                    generator=gen)))
      filled.add(key + 'num_batches_tracked')
    elif isinstance(m, nn.PReLU):
      uniform(key + 'weight', m.weight, 0.0, 0.5)
  unfilled = sorted(set(model.state_dict()) - filled)
  if unfilled:
    raise ValueError(f'randomize_ does not fill {unfilled[:5]}')
  return model


def instantiate(cls: Callable[..., nn.Module], *args: Any, seed: int = 0,
                gain: float = 1.0, input_layer: str | None = None,
                **kwargs: Any) -> nn.Module:
  """``cls(*args, **kwargs)`` with random weights, eval mode, float32.

  Built on the meta device: torch's default initialisation would be
  overwritten by `randomize_` anyway (which fills every tensor), and it
  costs seconds at full depth.
  """
  with torch.device('meta'):
    model = cls(*args, **kwargs)
  model = model.to_empty(device='cpu')
  return randomize_(model, seed, gain=gain, input_layer=input_layer).eval()


def save(model: nn.Module, path: str, *, fmt: str | None = None) -> None:
  """Writes the model's weights in a public layout.

  Args:
    model: the module.
    path: output file.
    fmt: 'pth' (``torch.save(model.state_dict())``) or 'pkl' (a pickled
      ``{key: numpy array}`` without ``num_batches_tracked``: the VGGFace2
      files, converted from Caffe before torch had those counters); default
      from the suffix of `path` ('.pth' / '.pt' -> 'pth', else 'pkl').
  """
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


def nhwc(model: nn.Module) -> Callable[[np.ndarray], tuple[
    np.ndarray, dict[str, np.ndarray]]]:
  """The module as ``x [N, H, W, C] numpy -> (descriptor, intermediates)``.

  The module takes NCHW tensors (``forward_with_intermediates``); 4-D
  intermediates come back as NHWC so they compare directly with the Flax
  module's.
  """
  def call(x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with torch.no_grad():
      desc, inter = model.forward_with_intermediates(torch.from_numpy(
          np.ascontiguousarray(np.asarray(x, np.float32).transpose(
              0, 3, 1, 2))))
    out = {k: v.numpy() for k, v in inter.items()}
    return desc.numpy(), {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v
                          for k, v in out.items()}
  return call


def reference_writer(write_checkpoint: Callable[..., nn.Module]
                     ) -> Callable[..., Callable]:
  """``write_reference(path, config, *, seed)`` of a reference module.

  What the encoder kinds table calls: writes a random-weight file in the
  public layout (`write_checkpoint`) and returns the reference that holds
  the same weights, as `nhwc` makes it.
  """
  def write_reference(path: str, config: Mapping[str, Any], *,
                      seed: int = 0):
    return nhwc(write_checkpoint(path, config, seed=seed))
  return write_reference


def parser(doc: str, variants: Mapping[str, Any] | None = None, *,
           default: str | None = None, out_help: str = 'output .pth path'
           ) -> argparse.ArgumentParser:
  """``--variant`` (when there are several), ``--seed`` and ``--out``."""
  out = argparse.ArgumentParser(description=doc.split('\n')[0])
  if variants and len(variants) > 1:
    out.add_argument('--variant', default=default, choices=sorted(variants))
  out.add_argument('--seed', type=int, default=0)
  out.add_argument('--out', required=True, help=out_help)
  return out
