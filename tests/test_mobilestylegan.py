"""MobileStyleGAN: modules, wavelets, IR reading, porting, OpenVINO parity.

Parity: a tiny random-weight IR pair in the random-face dialect
(``ports/mobilestylegan_openvino.py``) is ported and compared with the
OpenVINO runtime on it (always, when openvino is installed: test extra);
the real random-face IR (PyPI wheel, fetched into the cache on first use;
needs registry access) under the ``slow`` marker.

Tolerance table (elementwise ``|jax - ref| <= atol + rtol * |ref|``; the
real model's images are RGB in about [-1, 1]; the tiny one's reach ~10):

  compared                          ref        rtol  atol       measured
  DWT / IDWT / depthwise vs numpy   numpy f64  0     1e-5       ~5e-7
  jit / vmap / W vs W+ rows         jax        0     1e-5       ~1e-6
  tiny mapping z -> w               OpenVINO   0     1e-5       ~1e-6
  tiny synthesis w -> image (f32)   OpenVINO   0     1e-4       ~4e-6
  tiny synthesis bf16, / max|img|   OpenVINO   0     5e-2       ~1e-2
  real mapping z -> w               OpenVINO   0     1e-4       ~3e-6
  real synthesis 1024 px (f32)      OpenVINO   0     5e-4       ~8e-5
  real synthesis 1024 px (bf16)     OpenVINO   mean |err| <= 0.01 (~0.004),
                                               99.9th pct <= 0.15 (~0.07)

(The real float32 target is 1e-3, aim 1e-4: the assertion leaves room for
other CPUs' kernels. A test that ports the depthwise kernels transposed
shows the tiny float32 tolerance catches such a mistake.)
"""

import dataclasses
import functools
import inspect
import itertools
import json
import os
import pathlib
import re
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import checkpoints
from id2image_jax import loading
from id2image_jax.models import mobilestylegan as msg
from id2image_jax.porting import PortingError
from id2image_jax.porting import mobilestylegan as pm
from id2image_jax.porting import openvino_ir
from ports import mobilestylegan_openvino as ovref

F32 = {'rtol': 0.0, 'atol': 1e-5}
TINY_F32 = {'rtol': 0.0, 'atol': 1e-4}
REAL_F32 = {'rtol': 0.0, 'atol': 5e-4}
BF16_REL_ATOL = 5e-2
REAL_BF16_MEAN, REAL_BF16_P999 = 0.01, 0.15

DEMO = msg.get_config('demo-32')


@functools.cache
def _jitted(config, method='synthesis', **static):
  gen = msg.build(config)
  return jax.jit(lambda v, x: gen.apply(v, x, method=method, **static))


@pytest.fixture(scope='module')
def demo():
  return msg.init_variables(jax.random.key(0), DEMO)


def _ws(config, seed, batch=2):
  """W+ latents with different rows, at the scale of mapped w."""
  return np.random.default_rng(seed).standard_normal(
      (batch, config.num_ws, config.w_dim)).astype(np.float32)


# --------------------------------------------------------------------------
# numpy references, written from the definitions.


def np_sfb1d(lo, hi, g0, g1, axis):
  """pytorch_wavelets sfb1d (zero mode, 2 taps): a transposed conv per
  band, y[2i + k] += lo[i] g0[k] + hi[i] g1[k] along `axis`."""
  lo, hi = np.moveaxis(lo, axis, 0), np.moveaxis(hi, axis, 0)
  y = np.zeros((2 * lo.shape[0],) + lo.shape[1:])
  for i in range(lo.shape[0]):
    for k in range(2):
      y[2 * i + k] += lo[i] * g0[k] + hi[i] * g1[k]
  return np.moveaxis(y, 0, axis)


def np_idwt(low, high):
  """pytorch_wavelets _SFB2D: columns (H) first, then rows (W)."""
  g0, g1 = np.asarray(msg.HAAR_LO), np.asarray(msg.HAAR_HI)
  lo = np_sfb1d(low, high[..., 0], g0, g1, axis=1)
  hi = np_sfb1d(high[..., 1], high[..., 2], g0, g1, axis=1)
  return np_sfb1d(lo, hi, g0, g1, axis=2)


