"""Face encoders forward+backward w.r.t. the input image: JAX vs references.

The work of one call: N preprocessed encoder inputs ([N, H, W, 3], the
encoder's own size) -> descriptors -> scalar loss (mean of squared
descriptor entries) -> gradient w.r.t. the inputs, weights frozen: what an
inversion step asks of the encoder. Throughput is images/s; FLOPs are XLA's
count of the JAX program.

References, same weights (pairs.py): IResNet-50 (``ports/
iresnet_reference.py``), VGGFace2 ResNet-50 and VGG-Face (``ports/
vggface2_reference.py`` / ``ports/vggface_reference.py``, when present:
skipped with a note otherwise). dlib's descriptor has no torch model: its
reference is dlib itself (``ports/dlib_reference.py``, CPU, forward only,
no gradient), so for dlib the JAX forward pass is timed as well.

  python benchmarks/bench_encoders.py --smoke              # CPU, 15-30 s
  python benchmarks/bench_encoders.py                      # GPU sweep
  python benchmarks/bench_encoders.py --encoders iresnet50 --batches 1,64
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
DEFAULT_ENCODERS = 'iresnet50,vggface2,vggface,dlib'


def jax_rows(name, encoder, *, batches, repeats, peak, dtype, grad=True):
  """Rows for the JAX encoder at each batch size (stops at OOM)."""
  module = encoder.module
  h, w = encoder.spec.size

  def forward(variables, x):
    return module.apply(variables, x)[0]

  def loss_and_grad(variables, x):
    return jax.value_and_grad(lambda x: jnp.mean(jnp.square(
        forward(variables, x).astype(jnp.float32))))(x)

  rows = []
  for n in batches:
    x = jax.random.normal(jax.random.key(n), (n, h, w, 3))
    row = {'impl': 'jax', 'encoder': name,
           'pass': 'fwd+bwd' if grad else 'fwd', 'N': n, 'dtype': dtype,
           'input': [h, w, 3]}
    try:
      row.update(common.time_jax(loss_and_grad if grad else forward,
                                 encoder.variables, x, repeats=repeats))
    except Exception as e:
      if not common.is_oom(e):
        raise
      row['error'] = 'OOM'
      rows.append(row)
      break
    rows.append(common.add_rates(row, work=n, unit='images/s', peak=peak))
    print(common.summary_line(row), flush=True)
  return rows


def torch_rows(name, model, encoder, *, batches, repeats, dtype):
  """Rows for the torch reference (fwd+bwd w.r.t. the input; no FLOPs)."""
  import torch  # pylint: disable=g-import-not-at-top
  device = common.torch_device()
  model = model.to(device).eval().requires_grad_(False)
  h, w = encoder.spec.size
  rows = []
  for n in batches:
    row = {'impl': 'torch', 'encoder': name, 'pass': 'fwd+bwd', 'N': n,
           'dtype': dtype, 'device': device, 'input': [h, w, 3]}
    x = torch.from_numpy(np.random.default_rng(n).standard_normal(
        (n, 3, h, w)).astype(np.float32)).to(device).requires_grad_(True)

    def call(x=x):
      x.grad = None
      ctx = (torch.autocast(device, dtype=torch.bfloat16)
             if dtype == 'bfloat16' else contextlib.nullcontext())
      with ctx:
        desc = pairs.torch_descriptor(model, x)
      desc.float().square().mean().backward()
      return x.grad

    try:
      row.update(common.time_torch(call, repeats, device=device))
    except Exception as e:
      if not common.is_oom(e):
        raise
      row['error'] = 'OOM'
      rows.append(row)
      if device == 'cuda':
        torch.cuda.empty_cache()
      break
    rows.append(row)
    print(common.summary_line(row), flush=True)
  return rows


def dlib_rows(*, batches, repeats):
  """dlib's own descriptor (CPU, forward only) on random 150x150 chips."""
  from ports import dlib_reference  # pylint: disable=g-import-not-at-top
  rows = []
  for n in batches:
    chips = pairs.random_chips(n, 150, seed=n)
    row = {'impl': 'dlib', 'encoder': 'dlib', 'pass': 'fwd', 'N': n,
           'dtype': 'float32', 'device': 'cpu', 'input': [150, 150, 3]}
    dlib_reference.reference_descriptor(chips)  # Warm-up (model load).
    row['median_s'], row['times_s'] = common.median_time(
        lambda chips=chips: dlib_reference.reference_descriptor(chips),
        repeats, sync=lambda _: None)
    rows.append(common.add_rates(row, work=n, unit='images/s', peak=None))
    print(common.summary_line(row), flush=True)
  return rows


