"""The onnx encoder kind beyond the contract: files it refuses, input
conventions, the black-box (ONNX Runtime) mode, and a missing package.

Models here are tiny face encoders built with ``onnx.helper`` (conv ->
PReLU -> global pool -> flatten -> Gemm), so nothing needs torch; the
contract (tests/test_encoder_contract.py) covers exported IResNets.
"""

from __future__ import annotations

import os
import re
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax import protocols
from id2image_jax.models import onnx_graph
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import onnx as onnx_port

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
helper = onnx.helper
numpy_helper = onnx.numpy_helper
FLOAT = onnx.TensorProto.FLOAT


def _encoder_graph(size=112, *, layout='NCHW', extra_nodes=(), inits=None,
                   first='data'):
  """A tiny face encoder graph (numpy weights as initialisers)."""
  rng = np.random.default_rng(0)
  weights = {
      'w': (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
      'slope': rng.uniform(0, 0.5, (8, 1, 1)).astype(np.float32),
      'fc': (rng.standard_normal((16, 8)) * 0.5).astype(np.float32),
      'bias': rng.standard_normal(16).astype(np.float32),
      **(inits or {})}
  nodes = []
  x = first
  if layout == 'NHWC':
    nodes.append(helper.make_node('Transpose', [x], ['nchw'],
                                  perm=[0, 3, 1, 2]))
    x = 'nchw'
  nodes += [helper.make_node('Conv', [x, 'w'], ['c'], strides=[2, 2],
                             pads=[1, 1, 1, 1], name='conv'),
            helper.make_node('PRelu', ['c', 'slope'], ['p'], name='prelu'),
            *extra_nodes,
            helper.make_node('GlobalAveragePool', ['p'], ['g']),
            helper.make_node('Flatten', ['g'], ['f']),
            helper.make_node('Gemm', ['f', 'fc', 'bias'], ['emb'],
                             transB=1, name='fc')]
  shape = (['N', 3, size, size] if layout == 'NCHW'
           else ['N', size, size, 3])
  return helper.make_graph(
      nodes, 'tiny_face', [helper.make_tensor_value_info(first, FLOAT, shape)],
      [helper.make_tensor_value_info('emb', FLOAT, ['N', 16])],
      initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])


def _save(graph, path, *, opset=11):
  model = helper.make_model(graph,
                            opset_imports=[helper.make_opsetid('', opset)])
  model.ir_version = 7
  onnx.save(model, str(path))
  return str(path)


@pytest.fixture
def tiny(tmp_path):
  return _save(_encoder_graph(), tmp_path / 'tiny.onnx')


def _images(n=3, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (n, 64, 64, 3)).astype(
      np.float32)


# --- files refused, before any work -----------------------------------------


def _external(tmp_path, location, *, nbytes=None, offset=0, length=None,
              dims=(16, 8)):
  """A model whose ``fc`` weight lives in an external file."""
  graph = _encoder_graph()
  fc = next(t for t in graph.initializer if t.name == 'fc')
  data = fc.raw_data or numpy_helper.to_array(fc).tobytes()
  del fc.dims[:]
  fc.dims.extend(dims)
  fc.ClearField('raw_data')
  fc.ClearField('float_data')
  fc.data_location = onnx.TensorProto.EXTERNAL
  entries = {'location': location, 'offset': str(offset)}
  if length is not None:
    entries['length'] = str(length)
  for k, v in entries.items():
    e = fc.external_data.add()
    e.key, e.value = k, v
  folder = tmp_path / 'model'
  folder.mkdir(exist_ok=True)
  if nbytes is not None:
    target = folder / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b'\0' * offset + data[:nbytes])
  return _save(graph, folder / 'm.onnx'), data


def test_external_data_inside_the_folder_is_read(tmp_path):
  path, data = _external(tmp_path, 'weights/fc.bin', nbytes=512, offset=2,
                         length=512)
  want = numpy_helper.to_array(next(
      t for t in _encoder_graph().initializer if t.name == 'fc'))
  np.testing.assert_array_equal(onnx_port.read_model(path).tensors['fc'],
                                want)
  assert data == want.tobytes()


