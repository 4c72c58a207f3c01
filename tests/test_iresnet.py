"""ArcFace IResNet: parity with a live arcface_torch-layout reference, porting.

Tolerance table (elementwise ``|jax - torch| <= atol + rtol * |torch|``;
activations are O(1..10) with random weights and random BN running stats):

  compute   tensors                       rtol    atol    measured max |err|
  float32   descriptor, intermediates     1e-5    1e-4    4e-6 r18, 1.2e-5 r100
  bfloat16  descriptor, fc (r18)          5e-2    2.5e-1  3e-2 r18 (8e-2 r100)
  bfloat16  cosine to torch float32       > 0.999         0.99998 r18

The float32 tolerance is tight enough to catch BN eps 2e-5 instead of
arcface_torch's 1e-5 (checked by hand: all three depths then fail).
bfloat16 keeps 8 mantissa bits: ~1% relative error after 20-100 layers.
"""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_parity import torch_outputs

from id2image_jax import preprocess
from id2image_jax.models import iresnet
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import PortingError
from id2image_jax.porting import iresnet as piresnet

F32_TOL = {'rtol': 1e-5, 'atol': 1e-4}
BF16_TOL = {'rtol': 5e-2, 'atol': 2.5e-1}
BF16_MIN_COSINE = 0.999


def _torch_ref():
  pytest.importorskip('torch')
  from ports import iresnet_reference  # pylint: disable=g-import-not-at-top
  return iresnet_reference


def _images(batch, seed=0):
  return np.random.default_rng(seed).uniform(
      -1, 1, (batch, 112, 112, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def ported(tmp_path_factory):
  """variant -> (config, variables, images, torch descriptor, torch inter)."""
  cache = {}

  def get(variant, batch=2):
    if variant not in cache:
      ref = _torch_ref()
      path = str(tmp_path_factory.mktemp(variant) / 'backbone.pth')
      model = ref.write_checkpoint(path, {'variant': variant}, seed=1)
      config, variables = piresnet.convert(path)
      x = _images(batch)
      cache[variant] = (config, variables, x) + torch_outputs(model, x)
    return cache[variant]
  return get


@pytest.mark.torch
@pytest.mark.parametrize('variant,batch', [('r18', 2), ('r50', 2),
                                           ('r100', 1)])
def test_float32_parity_with_torch(ported, variant, batch):
  config, variables, x, want, want_inter = ported(variant, batch)
  assert config == {'variant': variant,
                    'layers': list(iresnet.VARIANTS[variant]),
                    'num_features': 512, 'use_fc': True,
                    'use_features': True}
  json.dumps(config)  # stored in checkpoint metadata
  got, inter = jax.jit(iresnet.build(config).apply)(variables, x)
  assert got.shape == (batch, 512) and got.dtype == jnp.float32
  assert set(inter) == {'stem', 'layer1', 'layer2', 'layer3', 'layer4',
                        'flatten', 'fc'}
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, want_inter, **F32_TOL)
  # Guard the tolerance against vacuity: outputs are O(1), not ~0.
  assert np.abs(want).mean() > 0.3


@pytest.mark.torch
def test_bfloat16_close_to_torch_float32(ported):
  config, variables, x, want, want_inter = ported('r18')
  model = iresnet.build(config, dtype=jnp.bfloat16)
  got, inter = jax.jit(model.apply)(variables, x)
  assert got.dtype == jnp.bfloat16
  got = np.asarray(got, np.float32)
  chex.assert_trees_all_close(got, want, **BF16_TOL)
  chex.assert_trees_all_close(np.asarray(inter['fc'], np.float32),
                              want_inter['fc'], **BF16_TOL)
  cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) *
                                     np.linalg.norm(want, axis=-1))
  assert np.all(cosine > BF16_MIN_COSINE), cosine
  # Parameters stay float32 whatever the compute dtype.
  abstract = jax.eval_shape(model.init, jax.random.key(0), x[:1])
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))


@pytest.mark.torch
def test_jit_vmap_and_no_retrace(ported):
  config, variables, x, _, _ = ported('r18')
  model = iresnet.build(config)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def embed(v, images):
    return model.apply(v, images)[0]

  batched = embed(variables, x)
  embed(variables, x[::-1])  # new values, same shapes: no retrace
  per_image = jax.jit(jax.vmap(lambda im: model.apply(variables, im)[0]))(x)
  chex.assert_trees_all_close(per_image, batched, rtol=1e-5, atol=1e-5)
  # Two leading batch dims give the same answer as one.
  nested, _ = jax.jit(model.apply)(variables, x.reshape(1, 2, 112, 112, 3))
  chex.assert_trees_all_close(nested[0], batched, rtol=1e-5, atol=1e-5)


