"""ArcFace IResNet: what only this encoder has (variants, crop, porting).

Parity with the arcface_torch reference, bfloat16, jit / vmap / retrace,
bad inputs, mismatched and broken files, loading and converted directories
are checked for every encoder by tests/test_encoder_contract.py (tolerances
in tests/encoder_kinds.py).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.models import iresnet
from id2image_jax.porting import PortingError
from id2image_jax.porting import iresnet as piresnet
from id2image_jax.porting import safe_load


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
def tiny_state(tmp_path_factory):
  """(path, numpy state dict) of a one-block-per-stage backbone.pth."""
  pytest.importorskip('torch')
  from ports import iresnet_reference  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp('sd') / 'backbone.pth'
  model = iresnet_reference.write_checkpoint(
      str(path), {'layers': [1, 1, 1, 1], 'num_features': 64}, seed=2)
  return path, {k: v.numpy() for k, v in model.state_dict().items()}


def _save(path, state):
  import torch  # pylint: disable=g-import-not-at-top
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
             str(path))
  return path


@pytest.mark.torch
def test_checkpoint_keys_are_the_arcface_torch_keys(tiny_state):
  _, state = tiny_state
  config = piresnet.infer_config(state)
  tracked = {k for k in state if k.endswith('num_batches_tracked')}
  assert set(piresnet.expected_keys(config)) == set(state) - tracked
  assert 'layer2.0.downsample.0.weight' in state
  assert 'features.running_var' in state


@pytest.mark.torch
def test_fc_without_its_bias_names_the_key(tiny_state):
  _, state = tiny_state
  state = dict(state)
  del state['fc.bias']
  with pytest.raises(PortingError, match=r'fc\.bias'):
    piresnet.convert_state_dict(state)


@pytest.mark.torch
def test_wrapped_and_prefixed_state_dicts_port(tiny_state, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  path, state = tiny_state
  want = piresnet.convert_state_dict(safe_load.read_state_dict(path))[1]
  prefixed = _save(tmp_path / 'dp.pth',
                   {f'module.{k}': v for k, v in state.items()})
  got = loading.read(str(prefixed), loading.ENCODER)
  assert got.kind.name == 'iresnet'
  chex.assert_trees_all_equal(got.variables, want)
  wrapped = tmp_path / 'checkpoint_gpu_0.pt'
  torch.save({'state_dict_backbone': torch.load(str(path), weights_only=True),
              'state_optimizer': {'step': 3}}, str(wrapped))
  got = loading.read(str(wrapped), loading.ENCODER)
  assert got.kind.name == 'iresnet'
  chex.assert_trees_all_equal(got.variables, want)
  # BN statistics land in batch_stats, PReLU slopes per channel.
  np.testing.assert_array_equal(
      got.variables['batch_stats']['layer4_0']['bn3']['bn']['var'],
      state['layer4.0.bn3.running_var'])
  np.testing.assert_array_equal(got.variables['params']['layer1_0']['prelu'][
      'negative_slope'], state['layer1.0.prelu.weight'])
