"""TF.js file reading (porting.tfjs): weights manifests, graph models, errors.

Small manifests and graphs are written here in the TF.js layouts; the real
files are covered by tests/test_faceapi.py, test_mobilefacenet.py and
test_gear.py.
"""

import base64
import dataclasses
import json

import numpy as np
import pytest

from id2image_jax.porting import tfjs
from id2image_jax.porting.rules import PortingError


def _write_manifest(tmp_path, weights, blobs, *, name='m', shards=1):
  """A weights manifest over `blobs` (bytes), split into `shards` files."""
  data = b''.join(blobs)
  cut = [round(i * len(data) / shards) for i in range(shards + 1)]
  paths = []
  for i in range(shards):
    path = f'{name}-shard{i + 1}of{shards}.bin'
    (tmp_path / path).write_bytes(data[cut[i]:cut[i + 1]])
    paths.append(path)
  manifest = tmp_path / f'{name}-weights_manifest.json'
  manifest.write_text(json.dumps([{'paths': paths, 'weights': weights}]))
  return manifest


def test_raw_and_quantized_dtypes_decode_as_tfjs_does(tmp_path):
  rng = np.random.default_rng(0)
  f32 = rng.normal(size=(2, 3)).astype('<f4')
  i32 = np.array([[-4, 7]], '<i4')
  flags = np.array([1, 0, 1], 'u1')
  codes8 = np.array([0, 1, 255, 128], 'u1')
  codes16 = np.array([0, 65535, 300], '<u2')
  half = np.array([0.5, -2.0, 65504.0, 6e-8], '<f2')
  codes_int = np.array([0, 3, 5], 'u1')
  weights = [
      {'name': 'a/f32', 'shape': [2, 3], 'dtype': 'float32'},
      {'name': 'b/i32', 'shape': [1, 2], 'dtype': 'int32'},
      {'name': 'c/bool', 'shape': [3], 'dtype': 'bool'},
      {'name': 'd/u8', 'shape': [2, 2], 'dtype': 'float32',
       'quantization': {'dtype': 'uint8', 'scale': 0.01, 'min': -1.2}},
      {'name': 'e/u16', 'shape': [3], 'dtype': 'float32',
       'quantization': {'dtype': 'uint16', 'scale': 1e-4, 'min': 0.5}},
      {'name': 'f/f16', 'shape': [4], 'dtype': 'float32',
       'quantization': {'dtype': 'float16'}},
      {'name': 'g/int', 'shape': [3], 'dtype': 'int32',
       'quantization': {'dtype': 'uint8', 'scale': 0.5, 'min': 0.0}},
  ]
  blobs = [a.tobytes() for a in (f32, i32, flags, codes8, codes16, half,
                                 codes_int)]
  # Three shards that split tensors across files: offsets run on.
  got = tfjs.read_weights_manifest(
      _write_manifest(tmp_path, weights, blobs, shards=3))
  assert list(got) == [w['name'] for w in weights]
  np.testing.assert_array_equal(got['a/f32'], f32)
  assert got['b/i32'].dtype == np.int32 and got['b/i32'].tolist() == [[-4, 7]]
  assert got['c/bool'].tolist() == [True, False, True]
  # code * scale + min in float64, stored as float32 (tfjs-core).
  np.testing.assert_array_equal(
      got['d/u8'], (codes8 * 0.01 - 1.2).astype(np.float32).reshape(2, 2))
  np.testing.assert_array_equal(got['e/u16'],
                                (codes16 * 1e-4 + 0.5).astype(np.float32))
  np.testing.assert_array_equal(got['f/f16'], half.astype(np.float32))
  # int32 dequantization rounds halves up (Math.round): 1.5 -> 2, 2.5 -> 3.
  assert got['g/int'].tolist() == [0, 2, 3]
  assert all(v.flags.writeable for v in got.values())


