"""PyTorch reference StyleGAN2 generator and writers of both public layouts.

Written here from NVlabs stylegan2-ada-pytorch ``training/networks.py``
(commit d72cc7d0) with plain torch ops (no custom CUDA kernels) and the same
module/parameter names, so ``Generator.state_dict()`` has exactly the keys of
the ``G_ema`` of an official network pickle: ``mapping.fc{i}.weight/bias``,
``mapping.w_avg``, ``synthesis.b4.const``, ``synthesis.b{R}.conv{0,1}.{affine.
weight, affine.bias, weight, bias, noise_strength, noise_const,
resample_filter}``, ``synthesis.b{R}.torgb.{affine.*, weight, bias}``,
``synthesis.b{R}.resample_filter``. Only the unconditional 'skip' generator
(c_dim = 0) in float32 is reproduced; the w_avg tracking of training and
fp16 are left out. It is independent of `id2image_jax` on purpose: it is what
the JAX port is checked against.

Writers:

* `write_network_pickle`: an NVIDIA-style network pickle (a dict with 'G',
  'D', 'G_ema', 'augment_pipe', 'training_set_kwargs') whose modules are
  reduced the way ``torch_utils.persistence`` reduces them:
  ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta =
  {type, version, module_src, class_name, state=module.__dict__}``. A stand-in
  ``torch_utils.persistence`` / ``dnnlib.util`` is put in ``sys.modules``
  only while writing.
* `write_rosinality`: a rosinality/stylegan2-pytorch ``.pt`` (``{'g_ema':
  state_dict, 'latent_avg': w_avg}``) with rosinality's names and shapes
  (`rosinality_state_dict`), and `rosinality_forward`, rosinality's
  ``model.py`` maths (commit bef283a1) on such a state dict, to check the
  layout independently of the official one.

Write random checkpoints to try the converter::

  python ports/stylegan2_reference.py --format pkl --resolution 32 \\
      --out /tmp/g.pkl
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import math
import pickle
import sys
import types
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in the pickles.
_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------
# Ops (NCHW).


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
  """[taps] -> normalised 2-D filter, like stylegan2-ada for < 8 taps."""
  f = torch.as_tensor(taps, dtype=torch.float32)
  f = torch.outer(f, f)
  return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              pad: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0
              ) -> torch.Tensor:
  """Zero-upsample, pad (x0, x1, y0, y1; negative crops), convolve, down."""
  b, c, h, w = x.shape
  x = x.reshape(b, c, h, 1, w, 1)
  x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
  x = x.reshape(b, c, h * up, w * up)
  x0, x1, y0, y1 = pad
  x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
  x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0),
        max(-x0, 0):x.shape[3] - max(-x1, 0)]
  f = (f * gain).flip([0, 1])  # convolution, not correlation
  f = f[None, None].repeat(c, 1, 1, 1)
  x = F.conv2d(x, f, groups=c)
  return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
  fw = f.shape[-1]
  p0, p1 = (fw + 1) // 2, (fw - 2) // 2
  return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, *,
                    up: int, padding: int, groups: int) -> torch.Tensor:
  """stylegan2-ada conv2d_resample for up in {1, 2}, down = 1.

  As in stylegan2-ada (flip_weight = up == 1): a plain conv (correlation)
  when up == 1; a transposed conv with the weight as stored (a true
  convolution) followed by the FIR filter when up == 2.
  """
  if up == 1:
    return F.conv2d(x, w, padding=padding, groups=groups)
  o, i, kh, kw = w.shape
  fw = f.shape[-1]
  p0 = padding + (fw + up - 1) // 2 - (kw - 1)
  p1 = padding + (fw - up) // 2 - (kw - up)
  if groups == 1:
    wt = w.transpose(0, 1)
  else:
    wt = w.reshape(groups, o // groups, i, kh, kw).transpose(1, 2).reshape(
        groups * i, o // groups, kh, kw)
  x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
  return upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=up ** 2)


def modulated_conv2d(x, weight, styles, *, noise=None, up=1, padding=0,
                     resample_filter=None, demodulate=True,
                     fused_modconv=True):
  """stylegan2-ada ``modulated_conv2d`` (float32 path)."""
  b = x.shape[0]
  o, i, kh, kw = weight.shape
  w = weight.unsqueeze(0) * styles.reshape(b, 1, -1, 1, 1)
  dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate \
      else None
  if not fused_modconv:
    x = x * styles.reshape(b, -1, 1, 1)
    x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding,
                        groups=1)
    if demodulate:
      x = x * dcoefs.reshape(b, -1, 1, 1)
    if noise is not None:
      x = x + noise
    return x
  if demodulate:
    w = w * dcoefs.reshape(b, -1, 1, 1, 1)
  x = x.reshape(1, -1, *x.shape[2:])
  w = w.reshape(-1, i, kh, kw)
  x = conv2d_resample(x, w, resample_filter, up=up, padding=padding,
                      groups=b)
  x = x.reshape(b, -1, *x.shape[2:])
  if noise is not None:
    x = x + noise
  return x


def bias_act(x, b, *, lrelu: bool, clamp: float | None):
  x = x + b.reshape(1, -1, *([1] * (x.ndim - 2)))
  if lrelu:
    x = F.leaky_relu(x, 0.2) * _SQRT2
  if clamp is not None:
    x = x.clamp(-clamp, clamp)
  return x


# --------------------------------------------------------------------------
# Modules with stylegan2-ada names; persistent-pickle reduction.


def _reconstruct_persistent_obj(meta):  # stand-in, replaced while writing
  raise RuntimeError('only used as a pickle reference')


_reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'


class EasyDict(dict):
  """Stand-in for ``dnnlib.util.EasyDict`` (pickled under that name)."""


EasyDict.__module__ = 'dnnlib.util'


class _Persistent(nn.Module):
  """Records init kwargs and pickles like ``torch_utils.persistence``."""

  def _record(self, **kwargs):
    self._init_args = ()
    self._init_kwargs = copy.deepcopy(kwargs)

  def __reduce__(self):
    meta = dict(type='class', version=_PERSISTENCE_VERSION,
                module_src=_module_src(),
                class_name=type(self).__name__, state=dict(self.__dict__))
    return (_reconstruct_persistent_obj, (meta,))


def _module_src() -> str:
  return inspect.getsource(sys.modules[__name__])


class FullyConnectedLayer(_Persistent):

  def __init__(self, in_features, out_features, activation='linear',
               lr_multiplier=1.0, bias_init=0.0):
    super().__init__()
    self._record(in_features=in_features, out_features=out_features,
                 activation=activation, lr_multiplier=lr_multiplier,
                 bias_init=bias_init)
    self.activation = activation
    self.weight = nn.Parameter(torch.randn([out_features, in_features]) /
                               lr_multiplier)
    self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
    self.weight_gain = lr_multiplier / np.sqrt(in_features)
    self.bias_gain = lr_multiplier

  def forward(self, x):
    x = x.matmul((self.weight * self.weight_gain).t())
    return bias_act(x, self.bias * self.bias_gain,
                    lrelu=self.activation == 'lrelu', clamp=None)


class MappingNetwork(_Persistent):

  def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8,
               layer_features=None, lr_multiplier=0.01):
    super().__init__()
    self._record(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws,
                 num_layers=num_layers, layer_features=layer_features,
                 lr_multiplier=lr_multiplier)
    assert c_dim == 0, 'conditional generators are not reproduced'
    self.num_ws, self.num_layers = num_ws, num_layers
    layer_features = layer_features or w_dim
    feats = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
    for idx in range(num_layers):
      setattr(self, f'fc{idx}', FullyConnectedLayer(
          feats[idx], feats[idx + 1], activation='lrelu',
          lr_multiplier=lr_multiplier))
    self.register_buffer('w_avg', torch.zeros([w_dim]))

  def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None):
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for idx in range(self.num_layers):
      x = getattr(self, f'fc{idx}')(x)
    x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
    if truncation_psi != 1:
      if truncation_cutoff is None:
        x = self.w_avg.lerp(x, truncation_psi)
      else:
        x[:, :truncation_cutoff] = self.w_avg.lerp(
            x[:, :truncation_cutoff], truncation_psi)
    return x


class SynthesisLayer(_Persistent):

  def __init__(self, in_channels, out_channels, w_dim, resolution,
               kernel_size=3, up=1, use_noise=True,
               resample_filter=(1, 3, 3, 1), conv_clamp=None):
    super().__init__()
    self._record(in_channels=in_channels, out_channels=out_channels,
                 w_dim=w_dim, resolution=resolution, kernel_size=kernel_size,
                 up=up, use_noise=use_noise,
                 resample_filter=list(resample_filter), conv_clamp=conv_clamp)
    self.resolution, self.up, self.use_noise = resolution, up, use_noise
    self.conv_clamp = conv_clamp
    self.register_buffer('resample_filter', setup_filter(resample_filter))
    self.padding = kernel_size // 2
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    self.weight = nn.Parameter(torch.randn(
        [out_channels, in_channels, kernel_size, kernel_size]))
    if use_noise:
      self.register_buffer('noise_const', torch.randn([resolution,
                                                       resolution]))
      self.noise_strength = nn.Parameter(torch.zeros([]))
    self.bias = nn.Parameter(torch.zeros([out_channels]))

  def forward(self, x, w, noise_mode='const', fused_modconv=True,
              noise=None):
    styles = self.affine(w)
    n = None
    if self.use_noise:
      if noise is not None:
        n = noise.reshape(-1, 1, self.resolution, self.resolution)
      elif noise_mode == 'random':
        n = torch.randn([x.shape[0], 1, self.resolution, self.resolution])
      elif noise_mode == 'const':
        n = self.noise_const
      if n is not None:
        n = n * self.noise_strength
    x = modulated_conv2d(x, self.weight, styles, noise=n, up=self.up,
                         padding=self.padding,
                         resample_filter=self.resample_filter,
                         fused_modconv=fused_modconv)
    return bias_act(x, self.bias, lrelu=True, clamp=self.conv_clamp)


class ToRGBLayer(_Persistent):

  def __init__(self, in_channels, out_channels, w_dim, kernel_size=1,
               conv_clamp=None):
    super().__init__()
    self._record(in_channels=in_channels, out_channels=out_channels,
                 w_dim=w_dim, kernel_size=kernel_size, conv_clamp=conv_clamp)
    self.conv_clamp = conv_clamp
    self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
    self.weight = nn.Parameter(torch.randn(
        [out_channels, in_channels, kernel_size, kernel_size]))
    self.bias = nn.Parameter(torch.zeros([out_channels]))
    self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

  def forward(self, x, w, fused_modconv=True):
    styles = self.affine(w) * self.weight_gain
    x = modulated_conv2d(x, self.weight, styles, demodulate=False,
                         fused_modconv=fused_modconv)
    return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(_Persistent):

  def __init__(self, in_channels, out_channels, w_dim, resolution,
               img_channels, is_last, resample_filter=(1, 3, 3, 1),
               conv_clamp=None, use_noise=True):
    super().__init__()
    self._record(in_channels=in_channels, out_channels=out_channels,
                 w_dim=w_dim, resolution=resolution,
                 img_channels=img_channels, is_last=is_last,
                 architecture='skip', resample_filter=list(resample_filter),
                 conv_clamp=conv_clamp, use_fp16=False)
    self.in_channels, self.resolution = in_channels, resolution
    self.register_buffer('resample_filter', setup_filter(resample_filter))
    layer = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp,
                 resample_filter=resample_filter, use_noise=use_noise)
    self.num_conv = 1 if in_channels == 0 else 2
    if in_channels == 0:
      self.const = nn.Parameter(torch.randn([out_channels, resolution,
                                             resolution]))
    else:
      self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer)
    self.conv1 = SynthesisLayer(out_channels, out_channels, **layer)
    self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim,
                            conv_clamp=conv_clamp)

  def forward(self, x, img, ws, noise_mode='const', fused_modconv=True,
              noise=None):
    noise = noise or [None] * self.num_conv
    if self.in_channels == 0:
      x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
      x = self.conv1(x, ws[:, 0], noise_mode, fused_modconv, noise[0])
    else:
      x = self.conv0(x, ws[:, 0], noise_mode, fused_modconv, noise[0])
      x = self.conv1(x, ws[:, 1], noise_mode, fused_modconv, noise[1])
    if img is not None:
      img = upsample2d(img, self.resample_filter)
    y = self.torgb(x, ws[:, self.num_conv], fused_modconv=fused_modconv)
    img = y if img is None else img + y
    return x, img


class SynthesisNetwork(_Persistent):

  def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768,
               channel_max=512, num_fp16_res=0, conv_clamp=None,
               use_noise=True):
    super().__init__()
    self._record(w_dim=w_dim, img_resolution=img_resolution,
                 img_channels=img_channels, channel_base=channel_base,
                 channel_max=channel_max, num_fp16_res=num_fp16_res,
                 conv_clamp=conv_clamp)
    self.block_resolutions = [2 ** i for i in range(
        2, int(np.log2(img_resolution)) + 1)]
    ch = {r: min(channel_base // r, channel_max)
          for r in self.block_resolutions}
    self.num_ws = 0
    for res in self.block_resolutions:
      block = SynthesisBlock(ch[res // 2] if res > 4 else 0, ch[res],
                             w_dim=w_dim, resolution=res,
                             img_channels=img_channels,
                             is_last=res == img_resolution,
                             conv_clamp=conv_clamp, use_noise=use_noise)
      self.num_ws += block.num_conv
      setattr(self, f'b{res}', block)
    self.num_ws += 1

  def forward(self, ws, noise_mode='const', fused_modconv=True, noise=None):
    x = img = None
    w_idx = n_idx = 0
    for res in self.block_resolutions:
      block = getattr(self, f'b{res}')
      block_noise = (noise[n_idx:n_idx + block.num_conv]
                     if noise is not None else None)
      x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1],
                     noise_mode, fused_modconv, block_noise)
      w_idx += block.num_conv
      n_idx += block.num_conv
    return img


class Generator(_Persistent):
  """Unconditional stylegan2-ada Generator; forward(z) -> NCHW image."""

  def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels,
               mapping_kwargs=None, synthesis_kwargs=None):
    super().__init__()
    mapping_kwargs = EasyDict(mapping_kwargs or {})
    synthesis_kwargs = EasyDict(synthesis_kwargs or {})
    self._record(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                 img_resolution=img_resolution, img_channels=img_channels,
                 mapping_kwargs=mapping_kwargs,
                 synthesis_kwargs=synthesis_kwargs)
    self.z_dim, self.w_dim = z_dim, w_dim
    self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels,
                                      **synthesis_kwargs)
    self.num_ws = self.synthesis.num_ws
    self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws,
                                  **mapping_kwargs)

  def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None,
              **synthesis_kwargs):
    ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
    return self.synthesis(ws, **synthesis_kwargs)


class Discriminator(_Persistent):
  """A token discriminator so that pickles have a real 'D' entry."""

  def __init__(self, img_resolution, img_channels):
    super().__init__()
    self._record(c_dim=0, img_resolution=img_resolution,
                 img_channels=img_channels)
    self.weight = nn.Parameter(torch.randn([1, img_channels, 1, 1]))


# --------------------------------------------------------------------------
# Construction.


def generator_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
  """`Generator` kwargs for an id2image_jax StyleGAN2Config dict."""
  c = dict(config)
  mapping = dict(num_layers=c.get('mapping_layers', 8),
                 lr_multiplier=c.get('lr_multiplier', 0.01))
  if c.get('mapping_features') is not None:
    mapping['layer_features'] = c['mapping_features']
  synthesis = dict(channel_base=c.get('channel_base', 32768),
                   channel_max=c.get('channel_max', 512),
                   conv_clamp=c.get('conv_clamp'))
  return dict(z_dim=c.get('z_dim', 512), c_dim=0, w_dim=c.get('w_dim', 512),
              img_resolution=c['resolution'],
              img_channels=c.get('img_channels', 3),
              mapping_kwargs=mapping, synthesis_kwargs=synthesis)


@torch.no_grad()
def randomize_(g: Generator, seed: int = 0) -> Generator:
  """Random values everywhere, in place, so a swapped tensor cannot pass.

  Weights N(0, 1) as stylegan2-ada initialises them, except ToRGB weights
  N(0, 0.2^2) so that images stay about [-1, 1] like a trained generator's;
  biases N(0, 0.2) (ToRGB N(0, 0.05^2)); affine biases 1 + N(0, 0.2); noise strengths N(0, 0.3);
  noise constants N(0, 1); w_avg N(0, 0.5); const N(0, 1).
  """
  gen = torch.Generator().manual_seed(seed)
  for name, t in list(g.named_parameters()) + list(g.named_buffers()):
    if name.endswith('resample_filter'):
      continue
    noise = torch.randn(t.shape, generator=gen)
    if name.endswith('affine.bias'):
      t.copy_(1 + 0.2 * noise)
    elif name.endswith('torgb.bias'):
      t.copy_(0.05 * noise)
    elif name.endswith('.bias'):
      t.copy_(0.2 * noise)
    elif name.endswith('noise_strength'):
      t.copy_(0.3 * noise)
    elif name.endswith('w_avg'):
      t.copy_(0.5 * noise)
    elif name.startswith('mapping.') and name.endswith('.weight'):
      t.copy_(noise / g.mapping.fc0.bias_gain)
    elif name.endswith('torgb.weight'):
      t.copy_(0.2 * noise)
    else:
      t.copy_(noise)
  return g


def reference_model(config: Mapping[str, Any], *, seed: int = 0
                    ) -> Generator:
  """Eval-mode float32 torch Generator for a StyleGAN2Config dict."""
  return randomize_(Generator(**generator_kwargs(config)), seed).eval()


# --------------------------------------------------------------------------
# Writers.


@contextlib.contextmanager
def _stand_in_modules():
  """Registers torch_utils.persistence and dnnlib.util while pickling."""
  added = []
  persistence = types.ModuleType('torch_utils.persistence')
  persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # pylint: disable=protected-access
  util = types.ModuleType('dnnlib.util')
  util.EasyDict = EasyDict
  for name, mod in (('torch_utils', types.ModuleType('torch_utils')),
                    ('torch_utils.persistence', persistence),
                    ('dnnlib', types.ModuleType('dnnlib')),
                    ('dnnlib.util', util)):
    if name in sys.modules:
      raise RuntimeError(f'a real {name} is imported; cannot stand in for it')
    sys.modules[name] = mod
    added.append(name)
  try:
    yield
  finally:
    for name in added:
      del sys.modules[name]


def write_network_pickle(path: str, g: Generator, *,
                         protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
  """Writes an NVIDIA-style network pickle with ``G_ema = g``."""
  d = Discriminator(g.synthesis._init_kwargs['img_resolution'],  # pylint: disable=protected-access
                    g.synthesis._init_kwargs['img_channels'])  # pylint: disable=protected-access
  # 'G' (the training generator) differs from G_ema in real pickles too.
  g_train = randomize_(Generator(**g._init_kwargs), seed=12345)  # pylint: disable=protected-access
  data = dict(G=g_train, D=d, G_ema=g, augment_pipe=None,
              training_set_kwargs=EasyDict(path='/data/ffhq.zip',
                                           resolution=0))
  with _stand_in_modules(), open(path, 'wb') as f:
    pickle.dump(data, f, protocol=protocol)


def rosinality_state_dict(g: Generator) -> dict[str, torch.Tensor]:
  """g's weights under rosinality/stylegan2-pytorch names and shapes.

  The upsampling convs keep their orientation: rosinality's (like
  stylegan2-ada's) are the TF weights flipped, both used by a transposed
  conv (rosinality ``convert_weight.py`` flips them, stylegan2-ada
  ``legacy.py`` flips them too).
  """
  sd = {}
  m = g.mapping
  for i in range(m.num_layers):
    fc = getattr(m, f'fc{i}')
    sd[f'style.{i + 1}.weight'] = fc.weight
    sd[f'style.{i + 1}.bias'] = fc.bias
  syn = g.synthesis
  blur = setup_filter((1, 3, 3, 1)) * 4

  def styled(prefix, layer, up):
    sd[f'{prefix}.conv.weight'] = layer.weight[None]
    sd[f'{prefix}.conv.modulation.weight'] = layer.affine.weight
    sd[f'{prefix}.conv.modulation.bias'] = layer.affine.bias
    if up:
      sd[f'{prefix}.conv.blur.kernel'] = blur
    sd[f'{prefix}.noise.weight'] = layer.noise_strength.reshape(1)
    sd[f'{prefix}.activate.bias'] = layer.bias

  def torgb(prefix, layer, up):
    if up:
      sd[f'{prefix}.upsample.kernel'] = blur
    sd[f'{prefix}.conv.weight'] = layer.weight[None]
    sd[f'{prefix}.conv.modulation.weight'] = layer.affine.weight
    sd[f'{prefix}.conv.modulation.bias'] = layer.affine.bias
    sd[f'{prefix}.bias'] = layer.bias.reshape(1, -1, 1, 1)

  b4 = syn.b4
  sd['input.input'] = b4.const[None]
  styled('conv1', b4.conv1, False)
  torgb('to_rgb1', b4.torgb, False)
  noise = [b4.conv1.noise_const]
  for k, res in enumerate(syn.block_resolutions[1:]):
    block = getattr(syn, f'b{res}')
    styled(f'convs.{2 * k}', block.conv0, True)
    styled(f'convs.{2 * k + 1}', block.conv1, False)
    torgb(f'to_rgbs.{k}', block.torgb, True)
    noise += [block.conv0.noise_const, block.conv1.noise_const]
  for i, n in enumerate(noise):
    sd[f'noises.noise_{i}'] = n[None, None]
  return {k: v.detach().clone() for k, v in sd.items()}


def write_rosinality(path: str, g: Generator, *, latent_avg: bool = True,
                     extra: Mapping[str, Any] | None = None) -> None:
  """Writes ``torch.save({'g_ema': ..., 'latent_avg': ...})``."""
  ckpt = {'g_ema': rosinality_state_dict(g)}
  if latent_avg:
    ckpt['latent_avg'] = g.mapping.w_avg.detach().clone()
  ckpt.update(extra or {})
  torch.save(ckpt, path)


@torch.no_grad()
def rosinality_forward(sd: Mapping[str, torch.Tensor], latent: torch.Tensor,
                       noise: Sequence[torch.Tensor]) -> torch.Tensor:
  """rosinality ``Generator.forward`` maths on a rosinality state dict.

  Args:
    sd: `rosinality_state_dict` output.
    latent: [B, n_latent, style_dim] (``input_is_latent=True``).
    noise: per-layer [1 or B, 1, R, R] maps (``noise=`` of rosinality).

  Returns:
    [B, 3, R, R].
  """
  b, _, style_dim = latent.shape
  blur = setup_filter((1, 3, 3, 1))

  def modconv(x, prefix, s, demodulate=True, up=False):
    weight = sd[f'{prefix}.conv.weight']
    _, o, i, k, _ = weight.shape
    style = F.linear(s, sd[f'{prefix}.conv.modulation.weight'] /
                     math.sqrt(style_dim),
                     sd[f'{prefix}.conv.modulation.bias'])
    w = weight / math.sqrt(i * k * k) * style.view(b, 1, i, 1, 1)
    if demodulate:
      w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8).view(b, o, 1, 1, 1)
    h = x.shape[-1]
    if up:
      w = w.transpose(1, 2).reshape(b * i, o, k, k)
      out = F.conv_transpose2d(x.reshape(1, b * i, h, h), w, stride=2,
                               groups=b)
      out = out.view(b, o, *out.shape[2:])
      return upfirdn2d(out, blur, pad=(1, 1, 1, 1), gain=4)
    out = F.conv2d(x.reshape(1, b * i, h, h), w.reshape(b * o, i, k, k),
                   padding=k // 2, groups=b)
    return out.view(b, o, *out.shape[2:])

  def styled(x, prefix, s, n, up=False):
    out = modconv(x, prefix, s, up=up)
    out = out + sd[f'{prefix}.noise.weight'] * n
    bias = sd[f'{prefix}.activate.bias'].view(1, -1, 1, 1)
    return F.leaky_relu(out + bias, 0.2) * _SQRT2

  def to_rgb(x, prefix, s, skip):
    out = modconv(x, prefix, s, demodulate=False) + sd[f'{prefix}.bias']
    if skip is not None:
      out = out + upfirdn2d(skip, blur, up=2, pad=(2, 1, 2, 1), gain=4)
    return out

  out = sd['input.input'].repeat(b, 1, 1, 1)
  out = styled(out, 'conv1', latent[:, 0], noise[0])
  skip = to_rgb(out, 'to_rgb1', latent[:, 1], None)
  i = 1
  for k in range(sum(1 for key in sd if key.endswith('upsample.kernel'))):
    out = styled(out, f'convs.{2 * k}', latent[:, i], noise[2 * k + 1],
                 up=True)
    out = styled(out, f'convs.{2 * k + 1}', latent[:, i + 1],
                 noise[2 * k + 2])
    skip = to_rgb(out, f'to_rgbs.{k}', latent[:, i + 2], skip)
    i += 2
  return skip


@torch.no_grad()
def rosinality_mapping(sd: Mapping[str, torch.Tensor], z: torch.Tensor, *,
                       lr_mlp: float = 0.01) -> torch.Tensor:
  """rosinality ``Generator.style``: PixelNorm + EqualLinear fused_lrelu."""
  x = z * torch.rsqrt(torch.mean(z ** 2, dim=1, keepdim=True) + 1e-8)
  i = 1
  while f'style.{i}.weight' in sd:
    w = sd[f'style.{i}.weight']
    x = F.linear(x, w * (lr_mlp / math.sqrt(w.shape[1])))
    x = F.leaky_relu(x + sd[f'style.{i}.bias'] * lr_mlp, 0.2) * _SQRT2
    i += 1
  return x


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--format', choices=('pkl', 'pt'), required=True)
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--z-dim', type=int, default=64)
  parser.add_argument('--mapping-layers', type=int, default=4)
  parser.add_argument('--channel-base', type=int, default=1024)
  parser.add_argument('--channel-max', type=int, default=64)
  parser.add_argument('--conv-clamp', type=float, default=None)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  config = dict(resolution=args.resolution, z_dim=args.z_dim,
                w_dim=args.z_dim, mapping_layers=args.mapping_layers,
                channel_base=args.channel_base, channel_max=args.channel_max,
                conv_clamp=args.conv_clamp)
  g = reference_model(config, seed=args.seed)
  if args.format == 'pkl':
    write_network_pickle(args.out, g)
  else:
    write_rosinality(args.out, g)
  print(f'wrote a random StyleGAN2 ({args.format}) to {args.out}')


if __name__ == '__main__':
  main()
