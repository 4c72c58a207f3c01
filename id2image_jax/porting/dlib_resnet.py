"""dlib's ``dlib_face_recognition_resnet_model_v1.dat`` -> Flax variables.

The file ships in the PyPI package ``face-recognition-models`` (a dependency
of this project), so the default encoder works offline. It is read by our
own parser (`id2image_jax.porting.dlib_format`); dlib itself is not needed.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import errors
from id2image_jax.data import dlib_landmarks
from id2image_jax.models import dlib_resnet
from id2image_jax.porting import dlib_format
from id2image_jax.porting import layout
from id2image_jax.porting.dlib_format import Expect
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port
from id2image_jax.porting.rules import require_keys

FILE_NAME = 'dlib_face_recognition_resnet_model_v1.dat'


def default_path() -> pathlib.Path:
  """Where ``face-recognition-models`` installed the model file.

  Raises:
    FileNotFoundError: saying what to install or where to put the file.
  """
  return pathlib.Path(dlib_landmarks.face_recognition_models_file(
      FILE_NAME, hint=f', or pass the path of {FILE_NAME} explicitly '
      '(dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2, '
      'decompressed)'))


def _con(name: str, features: int, kernel: int, stride: int) -> Expect:
  padding = kernel // 2 if stride == 1 else 0
  return Expect('con', name, {'num_filters': features, 'nr': kernel,
                                  'nc': kernel, 'stride_y': stride,
                                  'stride_x': stride, 'padding_y': padding,
                                  'padding_x': padding, 'use_bias': True,
                                  'use_relu': False})


def _affine(name: str) -> Expect:
  return Expect('affine', name, {'mode': 0, 'disabled': False})  # CONV_MODE


def _pool(kind: str, window: int, stride: int) -> Expect:
  return Expect(kind, attrs={'nr': window, 'nc': window, 'stride_y': stride,
                                 'stride_x': stride, 'padding_y': 0, 'padding_x': 0})


_RELU = Expect('relu', attrs={'disabled': False})


def expected_layout(config: dict[str, Any]) -> list[Expect]:
  """The dlib layer sequence of `config`, outermost first (``anet_type``).

  ``ares<N>``      = relu<add_prev1<block<N, 1, tag1<x>>>>
  ``ares_down<N>`` = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<
                       block<N, 2, tag1<x>>>>>>>
  ``block<N, s>``  = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, .>>>>>
  """
  out = [Expect('fc', 'fc', {'num_outputs': config['descriptor_dim'],
                                 'bias_mode': 1}),  # FC_NO_BIAS
         _pool('avg_pool', 0, 1)]  # avg_pool_everything
  for s in reversed(range(len(config['stages']))):
    features, blocks, downsample = config['stages'][s]
    for b in reversed(range(blocks)):
      down = downsample and b == 0
      name = f'stage{s}_block{b}'
      out += [_RELU, Expect('add_prev')]
      if down:
        out += [_pool('avg_pool', 2, 2), Expect('skip'), Expect('tag')]
      out += [_affine(f'{name}/affine2'),
              _con(f'{name}/conv2', features, 3, 1), _RELU,
              _affine(f'{name}/affine1'),
              _con(f'{name}/conv1', features, 3, 2 if down else 1),
              Expect('tag')]
  size = config['input_size']
  out += [_pool('max_pool', 3, 2), _RELU, _affine('stem_affine'),
          _con('stem_conv', config['stem_features'], config['stem_kernel'], 2),
          Expect('input_rgb_image_sized', 'input', {'nr': size, 'nc': size})]
  return out


def flat_arrays(layers: list[dlib_format.Layer]) -> dict[str, np.ndarray]:
  """``{'<layer name>.<array>': array}`` in dlib's layouts."""
  return {f'{layer.name}.{key}': value for layer in layers
          for key, value in layer.arrays.items()}


# The arrays each kind of layer holds (`dlib_format.Layer.arrays`); con has
# biases because `expected_layout` requires ``use_bias``, fc has none
# because it requires FC_NO_BIAS.
_ARRAYS = {'con': ('filters', 'biases'), 'affine': ('gamma', 'beta'),
           'fc': ('weights',)}


