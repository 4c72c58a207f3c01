"""VGGFace2 ResNet-50 / SENet-50: parity with a live torch reference, porting.

Tolerance table (elementwise ``|jax - torch| <= atol + rtol * |torch|``;
random weights and random BN running stats, activations O(0.3..7)):

  compute   tensors                        rtol    atol    measured max |err|
  float32   descriptor, stem, layer1..4,   1e-5    1e-4    3.1e-6 resnet50,
            logits (full depth, batch 2/1)                 2.6e-6 senet50
  bfloat16  descriptor (1-block SENet)     5e-2    5e-2    1.1e-2 (|d| ~0.24)
  bfloat16  cosine to torch float32        > 0.999         0.999995 (the same
                                                           at full depth,
                                                           checked by hand)
  float32   d(sum desc)/d(input), divided  0       1e-5    3.5e-7
            by its max |.| (1-block SENet)

The float32 tolerance fails (checked by hand on senet50) for BN eps 1e-3
instead of 1e-5 (descriptor excess 5e-3) and for the stride on the 3x3 conv as
in torchvision's ResNet-50 v1.5 (excess 1.4e-2); a max pool without
ceil_mode changes the shapes. So it pins the Caffe layout.
bfloat16 keeps 8 mantissa bits: ~1% relative error after the 16 blocks.

Runtime: the full-depth models are written, ported and run once per module
(fixture `full`); everything else uses a one-block-per-layer model.
"""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.models import vggface2
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import PortingError
from id2image_jax.porting import iresnet as piresnet
from id2image_jax.porting import safe_load
from id2image_jax.porting import vggface2 as pvgg

F32_TOL = {'rtol': 1e-5, 'atol': 1e-4}
BF16_TOL = {'rtol': 5e-2, 'atol': 5e-2}
BF16_MIN_COSINE = 0.999
TINY = {'layers': [1, 1, 1, 1], 'se': True, 'num_classes': 16}


def _torch_ref():
  pytest.importorskip('torch')
  from ports import vggface2_reference  # pylint: disable=g-import-not-at-top
  return vggface2_reference


def _images(batch, seed=0):
  """Generator-style images: [batch, 224, 224, 3] RGB in [-1, 1]."""
  return np.random.default_rng(seed).uniform(
      -1, 1, (batch, 224, 224, 3)).astype(np.float32)


def _torch_outputs(ref, model, images):
  """(NHWC input, descriptor, NHWC intermediates) of the torch reference."""
  import torch  # pylint: disable=g-import-not-at-top
  x = ref.to_input(images)
  with torch.no_grad():
    desc, inter = model.forward_with_intermediates(x)
  out = {k: v.numpy() for k, v in inter.items()}
  out = {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v
         for k, v in out.items()}
  return x.numpy().transpose(0, 2, 3, 1), desc.numpy(), out


@pytest.fixture(scope='module')
def full(tmp_path_factory):
  """variant -> (path, config, variables, x, desc, inter, state dict).

  resnet50 is written as the official .pkl and ported with its classifier;
  senet50 as a torch .pth state dict, ported without.
  """
  ref = _torch_ref()
  cache = {}

  def get(variant):
    if variant not in cache:
      top = variant == 'resnet50'
      name = 'resnet50_ft_weight.pkl' if top else 'senet50_ft.pth'
      path = str(tmp_path_factory.mktemp(variant) / name)
      # The official files hold an 8631-way fc; a smaller one suffices to
      # check that the port leaves it out.
      model = ref.write_checkpoint(
          path, {'variant': variant, 'num_classes': 8631 if top else 100},
          seed=1)
      config, variables = pvgg.convert(path, include_top=top)
      x, desc, inter = _torch_outputs(ref, model, _images(2 if top else 1))
      if not top:
        del inter['logits']  # in the file, left out of the port
      state = {k: v.numpy() for k, v in model.state_dict().items()}
      cache[variant] = (path, config, variables, x, desc, inter, state)
    return cache[variant]
  return get


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """(path, torch model, source dict) of a one-block-per-layer SENet .pkl."""
  ref = _torch_ref()
  path = str(tmp_path_factory.mktemp('tiny') / 'tiny_weight.pkl')
  model = ref.write_checkpoint(path, TINY, seed=2)
  return path, model, safe_load.read_state_dict(path)