def np_depthwise(x, kernel):
  b, h, w, c = x.shape
  k = kernel.shape[0]
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  out = np.zeros((b, h, w, c))
  for i in range(k):
    for j in range(k):
      out += xp[:, i:i + h, j:j + w] * kernel[i, j, 0]
  return out


# --------------------------------------------------------------------------
# Wavelets and building blocks.


def test_idwt_matches_pytorch_wavelets_definition():
  rng = np.random.default_rng(0)
  low = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
  high = rng.standard_normal((2, 3, 5, 4, 3)).astype(np.float32)
  got = msg.idwt_haar(jnp.asarray(low), jnp.asarray(high))
  assert got.shape == (2, 6, 10, 4)
  chex.assert_trees_all_close(np.asarray(got), np_idwt(low, high), **F32)


def test_dwt_idwt_round_trips_and_low_band_is_the_mean():
  x = np.random.default_rng(1).standard_normal((2, 8, 6, 3)).astype(
      np.float32)
  low, high = msg.dwt_haar(jnp.asarray(x))
  assert low.shape == (2, 4, 3, 3) and high.shape == (2, 4, 3, 3, 3)
  chex.assert_trees_all_close(np.asarray(msg.idwt_haar(low, high)), x, **F32)
  # The inverse of the numpy synthesis, too (not only of our own idwt).
  chex.assert_trees_all_close(np_idwt(np.asarray(low), np.asarray(high)), x,
                              **F32)
  # Orthonormal Haar: LL = 2 x the 2x2 mean; energy is preserved.
  mean = x.reshape(2, 4, 2, 3, 2, 3).mean(axis=(2, 4))
  chex.assert_trees_all_close(np.asarray(low), 2 * mean, **F32)
  np.testing.assert_allclose(float(jnp.sum(low ** 2) + jnp.sum(high ** 2)),
                             float(np.sum(x ** 2)), rtol=1e-5)
  again = msg.dwt_haar(msg.idwt_haar(low, high))
  chex.assert_trees_all_close(again, (low, high), **F32)


def test_split_bands_follows_the_pytorch_channel_layout():
  # Channel C + 3c + k is band k of image channel c (view(b, C, 3, h, w)).
  c = 3
  x = jnp.arange(4 * c, dtype=jnp.float32).reshape(1, 1, 1, 4 * c)
  low, high = msg.split_bands(x, c)
  np.testing.assert_array_equal(np.asarray(low)[0, 0, 0], [0, 1, 2])
  np.testing.assert_array_equal(np.asarray(high)[0, 0, 0],
                                [[3, 4, 5], [6, 7, 8], [9, 10, 11]])
  img = msg.bands_to_image(x)
  assert img.shape == (1, 2, 2, c) and img.dtype == jnp.float32


def test_depthwise_conv_matches_numpy_and_grouped_conv():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 7, 5, 6)).astype(np.float32)
  k = rng.standard_normal((3, 3, 1, 6)).astype(np.float32)
  got = msg.depthwise_conv2d(jnp.asarray(x), jnp.asarray(k))
  chex.assert_trees_all_close(np.asarray(got), np_depthwise(x, k), **F32)
  grouped = jax.lax.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=6)
  chex.assert_trees_all_close(got, grouped, **F32)


# --------------------------------------------------------------------------
# Config and module behaviour.


def test_config_properties_and_validation():
  real = msg.get_config('ffhq-1024')
  assert real.num_ws == 23 and real.num_blocks == 7
  assert real.preview_resolutions == ()
  assert DEMO.num_ws == 8 and DEMO.preview_resolutions == (8, 16)
  assert msg.get_config('demo-64').preview_resolutions == (8, 16, 32)
  again = msg.as_config(json.loads(json.dumps(dataclasses.asdict(real))))
  assert again == real and hash(again) == hash(real)
  with pytest.raises(ValueError, match='2 \\*\\* \\(len'):
    msg.MobileStyleGANConfig(resolution=512)
  with pytest.raises(ValueError, match='divisible by 4'):
    msg.MobileStyleGANConfig(resolution=32, channels=(16, 10, 8))
  with pytest.raises(ValueError, match='dtype'):
    msg.get_config('demo-32', dtype='float16')
  with pytest.raises(ValueError, match='unknown MobileStyleGAN variant'):
    msg.get_config('ffhq-256')