@pytest.mark.parametrize('edit,message', [
    ('truncate', r"weight 'b/w' needs bytes 16\.\.40 .* truncated"),
    ('extra', r'hold 44 bytes, the weights use 40'),
    ('dtype', r"weight 'b/w': unknown dtype 'float64'"),
    ('quant', r"weight 'b/w': uint8 quantization lacks scale and min"),
    ('qdtype', r"weight 'b/w': unknown quantization dtype 'int4'"),
    ('string', r"weight 'b/w': string weights are not supported"),
    ('f16int', r"weight 'b/w': float16 quantization needs dtype float32"),
    ('twice', r"weight 'a/w' appears twice"),
    ('shard', r'weight shard m-shard1of1\.bin not found'),
])
def test_malformed_manifests_name_the_tensor_or_file(tmp_path, edit,
                                                      message):
  a = np.zeros(4, '<f4')
  b = np.ones(6, '<f4')
  weights = [{'name': 'a/w', 'shape': [4], 'dtype': 'float32'},
             {'name': 'b/w', 'shape': [6], 'dtype': 'float32'}]
  blobs = [a.tobytes(), b.tobytes()]
  if edit == 'truncate':
    blobs[1] = blobs[1][:-4]
  elif edit == 'extra':
    blobs.append(b'\0' * 4)
  elif edit == 'dtype':
    weights[1]['dtype'] = 'float64'
  elif edit == 'quant':
    weights[1]['quantization'] = {'dtype': 'uint8'}
    blobs[1] = b'\0' * 6
  elif edit == 'qdtype':
    weights[1]['quantization'] = {'dtype': 'int4'}
  elif edit == 'string':
    weights[1]['dtype'] = 'string'
  elif edit == 'f16int':
    weights[1]['dtype'] = 'int32'
    weights[1]['quantization'] = {'dtype': 'float16'}
    blobs[1] = b'\0' * 12
  elif edit == 'twice':
    weights[1]['name'] = 'a/w'
  manifest = _write_manifest(tmp_path, weights, blobs)
  if edit == 'shard':
    (tmp_path / 'm-shard1of1.bin').unlink()
  with pytest.raises(tfjs.TfjsError, match=message):
    tfjs.read_weights_manifest(manifest)


def test_non_json_and_wrong_layout_are_refused(tmp_path):
  bad = tmp_path / 'x.json'
  bad.write_bytes(b'\x89PNG')
  with pytest.raises(tfjs.TfjsError, match='not JSON'):
    tfjs.read_weights_manifest(bad)
  graph = tmp_path / 'model.json'
  graph.write_text(json.dumps({'modelTopology': {'node': []},
                               'weightsManifest': []}))
  with pytest.raises(tfjs.TfjsError, match='is a graph model'):
    tfjs.read_weights_manifest(graph)
  with pytest.raises(tfjs.TfjsError, match='no modelTopology'):
    tfjs.read_graph_model(_write_manifest(tmp_path, [], []))
  with pytest.raises(FileNotFoundError):
    tfjs.read_graph_model(tmp_path / 'none.json')


def _attr_s(text):
  return {'s': base64.b64encode(text.encode()).decode()}


