"""The porting machinery: safe loading of every container, strict rules."""

import collections
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import porting
from id2image_jax.porting import layout
from id2image_jax.porting import safe_load


def _abstract(**shapes):
  tree = {}
  for path, shape in shapes.items():
    node = tree
    *parents, leaf = path.split('__')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
  return tree


RULES = [
    porting.Rule(r'conv(\d)\.weight', r'params/conv\1/kernel',
                 layout.conv_oihw_to_hwio),
    porting.Rule(r'conv(\d)\.bias', r'params/conv\1/bias'),
    porting.Rule(r'fc\.weight', 'params/fc/kernel', layout.linear_to_dense),
]
ABSTRACT = _abstract(params__conv1__kernel=(3, 3, 2, 4),
                     params__conv1__bias=(4,), params__fc__kernel=(4, 5))


def _source():
  rng = np.random.default_rng(0)
  return {'conv1.weight': rng.normal(size=(4, 2, 3, 3)),
          'conv1.bias': rng.normal(size=(4,)),
          'fc.weight': rng.normal(size=(5, 4)),
          'num_batches_tracked': np.array(3)}


def test_port_fills_every_leaf_with_transformed_values():
  src = _source()
  out = porting.port(src, RULES, ABSTRACT, ignore=[r'num_batches_tracked'])
  np.testing.assert_allclose(out['params']['conv1']['kernel'],
                             src['conv1.weight'].transpose(2, 3, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(out['params']['fc']['kernel'],
                             src['fc.weight'].T, rtol=1e-6)
  assert out['params']['conv1']['bias'].dtype == np.float32


def test_port_names_unmatched_key():
  with pytest.raises(porting.PortingError, match='num_batches_tracked'):
    porting.port(_source(), RULES, ABSTRACT)


def test_port_names_mismatched_shape():
  src = _source()
  src['fc.weight'] = np.zeros((6, 4))
  with pytest.raises(porting.PortingError,
                     match=r'fc\.weight \(6, 4\) -> params/fc/kernel'):
    porting.port(src, RULES, ABSTRACT, ignore=['num_batches_tracked'])


def test_port_names_missing_parameter():
  src = _source()
  del src['conv1.bias']
  with pytest.raises(porting.PortingError, match='params/conv1/bias'):
    porting.port(src, RULES, ABSTRACT, ignore=['num_batches_tracked'])


def test_port_rejects_rule_pointing_outside_model():
  src = _source()
  src['conv2.bias'] = np.zeros(4)
  with pytest.raises(porting.PortingError, match='conv2.bias -> params/conv2'):
    porting.port(src, RULES, ABSTRACT, ignore=['num_batches_tracked'])


class _ConvNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), name='conv1')(x)
    return nn.Dense(5, use_bias=False, name='fc')(x.mean(axis=(1, 2)))


def test_port_image_model_ports_onto_the_module_variables():
  src = dict(_source(), **{'conv1.weight': np.ones((4, 3, 3, 3))})
  out = porting.port_image_model(src, RULES, _ConvNet(), (6, 6),
                                 ignore=[r'num_batches_tracked'])
  assert isinstance(out['params']['fc']['kernel'], jax.Array)
  np.testing.assert_allclose(out['params']['fc']['kernel'],
                             src['fc.weight'].T, rtol=1e-6)
  assert out['params']['conv1']['kernel'].shape == (3, 3, 3, 4)
  # The module's own shapes (for an RGB image) decide: a 2-channel conv
  # weight is refused.
  src['conv1.weight'] = np.ones((4, 2, 3, 3))
  with pytest.raises(porting.PortingError, match=r'conv1\.weight'):
    porting.port_image_model(src, RULES, _ConvNet(), (6, 6),
                             ignore=[r'num_batches_tracked'])


def test_layout_conversions_are_checked():
  with pytest.raises(ValueError, match='4-D'):
    layout.conv_oihw_to_hwio(np.zeros((3, 3)))
  with pytest.raises(ValueError, match=r'\[kh, kw, C, 1\]'):
    layout.depthwise_to_grouped(np.zeros((3, 3, 4, 2)))
  w = np.arange(3 * 3 * 4, dtype=np.float32).reshape(3, 3, 4, 1)
  grouped = layout.depthwise_to_grouped(w)
  assert grouped.shape == (3, 3, 1, 4)
  np.testing.assert_array_equal(grouped[1, 2, 0], w[1, 2, :, 0])
  assert layout.chw_to_hwc(np.zeros((1, 5, 4, 4))).shape == (1, 4, 4, 5)
  assert layout.flatten(np.zeros((1, 5, 1, 1))).shape == (5,)


