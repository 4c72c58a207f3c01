"""StyleGAN2 synthesis forward+backward w.r.t. W+ latents: JAX vs PyTorch.

The work of one call: render N images from W+ latents [N, num_ws, 512]
(const noise, as the stylegan2-ada projector renders), a scalar loss
(mean of squared pixels) and its gradient w.r.t. the latents, the
generator frozen. Throughput is images/s; FLOPs are XLA's count of the JAX
program (the torch side does the same work).

JAX runs both modulated-conv formulations (`stylegan2.modulated_conv2d`):
'shared' (one ordinary conv with the styles applied to activations, the
library default) and 'fused' (per-sample weights, a grouped conv). PyTorch
is the pure-torch stylegan2-ada reference in ``ports/stylegan2_reference.py``
(official maths without the custom CUDA upfirdn2d / bias_act plugins), with
its fused_modconv=True (the projector's form) and False; both sides run the
same weights (the reference writes a network pickle, JAX ports that file).

  python benchmarks/bench_generator.py --smoke            # CPU, 15-30 s
  python benchmarks/bench_generator.py                    # GPU: 256 and 1024
  python benchmarks/bench_generator.py --resolutions 1024 --batches 1,8,64 \
      --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import common  # Puts the repository root on sys.path.
import jax
import jax.numpy as jnp
import numpy as np
import pairs

GPU_BATCHES = '1,4,16,64,256'


def jax_rows(gen, *, fused: bool, batches, repeats, peak, dtype):
  """Timing rows of the JAX generator for each batch size (stops at OOM)."""
  module, config = gen.module, gen.config

  def loss_and_grad(variables, ws):
    def loss(ws):
      img = module.apply(variables, ws, method='synthesis',
                         noise_mode='const', fused_modconv=fused)
      return jnp.mean(jnp.square(img.astype(jnp.float32)))
    return jax.value_and_grad(loss)(ws)

  rows = []
  for n in batches:
    ws = jax.random.normal(jax.random.key(n), (n, config.num_ws,
                                               config.w_dim))
    row = {'impl': 'jax', 'variant': 'fused' if fused else 'shared',
           'resolution': config.resolution, 'N': n, 'dtype': dtype}
    try:
      row.update(common.time_jax(loss_and_grad, gen.variables, ws,
                                 repeats=repeats))
    except Exception as e:
      if not common.is_oom(e):
        raise
      row['error'] = 'OOM'
      rows.append(row)
      print(common.summary_line(row), flush=True)
      break
    rows.append(common.add_rates(row, work=n, unit='images/s', peak=peak))
    print(common.summary_line(row), flush=True)
  return rows


def torch_rows(g, *, fused: bool, config, batches, repeats, dtype):
  """Timing rows of the torch reference (FLOPs filled in later from JAX)."""
  import torch  # pylint: disable=g-import-not-at-top
  device = common.torch_device()
  g = g.to(device).eval().requires_grad_(False)
  rows = []
  for n in batches:
    row = {'impl': 'torch', 'variant': 'fused' if fused else 'shared',
           'resolution': config.resolution, 'N': n, 'dtype': dtype,
           'device': device}
    ws = torch.from_numpy(np.random.default_rng(n).standard_normal(
        (n, config.num_ws, config.w_dim)).astype(np.float32)).to(device)
    ws.requires_grad_(True)

    def call(ws=ws):
      ws.grad = None
      ctx = (torch.autocast(device, dtype=torch.bfloat16)
             if dtype == 'bfloat16' else contextlib.nullcontext())
      with ctx:
        img = g.synthesis(ws, noise_mode='const', fused_modconv=fused)
      loss = img.float().square().mean()
      loss.backward()
      return ws.grad

    try:
      row.update(common.time_torch(call, repeats, device=device))
    except Exception as e:
      if not common.is_oom(e):
        raise
      row['error'] = 'OOM'
      rows.append(row)
      print(common.summary_line(row), flush=True)
      if device == 'cuda':
        torch.cuda.empty_cache()
      break
    rows.append(row)
    print(common.summary_line(row), flush=True)
  return rows


def ratios(rows):
  """JAX / torch throughput per (resolution, N): best of each, same form."""
  out = []
  index = {(r['impl'], r['variant'], r['resolution'], r['N']): r
           for r in rows if r.get('throughput')}
  for res, n in sorted({(r['resolution'], r['N']) for r in rows}):
    def tp(impl, variant, res=res, n=n):
      r = index.get((impl, variant, res, n))
      return r['throughput'] if r else None
    j = {v: tp('jax', v) for v in ('shared', 'fused')}
    t = {v: tp('torch', v) for v in ('shared', 'fused')}
    row = {'resolution': res, 'N': n}
    best_j = max([x for x in j.values() if x] or [0]) or None
    best_t = max([x for x in t.values() if x] or [0]) or None
    if best_j and best_t:
      row['jax_best_over_torch_best'] = best_j / best_t
    for v in ('shared', 'fused'):
      if j[v] and t[v]:
        row[f'jax_over_torch_{v}'] = j[v] / t[v]
    if j['shared'] and j['fused']:
      row['jax_shared_over_fused'] = j['shared'] / j['fused']
    out.append(row)
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument('--resolutions', default='256,1024',
                      help='config-f resolutions (ignored with --smoke)')
  parser.add_argument('--batches', default=None,
                      help=f'batch sizes (default {GPU_BATCHES}; smoke 1,4)')
  parser.add_argument('--forms', default='shared,fused',
                      help='JAX modulated-conv forms to time')
  args = parser.parse_args(argv)
  common.set_torch_threads(args.torch_threads)
  smoke = args.smoke
  resolutions = [32] if smoke else common.sizes(args.resolutions)
  batches = common.sizes(args.batches or ('1,4' if smoke else GPU_BATCHES))
  repeats = args.repeats or (2 if smoke else 5)
  forms = [f.strip() for f in args.forms.split(',') if f.strip()]
  report, peak, use_torch = common.start_report(
      'generator', args, use_torch=not args.no_torch)
  report['settings'] = {'resolutions': resolutions, 'batches': batches,
                        'repeats': repeats, 'smoke': smoke, 'forms': forms,
                        'loss': 'mean(img^2), grad w.r.t. W+ latents',
                        'noise_mode': 'const'}
  rows = []
  for res in resolutions:
    config = pairs.generator_config(res, smoke=smoke)
    gen, g_torch = pairs.generator_pair(config, dtype=args.dtype,
                                        torch_side=use_torch)
    # Torch first, then its memory is released for JAX (common.release_torch).
    torch_new = []
    if g_torch is not None:
      for fused in (True, False):
        torch_new += torch_rows(g_torch, fused=fused, config=gen.config,
                                batches=batches, repeats=repeats,
                                dtype=args.dtype)
      common.release_torch(g_torch)
    flops = {}
    for form in forms:
      new = jax_rows(gen, fused=form == 'fused', batches=batches,
                     repeats=repeats, peak=peak, dtype=args.dtype)
      rows += new
      for r in new:
        if r.get('flops') and form == 'shared':
          flops[r['N']] = r['flops']
        flops.setdefault(r['N'], r.get('flops'))
    common.fill_flops(torch_new, flops, unit='images/s', peak=peak)
    rows += torch_new
  report['results'] = rows
  report['ratios'] = ratios(rows)
  report['notes'] += [
      ('torch reference: pure-PyTorch stylegan2-ada maths, without the '
       'custom CUDA kernels of the official code (upfirdn2d, bias_act)'),
      'torch FLOPs = XLA count of the JAX shared-form program (same work)']
  return common.finish_report(report, args)


if __name__ == '__main__':
  main()
  sys.exit(0)