def _prelu_graph(tmp_path, *, fused_relu=False, extra_const=False):
  """input -> conv -> PReLU (decomposed) -> output, as TF.js writes it."""
  w = np.arange(3 * 3 * 3 * 4, dtype='<f4').reshape(3, 3, 3, 4) / 100
  bias = np.linspace(-1, 1, 4).astype('<f4')
  c = np.array([0.1, 0.2, 0.3, 0.4], '<f4')
  conv_attr = {'strides': {'list': {'i': ['1', '2', '2', '1']}},
               'padding': _attr_s('SAME'),
               'fused_ops': {'list': {'s': [
                   base64.b64encode(b'BiasAdd').decode()] + (
                       [base64.b64encode(b'Relu').decode()]
                       if fused_relu else [])}}}
  nodes = [
      {'name': 'x', 'op': 'Placeholder',
       'attr': {'shape': {'shape': {'dim': [{'size': '-1'}, {'size': '8'},
                                            {'size': '8'}, {'size': '3'}]}}}},
      {'name': 'w', 'op': 'Const'}, {'name': 'b', 'op': 'Const'},
      {'name': 'c', 'op': 'Const'},
      {'name': 'conv', 'op': '_FusedConv2D', 'input': ['x', 'w', 'b'],
       'attr': conv_attr},
      {'name': 'abs', 'op': 'Abs', 'input': ['conv']},
      {'name': 'sub', 'op': 'Sub', 'input': ['conv', 'abs']},
      {'name': 'mul', 'op': 'Mul', 'input': ['sub', 'c']},
      {'name': 'out', 'op': 'AddV2', 'input': ['conv', 'mul']},
      # An inline scalar, as small constants are sometimes stored.
      {'name': 'k', 'op': 'Const', 'attr': {'value': {'tensor': {
          'dtype': 'DT_FLOAT', 'tensorShape': {}, 'floatVal': [2.0]}}}},
      {'name': 'scaled', 'op': 'Mul', 'input': ['out', 'k']},
  ]
  if not fused_relu:
    nodes.insert(5, {'name': 'relu', 'op': 'Relu', 'input': ['conv']})
    nodes[-3]['input'] = ['relu', 'mul']
  weights = [{'name': 'w', 'shape': list(w.shape), 'dtype': 'float32'},
             {'name': 'b', 'shape': [4], 'dtype': 'float32'},
             {'name': 'c', 'shape': [4], 'dtype': 'float32'}]
  blobs = [w.tobytes(), bias.tobytes(), c.tobytes()]
  if extra_const:
    nodes.append({'name': 'lonely', 'op': 'Const'})
    weights.append({'name': 'lonely', 'shape': [1], 'dtype': 'float32'})
    blobs.append(np.zeros(1, '<f4').tobytes())
  (tmp_path / 'g.bin').write_bytes(b''.join(blobs))
  path = tmp_path / 'model.json'
  path.write_text(json.dumps({
      'format': 'graph-model', 'modelTopology': {'node': nodes},
      'weightsManifest': [{'paths': ['g.bin'], 'weights': weights}]}))
  return path, {'w': w, 'b': bias, 'c': c}


def test_graph_model_nodes_attributes_and_const_roles(tmp_path):
  path, arrays = _prelu_graph(tmp_path)
  graph = tfjs.read_graph_model(path)
  assert graph.meta['format'] == 'graph-model'
  conv = graph.nodes['conv']
  assert tfjs.conv_attrs(conv) == {'strides': (2, 2), 'padding': 'SAME',
                                   'dilations': (1, 1),
                                   'fused_ops': ('BiasAdd',)}
  assert graph.nodes['x'].attrs['shape'] == [-1, 8, 8, 3]
  roles = graph.const_roles()
  assert set(roles) == {'conv:filter', 'conv:bias', 'mul:y', 'scaled:y'}
  np.testing.assert_array_equal(roles['conv:filter'], arrays['w'])
  np.testing.assert_array_equal(roles['mul:y'], arrays['c'])
  assert float(roles['scaled:y']) == 2.0  # the inline constant
  assert [n.name for n in graph.consumers()['conv']] == ['relu', 'abs', 'sub']
  with pytest.raises(tfjs.TfjsError, match=r'2 node\(s\) with ops the toy '
                     r'port does not reproduce: mul \(Mul\), scaled \(Mul\)'):
    tfjs.check_ops(graph, ['Placeholder', 'Const', '_FusedConv2D', 'Relu',
                           'Abs', 'Sub', 'AddV2'], model='toy')


