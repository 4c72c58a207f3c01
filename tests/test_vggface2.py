"""VGGFace2 ResNet-50 / SENet-50: what only this encoder has.

The identity classifier (``include_top``), the input gradient against
torch, SENet vs ResNet and the other encoders' files told apart. Parity
with the reference at full depth, bfloat16, jit / vmap / retrace, bad
inputs, mismatched and broken files, loading and converted directories are
checked for every encoder by tests/test_encoder_contract.py (tolerances in
tests/encoder_kinds.py). Input-gradient tolerance (1-block SENet):

  float32   d(sum desc)/d(input), divided  0       1e-5    3.5e-7
            by its max |.|
"""

from __future__ import annotations

import chex
import encoder_kinds
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.models import vggface2
from id2image_jax.porting import PortingError
from id2image_jax.porting import iresnet as piresnet
from id2image_jax.porting import safe_load
from id2image_jax.porting import vggface2 as pvgg

ROW = encoder_kinds.BY_KIND['vggface2']
F32_TOL = {'rtol': ROW.f32.rtol, 'atol': ROW.f32.atol}
# A one-block-per-layer SENet with a 16-way classifier.
TINY = ROW.tiny.config


def _torch_ref():
  pytest.importorskip('torch')
  from ports import vggface2_reference  # pylint: disable=g-import-not-at-top
  return vggface2_reference