def _tiny_model():
  # One block per layer: same code paths as the real depths, cheaper to
  # trace eagerly.
  return iresnet.build(iresnet.get_config('r18', layers=[1, 1, 1, 1]))


def _random_variables(model, seed=0):
  # numpy instead of model.init: compiling init costs seconds on CPU.
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 112, 112, 3),
                                                 jnp.float32))
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'var' in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 100
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_no_jit_matches_jit():
  model = _tiny_model()
  x = _images(1, seed=3)
  variables = _random_variables(model)
  eager, _ = model.apply(variables, x)
  jitted, _ = jax.jit(model.apply)(variables, x)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_the_input():
  model = _tiny_model()
  x = _images(1, seed=4)
  variables = _random_variables(model)
  grad = jax.jit(jax.grad(lambda im: model.apply(variables, im)[0].sum()))(x)
  assert grad.shape == x.shape and np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0


@pytest.mark.parametrize('shape', [(1, 128, 128, 3), (1, 112, 112, 1),
                                   (1, 3, 112, 112), (112, 3)])
def test_wrong_input_shape_is_a_clear_error(shape):
  model = iresnet.build(iresnet.get_config('r18'))
  with pytest.raises(ValueError, match=r'112, 112, 3\] RGB.*got shape'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_integer_input_is_refused():
  model = iresnet.build(iresnet.get_config('r18'))
  with pytest.raises(ValueError, match='float'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.uint8))


def test_variant_table_and_build():
  assert iresnet.VARIANTS['r50'] == (3, 4, 14, 3)
  assert iresnet.VARIANTS['r100'] == (3, 13, 30, 3)
  model = iresnet.build({'variant': 'r34'})
  assert model.layers == (3, 4, 6, 3) and model.num_features == 512
  with pytest.raises(ValueError, match='unknown IResNet variant'):
    iresnet.get_config('r42')
  with pytest.raises(ValueError, match='unknown IResNet config'):
    iresnet.get_config('r18', depth=18)
  cfg = iresnet.get_config('r18', num_features=128, use_features=False)
  abstract = jax.eval_shape(
      iresnet.build(cfg).init, jax.random.key(0),
      jax.ShapeDtypeStruct((2, 112, 112, 3), jnp.float32))
  assert 'features' not in abstract['params']
  assert abstract['params']['fc']['kernel'].shape == (25088, 128)


def test_input_spec_crops_the_psp_box():
  spec = iresnet.input_spec(iresnet.get_config())
  assert spec.size == (112, 112) and spec.channel_order == 'RGB'
  # eladrich/pixel2style2pixel criteria/id_loss.py: x[:, :, 35:223, 32:220]
  # of a 256x256 image.
  assert preprocess.crop_pixels(spec, 256, 256) == (35, 32, 223, 220)
  assert preprocess.crop_pixels(spec, 1024, 1024) == (140, 128, 892, 880)
  # (pixel / 255 - 0.5) / 0.5: black -> -1, white -> +1.
  images = jnp.stack([-jnp.ones((256, 256, 3)), jnp.ones((256, 256, 3))])
  out = preprocess.to_encoder_input(images, spec)
  assert out.shape == (2, 112, 112, 3)
  np.testing.assert_allclose(out[0], -1.0, atol=1e-4)
  np.testing.assert_allclose(out[1], 1.0, atol=1e-4)


# --- porting ---------------------------------------------------------------


def _fake_state_dict(layers, num_features=512):
  """Tiny stand-in arrays under the right keys (for config inference)."""
  config = {'layers': layers, 'use_fc': True, 'use_features': True}
  source = {k: np.zeros((1,), np.float32)
            for k in piresnet.expected_keys(config)}
  source['fc.weight'] = np.zeros((num_features, 1), np.float32)
  return source


@pytest.mark.parametrize('variant', sorted(iresnet.VARIANTS))
def test_infer_config_counts_blocks(variant):
  source = _fake_state_dict(iresnet.VARIANTS[variant], num_features=256)
  source['layer2.0.bn1.num_batches_tracked'] = np.zeros((), np.int64)
  config = piresnet.infer_config(source)
  assert config == {'variant': variant,
                    'layers': list(iresnet.VARIANTS[variant]),
                    'num_features': 256, 'use_fc': True,
                    'use_features': True}


