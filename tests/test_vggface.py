"""VGG-Face VGG-16: parity with a live vgg_face_dag-layout reference, porting.

Tolerance table (elementwise ``|jax - torch| <= atol + rtol * |torch|``;
random He-normal weights, input ``uniform(0, 255) - mean``, activations up
to ~15, half of the fc units active):

  compute   tensors                        rtol    atol    measured max |err|
  float32   fc7 descriptor, fc6, pool1-5   1e-5    2e-4    5e-5 (fc6), 3e-5
                                                           (fc7), 1e-5 (pool5)
  bfloat16  cosine to torch float32        > 0.999         0.99999
  bfloat16  fc7 descriptor                 5e-2    5e-1    1e-1

float32 errors are ~4e-6 of the largest activation: the fc6 kernel reorder
(C, H, W -> H, W, C) or a mean/channel-order slip would be off by O(1).
bfloat16 keeps 8 mantissa bits: ~1% relative error after 16 layers.

The full VGG-16 (138 M parameters, ~15 GFLOP per 224x224 image) is run once
per module at batch 1 (its random state dict ported once, in memory);
transformation, gradient and porting-error tests use a narrow VGG of
the same depth and naming so that they stay cheap.
"""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from torch_parity import torch_outputs

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.models import dlib_resnet
from id2image_jax.models import vggface
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import PortingError
from id2image_jax.porting import vggface as pvgg

F32_TOL = {'rtol': 1e-5, 'atol': 2e-4}
BF16_TOL = {'rtol': 5e-2, 'atol': 5e-1}
BF16_MIN_COSINE = 0.999

# Same depth and key names as VGG-16, a fraction of the width.
TINY = {'stages': [[4, 2], [8, 2], [8, 3], [8, 3], [16, 3]],
        'num_features': 32, 'num_classes': 10}


def _torch_ref():
  pytest.importorskip('torch')
  from ports import vggface_reference  # pylint: disable=g-import-not-at-top
  return vggface_reference


def _inputs(batch, seed=0):
  """Model inputs as input_spec makes them: 0..255 RGB minus the mean."""
  pixels = np.random.default_rng(seed).uniform(0, 255, (batch, 224, 224, 3))
  return (pixels - np.asarray(vggface.MEAN_RGB)).astype(np.float32)


@pytest.fixture(scope='module')
def vgg16():
  """(config, variables, input, torch fc7, torch intermediates), batch 1.

  Ports the reference's state dict in memory: the rule table is the one a
  file goes through, and writing then re-reading 530 MB would cost more than
  the forward passes (`id2image_jax.porting.vggface.convert` on files is
  tested with the narrow VGG below).
  """
  ref = _torch_ref()
  model = ref.reference_model({'variant': 'vgg16'}, seed=1)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  config, variables = pvgg.convert_state_dict(state, what='vgg_face_dag')
  del state
  x = _inputs(1)
  return (config, variables, x) + torch_outputs(model, x)


@pytest.mark.torch
def test_float32_parity_with_torch(vgg16):
  config, variables, x, want, want_inter = vgg16
  assert config == {'variant': 'vgg16',
                    'stages': [list(s) for s in vggface.VARIANTS['vgg16']],
                    'num_features': 4096, 'num_classes': 0,
                    'descriptor_layer': 'fc7'}
  got, inter = jax.jit(vggface.build(config).apply)(variables, x)
  assert got.shape == (1, vggface.DESCRIPTOR_DIM) and got.dtype == jnp.float32
  assert set(inter) == {'pool1', 'pool2', 'pool3', 'pool4', 'pool5', 'fc6',
                        'fc7'}
  assert inter['pool5'].shape == (1, 7, 7, 512)
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, {k: want_inter[k] for k in inter},
                              **F32_TOL)
  # Guard the tolerance against vacuity: fc7 is O(1..10) and half active.
  assert np.abs(want).mean() > 0.3 and 0.2 < np.mean(want > 0) < 0.8


