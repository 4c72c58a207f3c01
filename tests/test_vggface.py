"""VGG-Face VGG-16: what only this encoder has (fc6 / fc7, fc8, porting).

Parity with the vgg_face_dag reference (the full VGG-16 included),
bfloat16, jit / vmap / retrace, bad inputs, mismatched and broken files,
loading and converted directories are checked for every encoder by
tests/test_encoder_contract.py (tolerances in tests/encoder_kinds.py);
here a narrow VGG of the same depth and names keeps the rest cheap.
"""

import chex
import encoder_kinds
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import preprocess
from id2image_jax.models import dlib_resnet
from id2image_jax.models import vggface
from id2image_jax.porting import PortingError
from id2image_jax.porting import safe_load
from id2image_jax.porting import vggface as pvgg

ROW = encoder_kinds.BY_KIND['vggface']
F32_TOL = {'rtol': ROW.f32.rtol, 'atol': ROW.f32.atol}
# Same depth and key names as VGG-16, a fraction of the width, with fc8.
TINY = ROW.tiny.config


def _inputs(batch, seed=0):
  """Model inputs as input_spec makes them: 0..255 RGB minus the mean."""
  pixels = np.random.default_rng(seed).uniform(0, 255, (batch, 224, 224, 3))
  return (pixels - np.asarray(vggface.MEAN_RGB)).astype(np.float32)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(path, reference, numpy state dict) of a narrow random VGG."""
  pytest.importorskip('torch')
  from ports import torch_reference  # pylint: disable=g-import-not-at-top
  from ports import vggface_reference  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp('tiny') / 'vgg_face_dag.pth'
  model = vggface_reference.write_checkpoint(str(path), TINY, seed=2)
  return (path, torch_reference.nhwc(model),
          {k: v.numpy() for k, v in model.state_dict().items()})


def _convert(path, **options):
  return pvgg.convert_state_dict(safe_load.read_state_dict(path), **options)


@pytest.mark.torch
def test_fc6_descriptor_is_selectable(tiny):
  path, reference, _ = tiny
  config, variables = _convert(path, descriptor_layer='fc6')
  assert config['descriptor_layer'] == 'fc6'
  x = _inputs(2, seed=1)
  got, inter = jax.jit(vggface.build(config).apply)(variables, x)
  _, want_inter = reference(x)
  chex.assert_trees_all_close(got, want_inter['fc6'], **F32_TOL)
  np.testing.assert_array_equal(got, inter['fc6'])


@pytest.mark.torch
def test_fc8_is_ignored_by_default_and_ported_on_request(tiny):
  path, reference, state = tiny
  config, variables = _convert(path)
  assert config['variant'] == 'custom' and config['num_classes'] == 0
  assert 'fc8' not in variables['params']
  config, variables = _convert(path, classifier=True)
  assert config['num_classes'] == 10
  np.testing.assert_array_equal(variables['params']['fc8']['kernel'],
                                state['fc8.weight'].T)
  x = _inputs(2, seed=5)
  got, inter = jax.jit(vggface.build(config).apply)(variables, x)
  want, want_inter = reference(x)
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, want_inter, **F32_TOL)
  assert set(inter) >= {'fc8'} and inter['fc8'].shape == (2, 10)


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


@pytest.mark.torch
@pytest.mark.parametrize('edit,message', [
    ('fc6', r'fc6\.weight: .*16\*7\*7=784\], got \(32, 392\)'),
    ('gap', r'conv2_\* block numbers are not contiguous.*\[2\]'),
    ('fc8', r'lacks fc8\.weight'),
])
def test_vgg_specific_mismatches_name_the_key(tiny, edit, message):
  _, _, state = tiny
  state = dict(state)
  classifier = False
  if edit == 'fc6':
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
def test_prefixed_and_wrapped_files_port(tiny, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  path, _, state = tiny
  _, want = _convert(path)
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  torch.save({f'module.{k}': v for k, v in tensors.items()},
             str(tmp_path / 'dp.pth'))
  chex.assert_trees_all_equal(_convert(tmp_path / 'dp.pth')[1], want)
  torch.save({'state_dict': tensors, 'epoch': 3}, str(tmp_path / 'ck.pth'))
  chex.assert_trees_all_equal(_convert(tmp_path / 'ck.pth')[1], want)
