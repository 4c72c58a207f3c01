"""TF.js itself as the reference of the FaceRes port (encoder contract row).

TF.js (``ports/tfjs_reference.mjs``, pure-JS CPU backend, under node) runs
the original graph; the library never imports this module. Its runtime
runs only the graph it is given, and the file's architecture is fixed, so
the contract row uses the real human-models files (copied), not random
weights at a smaller size.

  from ports import faceres_reference
  reference = faceres_reference.write_reference('/tmp/x/faceres.json')
  descriptor, intermediates = reference(x)  # x: model input [N, 224, 224, 3]
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import faceres
from id2image_jax.porting import faceres as faceres_port
from ports import tfjs_reference

DESCRIPTOR = 'global_pooling/Mean'
# Our intermediate -> the graph node whose output it equals.
INTERMEDIATES = {
    'conv1': 'conv1_relu/clip_by_value',
    **{tap: f'{tap}_relu/clip_by_value' for tap in faceres.TAPS},
    'feats': 'feats/Relu',
    'gender_logit': 'gender_pred/BiasAdd',
    'male_prob': 'gender_pred/Sigmoid',
    'age_logits': 'age_pred/BiasAdd',
    'age_probs': 'age_pred/Softmax',
}


def reference(model_json: str | os.PathLike, x: np.ndarray, *,
              backend: str = 'cpu'
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """TF.js's descriptor and intermediates for model input `x`.

  Args:
    model_json: the graph (its .bin beside it).
    x: float32 [N, 224, 224, 3], normalised as `faceres.input_spec` says
      (the graph has no normalisation of its own).
    backend: 'cpu' (pure JS, the parity reference) or 'wasm'.

  Returns:
    ``(descriptor [N, 1024], {name: array})`` with the names of
    `faceres.FaceRes` (``gender_logit`` and ``male_prob`` squeezed to [N]).
  """
  names = [DESCRIPTOR] + list(INTERMEDIATES.values())
  out, _ = tfjs_reference.graph(model_json, np.asarray(x, np.float32), names,
                                backend=backend)
  inter = {k: out[v] for k, v in INTERMEDIATES.items()}
  for k in ('gender_logit', 'male_prob'):
    inter[k] = inter[k][..., 0]
  return out[DESCRIPTOR], inter


def write_reference(path: str, config: Mapping[str, Any] | None = None, *,
                    seed: int = 0):
  """The FaceRes row of the encoder contract: the real graph and TF.js.

  Args:
    path: where to put the model JSON (``faceres.json``; the weights go
      beside it under the name the JSON's manifest gives, ``faceres.bin``).
    config: None or the default config (the only one the file has).
    seed: unused (the weights are the real ones).

  Returns:
    ``reference(x) -> (descriptor, intermediates)`` (see `reference`).

  Raises:
    ValueError: a config other than the file's.
  """
  del seed
  want = faceres.get_config()
  if config is not None and dict(config) != want:
    raise ValueError(f'the FaceRes graph has one config, {want}; got '
                     f'{config}')
  files = faceres_port.default_files()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  shutil.copyfile(files['model'], path)
  shutil.copyfile(files['weights'],
                  os.path.join(directory, files['weights'].name))
  return lambda x: reference(path, x)