def test_linear_chw_to_dense_matches_torch_flatten_order():
  rng = np.random.default_rng(0)
  c, h, w, out = 3, 2, 4, 5
  weight = rng.normal(size=(out, c * h * w))
  feature = rng.normal(size=(c, h, w))
  # torch: Linear(flatten(NCHW)) reads the map channel-major.
  want = weight @ feature.reshape(-1)
  kernel = layout.linear_chw_to_dense(weight, c, h, w)
  assert kernel.shape == (h * w * c, out)
  # Flax: Dense(flatten(NHWC)).
  got = feature.transpose(1, 2, 0).reshape(-1) @ kernel
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # A plain transpose would be wrong unless H = W = 1.
  assert not np.allclose(feature.transpose(1, 2, 0).reshape(-1) @ weight.T,
                         want)
  np.testing.assert_array_equal(layout.linear_chw_to_dense(weight, 24, 1, 1),
                                weight.T)
  with pytest.raises(ValueError, match=r'\[out, 3\*2\*5=30\]'):
    layout.linear_chw_to_dense(weight, c, h, 5)
  with pytest.raises(ValueError, match='2-D'):
    layout.linear_chw_to_dense(np.zeros(24), c, h, w)


# --- safe loading --------------------------------------------------------


def _state_dict():
  torch = pytest.importorskip('torch')
  g = torch.Generator().manual_seed(0)
  sd = collections.OrderedDict(
      w=torch.randn(3, 4, generator=g),
      transposed=torch.randn(4, 3, generator=g).t(),
      half=torch.randn(5, generator=g).half(),
      bf16=torch.randn(5, generator=g).bfloat16(),
      ints=torch.arange(6),
      param=torch.nn.Parameter(torch.randn(2, 2, generator=g)))
  sd['view'] = sd['w'][:, 1:]
  return torch, sd


def _assert_same(torch, got, sd):
  for k, v in sd.items():
    ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else (
        v.detach().numpy())
    np.testing.assert_array_equal(np.asarray(got[k]).astype(ref.dtype), ref,
                                  err_msg=k)


@pytest.mark.torch
@pytest.mark.parametrize('zipfile', [True, False], ids=['zip', 'legacy'])
def test_torch_save_formats_load_without_torch_code(tmp_path, zipfile):
  torch, sd = _state_dict()
  path = tmp_path / 'w.pt'
  torch.save(sd, path, _use_new_zipfile_serialization=zipfile)
  _assert_same(torch, porting.load_file(path), sd)


@pytest.mark.torch
def test_plain_pickle_of_tensors(tmp_path):
  torch, sd = _state_dict()
  path = tmp_path / 'net.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'G_ema': sd}, f)
  _assert_same(torch, porting.load_file(path)['G_ema'], sd)


def test_python2_style_numpy_pickle(tmp_path):
  path = tmp_path / 'weights.pkl'
  arrays = {'conv1.weight': np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            'scale': np.float64(2.5)}
  with open(path, 'wb') as f:
    pickle.dump(arrays, f, protocol=2)
  out = porting.load_file(path)
  np.testing.assert_array_equal(out['conv1.weight'], arrays['conv1.weight'])
  assert out['scale'] == 2.5


class _Evil:

  def __reduce__(self):
    return (os.system, ('echo pwned > /tmp/id2image_pwned',))


def test_code_in_pickle_is_never_run(tmp_path):
  path = tmp_path / 'evil.pkl'
  marker = '/tmp/id2image_pwned'
  if os.path.exists(marker):
    os.remove(marker)
  with open(path, 'wb') as f:
    pickle.dump({'x': _Evil(), 'w': np.ones(2)}, f)
  out = porting.load_file(path)
  assert not os.path.exists(marker)
  assert isinstance(out['x'], safe_load.Opaque)
  assert 'system' in out['x'].qualname
  np.testing.assert_array_equal(out['w'], np.ones(2))


def test_truncated_and_missing_files_fail_clearly(tmp_path):
  path = tmp_path / 'w.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'w': np.ones((100,))}, f)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(porting.CheckpointError, match='w.pkl'):
    porting.load_file(path)
  with pytest.raises(FileNotFoundError, match='nope.pt'):
    porting.load_file(tmp_path / 'nope.pt')


def test_flatten_arrays_walks_persistent_modules():
  child = safe_load.PersistentObject(
      'Layer', {'_parameters': {'weight': np.ones(2)},
                '_buffers': {'avg': np.zeros(1)}, '_modules': {}})
  root = safe_load.PersistentObject(
      'Net', {'_parameters': {}, '_buffers': {},
              '_modules': collections.OrderedDict(fc0=child)})
  flat = porting.flatten_arrays({'G_ema': root})
  assert sorted(flat) == ['G_ema.fc0.avg', 'G_ema.fc0.weight']
