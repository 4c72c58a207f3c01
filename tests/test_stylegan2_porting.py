"""StyleGAN2 porting: parity with live PyTorch references, corrupt files.

Random-weight generators from ``ports/stylegan2_reference.py`` (official
stylegan2-ada names) are written as an NVIDIA network pickle and as a
rosinality ``.pt``, ported with `id2image_jax.porting.stylegan2.convert`, and
their images compared with the torch generator's for the same z / w / noise.

Tolerance table (images are about [-1, 1]: max |img| ~ 2 with these random
weights; elementwise ``|jax - torch| <= atol + rtol * |torch|``):

  compute   inputs                                  rtol  atol   measured
  float32   Z (psi, cutoff), W, W+, noise, vmap,    0     1e-4   ~1e-6
            fused and shared modconv, conv_clamp
  float32   rosinality model.py maths (own forward) 0     1e-4   ~1e-6
  bfloat16  W+ (vs torch float32)                   0     1e-1   ~3e-2

A test that ports the upsampling convs without the spatial flip shows the
float32 tolerance catches that mistake (error > 1e-2).
"""

import argparse
import dataclasses
import functools
import logging
import os
import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import checkpoints
from id2image_jax import loading
from id2image_jax.models import stylegan2 as sg
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import PortingError
from id2image_jax.porting import stylegan2 as pst

torch = pytest.importorskip('torch')
pytestmark = pytest.mark.torch

from ports import convert_stylegan2  # pylint: disable=g-import-not-at-top,wrong-import-position
from ports import stylegan2_reference as ref  # pylint: disable=g-import-not-at-top,wrong-import-position

F32 = {'rtol': 0.0, 'atol': 1e-4}
BF16 = {'rtol': 0.0, 'atol': 1e-1}
BATCH = 3

CONFIGS = {
    'small': dict(resolution=16, z_dim=32, w_dim=32, mapping_layers=2,
                  channel_base=128, channel_max=16),
    # Hidden mapping width != w_dim != z_dim, a clamp that bites.
    'clamped': dict(resolution=16, z_dim=20, w_dim=24, mapping_layers=3,
                    mapping_features=12, channel_base=96, channel_max=12,
                    conv_clamp=0.5),
}
# (format, config): rosinality has no conv_clamp and z_dim == w_dim.
CASES = [('nvidia', 'small'), ('rosinality', 'small'),
         ('nvidia', 'clamped')]
CASE_IDS = [f'{f}-{c}' for f, c in CASES]


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  """config name -> (torch generator, {format: path})."""
  out = {}
  for seed, (name, cfg) in enumerate(CONFIGS.items()):
    g = ref.reference_model(cfg, seed=seed)
    d = tmp_path_factory.mktemp(name)
    paths = {'nvidia': str(d / 'network-snapshot.pkl')}
    ref.write_network_pickle(paths['nvidia'], g)
    if cfg.get('conv_clamp') is None:
      paths['rosinality'] = str(d / 'stylegan2.pt')
      ref.write_rosinality(paths['rosinality'], g)
    out[name] = (g, paths)
  return out


@functools.lru_cache(maxsize=None)
def _convert(path):
  return pst.convert(path)


@pytest.fixture(scope='module')
def case(written):
  def get(fmt, name):
    g, paths = written[name]
    config, variables = _convert(paths[fmt])
    return g, sg.as_config(config), variables
  return get


@functools.lru_cache(maxsize=None)
def _jitted(config, method='synthesis', **static):
  gen = sg.build(config)

  def fn(v, x, noise=None, psi=None):
    extra = {} if noise is None else {'noise': noise}
    if psi is not None:
      extra['truncation_psi'] = psi
    return gen.apply(v, x, method=method, **extra, **static)

  return jax.jit(fn)


def _torch_images(g, *, z=None, ws=None, psi=1, cutoff=None, **kw):
  with torch.no_grad():
    if z is not None:
      ws = g.mapping(torch.from_numpy(np.asarray(z)), None, psi, cutoff)
    else:
      ws = torch.from_numpy(np.asarray(ws))
    if 'noise' in kw and kw['noise'] is not None:
      kw['noise'] = [torch.from_numpy(np.asarray(n)) for n in kw['noise']]
    img = g.synthesis(ws, **kw)
  return img.numpy().transpose(0, 2, 3, 1)


