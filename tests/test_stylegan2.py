"""StyleGAN2 building blocks vs numpy references, and generator behaviour.

No torch here (parity with the PyTorch references is in
test_stylegan2_porting.py). Tolerances (float32; elementwise
``|got - want| <= atol + rtol * |want|``):

  check                                     rtol   atol   measured max |err|
  upfirdn2d vs numpy loop                   0      1e-5   ~5e-7
  modulated_conv2d (both forms) vs numpy    1e-5   1e-5   ~2e-6
  fused vs shared form, whole generator     0      1e-5   ~2e-6
  jit / vmap / W vs W+ / explicit noise     0      1e-5   ~1e-6
  bfloat16 compute vs float32, / max|img|   0      5e-2   ~2e-2
"""

import dataclasses
import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax.models import stylegan2 as sg

F32 = {'rtol': 0.0, 'atol': 1e-5}
BF16_ATOL = 5e-2

# 8 px keeps compiles short; the porting tests cover 16 px against torch.
TINY = sg.StyleGAN2Config(resolution=8, z_dim=16, w_dim=24,
                          mapping_layers=2, channel_base=64, channel_max=16)


# --------------------------------------------------------------------------
# numpy references, written from the definitions.


def np_upfirdn2d(x, f2d, *, up, down, pad, flip, gain):
  """Direct loops: zero-insert, pad/crop, FIR (convolution), downsample."""
  b, h, w, c = x.shape
  (y0, y1), (x0, x1) = pad
  up_img = np.zeros((b, h * up, w * up, c), np.float64)
  up_img[:, ::up, ::up] = x
  ph, pw = h * up + y0 + y1, w * up + x0 + x1
  padded = np.zeros((b, ph, pw, c), np.float64)
  for i in range(ph):
    for j in range(pw):
      si, sj = i - y0, j - x0
      if 0 <= si < h * up and 0 <= sj < w * up:
        padded[:, i, j] = up_img[:, si, sj]
  k = np.asarray(f2d, np.float64) * gain
  if not flip:
    k = k[::-1, ::-1]
  fh, fw = k.shape
  oh = (ph - fh) // down + 1
  ow = (pw - fw) // down + 1
  out = np.zeros((b, oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      for a in range(fh):
        for bb in range(fw):
          out[:, i, j] += padded[:, i * down + a, j * down + bb] * k[a, bb]
  return out


def np_modulated_conv(x, weight, styles, *, demodulate, up, taps):
  """Per-sample weights; 'same' correlation, or scatter-form transposed conv.

  For ``up=2`` the transposed conv is written as a scatter with the
  convolution-oriented weight (weight[::-1, ::-1]), the way torch's
  conv_transpose2d defines it, then the FIR filter.
  """
  b, h, w, i = x.shape
  kh, kw, _, o = weight.shape
  wb = weight[None] * styles[:, None, None, :, None]
  if demodulate:
    wb = wb / np.sqrt((wb ** 2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None,
                                                              None, :]
  if up == 1:
    p = kh // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((b, h, w, o))
    for a in range(kh):
      for c in range(kw):
        out += np.einsum('bhwi,bio->bhwo', xp[:, a:a + h, c:c + w],
                         wb[:, a, c])
    return out
  conv_w = wb[:, ::-1, ::-1]  # true-convolution orientation
  full = np.zeros((b, (h - 1) * up + kh, (w - 1) * up + kw, o))
  for yy in range(h):
    for xx in range(w):
      full[:, yy * up:yy * up + kh, xx * up:xx * up + kw] += np.einsum(
          'bi,bklio->bklo', x[:, yy, xx], conv_w)
  f1 = np.asarray(taps, np.float64) / np.sum(taps)
  p = kh // 2
  pad0 = p + (len(taps) + up - 1) // 2 - (kh - 1)
  pad1 = p + (len(taps) - up) // 2 - (kh - up)
  return np_upfirdn2d(full, np.outer(f1, f1), up=1, down=1,
                      pad=((pad0, pad1), (pad0, pad1)), flip=False,
                      gain=up ** 2)


# --------------------------------------------------------------------------
# Building blocks.


@pytest.mark.parametrize('up,down,pad,separable,flip,gain', [
    (1, 1, ((1, 2), (2, 1)), True, False, 1.0),
    (2, 1, ((2, 1), (2, 1)), True, False, 4.0),
    (1, 2, ((1, 1), (1, 1)), True, False, 1.0),
    (2, 2, ((0, 3), (1, 0)), False, False, 2.0),
    (2, 1, ((-1, 2), (3, -2)), False, True, 1.5),
    (3, 1, ((1, 1), (0, 2)), True, True, 9.0),
])
def test_upfirdn2d_matches_numpy(up, down, pad, separable, flip, gain):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
  taps = np.array([1.0, 2.0, 4.0, 3.0], np.float32)
  if separable:
    f, f2d = taps, np.outer(taps, taps)
  else:
    f2d = rng.uniform(0.1, 1.0, (4, 3)).astype(np.float32)
    f = f2d
  got = sg.upfirdn2d(jnp.asarray(x), f, up=up, down=down, padding=pad,
                     flip_filter=flip, gain=gain)
  want = np_upfirdn2d(x, f2d, up=up, down=down, pad=pad, flip=flip,
                      gain=gain)
  assert got.shape == want.shape
  chex.assert_trees_all_close(np.asarray(got), want.astype(np.float32),
                              rtol=0, atol=1e-4)


def test_upsample2d_keeps_constant_images_constant():
  x = jnp.full((1, 4, 4, 2), 3.0)
  y = sg.upsample2d(x, sg.setup_filter((1, 3, 3, 1)))
  assert y.shape == (1, 8, 8, 2)
  # Away from the zero-padded border the DC gain is exactly 1.
  chex.assert_trees_all_close(y[:, 2:-2, 2:-2], jnp.full((1, 4, 4, 2), 3.0),
                              atol=1e-6)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('up,demodulate,k', [(1, True, 3), (1, False, 1),
                                             (2, True, 3), (1, True, 1)])
def test_modulated_conv2d_matches_numpy(fused, up, demodulate, k):
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 5, 5, 4)).astype(np.float32)
  weight = rng.standard_normal((k, k, 4, 6)).astype(np.float32)
  styles = rng.uniform(0.2, 1.5, (3, 4)).astype(np.float32)
  taps = (1, 3, 3, 1)
  got = sg.modulated_conv2d(jnp.asarray(x), jnp.asarray(weight),
                            jnp.asarray(styles), demodulate=demodulate,
                            up=up, resample_filter=sg.setup_filter(taps),
                            fused=fused)
  want = np_modulated_conv(x.astype(np.float64), weight.astype(np.float64),
                           styles.astype(np.float64), demodulate=demodulate,
                           up=up, taps=taps)
  assert got.shape == (3, 5 * up, 5 * up, 6)
  chex.assert_trees_all_close(np.asarray(got), want.astype(np.float32),
                              rtol=1e-5, atol=1e-5)


def test_modulated_conv2d_forms_agree_and_vmap():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (4, 8, 8, 8))
  weight = jax.random.normal(keys[1], (3, 3, 8, 5))
  styles = jax.random.uniform(keys[2], (4, 8), minval=0.5, maxval=1.5)
  conv = jax.jit(functools.partial(
      sg.modulated_conv2d, up=2, resample_filter=sg.setup_filter((1, 3, 3,
                                                                  1))),
                 static_argnames='fused')
  a = conv(x, weight, styles, fused=True)
  b = conv(x, weight, styles, fused=False)
  chex.assert_trees_all_close(a, b, **F32)
  for fused in (False, True):
    per_example = jax.jit(jax.vmap(lambda xi, si, fused=fused: conv(
        xi[None], weight, si[None], fused=fused)[0]))
    chex.assert_trees_all_close(per_example(x, styles), b, **F32)