def expected_keys(config: dict[str, Any]) -> list[str]:
  """The `flat_arrays` keys a model file of `config` holds."""
  return [f'{e.name}.{a}' for e in expected_layout(config)
          for a in _ARRAYS.get(e.kind, ())]


# dlib layout -> Flax (NHWC); keys are '<layer name>.<array>' with the names
# given by `expected_layout`. con filters are [out, in, kh, kw] like torch;
# fc weights are already [in, out].
RULES = (
    Rule(r'(.*conv\d?)\.filters', r'params/\1/conv/kernel',
         layout.conv_oihw_to_hwio),
    Rule(r'(.*conv\d?)\.biases', r'params/\1/conv/bias'),
    Rule(r'(.*affine\d?)\.gamma', r'params/\1/scale'),
    Rule(r'(.*affine\d?)\.beta', r'params/\1/bias'),
    Rule(r'fc\.weights', 'params/fc/kernel'),
)


def read_layers(path: str | os.PathLike | None = None,
                config: dict[str, Any] | None = None
                ) -> list[dlib_format.Layer]:
  """Parses the model file against the layout of `config` (default v1)."""
  config = config or dlib_resnet.get_config()
  path = default_path() if path is None else pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingInputError(
        f'dlib face model: no file at {path}')
  return dlib_format.read_file(path, expected_layout(config))


def port_arrays(arrays: dict[str, np.ndarray], config: dict[str, Any], *,
                what: str = 'dlib model') -> dict:
  """`flat_arrays` of a model file -> ``{'params': ...}`` for `config`.

  Raises:
    PortingError: a key missing, unknown or of the wrong shape (named).
  """
  # Name missing entries by their keys; `port` then checks shapes, unknown
  # keys and full coverage of the Flax tree.
  require_keys(arrays, expected_keys(config), what=what)
  model = dlib_resnet.build(config)
  size = config['input_size']
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, size, size, 3), jnp.float32))
  return port(arrays, RULES, abstract, what=what)


def convert_layers(layers: list[dlib_format.Layer], *,
                   variant: str = dlib_resnet.DEFAULT_VARIANT,
                   what: str = 'dlib model') -> tuple[dict[str, Any], dict]:
  """`convert` for a file already parsed by `read_layers`."""
  config = dlib_resnet.get_config(variant)
  loss, inputs = layers[0], layers[-1]
  config['input_mean'] = tuple(inputs.attrs[c] for c in
                               ('avg_red', 'avg_green', 'avg_blue'))
  config['loss'] = dict(kind=loss.kind, **loss.attrs)
  fc = layers[1]
  if fc.attrs['num_inputs'] != config['stages'][-1][0]:
    raise dlib_format.DlibFormatError(
        f'layer<1> fc: expected {config["stages"][-1][0]} inputs, found '
        f'{fc.attrs["num_inputs"]}')
  return config, port_arrays(flat_arrays(layers), config, what=what)


def convert(path: str | os.PathLike | None = None, *,
            variant: str = dlib_resnet.DEFAULT_VARIANT
            ) -> tuple[dict[str, Any], dict]:
  """Reads dlib's face model into Flax variables.

  Args:
    path: the ``.dat`` file; default: the copy installed by
      ``face-recognition-models``.
    variant: which `dlib_resnet.VARIANTS` entry the file must match.

  Returns:
    (config, variables): a JSON-able config (the variant, with the input
    normalisation and loss settings read from the file) and
    ``{'params': ...}`` of float32 numpy arrays for
    ``dlib_resnet.build(config)``.

  Raises:
    FileNotFoundError: no file (says which package to install).
    DlibFormatError: the file is not this network (names the layer).
    PortingError: parameter shapes do not match the model.
  """
  path = default_path() if path is None else pathlib.Path(path)
  layers = read_layers(path, dlib_resnet.get_config(variant))
  return convert_layers(layers, variant=variant, what=f'dlib model {path}')