def _rng(seed):
  return np.random.default_rng(seed)


def _wplus(config, seed):
  """W+ latents with different rows, at the scale of mapped w."""
  return (2 * _rng(seed).standard_normal(
      (BATCH, config.num_ws, config.w_dim))).astype(np.float32)


# --------------------------------------------------------------------------
# Config inference and parity.


@pytest.mark.parametrize('fmt,name', CASES, ids=CASE_IDS)
def test_config_inferred(case, fmt, name):
  _, config, variables = case(fmt, name)
  assert config == sg.StyleGAN2Config(**CONFIGS[name])
  chex.assert_trees_all_equal_shapes_and_dtypes(
      jax.tree.map(jnp.asarray, variables), sg.abstract_variables(config))


@pytest.mark.parametrize('psi,cutoff', [(1.0, None), (0.7, None), (0.6, 2)])
@pytest.mark.parametrize('fmt,name', CASES, ids=CASE_IDS)
def test_parity_z_with_truncation(case, fmt, name, psi, cutoff):
  g, config, variables = case(fmt, name)
  z = _rng(1).standard_normal((BATCH, config.z_dim)).astype(np.float32)
  got = _jitted(config, '__call__', truncation_cutoff=cutoff)(
      variables, z, psi=psi)
  want = _torch_images(g, z=z, psi=psi, cutoff=cutoff)
  chex.assert_trees_all_close(np.asarray(got), want, **F32)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('fmt,name', CASES, ids=CASE_IDS)
def test_parity_w_plus(case, fmt, name, fused):
  g, config, variables = case(fmt, name)
  ws = _wplus(config, 2)
  got = _jitted(config, fused_modconv=fused)(variables, ws)
  want = _torch_images(g, ws=ws, fused_modconv=fused)
  chex.assert_trees_all_close(np.asarray(got), want, **F32)


@pytest.mark.parametrize('fmt,name', CASES, ids=CASE_IDS)
def test_parity_w_noise_and_vmap(case, fmt, name):
  g, config, variables = case(fmt, name)
  w = _wplus(config, 3)[:, 0]
  ws = np.repeat(w[:, None], config.num_ws, axis=1)
  synth = _jitted(config)
  chex.assert_trees_all_close(np.asarray(synth(variables, w)),
                              _torch_images(g, ws=ws), **F32)
  noise = [_rng(10 + i).standard_normal((BATCH,) + s).astype(np.float32)
           for i, s in enumerate(sg.noise_shapes(config))]
  chex.assert_trees_all_close(np.asarray(synth(variables, ws, noise)),
                              _torch_images(g, ws=ws, noise=noise), **F32)
  none = _jitted(config, noise_mode='none')(variables, ws)
  chex.assert_trees_all_close(np.asarray(none),
                              _torch_images(g, ws=ws, noise_mode='none'),
                              **F32)
  gen = sg.build(config)
  per_example = jax.jit(jax.vmap(lambda x: gen.apply(
      variables, x[None], method='synthesis')[0]))
  ws_plus = _wplus(config, 4)
  chex.assert_trees_all_close(np.asarray(per_example(ws_plus)),
                              _torch_images(g, ws=ws_plus), **F32)


def test_parity_bfloat16(case):
  g, config, variables = case('nvidia', 'small')
  ws = _wplus(config, 5)
  config16 = dataclasses.replace(config, dtype='bfloat16')
  got = _jitted(config16)(variables, ws)
  assert got.dtype == jnp.float32
  chex.assert_trees_all_close(np.asarray(got), _torch_images(g, ws=ws),
                              **BF16)


def test_rosinality_maths_agree_with_port(case, written):
  _, config, variables = case('rosinality', 'small')
  sd = torch.load(written['small'][1]['rosinality'], weights_only=True)['g_ema']
  ws = _wplus(config, 6)
  noise = [sd[f'noises.noise_{i}'] for i in range(config.num_layers)]
  want = ref.rosinality_forward(sd, torch.from_numpy(ws), noise)
  got = _jitted(config)(variables, ws)
  chex.assert_trees_all_close(np.asarray(got),
                              want.numpy().transpose(0, 2, 3, 1), **F32)
  z = _rng(7).standard_normal((BATCH, config.z_dim)).astype(np.float32)
  w_ros = ref.rosinality_mapping(sd, torch.from_numpy(z)).numpy()
  ws_jax = _jitted(config, 'mapping')(variables, z)
  chex.assert_trees_all_close(np.asarray(ws_jax[:, 0]), w_ros, rtol=1e-5,
                              atol=1e-5)