def ratios(rows):
  """JAX / reference throughput per (encoder, pass, N)."""
  out = []
  refs = {(r['encoder'], r['pass'], r['N']): r for r in rows
          if r['impl'] != 'jax' and r.get('throughput')}
  for r in rows:
    ref = refs.get((r['encoder'], r['pass'], r['N']))
    if r['impl'] == 'jax' and r.get('throughput') and ref:
      out.append({'encoder': r['encoder'], 'pass': r['pass'], 'N': r['N'],
                  'reference': ref['impl'],
                  'jax_over_reference': r['throughput'] / ref['throughput']})
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument('--encoders', default=DEFAULT_ENCODERS,
                      help=f'comma list of {sorted(pairs.ENCODERS)}')
  parser.add_argument('--batches', default=None,
                      help=f'batch sizes (default {GPU_BATCHES}; smoke 1,4)')
  parser.add_argument('--no-dlib-reference', action='store_true',
                      help='skip timing dlib itself')
  args = parser.parse_args(argv)
  common.set_torch_threads(args.torch_threads)
  smoke = args.smoke
  batches = common.sizes(args.batches or ('1,4' if smoke else GPU_BATCHES))
  repeats = args.repeats or (2 if smoke else 5)
  names = [e.strip() for e in args.encoders.split(',') if e.strip()]
  report, peak, use_torch = common.start_report(
      'encoders', args, use_torch=not args.no_torch)
  report['settings'] = {'encoders': names, 'batches': batches,
                        'repeats': repeats, 'smoke': smoke,
                        'loss': 'mean(descriptor^2), grad w.r.t. the input'}
  rows, skipped = [], {}
  for name in names:
    try:
      encoder, torch_model = pairs.encoder_pair(
          name, dtype=args.dtype, smoke=smoke,
          torch_side=use_torch and name != 'dlib')
    except pairs.Unavailable as e:
      skipped[name] = str(e)
      print(f'skipped {name}: {e}', flush=True)
      continue
    # Full-size VGG-type encoders on a CPU smoke run: one batch size.
    sweep = batches[:1] if smoke and name.startswith('vggface') else batches
    # Torch first, then its memory is released for JAX (common.release_torch).
    torch_new = []
    if torch_model is not None:
      torch_new = torch_rows(name, torch_model, encoder, batches=sweep,
                             repeats=repeats, dtype=args.dtype)
      common.release_torch(torch_model)
    new = jax_rows(name, encoder, batches=sweep, repeats=repeats, peak=peak,
                   dtype=args.dtype)
    rows += new
    common.fill_flops(torch_new, {r['N']: r.get('flops') for r in new},
                      unit='images/s', peak=peak)
    if name == 'dlib':
      rows += jax_rows(name, encoder, batches=sweep, repeats=repeats,
                       peak=peak, dtype=args.dtype, grad=False)
      if not args.no_dlib_reference:
        try:
          rows += dlib_rows(batches=sweep, repeats=repeats)
        except ImportError as e:
          skipped['dlib reference'] = f'dlib not importable: {e}'
    rows += torch_new
  report['results'] = rows
  report['ratios'] = ratios(rows)
  report['skipped'] = skipped
  if smoke:
    report['notes'].append('smoke: ' + '; '.join(
        pairs.SMOKE_SIZES[n] for n in names if n in pairs.SMOKE_SIZES))
  report['notes'] += [
      ('dlib reference: dlib.face_recognition_model_v1 on CPU, uint8 chips, '
       'forward only (dlib has no gradient)'),
      'torch FLOPs = XLA count of the JAX program (same work)']
  return common.finish_report(report, args)


if __name__ == '__main__':
  main()
  sys.exit(0)