def test_variables_tree_and_dtypes(demo):
  abstract = msg.abstract_variables(DEMO)
  assert set(abstract) == {'params', 'buffers'}
  assert set(abstract['buffers']) == {'mapping', 'synthesis'}
  assert abstract['buffers']['mapping']['w_avg'].shape == (DEMO.w_dim,)
  chex.assert_trees_all_equal_shapes_and_dtypes(demo, abstract)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(demo))
  # Without preview heads only the last block has one.
  plain = msg.abstract_variables(dataclasses.replace(DEMO,
                                                     preview_heads=False))
  syn = plain['params']['synthesis']
  assert 'to_img1' not in syn and 'to_img' not in syn['block0']
  assert 'to_img' in syn[f'block{DEMO.num_blocks - 1}']
  bf16 = msg.abstract_variables(dataclasses.replace(DEMO, dtype='bfloat16'))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16))


def test_shapes_mapping_truncation_and_call(demo):
  z = jax.random.normal(jax.random.key(1), (3, DEMO.z_dim))
  ws = _jitted(DEMO, 'mapping')(demo, z)
  assert ws.shape == (3, DEMO.num_ws, DEMO.w_dim) and ws.dtype == jnp.float32
  chex.assert_trees_all_close(ws, jnp.broadcast_to(ws[:, :1], ws.shape))
  w_avg = demo['buffers']['mapping']['w_avg']
  assert float(jnp.abs(w_avg).max()) > 0  # a real mean, not zeros
  psi0 = _jitted(DEMO, 'mapping', truncation_psi=0.0)(demo, z)
  chex.assert_trees_all_close(psi0, jnp.broadcast_to(w_avg, psi0.shape),
                              **F32)
  half = _jitted(DEMO, 'mapping', truncation_psi=0.5, truncation_cutoff=2)(
      demo, z)
  chex.assert_trees_all_close(half[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg),
                              **F32)
  chex.assert_trees_all_close(half[:, 2:], ws[:, 2:], **F32)
  img = _jitted(DEMO, '__call__', truncation_psi=0.7)(demo, z)
  assert img.shape == (3, DEMO.resolution, DEMO.resolution, 3)
  assert img.dtype == jnp.float32
  parts = _jitted(DEMO)(demo, _jitted(DEMO, 'mapping', truncation_psi=0.7)(
      demo, z))
  chex.assert_trees_all_close(img, parts, **F32)
  # W equals W+ with equal rows.
  chex.assert_trees_all_close(_jitted(DEMO)(demo, ws[:, 0]),
                              _jitted(DEMO)(demo, ws), **F32)


def test_jit_equals_no_jit_without_retracing():
  # One block: running op by op (no jit) dispatches every op separately.
  config = msg.MobileStyleGANConfig(resolution=16, z_dim=8, w_dim=8,
                                    mapping_layers=1, channels=(8, 8),
                                    preview_heads=True)
  variables = msg.init_variables(jax.random.key(2), config, w_avg_samples=8)
  gen = msg.build(config)
  z = jax.random.normal(jax.random.key(3), (2, config.z_dim))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def generate(v, x):
    return gen.apply(v, x, truncation_psi=0.7)

  got = generate(variables, z)
  generate(variables, z + 1.0)  # same shapes: no retrace
  with jax.disable_jit():
    want = gen.apply(variables, z, truncation_psi=0.7)
  chex.assert_trees_all_close(got, want, **F32)


def test_vmap_equals_loop(demo):
  gen = msg.build(DEMO)
  ws = _ws(DEMO, 4, batch=3)
  single = jax.jit(lambda w: gen.apply(demo, w[None], method='synthesis')[0])
  loop = jnp.stack([single(w) for w in ws])
  chex.assert_trees_all_close(jax.jit(jax.vmap(single))(ws), loop, **F32)
  chex.assert_trees_all_close(_jitted(DEMO)(demo, ws), loop, **F32)


def _rows_that_matter(variables, ws, resolution=None):
  synth = _jitted(DEMO, resolution=resolution)
  grad = jax.jit(jax.grad(lambda w: jnp.sum(synth(variables, w) ** 2)))(ws)
  return {j for j in range(DEMO.num_ws) if float(jnp.abs(grad[:, j]).max())
          > 0}