def test_tolerance_catches_unflipped_upsampling_convs(case):
  g, config, variables = case('nvidia', 'small')
  unflipped = jax.tree.map(lambda x: x, variables)
  for res in config.block_resolutions[1:]:
    conv0 = unflipped['params']['synthesis'][f'b{res}']['conv0']
    conv0['weight'] = conv0['weight'][::-1, ::-1]
  ws = _wplus(config, 8)
  got = _jitted(config)(unflipped, ws)
  assert np.abs(np.asarray(got) - _torch_images(g, ws=ws)).max() > 1e-2


def test_conv_clamp_changes_the_reference(written):
  g, _ = written['clamped']
  cfg = dict(CONFIGS['clamped'], conv_clamp=None)
  unclamped = ref.Generator(**ref.generator_kwargs(cfg)).eval()
  unclamped.load_state_dict(g.state_dict())
  ws = _wplus(sg.StyleGAN2Config(**cfg), 9)
  diff = _torch_images(g, ws=ws) - _torch_images(unclamped, ws=ws)
  assert np.abs(diff).max() > 0.1


# --------------------------------------------------------------------------
# Other accepted layouts.


def test_bare_nvidia_state_dict(written, case, tmp_path):
  g, _ = written['small']
  path = str(tmp_path / 'G_ema_state_dict.pt')
  torch.save(g.state_dict(), path)
  config, variables = pst.convert(path)
  _, want_config, want = case('nvidia', 'small')
  assert sg.as_config(config) == want_config
  chex.assert_trees_all_equal(variables, want)


def test_rosinality_training_checkpoint_without_latent_avg(
    written, case, tmp_path, caplog):
  g, _ = written['small']
  sd = ref.rosinality_state_dict(g)
  path = str(tmp_path / '010000.pt')
  torch.save({'g': sd, 'd': {'w': torch.zeros(2)}, 'g_ema': sd,
              'args': argparse.Namespace(size=16, n_mlp=2),
              'ada_aug_p': 0.1}, path)
  with caplog.at_level(logging.WARNING):
    config, variables = pst.convert(path)
  assert 'latent_avg' in caplog.text
  _, want_config, want = case('rosinality', 'small')
  assert sg.as_config(config) == want_config
  chex.assert_trees_all_equal(variables['params'], want['params'])
  w_avg = variables['buffers']['mapping']['w_avg']
  chex.assert_trees_all_close(
      w_avg, pst.mean_w(want_config, want['params']), atol=1e-6)
  # It is the mean of the mapping: close to torch's mean over many z.
  z = torch.from_numpy(_rng(11).standard_normal(
      (pst.W_AVG_SAMPLES, 32)).astype(np.float32))
  with torch.no_grad():
    torch_mean = g.mapping(z)[:, 0].mean(0).numpy()
  assert np.abs(w_avg - torch_mean).max() < 0.1 * np.abs(torch_mean).max()


def test_convert_cli_and_load_directory(written, case, tmp_path):
  g, paths = written['clamped']
  out = str(tmp_path / 'converted')
  assert convert_stylegan2.main([paths['nvidia'], out]) == 0
  meta = checkpoints.read_meta(out)
  assert meta['kind'] == 'stylegan2'
  assert meta['source'] == 'network-snapshot.pkl'
  loaded = loading.read(out, loading.GENERATOR)
  _, want_config, want = case('nvidia', 'clamped')
  assert loaded.kind.name == 'stylegan2'
  assert loaded.config == want_config
  chex.assert_trees_all_close(jax.tree.map(np.asarray, loaded.variables),
                              want, rtol=0, atol=0)
  # Files work too, their kind detected from the one parse.
  assert loading.read(paths['nvidia'], loading.GENERATOR).config == (
      want_config)
  other = checkpoints.save(str(tmp_path / 'other'), want, kind='iresnet')
  with pytest.raises(checkpoints.CheckpointMismatchError, match='iresnet'):
    loading.read(other, loading.GENERATOR)