def test_truncate():
  ws = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  w_avg = jnp.array([1.0, -1.0, 0.5])
  assert sg.truncate(ws, w_avg, psi=1) is ws
  chex.assert_trees_all_close(sg.truncate(ws, w_avg, psi=0.0),
                              jnp.broadcast_to(w_avg, ws.shape))
  cut = sg.truncate(ws, w_avg, psi=0.5, cutoff=2)
  chex.assert_trees_all_close(cut[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg))
  chex.assert_trees_all_close(cut[:, 2:], ws[:, 2:])
  # A traced psi works too (inversion code may sweep it under jit).
  traced = jax.jit(lambda p: sg.truncate(ws, w_avg, psi=p))(0.5)
  chex.assert_trees_all_close(traced, sg.truncate(ws, w_avg, psi=0.5))


# --------------------------------------------------------------------------
# Config.


@pytest.mark.parametrize('res,num_ws', [(4, 2), (8, 4), (16, 6), (256, 14),
                                        (1024, 18)])
def test_num_ws_and_noise_shapes(res, num_ws):
  config = sg.StyleGAN2Config(resolution=res)
  assert config.num_ws == num_ws
  shapes = sg.noise_shapes(config)
  assert len(shapes) == num_ws - 1 == config.num_layers
  assert shapes[0] == (4, 4) and shapes[-1] == (res, res)