def test_w_plus_layout(demo):
  ws = jnp.asarray(_ws(DEMO, 5, batch=1))
  # conv1 0, block0 up/conv1 1, conv2 2, (block0 head 3), block1 4, 5, head
  # 6; row 7 = 3n + 1 is read by no layer (as in PyTorch).
  assert _rows_that_matter(demo, ws) == {0, 1, 2, 4, 5, 6}
  assert _rows_that_matter(demo, ws, 8) == {0, 1}
  assert _rows_that_matter(demo, ws, 16) == {0, 1, 2, 3}


def test_preview_path(demo):
  ws = _ws(DEMO, 6)
  for res in DEMO.preview_resolutions:
    img = _jitted(DEMO, resolution=res)(demo, ws)
    assert img.shape == (2, res, res, 3) and img.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(img))) and float(img.std()) > 0.1
  # Stopping early never touches later blocks: they can be absent.
  cut = jax.tree.map(lambda x: x, demo)
  for col in ('params', 'buffers'):
    del cut[col]['synthesis']['block1']
  chex.assert_trees_all_close(_jitted(DEMO, resolution=16)(cut, ws),
                              _jitted(DEMO, resolution=16)(demo, ws), **F32)
  # And it is cheaper: XLA's FLOP count grows with the output size.
  gen = msg.build(DEMO)
  flops = []
  for res in DEMO.preview_resolutions + (DEMO.resolution,):
    compiled = jax.jit(functools.partial(
        gen.apply, method='synthesis', resolution=res)).lower(
            demo, ws).compile()
    cost = compiled.cost_analysis()
    flops.append((cost[0] if isinstance(cost, list) else cost)['flops'])
  assert flops == sorted(flops) and flops[0] < flops[-1] / 4
  with pytest.raises(ValueError, match='preview resolutions'):
    _jitted(DEMO, resolution=4)(demo, ws)
  plain = dataclasses.replace(DEMO, preview_heads=False)
  with pytest.raises(ValueError, match='preview resolutions \\(\\)'):
    msg.build(plain).apply(demo, ws, resolution=16, method='synthesis')


def test_gradients_are_finite(demo):
  gen = msg.build(DEMO)
  ws = jnp.asarray(_ws(DEMO, 7))
  g = jax.jit(jax.grad(lambda w: jnp.sum(gen.apply(
      demo, w, method='synthesis') ** 2)))(ws)
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


def test_bfloat16_compute(demo):
  ws = _ws(DEMO, 8)
  f32 = _jitted(DEMO)(demo, ws)
  config16 = msg.build(DEMO, dtype=jnp.bfloat16).config
  assert config16.dtype == 'bfloat16'
  out = _jitted(config16)(demo, ws)
  assert out.dtype == jnp.float32
  scale = float(jnp.abs(f32).max())
  chex.assert_trees_all_close(out / scale, f32 / scale, rtol=0,
                              atol=BF16_REL_ATOL)


def test_optional_arguments_are_keyword_only():
  fns = [msg.Generator.__call__, msg.Generator.mapping,
         msg.Generator.synthesis, msg.init_variables, msg.build,
         pm.convert, pm.convert_source, pm.mean_w, openvino_ir.parse_xml,
         openvino_ir.const_value, ovref.write_tiny_ir]
  for fn in fns:
    for p in inspect.signature(fn).parameters.values():
      if p.default is not inspect.Parameter.empty:
        assert p.kind == p.KEYWORD_ONLY, f'{fn.__qualname__}: {p.name}'


# --------------------------------------------------------------------------
# OpenVINO IR reading (the tiny IR needs no OpenVINO to be written).


@pytest.fixture(scope='module')
def tiny_ir(tmp_path_factory):
  return ovref.write_tiny_ir(tmp_path_factory.mktemp('tiny_ir'), seed=0)


def _edited(tiny_ir, tmp_path, which, edit=None, bin_edit=None):
  """Copies the IR pair with the XML / bin of `which` (0 or 1) edited."""
  out = []
  for i, xml in enumerate(tiny_ir):
    text = pathlib.Path(xml).read_bytes()
    blob = pathlib.Path(xml).with_suffix('.bin').read_bytes()
    if i == which:
      text = edit(text) if edit else text
      blob = bin_edit(blob) if bin_edit else blob
    path = tmp_path / os.path.basename(xml)
    path.write_bytes(text)
    path.with_suffix('.bin').write_bytes(blob)
    out.append(str(path))
  return out


