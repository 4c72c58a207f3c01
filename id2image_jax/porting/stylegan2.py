"""Ports StyleGAN2 generators from the two public PyTorch layouts to Flax.

Accepted files (read by the restricted `id2image_jax.porting.load_file`, no
torch needed, nothing in them is executed):

* NVIDIA stylegan2-ada-pytorch network pickles (``ffhq.pkl``,
  ``network-snapshot-*.pkl``, and the official StyleGAN2 config-f pickles
  after stylegan2-ada's ``legacy.py`` re-export): the ``G_ema`` entry. The
  config comes from its pickled constructor arguments (``init_kwargs``) where
  present, else from the tensor shapes. A ``torch.save(G.state_dict())`` of
  such a generator (keys ``mapping.*`` / ``synthesis.*``) is accepted too.
* rosinality/stylegan2-pytorch ``.pt`` files (``stylegan2-ffhq-config-f.pt``
  from ``convert_weight.py``, or training checkpoints): the ``g_ema`` state
  dict, plus ``latent_avg`` when present. rosinality files do not store the
  mapping lr multiplier (0.01 in rosinality) or w_avg in training
  checkpoints: without ``latent_avg`` the port computes w_avg as the mean
  mapped w of 4096 fixed-seed z (rosinality ``generate.py``'s default
  ``--truncation_mean``).

Layout notes (checked against live torch references in the tests):

* Flax conv kernels are correlation kernels [kh, kw, I, O]. stylegan2-ada's
  upsampling convs (``b{R}.conv0``) run as transposed convs with the stored
  weight, i.e. as true convolutions, so they are flipped spatially when
  ported. rosinality stores its upsampling convs (``convs.{2k}``) in the same
  orientation as stylegan2-ada: both are the original TensorFlow weights
  flipped (rosinality ``convert_weight.py`` ``flip=True``; stylegan2-ada
  ``legacy.py`` ``[::-1, ::-1]``), and both run them as transposed convs, so
  the same flip applies.
* rosinality shapes: conv weights [1, O, I, k, k], ToRGB bias [1, 3, 1, 1],
  noise strength [1], noise maps [1, 1, R, R], const [1, C, 4, 4]; mapping
  layers ``style.{1..L}`` (``style.0`` is the parameter-free PixelNorm).
* Buffers that only hold the FIR filter (``*.resample_filter``,
  ``*.blur.kernel``, ``*.upsample.kernel``) are not variables: they are
  checked against the config's filter and otherwise ignored.

Not supported (refused with a message): conditional generators (c_dim > 0),
'orig' / 'resnet' synthesis architectures, StyleGAN3, TensorFlow pickles
(re-export them with stylegan2-ada-pytorch's ``legacy.py`` first). fp16
blocks of stylegan2-ada (``num_fp16_res``) are computed in the config's dtype
instead; their ``conv_clamp`` is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import generator_init
from id2image_jax.models import stylegan2
from id2image_jax.porting import layout
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port
from id2image_jax.porting.rules import require_keys
from id2image_jax.porting.safe_load import CheckpointError
from id2image_jax.porting.safe_load import Opaque
from id2image_jax.porting.safe_load import PersistentObject
from id2image_jax.porting.safe_load import flatten_arrays
from id2image_jax.porting.safe_load import load as load_file

FORMATS = ('nvidia', 'rosinality')
KIND = 'stylegan2'
# rosinality generate.py --truncation_mean default; fixed seed, reproducible.
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0
# Tolerance when checking stored FIR filter buffers against the config.
_FILTER_ATOL = 1e-6

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Layout transforms (numpy).


def flipped_conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
  """Transposed-conv weight [O, I, kh, kw] -> correlation kernel [kh, kw, I, O].

  A transposed conv applies its weight as a true convolution; flipping kh
  and kw makes it the correlation kernel that `lax.conv` expects.
  """
  return layout.conv_oihw_to_hwio(np.asarray(w)[..., ::-1, ::-1])


def squeeze_leading(x: np.ndarray) -> np.ndarray:
  """Drops a leading axis of size 1 (rosinality's [1, O, I, k, k] weights)."""
  if x.ndim < 1 or x.shape[0] != 1:
    raise ValueError(f'expected a leading axis of size 1, got {x.shape}')
  return x[0]


def _compose(*fns):
  def fn(x):
    for f in fns:
      x = f(x)
    return x
  fn.__name__ = '_then_'.join(f.__name__ for f in fns)
  return fn


def _scalar(x: np.ndarray) -> np.ndarray:
  """[1] (rosinality noise weight) -> [] (noise_strength)."""
  if x.size != 1:
    raise ValueError(f'expected one element, got shape {x.shape}')
  return np.reshape(x, ())


def _noise_map(x: np.ndarray) -> np.ndarray:
  """[1, 1, R, R] (rosinality) -> [R, R]."""
  if x.ndim != 4 or x.shape[:2] != (1, 1):
    raise ValueError(f'expected a [1, 1, R, R] noise map, got {x.shape}')
  return x[0, 0]


# --------------------------------------------------------------------------
# Rule tables.

_B = r'synthesis\.b(\d+)'
_NVIDIA_RULES = (
    Rule(r'mapping\.fc(\d+)\.weight', r'params/mapping/fc\1/kernel',
         layout.linear_to_dense),
    Rule(r'mapping\.fc(\d+)\.bias', r'params/mapping/fc\1/bias'),
    Rule(r'mapping\.w_avg', 'buffers/mapping/w_avg'),
    Rule(rf'{_B}\.const', r'params/synthesis/b\1/const', layout.chw_to_hwc),
    Rule(rf'{_B}\.conv0\.weight', r'params/synthesis/b\1/conv0/weight',
         flipped_conv_oihw_to_hwio),
    Rule(rf'{_B}\.(conv1|torgb)\.weight', r'params/synthesis/b\1/\2/weight',
         layout.conv_oihw_to_hwio),
    Rule(rf'{_B}\.(conv[01]|torgb)\.affine\.weight',
         r'params/synthesis/b\1/\2/affine/kernel', layout.linear_to_dense),
    Rule(rf'{_B}\.(conv[01]|torgb)\.affine\.bias',
         r'params/synthesis/b\1/\2/affine/bias'),
    Rule(rf'{_B}\.(conv[01]|torgb)\.bias', r'params/synthesis/b\1/\2/bias'),
    Rule(rf'{_B}\.(conv[01])\.noise_strength',
         r'params/synthesis/b\1/\2/noise_strength'),
    Rule(rf'{_B}\.(conv[01])\.noise_const',
         r'buffers/synthesis/b\1/\2/noise_const'),
)
# FIR filter buffers: checked by `_check_filters`, not ported.
_NVIDIA_FILTERS = (rf'{_B}\.(conv[01]\.)?resample_filter',)
_ROSINALITY_FILTERS = (r'convs\.\d+\.conv\.blur\.kernel',
                       r'to_rgbs\.\d+\.upsample\.kernel')


def _rosinality_rules(config: stylegan2.StyleGAN2Config) -> list[Rule]:
  """rosinality keys -> Flax paths; index arithmetic needs the config."""
  rules = [Rule(r'latent_avg', 'buffers/mapping/w_avg'),
           Rule(r'input\.input', 'params/synthesis/b4/const',
                _compose(squeeze_leading, layout.chw_to_hwc))]
  for i in range(config.mapping_layers):
    rules += [Rule(rf'style\.{i + 1}\.weight', f'params/mapping/fc{i}/kernel',
                   layout.linear_to_dense),
              Rule(rf'style\.{i + 1}\.bias', f'params/mapping/fc{i}/bias')]

  def styled(src, dst, up):
    conv = (_compose(squeeze_leading, flipped_conv_oihw_to_hwio) if up else
            _compose(squeeze_leading, layout.conv_oihw_to_hwio))
    return [
        Rule(rf'{src}\.conv\.weight', f'params/synthesis/{dst}/weight', conv),
        Rule(rf'{src}\.conv\.modulation\.weight',
             f'params/synthesis/{dst}/affine/kernel', layout.linear_to_dense),
        Rule(rf'{src}\.conv\.modulation\.bias',
             f'params/synthesis/{dst}/affine/bias'),
        Rule(rf'{src}\.noise\.weight',
             f'params/synthesis/{dst}/noise_strength', _scalar),
        Rule(rf'{src}\.activate\.bias', f'params/synthesis/{dst}/bias'),
    ]

  def torgb(src, dst):
    return [
        Rule(rf'{src}\.conv\.weight', f'params/synthesis/{dst}/weight',
             _compose(squeeze_leading, layout.conv_oihw_to_hwio)),
        Rule(rf'{src}\.conv\.modulation\.weight',
             f'params/synthesis/{dst}/affine/kernel', layout.linear_to_dense),
        Rule(rf'{src}\.conv\.modulation\.bias',
             f'params/synthesis/{dst}/affine/bias'),
        Rule(rf'{src}\.bias', f'params/synthesis/{dst}/bias', layout.flatten),
    ]

  rules += styled('conv1', 'b4/conv1', up=False) + torgb('to_rgb1', 'b4/torgb')
  noise_dst = ['b4/conv1']
  for k, res in enumerate(config.block_resolutions[1:]):
    rules += styled(rf'convs\.{2 * k}', f'b{res}/conv0', up=True)
    rules += styled(rf'convs\.{2 * k + 1}', f'b{res}/conv1', up=False)
    rules += torgb(rf'to_rgbs\.{k}', f'b{res}/torgb')
    noise_dst += [f'b{res}/conv0', f'b{res}/conv1']
  for i, dst in enumerate(noise_dst):
    rules.append(Rule(rf'noises\.noise_{i}',
                      f'buffers/synthesis/{dst}/noise_const', _noise_map))
  return rules


def rules_for(fmt: str, config: stylegan2.StyleGAN2Config) -> list[Rule]:
  """The rule table for checkpoint format `fmt` ('nvidia' | 'rosinality')."""
  if fmt == 'nvidia':
    return list(_NVIDIA_RULES)
  if fmt == 'rosinality':
    return _rosinality_rules(config)
  raise ValueError(f'unknown format {fmt!r}; known: {FORMATS}')


def expected_keys(fmt: str, config: stylegan2.StyleGAN2Config, *,
                  with_w_avg: bool = True) -> list[str]:
  """Checkpoint keys a generator of `config` has in format `fmt`."""
  keys = []
  res_all = config.block_resolutions
  if fmt == 'nvidia':
    for i in range(config.mapping_layers):
      keys += [f'mapping.fc{i}.weight', f'mapping.fc{i}.bias']
    if with_w_avg:
      keys.append('mapping.w_avg')
    for res in res_all:
      b = f'synthesis.b{res}'
      convs = ['conv1'] if res == 4 else ['conv0', 'conv1']
      keys += [f'{b}.const'] if res == 4 else []
      for c in convs:
        keys += [f'{b}.{c}.{n}' for n in ('weight', 'bias', 'affine.weight',
                                          'affine.bias')]
        if config.use_noise:
          keys += [f'{b}.{c}.noise_strength', f'{b}.{c}.noise_const']
      keys += [f'{b}.torgb.{n}' for n in ('weight', 'bias', 'affine.weight',
                                          'affine.bias')]
    return keys
  if fmt != 'rosinality':
    raise ValueError(f'unknown format {fmt!r}; known: {FORMATS}')
  for i in range(config.mapping_layers):
    keys += [f'style.{i + 1}.weight', f'style.{i + 1}.bias']
  if with_w_avg:
    keys.append('latent_avg')
  keys.append('input.input')
  styled = ('conv.weight', 'conv.modulation.weight', 'conv.modulation.bias',
            'noise.weight', 'activate.bias')
  rgb = ('conv.weight', 'conv.modulation.weight', 'conv.modulation.bias',
         'bias')
  keys += [f'conv1.{n}' for n in styled] + [f'to_rgb1.{n}' for n in rgb]
  for k in range(len(res_all) - 1):
    keys += [f'convs.{2 * k}.{n}' for n in styled]
    keys += [f'convs.{2 * k + 1}.{n}' for n in styled]
    keys += [f'to_rgbs.{k}.{n}' for n in rgb]
  keys += [f'noises.noise_{i}' for i in range(config.num_layers)]
  return keys


# --------------------------------------------------------------------------
# Reading and config inference.


@dataclasses.dataclass
class Source:
  """A generator read from a checkpoint file.

  Attributes:
    fmt: 'nvidia' or 'rosinality'.
    arrays: flat ``{key: array}`` (rosinality: ``g_ema`` plus
      ``latent_avg`` when present).
    init_kwargs: pickled constructor arguments of an NVIDIA generator, or {}.
  """
  fmt: str
  arrays: dict[str, np.ndarray]
  init_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def _describe(obj: Any) -> str:
  if isinstance(obj, Mapping):
    return f'a dict with keys {sorted(map(str, obj))[:10]}'
  return f'a {type(obj).__name__}'


def read_source(obj: Any, *, what: str = 'checkpoint') -> Source:
  """Detects the layout of an unpickled checkpoint object.

  Raises:
    CheckpointError: not a StyleGAN2 generator of a known layout, or a
      known-but-unsupported one (the message says which).
  """
  if isinstance(obj, tuple) and obj and all(
      isinstance(o, Opaque) and 'tflib' in o.qualname for o in obj):
    raise CheckpointError(
        f'{what} is a TensorFlow StyleGAN2 pickle; re-export it with '
        'stylegan2-ada-pytorch (python legacy.py --source=... --dest=...) '
        'and convert the result')
  if isinstance(obj, Mapping) and 'G_ema' in obj:
    g = obj['G_ema']
    if not isinstance(g, PersistentObject):
      raise CheckpointError(f'{what}: G_ema is {_describe(g)}, not a pickled '
                            'stylegan2-ada network')
    return Source('nvidia', flatten_arrays(g), _plain(g.init_kwargs))
  if isinstance(obj, Mapping) and 'g_ema' in obj:
    arrays = flatten_arrays(obj['g_ema'])
    if 'latent_avg' in obj:
      arrays['latent_avg'] = np.asarray(obj['latent_avg'])
    return Source('rosinality', arrays)
  if isinstance(obj, Mapping):
    arrays = flatten_arrays(obj)
    if any(k.startswith('mapping.fc') for k in arrays) and any(
        k.startswith('synthesis.') for k in arrays):
      return Source('nvidia', arrays)
    if 'input.input' in arrays and 'style.1.weight' in arrays:
      return Source('rosinality', arrays)
  raise CheckpointError(
      f'{what} is not a StyleGAN2 generator checkpoint: expected an NVIDIA '
      "network pickle (with 'G_ema') or a rosinality .pt (with 'g_ema'), "
      f'got {_describe(obj)}')


def _plain(obj: Any) -> Any:
  """EasyDict records -> plain dicts, recursively."""
  if isinstance(obj, Mapping):
    return {str(k): _plain(v) for k, v in obj.items()}
  return obj


def _channel_base_max(channels: Mapping[int, int], what: str
                      ) -> tuple[int, int]:
  """(channel_base, channel_max) giving ``min(base // res, max)`` channels."""
  cmax = max(channels.values())
  lo, hi = 1, None
  for res, ch in channels.items():
    if ch < cmax:  # base // res == ch
      lo, hi = max(lo, ch * res), min(hi or math.inf, ch * res + res - 1)
    else:  # base // res >= cmax
      lo = max(lo, cmax * res)
  if hi is not None and lo > hi:
    raise PortingError(
        f'{what}: channels per resolution {dict(sorted(channels.items()))} '
        'are not min(channel_base // res, channel_max) for any channel_base')
  return int(lo), int(cmax)


def _taps_from_filter(f2d: np.ndarray, key: str, what: str) -> tuple:
  """Recovers normalised separable taps from a stored 2-D filter."""
  f2d = np.asarray(f2d, np.float64)
  if f2d.ndim != 2 or f2d.shape[0] != f2d.shape[1]:
    raise PortingError(f'{what}: {key} is not a square 2-D filter: '
                       f'{f2d.shape}')
  taps = f2d.sum(axis=1)
  taps = taps / taps.sum()
  if not np.allclose(np.outer(taps, taps) * f2d.sum(), f2d, atol=1e-6):
    raise PortingError(f'{what}: {key} is not a separable filter')
  default = stylegan2.setup_filter((1, 3, 3, 1))
  if taps.shape == default.shape and np.allclose(taps, default, atol=1e-6):
    return (1, 3, 3, 1)
  return tuple(float(t) for t in taps)


def infer_config(source: Source, *, what: str = 'checkpoint'
                 ) -> stylegan2.StyleGAN2Config:
  """Generator architecture from a checkpoint's shapes (and init_kwargs).

  Raises:
    PortingError: keys needed to infer it are missing (named), or the
      generator is of an unsupported kind.
  """
  a = source.arrays
  if source.fmt == 'nvidia':
    return _infer_nvidia(a, source.init_kwargs, what)
  return _infer_rosinality(a, what)


def _infer_nvidia(a: Mapping[str, np.ndarray], kw: Mapping[str, Any],
                  what: str) -> stylegan2.StyleGAN2Config:
  if int(kw.get('c_dim', 0) or 0) > 0 or any(
      k.startswith('mapping.embed.') for k in a):
    raise PortingError(f'{what}: conditional generators (c_dim='
                       f'{kw.get("c_dim")}) are not supported')
  if any(k.startswith('synthesis.input.') for k in a):
    raise PortingError(f'{what}: this looks like a StyleGAN3 generator '
                       '(synthesis.input.*), which is not supported')
  syn_kw = dict(kw.get('synthesis_kwargs') or {})
  arch = syn_kw.get('architecture', 'skip')
  if arch != 'skip' or any(re.fullmatch(rf'{_B}\.skip\..*', k) for k in a):
    raise PortingError(f"{what}: synthesis architecture {arch!r} is not "
                       "supported (only 'skip', the StyleGAN2 default)")
  fcs = sorted(int(m.group(1)) for k in a
               if (m := re.fullmatch(r'mapping\.fc(\d+)\.weight', k)))
  blocks = sorted(int(m.group(1)) for k in a
                  if (m := re.fullmatch(rf'{_B}\.conv1\.weight', k)))
  if not fcs:
    require_keys(a, ['mapping.fc0.weight'], what=what)
  if not blocks:
    require_keys(a, ['synthesis.b4.conv1.weight'], what=what)
  num_layers = fcs[-1] + 1
  resolution = blocks[-1]
  require_keys(a, [f'mapping.fc{num_layers - 1}.weight',
                   f'synthesis.b{resolution}.torgb.weight'], what=what)
  fc0, fc_last = a['mapping.fc0.weight'], a[
      f'mapping.fc{num_layers - 1}.weight']
  z_dim, w_dim = int(fc0.shape[1]), int(fc_last.shape[0])
  hidden = int(fc0.shape[0]) if num_layers > 1 else None
  channels = {res: int(a[f'synthesis.b{res}.conv1.weight'].shape[0])
              for res in blocks}
  base, cmax = _channel_base_max(channels, what)
  map_kw = dict(kw.get('mapping_kwargs') or {})
  taps = (1, 3, 3, 1)
  filt = f'synthesis.b{resolution}.conv1.resample_filter'
  if filt in a:
    taps = _taps_from_filter(a[filt], filt, what)
  return stylegan2.StyleGAN2Config(
      resolution=resolution, z_dim=z_dim, w_dim=w_dim,
      mapping_layers=num_layers,
      mapping_features=hidden if hidden not in (None, w_dim) else None,
      channel_base=int(syn_kw.get('channel_base', base)),
      channel_max=int(syn_kw.get('channel_max', cmax)),
      lr_multiplier=float(map_kw.get('lr_multiplier', 0.01)),
      conv_clamp=(None if syn_kw.get('conv_clamp') is None
                  else float(syn_kw['conv_clamp'])),
      img_channels=int(a[f'synthesis.b{resolution}.torgb.weight'].shape[0]),
      resample_filter=taps,
      use_noise=f'synthesis.b{resolution}.conv1.noise_const' in a)


def _infer_rosinality(a: Mapping[str, np.ndarray], what: str
                      ) -> stylegan2.StyleGAN2Config:
  require_keys(a, ['style.1.weight', 'input.input', 'to_rgb1.conv.weight'],
               what=what)
  num_layers = 0
  while f'style.{num_layers + 1}.weight' in a:
    num_layers += 1
  num_rgbs = 0
  while f'to_rgbs.{num_rgbs}.conv.weight' in a:
    num_rgbs += 1
  resolution = 4 * 2 ** num_rgbs
  require_keys(a, [f'convs.{2 * k}.conv.weight' for k in range(num_rgbs)],
               what=what)
  channels = {4: int(a['input.input'].shape[1])}
  for k in range(num_rgbs):
    channels[8 * 2 ** k] = int(a[f'convs.{2 * k}.conv.weight'].shape[1])
  base, cmax = _channel_base_max(channels, what)
  w1 = a['style.1.weight']
  w_dim = int(a[f'style.{num_layers}.weight'].shape[0])
  hidden = int(w1.shape[0]) if num_layers > 1 else None
  taps = (1, 3, 3, 1)
  if 'convs.0.conv.blur.kernel' in a:
    taps = _taps_from_filter(a['convs.0.conv.blur.kernel'],
                             'convs.0.conv.blur.kernel', what)
  return stylegan2.StyleGAN2Config(
      resolution=resolution, z_dim=int(w1.shape[1]), w_dim=w_dim,
      mapping_layers=num_layers,
      mapping_features=hidden if hidden not in (None, w_dim) else None,
      channel_base=base, channel_max=cmax, lr_multiplier=0.01,
      conv_clamp=None, img_channels=int(a['to_rgb1.conv.weight'].shape[1]),
      resample_filter=taps, use_noise=True)


def _check_filters(source: Source, config: stylegan2.StyleGAN2Config,
                   what: str) -> None:
  """Stored FIR filter buffers must be the config's filter (x gain)."""
  f1 = stylegan2.setup_filter(config.resample_filter)
  want = np.outer(f1, f1)
  patterns = (_NVIDIA_FILTERS if source.fmt == 'nvidia' else
              _ROSINALITY_FILTERS)
  bad = []
  for key, value in sorted(source.arrays.items()):
    if not any(re.fullmatch(p, key) for p in patterns):
      continue
    # rosinality's upsampling kernels carry the up^2 = 4 gain.
    gain = 1.0 if source.fmt == 'nvidia' else 4.0
    value = np.asarray(value, np.float64)
    if value.shape != want.shape or not np.allclose(
        value, want * gain, atol=_FILTER_ATOL * gain):
      bad.append(key)
  if bad:
    raise PortingError(f'{what}: FIR filter buffer(s) differ from the '
                       f'filter {config.resample_filter}: {", ".join(bad)}')


# --------------------------------------------------------------------------
# Conversion.


def mean_w(config: stylegan2.StyleGAN2Config, params: Mapping[str, Any], *,
           samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> np.ndarray:
  """Mean mapped w over `samples` fixed-seed z ([w_dim] float32 numpy)."""
  z = np.random.default_rng(seed).standard_normal(
      (samples, config.z_dim)).astype(np.float32)
  return np.asarray(generator_init.mean_w(stylegan2.build(config), params, z),
                    np.float32)


def convert_source(source: Source, *, what: str = 'checkpoint'
                   ) -> tuple[dict[str, Any], dict]:
  """Ports a `Source` to ``(config dict, variables)`` (see `convert`)."""
  config = infer_config(source, what=what)
  has_w_avg = (source.fmt == 'nvidia' or 'latent_avg' in source.arrays)
  require_keys(source.arrays,
               expected_keys(source.fmt, config, with_w_avg=has_w_avg), what=what)
  _check_filters(source, config, what)
  abstract = stylegan2.abstract_variables(config)
  if not has_w_avg:
    del abstract['buffers']['mapping']
  ignore = _NVIDIA_FILTERS if source.fmt == 'nvidia' else _ROSINALITY_FILTERS
  variables = port(source.arrays, rules_for(source.fmt, config), abstract,
                   ignore=ignore, what=what)
  if not has_w_avg:
    _log.warning('%s has no latent_avg; computing w_avg from %d fixed-seed '
                 'samples', what, W_AVG_SAMPLES)
    variables['buffers']['mapping'] = {
        'w_avg': mean_w(config, variables['params'])}
  return dataclasses.asdict(config), variables


def convert(path: str | os.PathLike) -> tuple[dict[str, Any], dict]:
  """Reads a StyleGAN2 checkpoint file and ports it, format auto-detected.

  Args:
    path: an NVIDIA stylegan2-ada network pickle or a rosinality ``.pt``.

  Returns:
    ``(config, variables)``: a JSON-able `StyleGAN2Config` dict and
    ``{'params': ..., 'buffers': ...}`` of float32 numpy arrays.

  Raises:
    FileNotFoundError: no such file.
    CheckpointError: unreadable, truncated or not a (supported) generator.
    PortingError: keys missing, unknown or mis-shaped (named in the
      message); nothing is returned half-filled.
  """
  what = os.path.basename(os.fspath(path))
  return convert_object(load_file(path), what=what)


def convert_object(obj: Any, *, what: str = 'checkpoint'
                   ) -> tuple[dict[str, Any], dict]:
  """`convert` for a file already read by `load_file` (layout detected)."""
  return convert_source(read_source(obj, what=what), what=what)