@pytest.mark.torch
def test_fc6_descriptor_is_selectable(vgg16):
  config, variables, x, _, want_inter = vgg16
  model = vggface.build({**config, 'descriptor_layer': 'fc6'})
  got, inter = jax.jit(model.apply)(variables, x)
  chex.assert_trees_all_close(got, want_inter['fc6'], **F32_TOL)
  np.testing.assert_array_equal(got, inter['fc6'])


@pytest.mark.torch
def test_bfloat16_close_to_torch_float32(vgg16):
  config, variables, x, want, _ = vgg16
  model = vggface.build(config, dtype=jnp.bfloat16)
  got, inter = jax.jit(model.apply)(variables, x)
  assert got.dtype == jnp.bfloat16 and inter['pool3'].dtype == jnp.bfloat16
  got = np.asarray(got, np.float32)
  chex.assert_trees_all_close(got, want, **BF16_TOL)
  cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) *
                                     np.linalg.norm(want, axis=-1))
  assert np.all(cosine > BF16_MIN_COSINE), cosine
  # Parameters stay float32 whatever the compute dtype.
  abstract = jax.eval_shape(model.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))


# --- a narrow VGG of the same depth and names -------------------------------


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(path, torch model, numpy state dict) of a narrow random VGG."""
  ref = _torch_ref()
  path = tmp_path_factory.mktemp('tiny') / 'vgg_face_dag.pth'
  model = ref.write_checkpoint(str(path), TINY, seed=2)
  return path, model, {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.torch
def test_fc8_is_ignored_by_default_and_ported_on_request(tiny):
  path, model, state = tiny
  config, variables = pvgg.convert(path)
  assert config['variant'] == 'custom' and config['num_classes'] == 0
  assert 'fc8' not in variables['params']
  assert pvgg.convert(path, descriptor_layer='fc6')[0][
      'descriptor_layer'] == 'fc6'
  config, variables = pvgg.convert(path, classifier=True)
  assert config['num_classes'] == 10
  np.testing.assert_array_equal(variables['params']['fc8']['kernel'],
                                state['fc8.weight'].T)
  x = _inputs(2, seed=5)
  got, inter = jax.jit(vggface.build(config).apply)(variables, x)
  want, want_inter = torch_outputs(model, x)
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, want_inter, **F32_TOL)
  assert set(inter) >= {'fc8'} and inter['fc8'].shape == (2, 10)


@pytest.fixture(scope='module')
def tiny_ported(tiny):
  return pvgg.convert(tiny[0])


def test_jit_vmap_and_no_retrace(tiny_ported):
  config, variables = tiny_ported
  model = vggface.build(config)
  x = _inputs(2, seed=3)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def embed(v, images):
    return model.apply(v, images)[0]

  batched = embed(variables, x)
  embed(variables, x[::-1])  # new values, same shapes: no retrace
  per_image = jax.jit(jax.vmap(lambda im: model.apply(variables, im)[0]))(x)
  assert per_image.shape == (2, 32)
  chex.assert_trees_all_close(per_image, batched, rtol=1e-5, atol=1e-5)
  nested, inter = jax.jit(model.apply)(variables, x.reshape(1, 2, 224, 224, 3))
  chex.assert_trees_all_close(nested[0], batched, rtol=1e-5, atol=1e-5)
  assert inter['pool2'].shape == (1, 2, 56, 56, 8)
  eager, _ = model.apply(variables, x[:1])
  chex.assert_trees_all_close(eager, batched[:1], rtol=1e-5, atol=1e-5)


def test_gradients_flow_from_generator_images(tiny_ported):
  config, variables = tiny_ported
  model = vggface.build(config)
  spec = vggface.input_spec(config)
  images = np.random.default_rng(4).uniform(-1, 1, (1, 64, 64, 3)).astype(
      np.float32)

  def loss(im):
    return model.apply(variables,
                       preprocess.to_encoder_input(im, spec))[0].sum()
  grad = jax.jit(jax.grad(loss))(images)
  assert grad.shape == images.shape and np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0


@pytest.mark.parametrize('shape', [(1, 112, 112, 3), (1, 224, 224, 1),
                                   (1, 3, 224, 224), (224, 3)])
def test_wrong_input_shape_is_a_clear_error(shape):
  model = vggface.build(TINY)
  with pytest.raises(ValueError, match=r'224, 224, 3\] RGB.*got shape'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_integer_and_non_finite_input_are_refused(tiny_ported):
  config, variables = tiny_ported
  model = vggface.build(config)
  with pytest.raises(ValueError, match='float'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.uint8))
  x = _inputs(1)
  x[0, 5, 6, 1] = np.nan
  with pytest.raises(ValueError, match='1 non-finite'):
    model.apply(variables, x)
  # Under jit values are not checked (no host sync, no error).
  jax.jit(model.apply)(variables, x)


def test_config_table_and_build():
  assert vggface.get_config() == {
      'variant': 'vgg16',
      'stages': [[64, 2], [128, 2], [256, 3], [512, 3], [512, 3]],
      'num_features': 4096, 'num_classes': 0, 'descriptor_layer': 'fc7'}
  with pytest.raises(ValueError, match='unknown VGG-Face variant'):
    vggface.get_config('vgg19')
  with pytest.raises(ValueError, match='unknown VGG-Face config'):
    vggface.get_config(depth=16)
  with pytest.raises(ValueError, match='descriptor_layer'):
    vggface.get_config(descriptor_layer='fc8')
  abstract = jax.eval_shape(
      vggface.build({'variant': 'vgg16'}).init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  params = abstract['params']
  assert params['fc6']['kernel'].shape == (25088, 4096)
  assert params['conv3_3']['conv']['kernel'].shape == (3, 3, 256, 256)
  assert 'fc8' not in params
  n = sum(p.size for p in jax.tree.leaves(abstract))
  assert n == 134_260_544  # VGG-16 without its classifier
  with pytest.raises(ValueError, match='stages must be 5'):
    jax.eval_shape(vggface.build({'stages': [[8, 2]] * 4}).init,
                   jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


def test_input_spec_rgb_minus_mean_on_the_face_box():
  spec = vggface.input_spec(vggface.get_config())
  assert spec.size == (224, 224) and spec.channel_order == 'RGB'
  assert spec.std == (1.0, 1.0, 1.0)
  assert spec.crop == dlib_resnet.FFHQ_CROP
  assert preprocess.crop_pixels(spec, 1024, 1024) == (265, 164, 967, 866)
  # A flat colour (R, G, B) on 0..255 becomes (R, G, B) - mean, in order.
  rgb = np.array([200.0, 100.0, 30.0])
  image = np.broadcast_to(rgb / 127.5 - 1.0, (256, 256, 3))
  out = preprocess.to_encoder_input(image[None], spec)
  assert out.shape == (1, 224, 224, 3)
  np.testing.assert_allclose(out[0, 100, 100], rgb - vggface.MEAN_RGB,
                             atol=1e-3)
  wide = vggface.input_spec(crop=(0.0, 0.0, 1.0, 1.0))
  assert preprocess.crop_pixels(wide, 256, 256) == (0, 0, 256, 256)


# --- porting errors -----------------------------------------------------------


@pytest.mark.torch
def test_checkpoint_keys_are_the_vgg_face_dag_keys(tiny):
  _, _, state = tiny
  config = pvgg.infer_config(state, classifier=True)
  assert set(pvgg.expected_keys(config)) == set(state)
  assert len(state) == 2 * 16  # 13 convs + fc6, fc7, fc8
  full = pvgg.expected_keys(vggface.get_config(num_classes=2622))
  assert full[:2] == ['conv1_1.weight', 'conv1_1.bias']
  assert full[-6:] == ['fc6.weight', 'fc6.bias', 'fc7.weight', 'fc7.bias',
                       'fc8.weight', 'fc8.bias']


@pytest.mark.parametrize('edit,message', [
    ('shape', r'conv3_2\.weight \(8, 8, 3, 1\)'),
    ('missing', r'lacks required key.*conv4_3\.bias'),
    ('extra', r'match no rule: conv5_4_bn\.weight'),
    ('fc6', r'fc6\.weight: .*16\*7\*7=784\], got \(32, 392\)'),
    ('gap', r'conv2_\* block numbers are not contiguous.*\[2\]'),
    ('fc8', r'lacks fc8\.weight'),
])
def test_mismatched_checkpoint_names_the_key(tiny, edit, message):
  _, _, state = tiny
  state = dict(state)
  classifier = False
  if edit == 'shape':
    state['conv3_2.weight'] = np.zeros((8, 8, 3, 1), np.float32)
  elif edit == 'missing':
    del state['conv4_3.bias']
  elif edit == 'extra':
    state['conv5_4_bn.weight'] = np.zeros((4,), np.float32)
  elif edit == 'fc6':
    state['fc6.weight'] = np.zeros((32, 392), np.float32)
  elif edit == 'gap':
    state['conv2_3.weight'] = state.pop('conv2_2.weight')
    state['conv2_3.bias'] = state.pop('conv2_2.bias')
  elif edit == 'fc8':
    del state['fc8.weight'], state['fc8.bias']
    classifier = True
  with pytest.raises(PortingError, match=message):
    pvgg.convert_state_dict(state, classifier=classifier)


def test_other_checkpoints_are_refused_by_name():
  with pytest.raises(PortingError, match='conv1_1.weight.*not a VGG-Face'):
    pvgg.infer_config({'conv1.weight': np.zeros((64, 3, 3, 3))})
  with pytest.raises(PortingError, match='no conv3_'):
    pvgg.infer_config({f'conv{i}_1.weight': np.zeros((8, 8, 3, 3))
                       for i in (1, 2, 4, 5)})
  with pytest.raises(ValueError, match='descriptor_layer'):
    pvgg.convert_state_dict({}, descriptor_layer='fc8')


@pytest.mark.torch
def test_prefixed_and_wrapped_files_port_and_bad_files_fail(tiny, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  path, _, state = tiny
  _, want = pvgg.convert(path)
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  torch.save({f'module.{k}': v for k, v in tensors.items()},
             str(tmp_path / 'dp.pth'))
  chex.assert_trees_all_equal(pvgg.convert(tmp_path / 'dp.pth')[1], want)
  torch.save({'state_dict': tensors, 'epoch': 3}, str(tmp_path / 'ck.pth'))
  chex.assert_trees_all_equal(pvgg.convert(tmp_path / 'ck.pth')[1], want)
  data = path.read_bytes()
  (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError):
    pvgg.convert(tmp_path / 'truncated.pth')
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    pvgg.convert(tmp_path / 'nope.pth')


@pytest.mark.torch
def test_registry_detects_and_loads_vgg_face_dag(tiny):
  path, model, _ = tiny
  assert loading.read(str(path), loading.ENCODER).kind.name == 'vggface'
  encoder = loading.load_encoder(str(path))
  assert encoder.kind == 'vggface' and encoder.dim == 32
  assert encoder.spec == vggface.input_spec(encoder.config)
  images = np.random.default_rng(6).uniform(-1, 1, (3, 96, 96, 3))
  got = encoder.embed(images, batch_size=2)
  assert got.shape == (3, 32)
  x = np.asarray(preprocess.to_encoder_input(images.astype(np.float32),
                                             encoder.spec))
  want, _ = torch_outputs(model, x)
  np.testing.assert_allclose(got, want, **F32_TOL)
  one = jax.jit(encoder.descriptor_fn())(encoder.variables,
                                         images[0].astype(np.float32))
  np.testing.assert_allclose(one, want[0], **F32_TOL)