def test_ir_reader_reads_the_tiny_pair(tiny_ir):
  graph = openvino_ir.read(tiny_ir[1])
  assert graph.name == 'SynthesisNetwork' and graph.version == '10'
  consts = graph.of_type('Const')
  assert len(graph.constants) == len(consts) > 100
  (param,) = graph.of_type('Parameter')
  assert param.outputs[0].shape == (1, ovref.TINY.w_dim)
  named = {c.name: graph.constants[c.id] for c in consts}
  assert named['m.input.input'].shape == (1, ovref.TINY.channels[0], 4, 4)
  assert named['m.input.input'].dtype == np.float32
  assert ('Broadcast', 'opset3') in openvino_ir.op_types(graph)


def _last_const(text):
  return re.findall(rb'<layer id="\d+" name="([^"]+)" type="Const"', text)[-1]


def test_ir_truncated_bin_names_the_constant(tiny_ir, tmp_path):
  text = pathlib.Path(tiny_ir[1]).read_bytes()
  # The constant stored last in the blob is the one cut off.
  name = _last_const(text).decode()
  paths = _edited(tiny_ir, tmp_path, 1, bin_edit=lambda b: b[:-1])
  with pytest.raises(openvino_ir.IRError,
                     match=rf"SynthesisNetwork\.xml: constant '{name}'.*"
                     'truncated'):
    openvino_ir.read(paths[1])


def test_ir_unknown_precision_and_bad_size_are_named(tiny_ir, tmp_path):
  def retype(text):
    return text.replace(b'<data element_type="f32" shape="1, 16, 4, 4"',
                        b'<data element_type="q7" shape="1, 16, 4, 4"', 1)
  paths = _edited(tiny_ir, tmp_path, 1, retype)
  with pytest.raises(openvino_ir.IRError,
                     match="'m.input.input'.*element type 'q7'"):
    openvino_ir.read(paths[1])

  def reshape(text):
    return text.replace(b'<data element_type="f32" shape="1, 16, 4, 4"',
                        b'<data element_type="f32" shape="1, 16, 4, 5"', 1)
  paths = _edited(tiny_ir, tmp_path, 1, reshape)
  with pytest.raises(openvino_ir.IRError,
                     match="'m.input.input'.*do not hold f32"):
    openvino_ir.read(paths[1])