@pytest.mark.parametrize('location,message', [
    ('../secret.bin', "leaves the model's folder"),
    ('weights/../../secret.bin', "leaves the model's folder"),
    ('/etc/passwd', 'must be a path relative'),
])
def test_external_path_leaving_the_folder_is_refused(tmp_path, location,
                                                     message):
  (tmp_path / 'secret.bin').write_bytes(b'\0' * 1024)
  path, _ = _external(tmp_path, location)
  with pytest.raises(CheckpointError, match=re.escape(message)) as info:
    loading.read(path, loading.ENCODER)
  assert "tensor 'fc'" in str(info.value)


def test_external_symlink_out_of_the_folder_is_refused(tmp_path):
  (tmp_path / 'secret.bin').write_bytes(b'\0' * 1024)
  path, _ = _external(tmp_path, 'link.bin')
  os.symlink(tmp_path / 'secret.bin', tmp_path / 'model' / 'link.bin')
  with pytest.raises(CheckpointError, match="tensor 'fc'.*leaves"):
    onnx_port.read_model(path)


def test_missing_external_file_is_refused(tmp_path):
  path, _ = _external(tmp_path, 'fc.bin')
  with pytest.raises(CheckpointError, match=r"tensor 'fc'.*'fc.bin' is "
                     'missing'):
    onnx_port.read_model(path)


def test_truncated_external_file_is_refused(tmp_path):
  path, _ = _external(tmp_path, 'fc.bin', nbytes=100)
  with pytest.raises(CheckpointError,
                     match=r"tensor 'fc'.*holds 100 bytes, too few for 512"):
    onnx_port.read_model(path)


def test_external_length_disagreeing_with_shape_is_refused(tmp_path):
  path, _ = _external(tmp_path, 'fc.bin', nbytes=512, length=256)
  with pytest.raises(CheckpointError, match=r"tensor 'fc'.*length 256"):
    onnx_port.read_model(path)


def test_initialiser_size_disagreeing_with_shape_is_refused(tmp_path):
  graph = _encoder_graph()
  fc = next(t for t in graph.initializer if t.name == 'fc')
  fc.raw_data = fc.raw_data[:-4]  # one float short
  path = _save(graph, tmp_path / 'm.onnx')
  with pytest.raises(CheckpointError,
                     match=r"tensor 'fc' stores 508 bytes.*needs 512"):
    loading.read(path, loading.ENCODER)
  graph = _encoder_graph()
  bias = next(t for t in graph.initializer if t.name == 'bias')
  values = numpy_helper.to_array(bias)
  bias.ClearField('raw_data')
  bias.float_data.extend(values[:10].tolist())  # 10 values for shape [16]
  with pytest.raises(CheckpointError, match=r"tensor 'bias' stores 10 "
                     r'values, but its shape \[16\] holds 16'):
    onnx_port.read_model(_save(graph, tmp_path / 'm2.onnx'))


def test_model_over_the_size_limit_is_refused(tmp_path, tiny, monkeypatch):
  with pytest.raises(CheckpointError, match='over the size limit'):
    onnx_port.read_model(tiny, max_bytes=1000)
  # A huge declared external tensor: refused before its file is looked at.
  path, _ = _external(tmp_path, 'absent.bin', dims=(2 ** 20, 2 ** 20))
  with pytest.raises(CheckpointError, match=r"tensor 'fc' takes the model "
                     'over the size limit of 4.00 GiB'):
    onnx_port.read_model(path)
  monkeypatch.setattr(onnx_port, 'MAX_MODEL_BYTES', 1000)
  with pytest.raises(CheckpointError, match='size limit'):
    loading.load_encoder(tiny)


def test_graph_with_a_cycle_is_refused(tmp_path):
  graph = _encoder_graph(extra_nodes=(
      helper.make_node('Add', ['p', 'loop2'], ['loop1'], name='a'),
      helper.make_node('Relu', ['loop1'], ['loop2'], name='b')))
  with pytest.raises(CheckpointError, match=r"cycle: node '[ab]'"):
    loading.read(_save(graph, tmp_path / 'm.onnx'), loading.ENCODER)


def test_dangling_and_doubly_produced_tensors_are_refused(tmp_path):
  graph = _encoder_graph(extra_nodes=(
      helper.make_node('Add', ['p', 'nowhere'], ['q'], name='dangling'),))
  with pytest.raises(CheckpointError, match=r"node 'dangling' \(Add\) reads "
                     "tensor 'nowhere', which no node"):
    onnx_port.read_model(_save(graph, tmp_path / 'm.onnx'))
  graph = _encoder_graph(extra_nodes=(
      helper.make_node('Relu', ['c'], ['p'], name='again'),))
  with pytest.raises(CheckpointError, match="tensor 'p' is produced twice"):
    onnx_port.read_model(_save(graph, tmp_path / 'm2.onnx'))


