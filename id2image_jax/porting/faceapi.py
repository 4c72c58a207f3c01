"""Ports face-api.js weights (TF.js weights manifests) to Flax variables.

Reads the original ``*-weights_manifest.json`` + ``.bin`` files of
``@vladmandic/face-api`` (shipped with this package, see `default_files`)
with `id2image_jax.porting.tfjs` and maps every tensor name to a parameter
of `id2image_jax.models.faceapi` by the rule table below; coverage is strict
both ways (`rules.port`). Layout changes: depthwise filters [3, 3, C, 1] ->
[3, 3, 1, C]; everything else is already HWIO / [in, out].

The variant is read off the names and shapes: ``fc/age/*`` is the age/gender
net; otherwise ``fc/weights`` [256, 136] is the 68-landmark net and
[256, 7] the expression net. The tiny landmark net (3-conv dense blocks, 128
channels) is recognised and refused.
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import faceapi
from id2image_jax.porting import tfjs
from id2image_jax.porting.layout import depthwise_to_grouped
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port_image_model

PACKAGE = '@vladmandic/face-api'
VERSION = '1.7.15'
# Vendored original files (package data), one manifest per variant.
FILES = {
    'landmark68': 'face_landmark_68_model-weights_manifest.json',
    'expression': 'face_expression_model-weights_manifest.json',
    'age_gender': 'age_gender_model-weights_manifest.json',
}


def weights_dir() -> pathlib.Path:
  """The directory of the vendored face-api.js files (package data)."""
  return pathlib.Path(str(importlib.resources.files('id2image_jax').joinpath(
      'weights', 'vladmandic-face-api')))


def default_files() -> dict[str, pathlib.Path]:
  """``{variant: manifest path}`` of the vendored face-api.js models."""
  return {variant: weights_dir() / name for variant, name in FILES.items()}


def _separable(src: str, dst: str) -> list[Rule]:
  return [
      Rule(src + '/depthwise_filter', dst + '/depthwise/conv/kernel',
           depthwise_to_grouped),
      Rule(src + '/pointwise_filter', dst + '/pointwise/conv/kernel'),
      Rule(src + '/bias', dst + '/bias'),
  ]


def _conv(src: str, dst: str) -> list[Rule]:
  return [Rule(src + '/filters', dst + '/conv/kernel'),
          Rule(src + '/bias', dst + '/conv/bias')]


_X = 'params/extractor'
_FLOW = (r'(entry_flow|middle_flow|exit_flow)/'
         r'(reduction_block(?:_\d+)?|main_block_\d+)')

# TF.js weight name (full match) -> Flax variable path. First match wins, so
# the plain convs of dense0/conv0 come before the separable rule of convK.
RULES: tuple[Rule, ...] = (
    # dense extractor (landmark68, expression)
    *_conv(r'(dense0)/(conv0)', _X + r'/\1/\2'),
    *_separable(r'(dense\d+)/(conv\d+)', _X + r'/\1/\2'),
    Rule(r'fc/weights', 'params/fc/kernel'),
    Rule(r'fc/bias', 'params/fc/bias'),
    # TinyXception (age_gender)
    *_conv(r'entry_flow/conv_in', _X + '/entry_flow_conv_in'),
    *_conv(_FLOW + r'/expansion_conv', _X + r'/\1_\2/expansion_conv'),
    *_separable(_FLOW + r'/(separable_conv\d)', _X + r'/\1_\2/\3'),
    *_separable(r'exit_flow/separable_conv', _X + '/exit_flow_separable_conv'),
    Rule(r'fc/(age|gender)/weights', r'params/fc_\1/kernel'),
    Rule(r'fc/(age|gender)/bias', r'params/fc_\1/bias'),
)


def infer_config(source: Mapping[str, Any], *, what: str = 'weights'
                 ) -> dict[str, Any]:
  """Which face-api.js net the tensors are (see the module docstring).

  Raises:
    PortingError: not one of the three nets.
  """
  if 'fc/age/weights' in source or 'fc/gender/weights' in source:
    return faceapi.get_config('age_gender')
  fc = source.get('fc/weights')
  if fc is None or 'dense0/conv0/filters' not in source:
    raise PortingError(
        f'{what} has neither dense0/conv0/filters + fc/weights nor '
        f'fc/age/weights: not a face-api.js landmark, expression or '
        f'age/gender net (first names: {sorted(source)[:4]})')
  if 'dense0/conv3/bias' not in source:
    raise PortingError(f'{what} has 3-conv dense blocks: the tiny landmark '
                       'net (face_landmark_68_tiny_model) is not supported')
  outputs = np.shape(fc)[-1]
  by_outputs = {2 * faceapi.NUM_LANDMARKS: 'landmark68',
                len(faceapi.EXPRESSION_LABELS): 'expression'}
  if outputs not in by_outputs:
    raise PortingError(f'{what}: fc/weights has shape {np.shape(fc)}; '
                       'expected [256, 136] (landmarks) or [256, 7] '
                       '(expressions)')
  return faceapi.get_config(by_outputs[outputs])


def convert_weights(source: Mapping[str, np.ndarray], *,
                    what: str = 'weights') -> tuple[dict, dict]:
  """`convert` for tensors already read.

  Returns:
    (config, variables) as `convert`.
  """
  config = infer_config(source, what=what)
  return config, port_image_model(source, RULES, faceapi.build(config),
                                  faceapi.INPUT_SIZE, what=what)


def convert(path: str | os.PathLike | None = None, *,
            variant: str | None = None) -> tuple[dict[str, Any], dict]:
  """Reads a face-api.js weights manifest and ports it.

  Args:
    path: a ``*-weights_manifest.json`` (shards beside it); default: the
      vendored file of `variant`.
    variant: with no path, which vendored net ('landmark68', 'expression',
      'age_gender'); with a path, the variant the file must be.

  Returns:
    config: JSON-able, for `id2image_jax.models.faceapi.build`.
    variables: ``{'params': ...}`` float32 jax arrays.

  Raises:
    FileNotFoundError: no such file.
    TfjsError: malformed manifest or shard (names the tensor).
    PortingError: a tensor name or shape does not match the net, or the
      file is another variant than asked.
  """
  if path is None:
    if variant is None:
      raise ValueError('give a path or a variant (one of '
                       f'{sorted(FILES)})')
    if variant not in FILES:
      raise ValueError(f'unknown face-api variant {variant!r}; known: '
                       f'{sorted(FILES)}')
    path = default_files()[variant]
  source = tfjs.read_weights_manifest(path)
  config, variables = convert_weights(source, what=os.fspath(path))
  if variant is not None and config['variant'] != variant:
    raise PortingError(f'{os.fspath(path)} holds the {config["variant"]} '
                       f'net, not {variant}')
  return config, variables