@pytest.mark.parametrize('edit,message', [
    (lambda t: t[:len(t) // 2], 'malformed XML'),
    (lambda t: t.replace(b'version="10"', b'version="7"', 1),
     "IR version '7'"),
    (lambda t: t.replace(b'<?xml version="1.0" ?>',
                         b'<?xml version="1.0" ?><!DOCTYPE net>', 1),
     'DOCTYPE'),
    (lambda t: t.replace(b'from-layer="0"', b'from-layer="99999"', 1),
     'unknown layer 99999'),
    (lambda t: t.replace(b'<layers>', b'<layerz>', 1).replace(
        b'</layers>', b'</layerz>', 1), 'missing <layers>'),
])
def test_ir_malformed_xml_is_refused(tiny_ir, tmp_path, edit, message):
  paths = _edited(tiny_ir, tmp_path, 0, edit)
  with pytest.raises(openvino_ir.IRError, match=message):
    openvino_ir.read(paths[0])


def test_ir_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError):
    openvino_ir.read(str(tmp_path / 'missing.xml'))


# --------------------------------------------------------------------------
# Porting: structure-derived keys and strict coverage.


@functools.cache
def _convert(mapping_xml, synthesis_xml):
  return pm.convert(mapping_xml, synthesis_xml, w_avg_samples=256)


def test_port_infers_config_and_fills_every_variable(tiny_ir):
  config, variables = _convert(*tiny_ir)
  assert msg.as_config(config) == ovref.TINY
  chex.assert_trees_all_equal_shapes_and_dtypes(
      jax.tree.map(jnp.asarray, variables),
      msg.abstract_variables(ovref.TINY))
  w_avg = variables['buffers']['mapping']['w_avg']
  chex.assert_trees_all_close(
      w_avg, pm.mean_w(ovref.TINY, variables['params'], samples=256),
      atol=1e-6)


def _structure_keys_agree_with_names(source):
  """Every IR constant named after its PyTorch module got that key."""
  checked = 0
  for key, where in source.names.items():
    m = re.search(r"Const 'm\.([^']+)'", where)
    if m:
      assert key == f'synthesis.{m.group(1)}', (key, where)
      checked += 1
  return checked


def test_keys_come_from_structure_and_agree_with_pytorch_names(tiny_ir):
  source = pm.read_source(*tiny_ir)
  assert _structure_keys_agree_with_names(source) > 20
  # The folded constants have numbered names but structural keys.
  assert re.search(r"Const '\d+'",
                   source.names['synthesis.layers.1.conv2.conv.'
                                'weight_permute_demod'])
  # Every constant is keyed: parameters, structure, or shape plumbing.
  graphs = [openvino_ir.read(p) for p in tiny_ir]
  assert len(source.arrays) == sum(len(g.constants) for g in graphs)


def test_key_derivation_ignores_constant_names(tiny_ir, tmp_path):
  # Renaming every named constant changes no key.
  count = itertools.count()
  paths = _edited(tiny_ir, tmp_path, 1,
                  lambda t: re.sub(rb'name="m\.[^"]+"',
                                   lambda _: b'name="x%d"' % next(count), t))
  assert sorted(pm.read_source(*paths).arrays) == sorted(
      pm.read_source(*tiny_ir).arrays)


def test_missing_constant_is_named(tiny_ir):
  source = pm.read_source(*tiny_ir)
  key = 'synthesis.layers.0.conv1.bias'
  del source.arrays[key]
  with pytest.raises(PortingError,
                     match=r"(?s)layers\.0\.conv1\.bias.*"
                     r"Const 'm\.layers\.0\.conv1\.bias'"):
    pm.convert_source(source)


def test_extra_constant_is_named(tiny_ir):
  source = pm.read_source(*tiny_ir)
  source.arrays['synthesis.layers.0.conv1.extra'] = np.ones(3, np.float32)
  with pytest.raises(PortingError, match=r'match no rule.*layers\.0\.conv1'
                     r'\.extra'):
    pm.convert_source(source)


def test_wrong_shape_is_named(tiny_ir):
  source = pm.read_source(*tiny_ir)
  key = 'synthesis.layers.1.conv2.conv.weight_dw'
  source.arrays[key] = source.arrays[key][..., :2]
  with pytest.raises(PortingError, match=r"(?s)shape mismatch.*layers\.1\."
                     r"conv2\.conv\.weight_dw.*Const 'm\.layers\.1\.conv2"):
    pm.convert_source(source)


def test_structural_constant_with_another_value_is_named(tiny_ir):
  source = pm.read_source(*tiny_ir)
  key = 'synthesis.layers.1.conv1.act.slope'
  source.arrays[key] = np.array([0.1], np.float32)
  with pytest.raises(PortingError, match=r'structural.*layers\.1\.conv1\.act'
                     r'\.slope: \[0\.1'):
    pm.convert_source(source)
  source = pm.read_source(*tiny_ir)
  key = 'synthesis.idwt.lh_h'  # a Haar band with the wrong sign
  source.arrays[key] = -source.arrays[key]
  with pytest.raises(PortingError, match=r'synthesis\.idwt\.lh_h'):
    pm.convert_source(source)


def _insert_layer(text, layer_xml):
  return text.replace(b'</layers>', layer_xml + b'\n</layers>', 1)


def test_dangling_constant_in_the_ir_is_named(tiny_ir, tmp_path):
  extra = (b'<layer id="90000" name="stray_scale" type="Const" '
           b'version="opset1"><data element_type="f32" shape="1" '
           b'offset="0" size="4"/><output><port id="0" precision="FP32">'
           b'<dim>1</dim></port></output></layer>')
  paths = _edited(tiny_ir, tmp_path, 1, lambda t: _insert_layer(t, extra))
  with pytest.raises(PortingError, match='match no rule.*stray_scale'):
    pm.convert(*paths)


def test_unrecognised_graph_is_named(tiny_ir, tmp_path):
  # A leaky ReLU that became a ReLU: the walk names the layer it stopped at.
  def relu(text):
    i = text.rindex(b'type="PReLU"')
    return text[:i] + b'type="Elu__"' + text[i + len(b'type="PReLU"'):]
  paths = _edited(tiny_ir, tmp_path, 1, relu)
  with pytest.raises(PortingError, match=r"expected PReLU.*found Elu__"):
    pm.convert(*paths)
  # An extra output (e.g. an intermediate head) is not silently dropped.
  extra = (b'<layer id="90001" name="extra_out" type="Result" '
           b'version="opset1"><input><port id="0" precision="FP32"/>'
           b'</input></layer>')

  def second_result(text):
    text = _insert_layer(text, extra)
    return text.replace(b'</edges>', b'<edge from-layer="0" from-port="0" '
                        b'to-layer="90001" to-port="0"/></edges>', 1)
  paths = _edited(tiny_ir, tmp_path, 1, second_result)
  with pytest.raises(PortingError, match='one Result.*found 2'):
    pm.convert(*paths)


def test_load_converted_directory_and_ir_directory(tiny_ir, tmp_path):
  config, variables = _convert(*tiny_ir)
  out = checkpoints.save(str(tmp_path / 'converted'), variables,
                         kind=pm.KIND, config=config, source='tiny')
  got = loading.read(out, loading.GENERATOR)
  assert got.kind.name == 'mobilestylegan' and got.config == ovref.TINY
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, got.variables),
                              variables)
  # A directory holding the IR pair, and either XML file, are recognised
  # by their names and read once.
  for path in (os.path.dirname(tiny_ir[0]), tiny_ir[1]):
    assert loading.read(path, loading.GENERATOR).config == ovref.TINY
  other = checkpoints.save(str(tmp_path / 'other'), variables,
                           kind='stylegan2')
  with pytest.raises(checkpoints.CheckpointMismatchError, match='stylegan2'):
    loading.read(f'mobilestylegan:{other}', loading.GENERATOR)


