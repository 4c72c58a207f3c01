"""MobileFaceNet (human-models TF.js graph): live TF.js parity, porting.

The encoder contract (tests/test_encoder_contract.py, row 'mobilefacenet')
runs the shared checks (TF.js parity of descriptor and intermediates on
random inputs, bfloat16, jit / vmap / retrace, gradients, bad inputs,
mismatched constants, loading). Here: parity on a real face, the trained
slopes the graph leaves inert, the config, and the graph walk.

The reference is TF.js executing the original graph (tf.io.fromMemory +
GraphModel.execute, pure-JS CPU backend) on the same [0, 1] input.

Tolerance table (`tfjs_parity.assert_close`):

  compute   tensor                              rtol   atol_frac  measured
  float32   embeddings (L2-normalised)          1e-4   1e-5       6e-7
  float32   SpatialSqueeze (before the L2)      1e-4   1e-5       6e-7
  bfloat16  SpatialSqueeze, |err| / max|ref|     0.03              8e-3
  bfloat16  cosine of (image 0 - image 1) of     > 0.95            0.994
            SpatialSqueeze to TF.js float32's

A PReLU slope not doubled, a dropped depthwise ReLU or the wrong 'SAME'
padding side each move the embedding by > 1e-2.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tfjs_parity

from id2image_jax.models import mobilefacenet
from id2image_jax.porting import PortingError
from id2image_jax.porting import mobilefacenet as pmfn
from id2image_jax.porting import tfjs
from ports import tfjs_reference

F32 = {'rtol': 1e-4, 'atol_frac': 1e-5}
BF16_REL = 0.03
BF16_MIN_DIFF_COSINE = 0.95
FACE_BOX = (30, 140, 230, 340)
SQUEEZE = 'MobileFaceNet/Logits/SpatialSqueeze'


@pytest.fixture(scope='module')
def graph():
  return tfjs.read_graph_model(pmfn.default_files()['model'])


@pytest.fixture(scope='module')
def ported(graph):
  return pmfn.convert_graph(graph)


@pytest.fixture(scope='module')
def inputs():
  # What input_spec makes of [-1, 1] images: RGB / 255.
  return tfjs_parity.faces(112, FACE_BOX) / 255.0


@pytest.fixture(scope='module')
def reference(inputs):
  tfjs_parity.require_node()
  out, _ = tfjs_reference.graph(pmfn.default_files()['model'], inputs,
                                ['embeddings', SQUEEZE])
  return out


def test_float32_parity_with_tfjs(ported, inputs, reference):
  config, variables = ported
  emb, inter = jax.jit(mobilefacenet.build(config).apply)(variables, inputs)
  assert emb.shape == (2, 192) and emb.dtype == jnp.float32
  tfjs_parity.assert_close(emb, reference['embeddings'], what='embeddings',
                           **F32)
  tfjs_parity.assert_close(inter['unnormalised'], reference[SQUEEZE],
                           what='SpatialSqueeze', **F32)
  # L2-normalised as the graph does. Guard against vacuity: the face and
  # the noise image differ before the normalisation. (After it they are
  # close, cosine ~0.9997: a large constant part dominates this model's
  # output, see docs/face_models.md.)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  unnormalised = reference[SQUEEZE]
  assert np.linalg.norm(unnormalised[0] - unnormalised[1]) > 5.0


def test_bfloat16_close_to_tfjs_float32(ported, inputs, reference):
  config, variables = ported
  model = mobilefacenet.build(config, dtype=jnp.bfloat16)
  emb, inter = jax.jit(model.apply)(variables, inputs)
  assert emb.dtype == jnp.bfloat16
  got = np.asarray(inter['unnormalised'], np.float32)
  want = reference[SQUEEZE]
  assert np.abs(got - want).max() <= BF16_REL * np.abs(want).max()
  # The output is mostly a constant vector, so compare what the input
  # changes: the difference between the two images' outputs.
  d, w = got[0] - got[1], want[0] - want[1]
  cosine = d @ w / (np.linalg.norm(d) * np.linalg.norm(w))
  assert cosine > BF16_MIN_DIFF_COSINE, cosine


def test_as_trained_applies_the_depthwise_slopes(graph, ported, inputs):
  config, variables = ported
  trained_config, trained = pmfn.convert_graph(graph, as_trained=True)
  assert config['depthwise_activation'] == 'relu'
  assert trained_config['depthwise_activation'] == 'prelu'
  slopes = trained['params']['Conv2d_4_InvResBlock_2']['SeparableConv2d'][
      'prelu']['alpha']
  np.testing.assert_array_equal(slopes, 2 * graph.weights[
      'MobileFaceNet/MobileFaceNet/Conv2d_4_InvResBlock_2/SeparableConv2d/'
      'mul'])
  a, _ = jax.jit(mobilefacenet.build(config).apply)(variables, inputs[:1])
  b, _ = jax.jit(mobilefacenet.build(trained_config).apply)(trained,
                                                            inputs[:1])
  # Same file, another network: the embeddings differ (cosine ~0.62).
  cosine = float(jnp.dot(a[0], b[0]))
  assert 0.2 < cosine < 0.95, cosine


def test_config_spec_and_unknown_variant():
  config = mobilefacenet.get_config()
  assert config['embedding'] == mobilefacenet.DESCRIPTOR_DIM == 192
  spec = mobilefacenet.input_spec(config)
  assert spec.size == (112, 112) and spec.std == (255.0,) * 3
  assert spec.mean == (0.0,) * 3 and spec.crop == mobilefacenet.FFHQ_CROP
  # Human's crop is square in the photo, hence in the frame.
  top, left, bottom, right = spec.crop
  assert abs((bottom - top) - (right - left)) < 0.01
  with pytest.raises(ValueError, match='unknown MobileFaceNet variant'):
    mobilefacenet.get_config('sirius')


# --- porting: the graph walk and the rule table ----------------------------


def test_infer_config_reads_the_graph(graph):
  config = pmfn.infer_config(graph)
  want = mobilefacenet.get_config()
  assert {k: config[k] for k in ('stages', 'stem', 'last', 'embedding',
                                 'gdc_kernel', 'depthwise_activation')} == {
                                     k: want[k] for k in (
                                         'stages', 'stem', 'last',
                                         'embedding', 'gdc_kernel',
                                         'depthwise_activation')}
  assert config['l2_epsilon'] == pytest.approx(1e-10)


def _edit(graph, name, **attrs):
  node = graph.nodes[name]
  nodes = dict(graph.nodes)
  nodes[name] = dataclasses.replace(node, **attrs)
  return dataclasses.replace(graph, nodes=nodes)


_MFN = 'MobileFaceNet/MobileFaceNet/'


def test_graph_walk_names_the_node_that_differs(graph):
  dw = _MFN + 'Conv2d_2_InvResBlock_1/SeparableConv2d/depthwise'
  strided = _edit(graph, dw, attrs=dict(graph.nodes[dw].attrs,
                                        strides=[1, 2, 2, 1]))
  with pytest.raises(PortingError, match=rf'{dw}: .*strides.: \(2, 2\)'):
    pmfn.convert_graph(strided)
  logits = 'MobileFaceNet/Logits/SeparableConv2d/depthwise'
  padded = _edit(graph, logits, attrs=dict(graph.nodes[logits].attrs,
                                           padding='SAME'))
  with pytest.raises(PortingError, match=rf'{logits}: .*SAME'):
    pmfn.convert_graph(padded)
  add = _MFN + 'Conv2d_4_InvResBlock_3/Add'
  rewired = _edit(graph, add, inputs=graph.nodes[add].inputs[::-1])
  with pytest.raises(PortingError, match=rf'{add}: Add'):
    pmfn.convert_graph(rewired)
  # An op the port does not reproduce.
  mul = _MFN + 'Conv2d_7/add'
  no_prelu = _edit(graph, mul, op='Tanh')
  with pytest.raises(tfjs.TfjsError, match=rf'{mul} \(Tanh\)'):
    pmfn.convert_graph(no_prelu)


def test_unaccounted_nodes_and_consts_are_named(graph):
  nodes = dict(graph.nodes)
  nodes['stray'] = tfjs.Node('stray', 'Relu', (_MFN + 'Conv2d_7/add',), {})
  with pytest.raises(PortingError, match=r'does not compute: stray \(Relu\)'):
    pmfn.convert_graph(dataclasses.replace(graph, nodes=nodes))
  nodes = dict(graph.nodes)
  nodes['orphan'] = tfjs.Node('orphan', 'Const', (), {})
  weights = dict(graph.weights, orphan=np.zeros(3, np.float32))
  with pytest.raises(tfjs.TfjsError, match='feed no node: orphan'):
    pmfn.convert_graph(dataclasses.replace(graph, nodes=nodes,
                                           weights=weights))


def test_wrong_weight_shapes_name_the_const(graph):
  name = _MFN + 'Conv2d_3_InvResBlock_0/Conv_1/Conv2D_bn_offset'
  weights = dict(graph.weights)
  weights[name] = np.zeros(127, np.float32)
  with pytest.raises(PortingError, match=r'Conv2d_3_InvResBlock_0/Conv_1/'
                     r'BatchNorm/FusedBatchNorm:bias \(127,\) -> params/'
                     r'Conv2d_3_InvResBlock_0/Conv_1/conv/bias'):
    pmfn.convert_graph(dataclasses.replace(graph, weights=weights))


def test_not_this_graph_is_refused(tmp_path):
  model = tmp_path / 'model.json'
  model.write_text('{"modelTopology": {"node": [{"name": "x", "op": '
                   '"Placeholder"}]}, "weightsManifest": []}')
  with pytest.raises(PortingError, match='not the human-models '
                     'MobileFaceNet graph'):
    pmfn.convert(model)
