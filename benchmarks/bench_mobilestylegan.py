"""MobileStyleGAN synthesis: JAX forward and forward+backward vs OpenVINO.

The work of one call: render N images from W+ latents [N, num_ws, 512].

* ``jax`` / ``forward``: the Flax port of random-face's model (real weights).
* ``jax`` / ``forward+backward``: the same, plus a scalar loss (mean of
  squared pixels) and its gradient w.r.t. the latents (what inversion
  does), the generator frozen.
* ``openvino`` / ``forward``: the runtime on the original IR (float32
  inference precision, all CPU threads); it takes one w per image.
* Preview sizes: the real IR has no intermediate heads, so the cost of
  stopping early is timed on the same architecture with preview heads and
  random weights (``weights: random-init``): the work does not depend on
  the weights.

Ratios (same N, same run): JAX forward / OpenVINO forward and JAX
forward+backward / OpenVINO forward, as time ratios (> 1: slower).

  python benchmarks/bench_mobilestylegan.py --smoke     # tiny IR, seconds
  python benchmarks/bench_mobilestylegan.py             # 1024 px, N 1 and 4
  python benchmarks/bench_mobilestylegan.py --batches 1,8,32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import common  # Puts the repository root on sys.path.
import jax
import jax.numpy as jnp
import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
from id2image_jax.models import mobilestylegan as msg
from id2image_jax.porting import mobilestylegan as pm
from ports import mobilestylegan_openvino as ovref

# pylint: enable=g-import-not-at-top,wrong-import-position


def _passes(gen, variables, resolution):
  """{'forward': fn(ws), 'forward+backward': fn(ws)} for jit."""

  def forward(ws):
    return gen.apply(variables, ws, resolution=resolution, method='synthesis')

  def loss(ws):
    return jnp.mean(jnp.square(forward(ws)))

  return {'forward': forward,
          'forward+backward': jax.value_and_grad(loss)}


def jax_rows(config, variables, *, resolutions, batches, repeats, peak,
             weights, passes=('forward', 'forward+backward')):
  """Timing rows of the JAX synthesis for each (resolution, pass, N)."""
  gen = msg.build(config)
  rows = []
  for res in resolutions:
    fns = _passes(gen, variables, res)
    for name in passes:
      for n in batches:
        ws = jax.random.normal(jax.random.key(n), (n, config.num_ws,
                                                   config.w_dim))
        row = {'impl': 'jax', 'pass': name, 'resolution': res, 'N': n,
               'dtype': config.dtype, 'weights': weights}
        row.update(common.time_jax(fns[name], ws, repeats=repeats))
        rows.append(common.add_rates(row, work=n, unit='images/s',
                                     peak=peak))
        print(common.summary_line(row), flush=True)
  return rows


def openvino_rows(ref, *, resolution, w_dim, batches, repeats):
  """Timing rows of the OpenVINO runtime (compile timed separately)."""
  rows = []
  for n in batches:
    w = np.random.default_rng(n).standard_normal((n, w_dim)).astype(
        np.float32)
    start = time.perf_counter()
    compiled = ref.compiled(ovref.SYNTHESIS, n)
    compile_s = time.perf_counter() - start
    compiled(w)  # warm-up
    median, times = common.median_time(lambda w=w, c=compiled: c(w), repeats,
                                       sync=lambda x: x)
    row = {'impl': 'openvino', 'pass': 'forward', 'resolution': resolution,
           'N': n, 'dtype': 'float32', 'weights': 'random-face',
           'compile_s': compile_s, 'median_s': median, 'times_s': times,
           'threads': int(compiled.get_property('INFERENCE_NUM_THREADS'))}
    rows.append(common.add_rates(row, work=n, unit='images/s', peak=None))
    print(common.summary_line(row), flush=True)
  return rows


def ratios(rows, resolution):
  """JAX / OpenVINO median time per N at the full resolution."""
  index = {(r['impl'], r['pass'], r['resolution'], r['N'], r['weights']): r
           for r in rows}
  out = []
  for n in sorted({r['N'] for r in rows if r['impl'] == 'openvino'}):
    ov = index.get(('openvino', 'forward', resolution, n, 'random-face'))
    row = {'resolution': resolution, 'N': n}
    for name in ('forward', 'forward+backward'):
      j = index.get(('jax', name, resolution, n, 'random-face'))
      if ov and j:
        row[f'jax_{name}_over_openvino_forward_time'] = (
            j['median_s'] / ov['median_s'])
    out.append(row)
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument('--batches', default='1,4', help='batch sizes')
  parser.add_argument('--ir-dir', default=None,
                      help='directory with MappingNetwork/SynthesisNetwork '
                      '.xml+.bin (default: random-face from the cache; '
                      '--smoke: a tiny random IR)')
  parser.add_argument('--no-previews', action='store_true',
                      help='skip the preview-size rows')
  args = parser.parse_args(argv)
  smoke = args.smoke
  batches = common.sizes(args.batches)
  repeats = args.repeats or (2 if smoke else 3)
  report, peak, _ = common.start_report('mobilestylegan', args,
                                        use_torch=False)
  with tempfile.TemporaryDirectory() as tmp:
    if args.ir_dir:
      files = tuple(os.path.join(args.ir_dir, f'{n}.xml')
                    for n in (ovref.MAPPING, ovref.SYNTHESIS))
    elif smoke:
      files = ovref.write_tiny_ir(tmp)
    else:
      files = pm.default_files()
    config, variables = pm.convert(*files, w_avg_samples=16)
    config = dataclasses.replace(msg.as_config(config), dtype=args.dtype)
    variables = jax.device_put(variables)
    report['settings'] = {
        'batches': batches, 'repeats': repeats, 'smoke': smoke,
        'ir': [os.path.basename(f) for f in files],
        'config': dataclasses.asdict(config),
        'loss': 'mean(img^2), grad w.r.t. W+ latents',
        'xla_flags': os.environ.get('XLA_FLAGS', '')}
    ref = None
    if ovref.have_openvino():
      ref = ovref.OpenVINOReference(*files)
      report['env']['openvino'] = ref.version
    else:
      report['notes'].append('openvino not installed: its side skipped')
    rows = jax_rows(config, variables, resolutions=[config.resolution],
                    batches=batches, repeats=repeats, peak=peak,
                    weights='random-face')
    if ref is not None:
      rows += openvino_rows(ref, resolution=config.resolution,
                            w_dim=config.w_dim, batches=batches,
                            repeats=repeats)
  if not args.no_previews:
    heads = dataclasses.replace(config, preview_heads=True)
    rows += jax_rows(heads, msg.init_variables(jax.random.key(0), heads,
                                               w_avg_samples=0),
                     resolutions=heads.preview_resolutions,
                     batches=batches, repeats=repeats, peak=peak,
                     weights='random-init')
  report['results'] = rows
  report['ratios'] = ratios(rows, config.resolution)
  report['notes'] += [
      'openvino rows: the IR takes one w per image (W), JAX rows W+',
      ('preview rows (weights random-init): same architecture with the '
       'PyTorch per-block heads, which the IR does not ship')]
  return common.finish_report(report, args)


if __name__ == '__main__':
  main()
  sys.exit(0)