# --------------------------------------------------------------------------
# Parity with the OpenVINO runtime.


def _need_openvino():
  # Not pytest.importorskip: a plain `import openvino` starts its telemetry.
  if not ovref.have_openvino():
    pytest.skip('openvino is not installed (it comes with the test extra)')


@pytest.fixture(scope='module')
def ov(tiny_ir):
  _need_openvino()
  return ovref.OpenVINOReference(*tiny_ir)


def _z(config, seed, batch=3):
  return np.random.default_rng(seed).standard_normal(
      (batch, config.z_dim)).astype(np.float32)


def test_tiny_parity_mapping_and_synthesis(tiny_ir, ov):
  config, variables = _convert(*tiny_ir)
  config = msg.as_config(config)
  z = _z(config, 10)
  w = ov.mapping(z)
  ws = _jitted(config, 'mapping')(variables, z)
  chex.assert_trees_all_close(np.asarray(ws[:, 0]), w, **F32)
  want = ov.synthesis(w)
  assert want.shape == (3, 32, 32, 3) and float(np.std(want)) > 0.3
  got = _jitted(config)(variables, w)
  chex.assert_trees_all_close(np.asarray(got), want, **TINY_F32)
  # z -> image with truncation: OpenVINO on the truncated w.
  w_avg = variables['buffers']['mapping']['w_avg']
  img = _jitted(config, '__call__', truncation_psi=0.6)(variables, z)
  chex.assert_trees_all_close(
      np.asarray(img), ov.synthesis(w_avg + 0.6 * (w - w_avg)), **TINY_F32)
  # One example at a time under vmap.
  per_example = jax.jit(jax.vmap(lambda x: msg.build(config).apply(
      variables, x[None], method='synthesis')[0]))
  chex.assert_trees_all_close(np.asarray(per_example(w)), want, **TINY_F32)


def test_tiny_parity_bfloat16(tiny_ir, ov):
  config, variables = _convert(*tiny_ir)
  config16 = dataclasses.replace(msg.as_config(config), dtype='bfloat16')
  w = ov.mapping(_z(config16, 11))
  want = ov.synthesis(w)
  got = np.asarray(_jitted(config16)(variables, w))
  scale = float(np.abs(want).max())
  chex.assert_trees_all_close(got / scale, want / scale, rtol=0,
                              atol=BF16_REL_ATOL)