def test_config_json_round_trip_and_validation():
  config = sg.get_config('ada-paper256')
  back = sg.StyleGAN2Config(**json.loads(json.dumps(
      dataclasses.asdict(config))))
  assert back == config and hash(back) == hash(config)
  assert config.channels(4) == 512 and config.channels(256) == 64
  assert sg.get_config('config-f-1024').channels(1024) == 32
  for bad in (dict(resolution=48), dict(resolution=2),
              dict(resolution=16, dtype='float16'),
              dict(resolution=1024, channel_base=512)):
    with pytest.raises(ValueError):
      sg.StyleGAN2Config(**bad)
  with pytest.raises(ValueError, match='unknown StyleGAN2 variant'):
    sg.get_config('nope')


# --------------------------------------------------------------------------
# Generator.


@pytest.fixture(scope='module')
def tiny():
  variables = sg.init_variables(jax.random.key(0), TINY)
  # Nonzero noise strengths and biases (init: zeros) so those paths matter.
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables['params'])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [0.3 * jax.random.normal(k, x.shape)
            if path[-1].key in ('noise_strength', 'bias') else x
            for (path, x), k in zip(leaves, keys)]
  params = jax.tree_util.tree_unflatten(treedef, leaves)
  return sg.build(TINY), {'params': params, 'buffers': variables['buffers']}


def _ws(key, batch=3):
  return jax.random.normal(key, (batch, TINY.num_ws, TINY.w_dim))


@functools.lru_cache(maxsize=None)
def _jitted(method='synthesis', config=TINY, **static):
  """One compiled function per (method, static options), shared by tests.

  Eager application compiles every op separately (~7 s for the tiny
  generator); one jit per signature keeps the module fast.
  """
  gen = sg.build(config)

  def fn(v, x, noise=None, rngs=None):
    extra = {} if noise is None else {'noise': noise}
    return gen.apply(v, x, rngs=rngs, method=method, **extra, **static)

  return jax.jit(fn)


def _consts(variables):
  return [variables['buffers']['synthesis'][f'b{r}'][c]['noise_const']
          for r in TINY.block_resolutions
          for c in (['conv1'] if r == 4 else ['conv0', 'conv1'])]


def test_init_variables_structure(tiny):
  _, variables = tiny
  assert set(variables) == {'params', 'buffers'}
  abstract = sg.abstract_variables(TINY)
  chex.assert_trees_all_equal_shapes_and_dtypes(variables, abstract)
  syn = variables['params']['synthesis']
  assert set(syn) == {'b4', 'b8'}
  assert syn['b4']['const'].shape == (4, 4, 16)
  assert syn['b8']['conv0']['weight'].shape == (3, 3, 16, 8)
  assert syn['b8']['torgb']['weight'].shape == (1, 1, 8, 3)
  assert variables['buffers']['synthesis']['b8']['conv1'][
      'noise_const'].shape == (8, 8)
  # w_avg is the mean mapped w, not zeros.
  assert float(jnp.abs(variables['buffers']['mapping']['w_avg']).max()) > 0