def _images(batch, seed=0):
  """Generator-style images: [batch, 224, 224, 3] RGB in [-1, 1]."""
  return np.random.default_rng(seed).uniform(
      -1, 1, (batch, 224, 224, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(path, torch model, source dict) of a one-block-per-layer SENet .pkl."""
  ref = _torch_ref()
  path = str(tmp_path_factory.mktemp('tiny') / 'tiny_weight.pkl')
  model = ref.write_checkpoint(path, TINY, seed=2)
  return path, model, safe_load.read_state_dict(path)


@pytest.mark.torch
def test_include_top_ports_the_classifier(tiny):
  from ports import torch_reference  # pylint: disable=g-import-not-at-top
  ref = _torch_ref()
  path, model, source = tiny
  config, variables = pvgg.convert_state_dict(source, include_top=True)
  assert config == {'variant': 'custom', 'layers': [1, 1, 1, 1], 'se': True,
                    'num_classes': 16}
  x = ref.to_input(_images(2, seed=3)).numpy().transpose(0, 2, 3, 1)
  got, inter = jax.jit(vggface2.build(config).apply)(variables, x)
  want, want_inter = torch_reference.nhwc(model)(x)
  assert set(inter) == {'stem', 'layer1', 'layer2', 'layer3', 'layer4',
                        'logits'}
  assert inter['logits'].shape == (2, 16)
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, want_inter, **F32_TOL)
  # Without include_top the file's classifier is left out.
  assert 'fc' not in loading.read(path, loading.ENCODER).variables['params']


@pytest.mark.torch
def test_input_gradient_matches_torch(tiny):
  """The inversion back-propagates through the encoder: check d/dx too."""
  ref = _torch_ref()
  path, model, source = tiny
  config, variables = pvgg.convert_state_dict(source)
  x = ref.to_input(_images(1, seed=8))
  want, want_grad = ref.reference_descriptor(model, x, grad=True)
  x = x.numpy().transpose(0, 2, 3, 1)
  module = vggface2.build(config)
  got, grad = jax.jit(jax.value_and_grad(
      lambda im: module.apply(variables, im)[0].sum()))(x)
  np.testing.assert_allclose(got, want.sum().item(), rtol=1e-5)
  want_grad = want_grad.numpy().transpose(0, 2, 3, 1)
  assert np.abs(want_grad).max() > 0
  # Per-pixel gradients are small (max ~6e-3): compare relative to the max.
  scale = np.abs(want_grad).max()
  chex.assert_trees_all_close(grad / scale, want_grad / scale, atol=1e-5)


def test_variant_table_and_build():
  assert vggface2.VARIANTS['resnet50'] == {'layers': (3, 4, 6, 3),
                                           'se': False}
  assert vggface2.VARIANTS['senet50']['se'] is True
  assert vggface2.DESCRIPTOR_DIM == 2048 and vggface2.INPUT_SIZE == (224, 224)
  module = vggface2.build({'variant': 'senet50'})
  assert module.layers == (3, 4, 6, 3) and module.se
  assert module.num_classes == 0 and module.dtype == jnp.float32
  with pytest.raises(ValueError, match='unknown VGGFace2 variant'):
    vggface2.get_config('resnet101')
  with pytest.raises(ValueError, match='unknown VGGFace2 config'):
    vggface2.get_config('resnet50', depth=50)
  with pytest.raises(ValueError, match='neither a variant'):
    vggface2.build({'variant': 'custom'})
  abstract = jax.eval_shape(
      vggface2.build(vggface2.get_config('senet50', num_classes=10)).init,
      jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  params = abstract['params']
  assert params['fc']['kernel'].shape == (2048, 10)
  # SE units reduce 512 channels 16-fold.
  assert params['layer2_0']['conv4']['conv']['kernel'].shape == (
      1, 1, 512, 32)
  assert abstract['batch_stats']['layer4_2']['bn3']['bn']['var'].shape == (
      2048,)


def test_input_spec_is_bgr_mean_subtracted_224():
  spec = vggface2.input_spec(vggface2.get_config())
  assert spec.size == (224, 224) and spec.channel_order == 'BGR'
  assert spec.std == (1.0, 1.0, 1.0)
  assert preprocess.crop_pixels(spec, 1024, 1024) == (265, 164, 967, 866)
  # A flat (R, G, B) image becomes (B, G, R) minus the Caffe means.
  rgb = np.array([200.0, 120.0, 40.0])
  image = jnp.broadcast_to(jnp.asarray(rgb / 127.5 - 1.0, jnp.float32),
                           (1, 256, 256, 3))
  out = preprocess.to_encoder_input(image, spec)
  assert out.shape == (1, 224, 224, 3)
  want = rgb[::-1] - np.array([91.4953, 103.8827, 131.0912])
  np.testing.assert_allclose(out[0, 100, 100], want, atol=1e-3)


# --- porting ---------------------------------------------------------------


@pytest.mark.torch
def test_checkpoint_keys_are_the_public_keys(tiny):
  _, model, source = tiny
  config = pvgg.infer_config(source, include_top=True)
  assert config == {'variant': 'custom', 'layers': [1, 1, 1, 1], 'se': True,
                    'num_classes': 16}
  # The .pkl holds exactly the state dict without the BN counters.
  state = set(model.state_dict())
  tracked = {k for k in state if k.endswith('num_batches_tracked')}
  assert set(source) == state - tracked
  assert set(pvgg.expected_keys(config)) == set(source)
  for key in ('layer1.0.conv4.bias', 'layer2.0.downsample.0.weight',
              'layer3.0.conv5.weight', 'fc.weight'):
    assert key in source
  without_top = pvgg.infer_config(source)
  assert without_top['num_classes'] == 0
  assert set(pvgg.expected_keys(without_top)) == set(source) - {
      'fc.weight', 'fc.bias'}


@pytest.mark.torch
def test_ported_values_land_where_expected(tiny):
  _, _, source = tiny
  _, variables = pvgg.convert_state_dict(source, include_top=True)
  np.testing.assert_array_equal(
      variables['batch_stats']['layer3_0']['bn2']['bn']['var'],
      source['layer3.0.bn2.running_var'])
  np.testing.assert_array_equal(
      variables['params']['layer2_0']['conv1']['conv']['kernel'],
      source['layer2.0.conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables['params']['layer4_0']['conv5']['conv']['bias'],
      source['layer4.0.conv5.bias'])
  np.testing.assert_array_equal(variables['params']['fc']['kernel'],
                                source['fc.weight'].T)


@pytest.mark.torch
def test_partial_se_unit_names_the_key(tiny):
  _, _, source = tiny
  source = dict(source)
  for key in [k for k in source if k.startswith('layer4.0.conv4')]:
    del source[key]
  with pytest.raises(PortingError,
                     match=r'lacks required key.*layer4\.0\.conv4\.weight'):
    pvgg.convert_state_dict(source)


def test_other_encoders_and_junk_are_refused():
  arcface = {k: np.zeros((1,), np.float32) for k in piresnet.expected_keys(
      {'layers': [2, 2, 2, 2], 'use_fc': True, 'use_features': True})}
  with pytest.raises(PortingError, match='ArcFace IResNet.*iresnet'):
    pvgg.infer_config(arcface)
  with pytest.raises(PortingError, match='VGG-Face'):
    pvgg.infer_config({'conv1_1.weight': np.zeros(1)})
  with pytest.raises(PortingError, match=r"neither a VGGFace2 ResNet-50 nor "
                     r"a SENet-50.*'layer1.0.conv3.weight'.*backbone"):
    pvgg.infer_config({'backbone.conv1.weight': np.zeros(1)})
  torchvision = {k: np.zeros((1,), np.float32) for k in pvgg.expected_keys(
      vggface2.get_config('resnet50'))}
  torchvision['fc.weight'] = np.zeros((1000, 2048), np.float32)
  with pytest.raises(PortingError, match='torchvision'):
    pvgg.infer_config(torchvision)
  gap = dict(torchvision)
  del gap['fc.weight']
  for key in [k for k in gap if k.startswith('layer3.2.')]:
    gap[key.replace('layer3.2.', 'layer3.9.')] = gap.pop(key)
  with pytest.raises(PortingError, match=r'layer3.*missing block'):
    pvgg.infer_config(gap)


@pytest.mark.torch
def test_arcface_file_is_refused_and_training_checkpoints_port(tmp_path,
                                                               tiny):
  import torch  # pylint: disable=g-import-not-at-top

  from ports import iresnet_reference  # pylint: disable=g-import-not-at-top
  arc = tmp_path / 'backbone.pth'
  iresnet_reference.write_checkpoint(
      str(arc), {'layers': [1, 1, 1, 1], 'num_features': 8})
  with pytest.raises(PortingError, match='ArcFace'):
    pvgg.convert_state_dict(safe_load.read_state_dict(arc))
  with pytest.raises(PortingError, match='ArcFace'):
    loading.load_encoder(f'vggface2:{arc}')
  # A training checkpoint of VGGFace2-pytorch wraps the state dict.
  path, model, source = tiny
  wrapped = tmp_path / 'checkpoint.pth.tar'
  torch.save({'epoch': 1, 'arch': 'senet50_ft',
              'model_state_dict': {f'module.{k}': v for k, v in
                                   model.state_dict().items()}}, str(wrapped))
  loaded = loading.read(str(wrapped), loading.ENCODER)
  assert loaded.kind.name == 'vggface2'
  assert loaded.config['se'] and loaded.config['num_classes'] == 0
  chex.assert_trees_all_equal(loaded.variables,
                              pvgg.convert_state_dict(source)[1])
