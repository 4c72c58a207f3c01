"""Inversion throughput and memory vs the number of parallel targets N.

The main figure of the project: latent-steps/s (targets x Adam steps per
second) and memory when N = 1, 16, 64, 256 targets are inverted at once,
StyleGAN2 config-f at 256 and 1024 px, a face encoder, the ID loss
(``||E(G(w)) - d||^2``, paper eq. 1), Adam on W+ latents initialised at
w_avg, const noise.

* JAX: the project's engine (`inversion.prepare_chunk`: the jitted,
  vmapped, state-donating step that `inversion.invert` runs), compile timed
  apart; steady state = median over repeats of `--steps` consecutive steps.
* PyTorch (same weights, same work, written here):
  (a) ``loop``: one target at a time with its own Adam, as the official
      stylegan2-ada ``projector.py`` does; its per-target rate does not
      depend on N, so it is measured on `--loop-targets` targets;
  (b) ``batched``: all N latents in one tensor, the summed loss, one Adam
      (Adam is per coordinate, so this equals N independent runs).

Options: ``--dtype bfloat16`` (JAX compute dtype; torch autocast),
``--remat none|full|dots`` (``jax.checkpoint`` around the generator
render; 'dots' keeps only conv/matmul outputs), ``--encoder``.

  python benchmarks/bench_inversion.py --smoke              # CPU, 15-30 s
  python benchmarks/bench_inversion.py                      # GPU figure
  python benchmarks/bench_inversion.py --resolutions 1024 --targets 64 \
      --dtype bfloat16 --remat dots
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import common  # Puts the repository root on sys.path.
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pairs

from id2image_jax import inversion
from id2image_jax.inversion import objective as objective_lib


def default_encoder() -> str:
  """ResNet-50 VGGFace2 when its model and reference exist, else IResNet-50."""
  try:
    pairs.import_optional('id2image_jax.models.vggface2')
    pairs.import_optional('ports.vggface2_reference')
    return 'vggface2'
  except pairs.Unavailable:
    return 'iresnet50'


def make_objective(gen, encoder, remat: str):
  """The ID2image objective (ID term only) for one target, W+ latents."""
  render = objective_lib.rematerialize(
      objective_lib.generator_render(gen, latent_space='w+'), remat)
  return objective_lib.make_id2image_objective(render,
                                               encoder.descriptor_fn())


def jax_row(objective, params, gen, encoder, *, n, steps, repeats, lr,
            dtype, peak):
  """One N: compile, then the median per-step time of `steps` in a row."""
  num_ws, w_dim = gen.config.num_ws, gen.config.w_dim
  rng = np.random.default_rng(n)
  targets = {'descriptor': rng.standard_normal((n, encoder.dim)).astype(
      np.float32)}
  w_avg = np.asarray(gen.w_avg, np.float32)
  latents = {'w': np.broadcast_to(w_avg, (n, num_ws, w_dim)).copy()}
  compute_dtype = jnp.bfloat16 if dtype == 'bfloat16' else None
  step, state, p, t = inversion.prepare_chunk(
      jax.random.key(0), objective, params, targets, latents,
      options=inversion.InvertOptions(
          steps=1 + repeats * steps, chunk_size=n, tx=optax.adam(lr),
          compute_dtype=compute_dtype))
  start = time.perf_counter()
  compiled = step.lower(state, p, t).compile()
  row = {'compile_s': time.perf_counter() - start,
         'flops': common.cost_flops(compiled),
         **common.program_bytes(compiled)}
  state, metrics = compiled(state, p, t)  # Warm-up.
  jax.block_until_ready(metrics)
  first_loss = float(np.mean(metrics['loss']))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, p, t)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / steps)
  row.update(median_s=float(np.median(times)), times_s=times,
             device_peak_bytes=common.device_peak_bytes(),
             loss_first=first_loss,
             loss_last=float(np.mean(metrics['loss'])))
  return common.add_rates(row, work=n, unit='latent-steps/s', peak=peak)


class TorchInversion:
  """The same work in PyTorch: G.synthesis -> preprocess -> E -> ID loss."""

  def __init__(self, g, e, spec, *, lr, dtype):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.device = common.torch_device()
    self.g = g.to(self.device).eval().requires_grad_(False)
    self.e = e.to(self.device).eval().requires_grad_(False)
    self.spec, self.lr, self.dtype = spec, lr, dtype
    self.num_ws = g.synthesis.num_ws if hasattr(g.synthesis, 'num_ws') else (
        g.mapping.num_ws)

  def sync(self):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def start(self, n):
    """Fresh W+ latents at w_avg and a fresh Adam (projector.py's betas)."""
    w_avg = self.g.mapping.w_avg.detach()
    w = w_avg.reshape(1, 1, -1).repeat(n, self.num_ws, 1).clone()
    w.requires_grad_(True)
    return w, self.torch.optim.Adam([w], lr=self.lr, betas=(0.9, 0.999))

  def step(self, w, opt, target):
    torch = self.torch
    ctx = (torch.autocast(self.device, dtype=torch.bfloat16)
           if self.dtype == 'bfloat16' else contextlib.nullcontext())
    with ctx:
      img = self.g.synthesis(w, noise_mode='const')
      x = pairs.torch_encoder_input(img.float(), self.spec)
      desc = pairs.torch_descriptor(self.e, x)
    # Sum of per-target losses: each target's gradient is its own.
    loss = (desc.float() - target).square().sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def targets(self, n, dim):
    return self.torch.from_numpy(np.random.default_rng(n).standard_normal(
        (n, dim)).astype(np.float32)).to(self.device)

  def reset_peak(self):
    if self.device == 'cuda':
      self.sync()
      self.torch.cuda.reset_peak_memory_stats()

  def peak(self):
    if self.device == 'cuda':
      return int(self.torch.cuda.max_memory_allocated())
    return None

  def batched(self, n, dim, *, steps, repeats):
    """Median per-step seconds of one batched inversion of n targets."""
    target = self.targets(n, dim)
    self.reset_peak()
    w, opt = self.start(n)
    self.step(w, opt, target)  # Warm-up.
    self.sync()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(steps):
        loss = self.step(w, opt, target)
      self.sync()
      times.append((time.perf_counter() - start) / steps)
    return {'median_s': float(np.median(times)), 'times_s': times,
            'peak_bytes': self.peak(), 'loss_last': float(loss.detach()) / n}

  def loop(self, k, dim, *, steps, repeats):
    """Per-target seconds per step, one target after another (projector)."""
    target = self.targets(k, dim)
    self.reset_peak()
    w, opt = self.start(1)
    self.step(w, opt, target[:1])  # Warm-up.
    self.sync()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      for i in range(k):
        w, opt = self.start(1)
        for _ in range(steps):
          self.step(w, opt, target[i:i + 1])
      self.sync()
      times.append((time.perf_counter() - start) / (k * steps))
    return {'median_s': float(np.median(times)), 'times_s': times,
            'peak_bytes': self.peak()}


def torch_rows(g, e_model, encoder, *, ns, steps, repeats, lr, dtype, loop_targets,
               base):
  """Torch batched rows for each N (stops at OOM), then the loop row."""
  ref = TorchInversion(g, e_model, encoder.spec, lr=lr, dtype=dtype)
  rows = []
  for n in ns:
    row = {'impl': 'torch', 'variant': 'batched', 'N': n,
           'device': ref.device, **base}
    try:
      row.update(ref.batched(n, encoder.dim, steps=steps, repeats=repeats))
    except Exception as e:  # noqa: BLE001  pylint: disable=broad-except
      rows.append(_oom_row(row, e))
      if ref.device == 'cuda':
        ref.torch.cuda.empty_cache()
      break
    rows.append(row)
    print(common.summary_line(row), flush=True)
  row = {'impl': 'torch', 'variant': 'loop', 'N': loop_targets,
         'device': ref.device, 'note': 'per-target rate; independent of N',
         **base}
  row.update(ref.loop(loop_targets, encoder.dim, steps=steps,
                      repeats=repeats))
  rows.append(row)
  print(common.summary_line(row), flush=True)
  return rows


def ratios(rows):
  """JAX / torch throughput per (resolution, N) for both torch forms.

  Also the relative difference of the mean loss after the same number of
  steps, JAX vs torch batched: a check that both do the same work.
  """
  out = []
  jax_rows = [r for r in rows if r['impl'] == 'jax' and r.get('throughput')]
  for r in jax_rows:
    res, n = r['resolution'], r['N']
    row = {'resolution': res, 'N': n}
    for r2 in rows:
      if r2['impl'] != 'torch' or not r2.get('throughput') or (
          r2['resolution'] != res):
        continue
      if r2['variant'] == 'batched' and r2['N'] == n:
        row['jax_over_torch_batched'] = r['throughput'] / r2['throughput']
        # Same weights, same steps: the losses must agree (same work).
        if r.get('loss_last') and r2.get('loss_last'):
          row['loss_rel_diff_vs_torch'] = abs(
              r['loss_last'] - r2['loss_last']) / abs(r2['loss_last'])
      if r2['variant'] == 'loop':
        row['jax_over_torch_loop'] = r['throughput'] / r2['throughput']
    out.append(row)
  return out


def _oom_row(row, e):
  if not common.is_oom(e):
    raise e
  row['error'] = 'OOM'
  print(common.summary_line(row), flush=True)
  return row


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument('--resolutions', default='256,1024',
                      help='config-f resolutions (ignored with --smoke)')
  parser.add_argument('--targets', default=None,
                      help='N values (default 1,16,64,256; smoke 1,4)')
  parser.add_argument('--encoder', default='auto',
                      help="'auto' (vggface2 when available, else "
                      f'iresnet50) or one of {sorted(pairs.ENCODERS)}')
  parser.add_argument('--steps', type=int, default=None,
                      help='consecutive steps per timed repeat (default '
                      '20; smoke 1)')
  parser.add_argument('--lr', type=float, default=0.01)
  parser.add_argument('--remat', default='none',
                      choices=sorted(objective_lib.REMAT_POLICIES))
  parser.add_argument('--loop-targets', type=int, default=None,
                      help='targets the torch per-image loop runs (default '
                      '4; smoke 1)')
  args = parser.parse_args(argv)
  common.set_torch_threads(args.torch_threads)
  smoke = args.smoke
  resolutions = [32] if smoke else common.sizes(args.resolutions)
  ns = common.sizes(args.targets or ('1,4' if smoke else '1,16,64,256'))
  steps = args.steps or (1 if smoke else 20)
  repeats = args.repeats or (2 if smoke else 3)
  loop_targets = args.loop_targets or (1 if smoke else 4)
  encoder_name = default_encoder() if args.encoder == 'auto' else (
      args.encoder)
  report, peak, use_torch = common.start_report(
      'inversion', args,
      use_torch=not args.no_torch and encoder_name != 'dlib')
  if encoder_name == 'dlib' and not args.no_torch:
    report['notes'].append('dlib has no torch model: PyTorch side skipped')
  report['settings'] = {
      'resolutions': resolutions, 'targets': ns, 'steps': steps,
      'repeats': repeats, 'encoder': encoder_name, 'remat': args.remat,
      'lr': args.lr, 'loop_targets': loop_targets, 'smoke': smoke,
      'modconv': {'jax': 'shared (library default)',
                  'torch': 'fused (projector.py default)'},
      'loss': 'ID loss ||E(G(w)) - d||^2 (paper eq. 1), Adam on W+, '
              'init w_avg, const noise'}
  encoder, e_torch = pairs.encoder_pair(encoder_name, dtype=args.dtype,
                                        smoke=smoke, torch_side=use_torch)
  rows = []
  for res in resolutions:
    config = pairs.generator_config(res, smoke=smoke)
    gen, g_torch = pairs.generator_pair(config, dtype=args.dtype,
                                        torch_side=use_torch)
    base = {'resolution': res, 'encoder': encoder_name, 'dtype': args.dtype,
            'steps': steps}
    # Torch first, then its memory is released for JAX (common.release_torch).
    torch_new = []
    if use_torch:
      torch_new = torch_rows(g_torch, e_torch, encoder, ns=ns, steps=steps,
                             repeats=repeats, lr=args.lr, dtype=args.dtype,
                             loop_targets=loop_targets, base=base)
      common.release_torch(g_torch, e_torch)
    objective = make_objective(gen, encoder, args.remat)
    params = {'generator': gen.variables, 'encoder': encoder.variables}
    flops = {}
    for n in ns:
      row = {'impl': 'jax', 'variant': f'engine/remat={args.remat}', 'N': n,
             **base}
      try:
        row.update(jax_row(objective, params, gen, encoder, n=n,
                           steps=steps, repeats=repeats, lr=args.lr,
                           dtype=args.dtype, peak=peak))
      except Exception as e:  # noqa: BLE001  pylint: disable=broad-except
        rows.append(_oom_row(row, e))
        break
      rows.append(row)
      flops[n] = row.get('flops')
      print(common.summary_line(row), flush=True)
    # The torch rows do the JAX program's work: the same FLOP count; the
    # loop's rate is per target (work 1, FLOPs of N = 1).
    batched = [r for r in torch_new if r['variant'] == 'batched']
    loop = [r for r in torch_new if r['variant'] == 'loop']
    common.fill_flops(batched, flops, unit='latent-steps/s', peak=peak)
    common.fill_flops(loop, {r['N']: flops.get(1) for r in loop},
                      unit='latent-steps/s', peak=peak,
                      work_per_n=lambda _: 1.0)
    rows += torch_new
  report['results'] = rows
  report['ratios'] = ratios(rows)
  report['notes'] += [
      ('throughput = targets x steps / s (latent-steps/s); JAX times the '
       "engine's compiled step (donated state, per-target Adam)"),
      ('torch reference: pure-PyTorch stylegan2-ada maths, without the '
       'custom CUDA kernels of the official code (upfirdn2d, bias_act)'),
      ('the torch loop does only the ID-loss work (no LPIPS / noise '
       'regularisation of projector.py), so it is compared like for like'),
      'torch FLOPs = XLA count of the JAX step for the same N']
  if smoke:
    report['notes'].append('smoke: 32 px generator, '
                           + pairs.SMOKE_SIZES.get(encoder_name, encoder_name))
  return common.finish_report(report, args)


if __name__ == '__main__':
  main()
  sys.exit(0)