@pytest.mark.torch
@pytest.mark.parametrize('variant', ['resnet50', 'senet50'])
def test_float32_parity_with_torch(full, variant):
  _, config, variables, x, want, want_inter, _ = full(variant)
  batch = 2 if variant == 'resnet50' else 1
  top = variant == 'resnet50'
  assert config == {'variant': variant, 'layers': [3, 4, 6, 3],
                    'se': variant == 'senet50',
                    'num_classes': 8631 if top else 0}
  json.dumps(config)  # stored in checkpoint metadata
  got, inter = jax.jit(vggface2.build(config).apply)(variables, x)
  assert got.shape == (batch, 2048) and got.dtype == jnp.float32
  names = {'stem', 'layer1', 'layer2', 'layer3', 'layer4'}
  assert set(inter) == names | ({'logits'} if top else set())
  assert inter['layer4'].shape == (batch, 7, 7, 2048)
  chex.assert_trees_all_close(got, want, **F32_TOL)
  chex.assert_trees_all_close(inter, want_inter, **F32_TOL)
  # Guard the tolerance against vacuity: outputs are O(0.1..1), not ~0.
  assert np.abs(want).mean() > 0.1
  if batch == 2:  # and two images do not give the same descriptor
    assert np.abs(want[0] - want[1]).mean() > 0.01


@pytest.mark.torch
def test_bfloat16_close_to_torch_float32(tiny):
  ref = _torch_ref()
  path, model, _ = tiny
  x, want, _ = _torch_outputs(ref, model, _images(2, seed=5))
  config, variables = pvgg.convert(path)
  module = vggface2.build(config, dtype=jnp.bfloat16)
  got, inter = jax.jit(module.apply)(variables, x)
  assert got.dtype == jnp.bfloat16 and inter['layer4'].dtype == jnp.bfloat16
  got = np.asarray(got, np.float32)
  chex.assert_trees_all_close(got, want, **BF16_TOL)
  cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) *
                                     np.linalg.norm(want, axis=-1))
  assert np.all(cosine > BF16_MIN_COSINE), cosine
  # Parameters stay float32 whatever the compute dtype.
  abstract = jax.eval_shape(module.init, jax.random.key(0), x[:1])
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))


@pytest.mark.torch
def test_input_gradient_matches_torch(tiny):
  """The inversion back-propagates through the encoder: check d/dx too."""
  ref = _torch_ref()
  path, model, _ = tiny
  config, variables = pvgg.convert(path)
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


def _random_variables(module, seed=0):
  # numpy instead of module.init: compiling init costs seconds on CPU.
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(module.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 224, 224, 3),
                                                 jnp.float32))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'var' in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    fan_in = np.prod(leaf.shape[:-1]) * 100 if leaf.ndim > 1 else 100
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope='module')
def tiny_jax():
  module = vggface2.build(vggface2.get_config('senet50', layers=[1, 1, 1, 1]))
  return module, _random_variables(module)


