"""ONNX face encoders in insightface's export form, for parity tests.

Exports the PyTorch IResNet reference (`ports/iresnet_reference.py`, random
weights) the way insightface's ``recognition/arcface_torch/torch2onnx.py``
does for its model packs (``w600k_r50.onnx``, ``glintr100.onnx``): the
TorchScript exporter, opset 11, eval mode, input ``data`` [1, 3, 112, 112]
RGB in [-1, 1], initialisers not listed as inputs, then the batch
dimension of the input and the output renamed to the symbol ``None`` (a
dynamic batch). The exporter's
constant folding merges each conv with the batch norm after it, as in the
public files. The reference of a written file is ONNX Runtime (CPU) on that
file, not torch: it is what a deployed model runs on.

Write a random ArcFace-style model::

  python ports/onnx_reference.py --variant r50 --out /tmp/w600k_r50.onnx

Tests: ``write_reference(path, config, seed=)`` writes the file and returns
``reference(x [N, 112, 112, 3]) -> (descriptor, {})`` (ONNX Runtime).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ports import iresnet_reference  # pylint: disable=g-import-not-at-top
from ports import torch_reference  # pylint: disable=g-import-not-at-top

OPSET = 11


def export(model, path: str, *, size: int = 112, opset: int = OPSET) -> str:
  """``torch.onnx.export`` as insightface's torch2onnx.py, dynamic batch."""
  import onnx  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.zeros(1, 3, size, size)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # the TorchScript exporter's notices
    torch.onnx.export(model, x, path, input_names=['data'],
                      keep_initializers_as_inputs=False, verbose=False,
                      opset_version=opset, dynamo=False)
  proto = onnx.load(path)
  for value in (proto.graph.input[0], proto.graph.output[0]):
    value.type.tensor_type.shape.dim[0].dim_param = 'None'
  onnx.save(proto, path)
  return path


def onnxruntime_reference(path: str) -> Callable[[np.ndarray], tuple[
    np.ndarray, dict[str, np.ndarray]]]:
  """ONNX Runtime (CPU) on `path` as ``x NHWC -> (descriptor, {})``."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name

  def call(x: np.ndarray):
    x = np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))
    return session.run(None, {name: x})[0], {}
  return call


def write_model(path: str, config: Mapping[str, Any], *,
                seed: int = 0) -> str:
  """Writes a random IResNet of `config` (iresnet_reference's fields)."""
  return export(iresnet_reference.reference_model(config, seed=seed), path)


def write_reference(path: str, config: Mapping[str, Any], *,
                    seed: int = 0):
  """The encoder-kinds hook: write the file, return ORT on it."""
  write_model(path, config, seed=seed)
  return onnxruntime_reference(path)


def main():
  parser = torch_reference.parser(__doc__, iresnet_reference.VARIANTS,
                                  default='r50', out_help='output .onnx path')
  args = parser.parse_args()
  write_model(args.out, {'variant': args.variant}, seed=args.seed)
  print(f'wrote a random IResNet {args.variant} ONNX model (opset {OPSET}, '
        f'dynamic batch) to {args.out}')


if __name__ == '__main__':
  main()