def test_init_variables_follows_module_initialisers():
  config = sg.StyleGAN2Config(resolution=4, z_dim=8, w_dim=8,
                              mapping_layers=2, channel_base=32,
                              channel_max=8, lr_multiplier=0.1)
  ours = sg.init_variables(jax.random.key(20), config, w_avg_samples=0)
  # rbg keys: threefry makes XLA compile this init ~5x slower.
  theirs = jax.jit(lambda k: sg.build(config).init(
      {'params': k}, jnp.zeros((1, 8))))(jax.random.key(21, impl='rbg'))
  chex.assert_trees_all_equal_shapes_and_dtypes(ours, theirs)
  for v in (ours, theirs):
    conv = v['params']['synthesis']['b4']['conv1']
    chex.assert_trees_all_equal(conv['affine']['bias'], jnp.ones(8))
    chex.assert_trees_all_equal(conv['bias'], jnp.zeros(8))
    chex.assert_trees_all_equal(conv['noise_strength'], jnp.zeros(()))
    chex.assert_trees_all_equal(v['buffers']['mapping']['w_avg'],
                                jnp.zeros(8))
    # Mapping kernels are N(0, 1 / lr_multiplier^2).
    assert 5 < float(jnp.std(v['params']['mapping']['fc0']['kernel'])) < 20


def test_mapping_and_truncation(tiny):
  _, variables = tiny
  mapping = _jitted('mapping')
  z = jax.random.normal(jax.random.key(2), (3, TINY.z_dim))
  ws = mapping(variables, z)
  assert ws.shape == (3, TINY.num_ws, TINY.w_dim) and ws.dtype == jnp.float32
  chex.assert_trees_all_close(ws, jnp.broadcast_to(ws[:, :1], ws.shape))
  w_avg = variables['buffers']['mapping']['w_avg']
  gen = sg.build(TINY)
  ws0 = gen.apply(variables, z, truncation_psi=0.0, method='mapping')
  chex.assert_trees_all_close(ws0, jnp.broadcast_to(w_avg, ws.shape))
  ws_cut = gen.apply(variables, z, truncation_psi=0.5, truncation_cutoff=2,
                     method='mapping')
  chex.assert_trees_all_close(ws_cut[:, 2:], ws[:, 2:])
  assert float(jnp.abs(ws_cut[:, :2] - ws[:, :2]).max()) > 1e-3


def test_w_equals_broadcast_w_plus_and_call_equals_parts(tiny):
  _, variables = tiny
  z = jax.random.normal(jax.random.key(3), (3, TINY.z_dim))
  ws = _jitted('mapping')(variables, z)
  synth = _jitted()
  from_wplus = synth(variables, ws)
  chex.assert_trees_all_close(synth(variables, ws[:, 0]), from_wplus, **F32)
  full = _jitted('__call__')(variables, z)
  chex.assert_trees_all_close(full, from_wplus, **F32)
  assert full.shape == (3, 8, 8, 3) and full.dtype == jnp.float32


def test_noise_modes_and_explicit_noise(tiny):
  _, variables = tiny
  ws = _ws(jax.random.key(4))
  consts = _consts(variables)
  assert [c.shape for c in consts] == sg.noise_shapes(TINY)
  explicit = _jitted()
  const = explicit(variables, ws)
  chex.assert_trees_all_close(explicit(variables, ws, consts), const, **F32)
  # (noise_mode='none' is checked against torch in test_stylegan2_porting.)
  zeros = [jnp.zeros(s) for s in sg.noise_shapes(TINY)]
  assert float(jnp.abs(explicit(variables, ws, zeros) - const).max()) > 1e-3
  # Per-example [B, H, W] noise: example b sees its own maps.
  k1, k2 = jax.random.split(jax.random.key(5))
  batched = [jax.random.normal(k, (3,) + s) for k, s in zip(
      jax.random.split(k1, len(consts)), sg.noise_shapes(TINY))]
  got = explicit(variables, ws, batched)
  for b in range(3):
    same_for_all = explicit(variables, ws, [n[b] for n in batched])
    chex.assert_trees_all_close(got[b], same_for_all[b], **F32)
  # 'random' draws from the 'noise' stream: same key, same images.
  random = _jitted(noise_mode='random')
  r1 = random(variables, ws, rngs={'noise': k2})
  r2 = random(variables, ws, rngs={'noise': k2})
  chex.assert_trees_all_equal(r1, r2)
  r3 = random(variables, ws, rngs={'noise': jax.random.key(6)})
  assert float(jnp.abs(r1 - r3).max()) > 1e-3
  gen = sg.build(TINY)
  with pytest.raises(Exception, match='noise'):
    jax.eval_shape(lambda: gen.apply(variables, ws, method='synthesis',
                                     noise_mode='random'))  # no key
  with pytest.raises(ValueError, match='noise_mode'):
    jax.eval_shape(lambda: gen.apply(variables, ws, method='synthesis',
                                     noise_mode='const2'))
  with pytest.raises(ValueError, match='list of 3'):
    jax.eval_shape(lambda: gen.apply(variables, ws, method='synthesis',
                                     noise=consts[:-1]))
  with pytest.raises(ValueError, match='8x8'):
    jax.eval_shape(lambda: gen.apply(
        variables, ws, method='synthesis',
        noise=consts[:-1] + [jnp.zeros((4, 4))]))