def test_jit_vmap_and_no_retrace(tiny_jax):
  module, variables = tiny_jax
  x = (_images(2, seed=3) * 100.0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def embed(v, images):
    return module.apply(v, images)[0]

  batched = embed(variables, x)
  embed(variables, x[::-1])  # new values, same shapes: no retrace
  # vmap over single images (no batch dim inside) equals the batched call.
  per_image = jax.jit(jax.vmap(lambda im: module.apply(variables, im)[0]))(x)
  chex.assert_trees_all_close(per_image, batched, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(batched)).mean() > 1e-3


@pytest.mark.parametrize('shape', [(1, 256, 256, 3), (1, 224, 224, 1),
                                   (1, 3, 224, 224), (224, 3)])
def test_wrong_input_shape_is_a_clear_error(shape):
  module = vggface2.build(vggface2.get_config('resnet50'))
  with pytest.raises(ValueError, match=r'224, 224, 3\] BGR.*got shape'):
    jax.eval_shape(module.init, jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_integer_input_is_refused():
  module = vggface2.build(vggface2.get_config('senet50'))
  with pytest.raises(ValueError, match='float'):
    jax.eval_shape(module.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.uint8))


def test_nan_input(tiny_jax):
  module, variables = tiny_jax
  x = _images(2, seed=6) * 100.0
  x[1, 10, 20, 0] = np.nan
  # Eagerly the module checks values and says so ...
  with pytest.raises(ValueError, match='non-finite'):
    module.apply(variables, x)
  # ... under jit it cannot: the NaN stays in its own image's descriptor.
  desc, _ = jax.jit(module.apply)(variables, x)
  assert np.all(np.isfinite(desc[0])) and np.all(np.isnan(desc[1]))
  # Preprocessing refuses wrong channel counts before the model sees them.
  with pytest.raises(ValueError, match=r'\[\.\.\., H, W, 3\]'):
    preprocess.to_encoder_input(jnp.zeros((1, 64, 64, 4)),
                                vggface2.input_spec())


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
def test_checkpoint_keys_are_the_public_keys(tiny, full):
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
def test_ported_values_land_where_expected(full):
  _, _, variables, _, _, _, source = full('resnet50')
  np.testing.assert_array_equal(
      variables['batch_stats']['layer3_4']['bn2']['bn']['var'],
      source['layer3.4.bn2.running_var'])
  np.testing.assert_array_equal(
      variables['params']['layer2_0']['conv1']['conv']['kernel'],
      source['layer2.0.conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['params']['fc']['kernel'],
                                source['fc.weight'].T)


@pytest.mark.torch
@pytest.mark.parametrize('edit,message', [
    ('missing', r'lacks required key.*layer3\.0\.conv5\.bias'),
    ('shape', (r'layer2\.0\.conv4\.weight \(32, 256, 1, 1\) -> .*got '
               r'\(1, 1, 256, 32\), model expects \(1, 1, 512, 32\)')),
    ('extra', r'match no rule: layer1\.0\.conv6\.weight'),
    ('partial_se', r'lacks required key.*layer4\.0\.conv4\.weight'),
])
def test_mismatched_checkpoint_names_the_key(tiny, edit, message):
  _, _, source = tiny
  source = dict(source)
  if edit == 'missing':
    del source['layer3.0.conv5.bias']
  elif edit == 'shape':
    source['layer2.0.conv4.weight'] = np.ones((32, 256, 1, 1), np.float32)
  elif edit == 'extra':
    source['layer1.0.conv6.weight'] = np.zeros((4,), np.float32)
  elif edit == 'partial_se':
    for key in [k for k in source if k.startswith('layer4.0.conv4')]:
      del source[key]
  with pytest.raises(PortingError, match=message):
    pvgg.convert_state_dict(source)


@pytest.mark.torch
def test_every_problem_is_listed_and_nothing_is_returned(tiny):
  _, _, source = tiny
  source = dict(source)
  source['layer1.0.bn1.weight'] = np.zeros((65,), np.float32)
  source['layer4.0.extra'] = np.zeros((1,), np.float32)
  result = None
  with pytest.raises(PortingError) as info:
    result = pvgg.convert_state_dict(source)
  assert result is None
  text = str(info.value)
  assert 'layer1.0.bn1.weight (65,)' in text and 'layer4.0.extra' in text


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
def test_arcface_file_and_broken_files(tmp_path, tiny):
  import torch  # pylint: disable=g-import-not-at-top

  from ports import iresnet_reference  # pylint: disable=g-import-not-at-top
  arc = tmp_path / 'backbone.pth'
  iresnet_reference.write_checkpoint(
      str(arc), {'layers': [1, 1, 1, 1], 'num_features': 8})
  with pytest.raises(PortingError, match='ArcFace'):
    pvgg.convert(arc)
  with pytest.raises(PortingError, match='ArcFace'):
    loading.load_encoder(f'vggface2:{arc}')
  path, _, _ = tiny
  with open(path, 'rb') as f:
    data = f.read()
  bad = tmp_path / 'truncated.pkl'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError):
    pvgg.convert(bad)
  with pytest.raises(FileNotFoundError, match='nope.pkl'):
    pvgg.convert(tmp_path / 'nope.pkl')
  with pytest.raises(FileNotFoundError, match='resnet50_ft_weight.pkl'):
    pvgg.convert(None)
  # A training checkpoint of VGGFace2-pytorch wraps the state dict.
  wrapped = tmp_path / 'checkpoint.pth.tar'
  _, model, _ = tiny
  torch.save({'epoch': 1, 'arch': 'senet50_ft',
              'model_state_dict': {f'module.{k}': v for k, v in
                                   model.state_dict().items()}}, str(wrapped))
  assert loading.read(str(wrapped), loading.ENCODER).kind.name == 'vggface2'
  config, variables = pvgg.convert(wrapped)
  _, want = pvgg.convert(path)
  chex.assert_trees_all_equal(variables, want)
  assert config['se'] and config['num_classes'] == 0


# --- registry ----------------------------------------------------------------


@pytest.mark.torch
def test_registry_round_trip(full, tiny):
  # Both full-size files are detected from their keys (SENet has extra
  # conv4/conv5 keys, ResNet none of arcface's prelu / features).
  assert loading.read(full('senet50')[0], loading.ENCODER).kind.name == 'vggface2'
  assert loading.read(full('resnet50')[0], loading.ENCODER).kind.name == 'vggface2'
  tiny_path, _, source = tiny
  encoder = loading.load_encoder(tiny_path)  # detected, then ported
  assert encoder.kind == 'vggface2' and encoder.dim == 2048
  assert encoder.config == pvgg.infer_config(source)
  assert encoder.spec == vggface2.input_spec(encoder.config)
  np.testing.assert_array_equal(
      encoder.variables['params']['layer4_0']['conv5']['conv']['bias'],
      source['layer4.0.conv5.bias'])
  # kind:path, here on the small checkpoint, end to end through embed.
  small = loading.load_encoder(f'vggface2:{tiny_path}', crop=(0, 0, 1, 1))
  assert small.kind == 'vggface2' and small.dim == 2048
  assert small.spec == dataclasses.replace(vggface2.input_spec(),
                                           crop=(0, 0, 1, 1))
  images = np.random.default_rng(7).uniform(-1, 1, (3, 64, 64, 3))
  desc = small.embed(images, batch_size=2)
  assert desc.shape == (3, 2048) and np.all(np.isfinite(desc))
  images[2, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match=r'images \[2\].*NaN'):
    small.embed(images)
