"""ONNX face encoders: JAX forward and forward+backward vs ONNX Runtime.

The model: an ONNX IResNet-50 in insightface's export form (what
``w600k_r50.onnx`` is), by default written here from the PyTorch reference
with random weights (``ports/onnx_reference.py``; the work does not depend
on the weights), or any file given with ``--model``. The work of one call:
N aligned 112x112 faces (the encoder input) -> N descriptors.

* ``jax`` / ``forward``: the file run by the ``onnx`` kind's interpreter
  (`id2image_jax.models.onnx_graph`) under ``jax.jit``.
* ``jax`` / ``forward+backward``: the same plus a scalar loss (mean squared
  descriptor) and its gradient w.r.t. the input images (what an inversion
  step needs of the encoder).
* ``onnxruntime`` / ``forward``: ONNX Runtime's CPU provider on the same
  file, its default threads (all cores), graph optimisations on; "compile"
  is the session creation.

Ratios (same N, same run): JAX forward / ORT forward and JAX
forward+backward / ORT forward, as time ratios (> 1: slower). The JSON also
records the parity of the run (relative max error vs ORT, float32 and the
compute dtype).

  python benchmarks/bench_onnx.py --smoke          # tiny IResNet, seconds
  python benchmarks/bench_onnx.py                  # IResNet-50, N 1 and 8
  python benchmarks/bench_onnx.py --model w600k_r50.onnx --batches 1,32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import common  # Puts the repository root on sys.path.
import jax
import jax.numpy as jnp
import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
from id2image_jax import loading
from id2image_jax.models import onnx_graph

# pylint: enable=g-import-not-at-top,wrong-import-position


def _passes(module):
  """fn(variables, x): the weights are arguments, as in the jobs (not
  constants folded into the program)."""
  def forward(variables, x):
    return module.apply(variables, x)[0]

  def loss(variables, x):
    return jnp.mean(jnp.square(forward(variables, x).astype(jnp.float32)))

  return {'forward': forward,
          'forward+backward': jax.value_and_grad(loss, argnums=1)}


def _inputs(n: int, size) -> np.ndarray:
  """Encoder inputs: random pixels normalised the arcface way."""
  pixels = np.random.default_rng(n).integers(0, 256, (n, *size, 3))
  return ((pixels - 127.5) / 127.5).astype(np.float32)


def jax_rows(encoder, *, batches, repeats, peak, dtype):
  module = onnx_graph.build(encoder.config, dtype=jnp.dtype(dtype))
  fns = _passes(module)
  rows = []
  for name, fn in fns.items():
    for n in batches:
      row = {'impl': 'jax', 'pass': name, 'N': n, 'dtype': dtype}
      row.update(common.time_jax(fn, encoder.variables,
                                 _inputs(n, encoder.spec.size),
                                 repeats=repeats))
      rows.append(common.add_rates(row, work=n, unit='faces/s', peak=peak))
      print(common.summary_line(row), flush=True)
  return rows


def onnxruntime_rows(path, size, *, batches, repeats):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  compile_s = time.perf_counter() - start
  name = session.get_inputs()[0].name
  rows = []
  for n in batches:
    x = np.ascontiguousarray(_inputs(n, size).transpose(0, 3, 1, 2))
    session.run(None, {name: x})  # warm-up
    median, times = common.median_time(
        lambda x=x: session.run(None, {name: x}), repeats, sync=lambda y: y)
    row = {'impl': 'onnxruntime', 'pass': 'forward', 'N': n,
           'dtype': 'float32', 'compile_s': compile_s, 'median_s': median,
           'times_s': times, 'providers': session.get_providers()}
    rows.append(common.add_rates(row, work=n, unit='faces/s', peak=None))
    print(common.summary_line(row), flush=True)
  return rows


def parity(encoder, path, dtype: str) -> dict:
  """Relative max error vs ORT on 2 inputs: max |jax - ort| / max |ort|."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  x = _inputs(2, encoder.spec.size)
  want = session.run(None, {session.get_inputs()[0].name:
                            np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
  out = {}
  for name in dict.fromkeys(('float32', dtype)):
    module = onnx_graph.build(encoder.config, dtype=jnp.dtype(name))
    got = np.asarray(jax.jit(module.apply)(encoder.variables, x)[0],
                     np.float32)
    out[name] = float(np.abs(got - want).max() / np.abs(want).max())
  return out


def ratios(rows):
  index = {(r['impl'], r['pass'], r['N']): r for r in rows}
  out = []
  for n in sorted({r['N'] for r in rows if r['impl'] == 'onnxruntime'}):
    ort_row = index[('onnxruntime', 'forward', n)]
    row = {'N': n}
    for name in ('forward', 'forward+backward'):
      j = index.get(('jax', name, n))
      if j:
        row[f'jax_{name}_over_onnxruntime_forward_time'] = (
            j['median_s'] / ort_row['median_s'])
    out.append(row)
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_common_args(parser)
  parser.add_argument('--batches', default=None, help='batch sizes')
  parser.add_argument('--model', default=None,
                      help='an .onnx face encoder (default: a random '
                      'IResNet-50 in insightface\'s form, written here)')
  args = parser.parse_args(argv)
  smoke = args.smoke
  batches = common.sizes(args.batches or ('1,2' if smoke else '1,8'))
  repeats = args.repeats or (2 if smoke else 5)
  report, peak, _ = common.start_report('onnx', args, use_torch=False)
  with tempfile.TemporaryDirectory() as tmp:
    path = args.model
    variant = 'given file'
    if path is None:
      from ports import onnx_reference  # pylint: disable=g-import-not-at-top
      config = ({'layers': [1, 1, 1, 1], 'num_features': 64} if smoke
                else {'variant': 'r50'})
      variant = 'tiny IResNet' if smoke else 'IResNet-50'
      path = onnx_reference.write_model(os.path.join(tmp, 'model.onnx'),
                                        config)
    start = time.perf_counter()
    encoder = loading.load_encoder(path)
    load_s = time.perf_counter() - start
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    report['env']['onnxruntime'] = ort.__version__
    report['settings'] = {
        'batches': batches, 'repeats': repeats, 'smoke': smoke,
        'model': (os.path.basename(args.model) if args.model else
                  f'random {variant}, insightface export form (opset 11)'),
        'file_mb': os.path.getsize(path) / 2 ** 20,
        'nodes_after_folding': len(encoder.config['nodes']),
        'load_s': load_s, 'loss': 'mean(descriptor^2), grad w.r.t. the '
        'input images'}
    report['parity_relative_max_error'] = parity(encoder, path, args.dtype)
    rows = jax_rows(encoder, batches=batches, repeats=repeats, peak=peak,
                    dtype=args.dtype)
    rows += onnxruntime_rows(path, encoder.spec.size, batches=batches,
                             repeats=repeats)
  report['results'] = rows
  report['ratios'] = ratios(rows)
  return common.finish_report(report, args)


if __name__ == '__main__':
  main()
  sys.exit(0)