@pytest.mark.parametrize('fused_relu', [False, True])
def test_find_prelus_sees_the_pattern_and_whether_it_is_inert(tmp_path,
                                                               fused_relu):
  path, _ = _prelu_graph(tmp_path, fused_relu=fused_relu)
  (match,) = tfjs.find_prelus(tfjs.read_graph_model(path))
  assert match.input == 'conv' and match.output == 'out'
  assert match.alpha_key == 'mul:y'
  assert match.on_relu is fused_relu
  assert ('relu' in match.nodes) is not fused_relu


def test_graph_errors_name_the_const_or_node(tmp_path):
  path, _ = _prelu_graph(tmp_path, extra_const=True)
  graph = tfjs.read_graph_model(path)
  with pytest.raises(tfjs.TfjsError, match=r'1 Const\(s\) feed no node: '
                     'lonely'):
    graph.const_roles()
  missing = dataclasses.replace(
      graph, weights={k: v for k, v in graph.weights.items() if k != 'c'})
  with pytest.raises(tfjs.TfjsError, match="Const 'c' has no weights"):
    missing.const_roles()
  model = json.loads(path.read_text())
  model['modelTopology']['node'][4]['attr']['fused_ops']['list']['s'].append(
      base64.b64encode(b'FusedBatchNorm').decode())
  path.write_text(json.dumps(model))
  with pytest.raises(tfjs.TfjsError, match="node 'conv'.*fuses "
                     "'FusedBatchNorm'"):
    tfjs.read_graph_model(path).const_roles()
  model['modelTopology']['node'].append({'name': 'q', 'op': 'Const'})
  path.write_text(json.dumps(model))
  with pytest.raises(tfjs.TfjsError, match="Const 'q' has no weights in the "
                     'manifest and no inline value'):
    tfjs.read_graph_model(path)


# --------------------------------------------------------------------------
# The checks the graph porters share.


def test_require_node_and_image_input_size(tmp_path):
  path, _ = _prelu_graph(tmp_path)
  graph = tfjs.read_graph_model(path)
  assert tfjs.require_node(graph, 'conv', family='a toy graph').op == (
      '_FusedConv2D')
  with pytest.raises(PortingError, match=r"no node 'conv9': not a toy "
                     'graph'):
    tfjs.require_node(graph, 'conv9', family='a toy graph')
  assert tfjs.image_input_size(graph) == 8
  two = dataclasses.replace(graph, nodes=dict(
      graph.nodes, y=dataclasses.replace(graph.nodes['x'], name='y')))
  with pytest.raises(PortingError, match=r"expected one \[-1, S, S, 3\] "
                     r"input, found \[\('x', .*\('y'"):
    tfjs.image_input_size(two)


def test_check_covered_names_problems_and_stray_nodes(tmp_path):
  path, _ = _prelu_graph(tmp_path)
  graph = tfjs.read_graph_model(path)
  everything = set(graph.nodes)
  tfjs.check_covered(graph, everything, [], model='toy')  # nothing to say
  seen = everything - {'scaled', 'k'}
  with pytest.raises(PortingError, match=r'is not the graph '
                     r'id2image_jax\.models\.toy computes:\n  conv: padding '
                     r"\n  2 node\(s\) the model does not compute: k "
                     r'\(Const\), scaled \(Mul\)'):
    tfjs.check_covered(graph, seen, ['conv: padding '], model='toy')


def test_convert_file_reads_the_default_unless_given_a_path(tmp_path):
  path, _ = _prelu_graph(tmp_path)
  calls = []

  def convert_graph(graph, *, scale):
    calls.append((graph.path, scale))
    return {'scale': scale}, {}

  def default_files():
    return {'model': path}

  assert tfjs.convert_file(None, default_files, convert_graph, scale=2) == (
      {'scale': 2}, {})
  with pytest.raises(FileNotFoundError):
    tfjs.convert_file(tmp_path / 'other.json', default_files, convert_graph,
                      scale=3)
  assert calls == [(str(path), 2)]
