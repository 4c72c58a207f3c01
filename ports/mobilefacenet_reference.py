"""TF.js itself as the reference of the MobileFaceNet port (contract row).

TF.js (``ports/tfjs_reference.mjs``, pure-JS CPU backend, under node) runs
the original human-models graph; the library never imports this module.
Its runtime runs only the graph it is given, and the file's architecture is
fixed, so the contract row uses the real vendored files (copied), not
random weights at a smaller size.

  from ports import mobilefacenet_reference
  reference = mobilefacenet_reference.write_reference('/tmp/x/m.json')
  descriptor, intermediates = reference(x)  # x: model input [N, 112, 112, 3]
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import mobilefacenet
from id2image_jax.porting import mobilefacenet as mobilefacenet_port
from ports import tfjs_reference

DESCRIPTOR = 'embeddings'
_SCOPE = 'MobileFaceNet/MobileFaceNet/'
_FBN = '/BatchNorm/FusedBatchNorm'


def intermediate_nodes(config: Mapping[str, Any]) -> dict[str, str]:
  """Our intermediate -> the graph node whose output it equals.

  A stage ends at its last block's residual ``Add``, or, for a block
  without one (a strided or widening block), at its projection conv.
  """
  out = {'stem': f'{_SCOPE}Conv{_FBN}'}
  channels = config['stem']
  for scope, _, features, blocks, stride in config['stages']:
    last = blocks - 1
    # As the module: a block adds its input when stride 1, width kept.
    residual = last > 0 or (stride == 1 and channels == features)
    block = f'{_SCOPE}Conv2d_{scope}_InvResBlock_{last}'
    out[f'Conv2d_{scope}'] = (f'{block}/Add' if residual else
                              f'{block}/Conv_1{_FBN}')
    channels = features
  # The PReLU after the last 1x1 conv: relu(x) + c * (x - |x|), its add.
  out[f'Conv2d_{config["last_scope"]}'] = (
      f'{_SCOPE}Conv2d_{config["last_scope"]}/add')
  out['unnormalised'] = 'MobileFaceNet/Logits/SpatialSqueeze'
  return out


def reference(model_json: str | os.PathLike, x: np.ndarray, *,
              backend: str = 'cpu'
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """TF.js's descriptor and intermediates for model input `x`.

  Args:
    model_json: the graph (its .bin beside it).
    x: float32 [N, 112, 112, 3] RGB / 255, as `mobilefacenet.input_spec`
      says (the graph has no normalisation of its own).
    backend: 'cpu' (pure JS, the parity reference) or 'wasm'.

  Returns:
    ``(descriptor [N, 192], {name: array})`` with the names of
    `mobilefacenet.MobileFaceNet`.
  """
  nodes = intermediate_nodes(mobilefacenet.get_config())
  out, _ = tfjs_reference.graph(model_json, np.asarray(x, np.float32),
                                [DESCRIPTOR, *nodes.values()],
                                backend=backend)
  return out[DESCRIPTOR], {k: out[v] for k, v in nodes.items()}


def write_reference(path: str, config: Mapping[str, Any] | None = None, *,
                    seed: int = 0):
  """The MobileFaceNet row of the encoder contract: the real graph, TF.js.

  Args:
    path: where to put the model JSON; the weights go beside it under the
      name the JSON's manifest gives (``mobilefacenet.bin``).
    config: None or the default config (the only one the file has).
    seed: unused (the weights are the real ones).

  Returns:
    ``reference(x) -> (descriptor, intermediates)`` (see `reference`).

  Raises:
    ValueError: a config other than the file's.
  """
  del seed
  want = mobilefacenet.get_config()
  if config is not None and dict(config) != want:
    raise ValueError(f'the MobileFaceNet graph has one config, {want}; got '
                     f'{config}')
  model = mobilefacenet_port.default_files()['model']
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  shutil.copyfile(model, path)
  with open(model) as f:
    manifest = json.load(f)['weightsManifest']
  for group in manifest:
    for name in group['paths']:
      shutil.copyfile(model.parent / name, os.path.join(directory, name))
  return lambda x: reference(path, x)