# --------------------------------------------------------------------------
# Corrupt and mismatched checkpoints: clear errors naming the key.


def _truncate(path, tmp_path):
  data = open(path, 'rb').read()
  cut = str(tmp_path / ('cut_' + os.path.basename(path)))
  with open(cut, 'wb') as f:
    f.write(data[:len(data) // 2])
  return cut


@pytest.mark.parametrize('fmt', ['nvidia', 'rosinality'])
def test_truncated_file(written, tmp_path, fmt):
  cut = _truncate(written['small'][1][fmt], tmp_path)
  with pytest.raises(CheckpointError, match='cut_'):
    pst.convert(cut)


def _source(written, fmt):
  from id2image_jax.porting import load_file  # pylint: disable=g-import-not-at-top
  return pst.read_source(load_file(written['small'][1][fmt]))


# (format, key to break) for each kind of mismatch.
BROKEN = {
    'nvidia': ('synthesis.b8.conv1.bias', 'synthesis.b8.conv0.weight'),
    'rosinality': ('convs.1.activate.bias', 'convs.0.conv.weight'),
}


@pytest.mark.parametrize('fmt', ['nvidia', 'rosinality'])
def test_missing_key_is_named(written, fmt):
  source = _source(written, fmt)
  key = BROKEN[fmt][0]
  del source.arrays[key]
  with pytest.raises(PortingError, match=key.replace('.', r'\.')):
    pst.convert_source(source)


@pytest.mark.parametrize('fmt', ['nvidia', 'rosinality'])
def test_wrong_shape_is_named(written, fmt):
  source = _source(written, fmt)
  key = BROKEN[fmt][1]
  source.arrays[key] = source.arrays[key][..., :2]
  with pytest.raises(PortingError, match=key.replace('.', r'\.')):
    pst.convert_source(source)


@pytest.mark.parametrize('fmt', ['nvidia', 'rosinality'])
def test_extra_key_is_named(written, fmt):
  source = _source(written, fmt)
  source.arrays['synthesis.b8.conv1.extra_scale'] = np.ones(3, np.float32)
  with pytest.raises(PortingError, match=r'synthesis\.b8\.conv1\.extra'):
    pst.convert_source(source)


def test_mismatch_in_file_is_named(written, tmp_path):
  g, _ = written['small']
  sd = ref.rosinality_state_dict(g)
  sd['to_rgbs.1.bias'] = torch.zeros(1, 4, 1, 1)
  path = str(tmp_path / 'bad.pt')
  torch.save({'g_ema': sd, 'latent_avg': torch.zeros(32)}, path)
  with pytest.raises(PortingError, match=r'(?s)bad\.pt.*to_rgbs\.1\.bias'):
    pst.convert(path)


def test_filter_buffer_mismatch_is_named(written):
  source = _source(written, 'nvidia')
  key = 'synthesis.b16.conv0.resample_filter'
  source.arrays[key] = np.full((4, 4), 1 / 16, np.float32)
  with pytest.raises(PortingError, match=key.replace('.', r'\.')):
    pst.convert_source(source)


def test_unsupported_generators_are_refused(written):
  source = _source(written, 'nvidia')
  source.arrays['mapping.embed.weight'] = np.ones((32, 10), np.float32)
  with pytest.raises(PortingError, match='conditional'):
    pst.convert_source(source)
  source = _source(written, 'nvidia')
  source.init_kwargs['synthesis_kwargs']['architecture'] = 'resnet'
  with pytest.raises(PortingError, match="'resnet'"):
    pst.convert_source(source)


def test_not_a_generator(tmp_path):
  path = str(tmp_path / 'other.pkl')
  with open(path, 'wb') as f:
    pickle.dump({'state': {'w': np.zeros(3)}}, f)
  with pytest.raises(CheckpointError, match='not a StyleGAN2 generator'):
    pst.convert(path)
  with pytest.raises(FileNotFoundError):
    pst.convert(str(tmp_path / 'missing.pkl'))