def test_infer_config_custom_depth_and_gaps():
  assert piresnet.infer_config(
      _fake_state_dict((1, 2, 3, 1)))['variant'] == 'custom'
  source = _fake_state_dict((2, 2, 2, 2))
  for key in [k for k in source if k.startswith('layer3.1.')]:
    source[key.replace('layer3.1.', 'layer3.2.')] = source.pop(key)
  with pytest.raises(PortingError, match=r'layer3.*missing block\(s\) \[1\]'):
    piresnet.infer_config(source)


def test_irse_checkpoints_are_refused_by_name():
  source = {'input_layer.0.weight': np.zeros((64, 3, 3, 3)),
            'body.0.res_layer.0.weight': np.zeros((64,)),
            'output_layer.0.weight': np.zeros((512,))}
  with pytest.raises(PortingError, match='IR-SE.*not supported'):
    piresnet.infer_config(source)
  with pytest.raises(PortingError, match='conv1.weight'):
    piresnet.infer_config({'backbone.conv1.weight': np.zeros(1)})


@pytest.fixture(scope='module')
def r18_state(tmp_path_factory):
  ref = _torch_ref()
  path = tmp_path_factory.mktemp('sd') / 'backbone.pth'
  model = ref.write_checkpoint(str(path), {'variant': 'r18'}, seed=2)
  return path, {k: v.numpy() for k, v in model.state_dict().items()}


def _save(path, state):
  import torch  # pylint: disable=g-import-not-at-top
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
             str(path))
  return path


@pytest.mark.torch
def test_checkpoint_keys_are_the_arcface_torch_keys(r18_state):
  _, state = r18_state
  config = piresnet.infer_config(state)
  tracked = {k for k in state if k.endswith('num_batches_tracked')}
  assert set(piresnet.expected_keys(config)) == set(state) - tracked
  assert 'layer2.0.downsample.0.weight' in state
  assert 'features.running_var' in state


@pytest.mark.torch
@pytest.mark.parametrize('edit,message', [
    ('shape', r'layer2\.1\.conv1\.weight \(128, 128, 3, 1\)'),
    ('missing', r'lacks required key.*layer3\.0\.bn2\.running_var'),
    ('extra', r'match no rule: layer1\.0\.se\.weight'),
    ('fc', r'fc\.bias'),
])
def test_mismatched_checkpoint_names_the_key(r18_state, tmp_path, edit,
                                             message):
  _, state = r18_state
  state = dict(state)
  if edit == 'shape':
    state['layer2.1.conv1.weight'] = np.zeros((128, 128, 3, 1), np.float32)
  elif edit == 'missing':
    del state['layer3.0.bn2.running_var']
  elif edit == 'extra':
    state['layer1.0.se.weight'] = np.zeros((4,), np.float32)
  elif edit == 'fc':
    del state['fc.bias']
  path = _save(tmp_path / 'bad.pth', state)
  with pytest.raises(PortingError, match=message):
    piresnet.convert(path)


@pytest.mark.torch
def test_wrapped_and_prefixed_state_dicts_port(r18_state, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  path, state = r18_state
  _, want = piresnet.convert(path)
  prefixed = _save(tmp_path / 'dp.pth',
                   {f'module.{k}': v for k, v in state.items()})
  _, got = piresnet.convert(prefixed)
  chex.assert_trees_all_equal(got, want)
  wrapped = tmp_path / 'checkpoint_gpu_0.pt'
  torch.save({'state_dict_backbone': torch.load(str(path), weights_only=True),
              'state_optimizer': {'step': 3}}, str(wrapped))
  _, got = piresnet.convert(wrapped)
  chex.assert_trees_all_equal(got, want)
  # BN statistics land in batch_stats, PReLU slopes per channel.
  np.testing.assert_array_equal(
      got['batch_stats']['layer4_1']['bn3']['bn']['var'],
      state['layer4.1.bn3.running_var'])
  np.testing.assert_array_equal(got['params']['layer1_0']['prelu'][
      'negative_slope'], state['layer1.0.prelu.weight'])


@pytest.mark.torch
def test_truncated_file_is_a_checkpoint_error(r18_state, tmp_path):
  path, _ = r18_state
  data = open(path, 'rb').read()
  bad = tmp_path / 'truncated.pth'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError):
    piresnet.convert(bad)
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    piresnet.convert(os.path.join(tmp_path, 'nope.pth'))