def test_fused_and_shared_generators_agree(tiny):
  _, variables = tiny
  ws = _ws(jax.random.key(7))
  a = _jitted(fused_modconv=True)(variables, ws)
  b = _jitted(fused_modconv=False)(variables, ws)
  chex.assert_trees_all_close(a, b, **F32)


@pytest.mark.parametrize('fused', [False, True])
def test_jit_and_vmap_equal_batched(tiny, fused):
  gen, variables = tiny
  ws = _ws(jax.random.key(8))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def synth(v, w):
    return gen.apply(v, w, method='synthesis', fused_modconv=fused)

  want = synth(variables, ws)
  synth(variables, ws + 1.0)  # same shapes: no retrace
  per_example = jax.jit(jax.vmap(lambda w: gen.apply(
      variables, w[None], method='synthesis', fused_modconv=fused)[0]))
  chex.assert_trees_all_close(per_example(ws), want, **F32)


def test_gradients_wrt_latents_and_noise(tiny):
  gen, variables = tiny
  ws = _ws(jax.random.key(9), batch=2)
  noise = [jnp.zeros(s) for s in sg.noise_shapes(TINY)]

  def loss(w, n):
    return jnp.sum(gen.apply(variables, w, noise=n, method='synthesis') ** 2)

  gw, gn = jax.jit(jax.grad(loss, argnums=(0, 1)))(ws, noise)
  assert gw.shape == ws.shape and len(gn) == len(noise)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in [gw] + gn)
  assert float(jnp.abs(gw).max()) > 0 and float(jnp.abs(gn[-1]).max()) > 0


def test_bfloat16_compute(tiny):
  _, variables = tiny
  ws = _ws(jax.random.key(10))
  f32 = _jitted()(variables, ws)
  bf16_gen = sg.build(TINY, dtype=jnp.bfloat16)
  assert bf16_gen.config.dtype == 'bfloat16'
  out = _jitted(config=bf16_gen.config)(variables, ws)
  assert out.dtype == jnp.float32
  # Random-init images reach ~10: compare relative to the image scale.
  scale = float(jnp.abs(f32).max())
  chex.assert_trees_all_close(out / scale, f32 / scale, rtol=0,
                              atol=BF16_ATOL)
  # Params stay float32 under bfloat16 compute.
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(
      sg.abstract_variables(bf16_gen.config)))


def test_conv_clamp_bounds_rgb():
  config = dataclasses.replace(TINY, conv_clamp=0.05)
  variables = sg.init_variables(jax.random.key(11), config)
  img = _jitted(config=config)(variables, _ws(jax.random.key(12)))
  # Each ToRGB output is clamped; the skip image sums one per block.
  assert float(jnp.abs(img).max()) <= 0.05 * len(config.block_resolutions)


def test_resolution_4_generator():
  config = sg.StyleGAN2Config(resolution=4, z_dim=8, w_dim=8,
                              mapping_layers=1, channel_base=32,
                              channel_max=8)
  variables = sg.init_variables(jax.random.key(13), config)
  img = _jitted('__call__', config=config)(variables, jnp.ones((2, 8)))
  assert img.shape == (2, 4, 4, 3) and config.num_ws == 2