def test_tolerance_catches_transposed_depthwise_kernels(tiny_ir, ov):
  config, variables = _convert(*tiny_ir)
  config = msg.as_config(config)
  wrong = jax.tree.map(lambda x: x, variables)
  for i in range(config.num_blocks):
    for conv in ('conv1', 'conv2'):
      layer = wrong['params']['synthesis'][f'block{i}'][conv]
      layer['depthwise'] = np.swapaxes(layer['depthwise'], 0, 1)
  w = ov.mapping(_z(config, 12))
  err = np.abs(np.asarray(_jitted(config)(wrong, w)) - ov.synthesis(w))
  assert err.max() > 1e-2


# The real model: random-face's IR (the wheel is fetched on first use).


@pytest.fixture(scope='module')
def real():
  _need_openvino()
  files = pm.default_files()
  config, variables = pm.convert(*files)
  return msg.as_config(config), variables, ovref.OpenVINOReference(*files)


@pytest.mark.slow
def test_real_structure_keys_agree_with_pytorch_names():
  source = pm.read_source(*pm.default_files())
  config = pm.infer_config(source)
  assert config == msg.get_config('ffhq-1024')
  # input, conv1 (styles, bias), per block up (styles), conv1/conv2 (styles,
  # depthwise, bias), last to_img (styles, weight, bias).
  assert _structure_keys_agree_with_names(source) == (
      1 + 3 + 10 * config.num_blocks + 4)


@pytest.mark.slow
def test_real_parity_mapping_and_w_avg(real):
  config, variables, ov = real
  z = _z(config, 20, batch=4)
  ws = _jitted(config, 'mapping')(variables, z)
  chex.assert_trees_all_close(np.asarray(ws[:, 0]), ov.mapping(z),
                              rtol=0, atol=1e-4)
  # w_avg is the mean of OpenVINO's mapping over the same fixed-seed z.
  z_avg = np.random.default_rng(pm.W_AVG_SEED).standard_normal(
      (pm.W_AVG_SAMPLES, config.z_dim)).astype(np.float32)
  chex.assert_trees_all_close(variables['buffers']['mapping']['w_avg'],
                              ov.mapping(z_avg).mean(0), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_real_parity_synthesis_1024(real):
  config, variables, ov = real
  w = ov.mapping(_z(config, 21, batch=2))
  want = ov.synthesis(w)
  assert want.shape == (2, 1024, 1024, 3)
  got = np.asarray(_jitted(config)(variables, w))
  chex.assert_trees_all_close(got, want, **REAL_F32)
  config16 = dataclasses.replace(config, dtype='bfloat16')
  err = np.abs(np.asarray(_jitted(config16)(variables, w)) - want)
  assert err.mean() <= REAL_BF16_MEAN, err.mean()
  assert np.quantile(err, 0.999) <= REAL_BF16_P999, np.quantile(err, 0.999)


def test_benchmark_script_smoke(tmp_path):
  _need_openvino()
  bench_dir = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'benchmarks')
  if bench_dir not in sys.path:
    sys.path.insert(0, bench_dir)
  import bench_mobilestylegan  # pylint: disable=g-import-not-at-top
  report = bench_mobilestylegan.main([
      '--smoke', '--no-peak', '--batches', '1', '--no-previews',
      '--out-dir', str(tmp_path)])
  with open(tmp_path / 'mobilestylegan_cpu_smoke.json') as f:
    saved = json.load(f)
  assert saved['benchmark'] == report['benchmark'] == 'mobilestylegan'
  assert saved['env']['openvino'] and saved['env']['dtype'] == 'float32'
  impls = {(r['impl'], r['pass']) for r in saved['results']}
  assert impls == {('jax', 'forward'), ('jax', 'forward+backward'),
                   ('openvino', 'forward')}
  for r in saved['results']:
    assert r['median_s'] > 0 and r['throughput'] > 0 and r['N'] == 1
    assert r['compile_s'] > 0
  (ratio,) = saved['ratios']
  assert ratio['jax_forward+backward_over_openvino_forward_time'] > 0