def test_truncated_and_foreign_files_are_refused(tmp_path, tiny):
  data = open(tiny, 'rb').read()
  for name, content in (('half.onnx', data[:len(data) // 2]),
                        ('noise.onnx', os.urandom(4096))):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match='truncated'):
      loading.read(str(tmp_path / name), loading.ENCODER)


def test_two_image_inputs_are_refused(tmp_path):
  graph = _encoder_graph()
  graph.input.append(helper.make_tensor_value_info('other', FLOAT, [1, 3]))
  with pytest.raises(CheckpointError, match=r"2 non-constant inputs "
                     r"\['data', 'other'\]"):
    onnx_port.read_model(_save(graph, tmp_path / 'm.onnx'))


def test_unsupported_op_names_op_node_file_and_the_black_box(tmp_path):
  graph = _encoder_graph(extra_nodes=(
      helper.make_node('Selu', ['p'], ['s'], name='the_selu'),
      helper.make_node('Add', ['p', 's'], ['q'], name='sum')))
  path = _save(graph, tmp_path / 'selu.onnx')
  with pytest.raises(onnx_port.UnsupportedOpError) as info:
    loading.load_encoder(path)
  message = str(info.value)
  assert "Selu (node 'the_selu')" in message and path in message
  assert f'--encoder blackbox:{path}' in message
  # Where no gradients are needed, it runs as a black box instead.
  encoder = loading.load_encoder(path, allow_blackbox=True)
  assert isinstance(encoder, protocols.BlackBoxEncoder)
  assert not encoder.differentiable and 'Selu' in encoder.why_blackbox
  assert encoder.embed(_images()).shape == (3, 16)


# --- input conventions --------------------------------------------------------


@pytest.mark.parametrize('size,layout,preset', [
    (112, 'NCHW', 'arcface'), (160, 'NHWC', 'facenet'),
    (96, 'NCHW', 'arcface')])
def test_preset_is_guessed_from_the_input_and_said(tmp_path, size, layout,
                                                   preset):
  path = _save(_encoder_graph(size, layout=layout), tmp_path / 'm.onnx')
  encoder = loading.load_encoder(path)
  assert encoder.config['layout'] == layout
  assert encoder.config['input_preset'] == preset
  assert f"input convention '{preset}'" in encoder.source
  assert encoder.spec.size == (size, size)  # the graph's size wins
  want = onnx_graph.PRESETS[preset]
  assert encoder.spec.mean == want['mean'] and encoder.spec.std == want['std']
  if size == 96:
    assert 'matches no preset' in encoder.source


def test_nhwc_graph_matches_onnxruntime(tmp_path):
  path = _save(_encoder_graph(160, layout='NHWC'), tmp_path / 'm.onnx')
  white = loading.load_encoder(path)
  black = loading.load_encoder(f'blackbox:{path}')
  images = _images()
  chex.assert_trees_all_close(white.embed(images), black.embed(images),
                              rtol=1e-4, atol=1e-5)


def test_overrides_replace_the_guess(tiny):
  encoder = loading.load_encoder(tiny, input_overrides={
      'preset': 'sface', 'channel_order': 'BGR', 'mean': (), 'size': ''})
  assert encoder.config['input_preset'] == 'sface'
  assert encoder.spec.mean == (0.0,) * 3 and encoder.spec.std == (1.0,) * 3
  assert encoder.spec.channel_order == 'BGR'
  assert 'set by encoder_input.preset' in encoder.source
  assert 'overridden: channel_order' in encoder.source
  moved = loading.load_encoder(tiny, input_overrides={
      'crop': (0.0, 0.0, 1.0, 1.0), 'std': (128.0, 128.0, 128.0)})
  assert moved.spec.crop == (0.0, 0.0, 1.0, 1.0)
  assert moved.spec.std == (128.0,) * 3 and moved.spec.mean == (127.5,) * 3
  # The descriptors follow the convention.
  images = _images()
  assert not np.allclose(encoder.embed(images), moved.embed(images))


def test_bad_overrides_are_clear(tiny):
  with pytest.raises(ValueError, match="unknown encoder_input.preset 'vgg'"):
    loading.load_encoder(tiny, input_overrides={'preset': 'vgg'})
  with pytest.raises(ValueError, match=r"unknown encoder_input field\(s\) "
                     r"\['gamma'\]"):
    loading.load_encoder(tiny, input_overrides={'gamma': 2})
  with pytest.raises(ValueError, match='std must be finite and non-zero'):
    loading.load_encoder(tiny, input_overrides={'std': (0, 1, 1)})
  # A size the graph does not take: refused at load, naming both.
  with pytest.raises(ValueError, match=r'expects \[B, 112, 112, 3\].*got '
                     r'shape \(1, 96, 96, 3\)'):
    loading.load_encoder(tiny, input_overrides={'size': (96, 96)})
  with pytest.raises(ValueError, match='applies to ONNX encoders; the '
                     'mobilefacenet encoder has a fixed input'):
    loading.load_encoder('mobilefacenet', input_overrides={'preset': 'x'})


# --- the black-box mode ---------------------------------------------------------


def test_black_box_embeds_like_the_white_box(tiny):
  white = loading.load_encoder(tiny)
  black = loading.load_encoder(f'blackbox:{tiny}')
  assert white.differentiable and not black.differentiable
  assert black.dim == white.dim == 16 and black.spec == white.spec
  assert 'requested' in black.why_blackbox and 'ONNX Runtime' in black.source
  images = _images(5)
  want = white.embed(images, batch_size=2)
  chex.assert_trees_all_close(black.embed(images, batch_size=2), want,
                              rtol=1e-4, atol=1e-5)
  # Inside jit and vmap (the score-only attacker's calls), no gradients.
  query = black.query_fn()
  got = jax.jit(jax.vmap(query, in_axes=(None, 0)))(black.variables,
                                                     jnp.asarray(images))
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(protocols.NotDifferentiableError,
                     match='is a black box.*no differentiable'):
    black.descriptor_fn()
  with pytest.raises(ValueError, match='Pure callbacks do not support JVP'):
    jax.grad(lambda im: query({}, im).sum())(jnp.asarray(images[0]))
  with pytest.raises(ValueError, match=r'images \[1\] hold NaN'):
    black.embed(np.where(np.arange(5)[:, None, None, None] == 1, np.nan,
                         images))


def test_white_box_query_fn_is_its_descriptor_fn(tiny):
  white = loading.load_encoder(tiny)
  image = jnp.asarray(_images(1)[0])
  chex.assert_trees_all_close(
      white.query_fn()(white.variables, image),
      white.descriptor_fn()(white.variables, image), rtol=0, atol=0)
  x = preprocess.to_encoder_input(image[None], white.spec)
  grad = jax.grad(lambda v: white.module.apply(white.variables, v)[0].sum())(
      x)
  assert np.abs(grad).max() > 0


def test_missing_onnx_package_is_a_clear_message(tiny, monkeypatch):
  monkeypatch.setitem(sys.modules, 'onnx', None)
  with pytest.raises(ImportError, match='reading .onnx files needs the onnx '
                     'package.*pip install onnx'):
    loading.read(tiny, loading.ENCODER)
  monkeypatch.setitem(sys.modules, 'onnx', onnx)
  monkeypatch.setitem(sys.modules, 'onnxruntime', None)
  with pytest.raises(ImportError, match='black-box.*needs the onnxruntime'):
    loading.load_encoder(f'blackbox:{tiny}')


def test_shape_from_image_values_is_a_clear_error(tmp_path):
  # Reshape's shape must be static under jit; here it depends on pixels.
  graph = _encoder_graph(extra_nodes=(
      helper.make_node('ReduceMax', ['p'], ['m'], keepdims=0),
      helper.make_node('Cast', ['m'], ['n'], to=onnx.TensorProto.INT64),
      helper.make_node('Unsqueeze', ['n'], ['s'], axes=[0]),
      helper.make_node('Reshape', ['p', 's'], ['flat'], name='the_reshape')))
  with pytest.raises(onnx_graph.GraphError, match=r"node 'the_reshape' "
                     r'\(Reshape\): its shape must be known when the graph is '
                     'traced.*depends on the image values'):
    loading.load_encoder(_save(graph, tmp_path / 'm.onnx'))
