"""Helpers shared by the benchmark scripts: environment, timers, FLOPs, JSON.

Conventions (STYLE.md, "Benchmarks"; docs.jax.dev "Benchmarking"):

* JAX: compile with ``jax.jit(f).lower(*args).compile()`` and time that
  apart from steady state; one warm-up call; then `repeats` timed calls,
  each ended by ``jax.block_until_ready``; report the median.
* PyTorch: same warm-up / median, with ``torch.cuda.synchronize()`` around
  each timed call on a GPU.
* Work (FLOPs) is XLA's count for the compiled program
  (``compiled.cost_analysis()['flops']``); the torch side of a comparison
  does the same work, so the same count is used for both. The fraction of
  peak compares with a peak *measured in the same run* (`measure_peak`), a
  big matmul and a big conv, not a datasheet figure.
* Memory: ``memory_analysis()`` of the compiled program (arguments, outputs
  and XLA scratch, every backend) and, on accelerators, the device's
  ``peak_bytes_in_use`` (a process-wide high-water mark: sweeps go from
  small to large so it belongs to the largest case so far); torch:
  ``torch.cuda.max_memory_allocated`` reset before each case.

Results go to ``benchmarks/results/<name>.json`` with an ``env`` record
(device, versions, dtype, CPU count, command line).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Torch and JAX share the GPU in one process: JAX must not grab 75% of it
# up front (its default), or the torch side would run out of memory first.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

# pylint: enable=g-import-not-at-top,wrong-import-position

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'results')
# The repository root, so `ports.*` imports work when a script is run as
# ``python benchmarks/x.py`` (sys.path[0] is then benchmarks/).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


# --------------------------------------------------------------------------
# Arguments and environment.


def add_common_args(parser: argparse.ArgumentParser) -> None:
  """Options every benchmark takes (--smoke, --repeats, --dtype, ...)."""
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes, 1-2 repeats: proves the script runs '
                      '(CPU, seconds)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed calls per case (median reported)')
  parser.add_argument('--dtype', default='float32',
                      choices=['float32', 'bfloat16'],
                      help='compute dtype (parameters and latents stay f32)')
  parser.add_argument('--out-dir', default=RESULTS_DIR,
                      help='directory for the JSON result')
  parser.add_argument('--name', default=None,
                      help='result file name (default: derived from the '
                      'benchmark, platform and --smoke)')
  parser.add_argument('--no-torch', action='store_true',
                      help='skip the PyTorch side')
  parser.add_argument('--no-peak', action='store_true',
                      help='skip the peak-FLOP/s measurement')
  parser.add_argument('--torch-threads', type=int, default=None,
                      help='torch.set_num_threads (CPU); default: torch\'s')


def set_torch_threads(n: int | None) -> None:
  """Applies --torch-threads (before `environment` records the count)."""
  torch = _torch() if n else None
  if torch is not None:
    torch.set_num_threads(n)


def _version(module: str) -> str | None:
  try:
    return __import__(module).__version__
  except Exception:  # noqa: BLE001  pylint: disable=broad-except
    return None


def environment(*, dtype: str | None = None) -> dict[str, Any]:
  """What the numbers depend on: device, versions, dtype, host, command."""
  dev = jax.devices()[0]
  env = {
      'platform': jax.default_backend(),
      'device_kind': dev.device_kind,
      'device_count': jax.device_count(),
      'dtype': dtype,
      'jax': jax.__version__,
      'jaxlib': _version('jaxlib'),
      'flax': _version('flax'),
      'optax': _version('optax'),
      'torch': _version('torch'),
      'python': platform.python_version(),
      'jax_default_matmul_precision': jax.config.jax_default_matmul_precision,
      'cpu_count': os.cpu_count(),
      # Other jobs on a shared host skew CPU numbers: recorded, not fixed.
      'load_avg_1min': os.getloadavg()[0],
      'command': ' '.join([os.path.relpath(sys.argv[0], ROOT)]
                          + sys.argv[1:]) if sys.argv else None,
      'time_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  }
  torch = _torch()
  if torch is not None:
    env['torch_threads'] = torch.get_num_threads()
    env['torch_cuda'] = torch.cuda.is_available()
    if torch.cuda.is_available():
      torch_device()
      env['torch_device'] = torch.cuda.get_device_name(0)
      env['torch_cudnn_benchmark'] = torch.backends.cudnn.benchmark
      env['torch_allow_tf32'] = torch.backends.cuda.matmul.allow_tf32
  return env


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch


def have_torch() -> bool:
  """Whether torch can be imported (without importing it)."""
  return importlib.util.find_spec('torch') is not None


def torch_device() -> str:
  """'cuda' when torch sees a GPU, else 'cpu'; sets up cuDNN on a GPU.

  cuDNN autotuning is on (the shapes are fixed, as in stylegan2-ada
  training), and TF32 is allowed for convs and matmuls, as XLA's default
  precision allows it for float32 on the GPU side. `environment` records
  both.
  """
  torch = _torch()
  if torch is None or not torch.cuda.is_available():
    return 'cpu'
  torch.backends.cudnn.benchmark = True
  torch.backends.cudnn.allow_tf32 = True
  torch.backends.cuda.matmul.allow_tf32 = True
  return 'cuda'


# --------------------------------------------------------------------------
# JAX timing, FLOPs and memory.


def cost_flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled program, or None when not reported."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  flops = float(cost['flops'])
  return flops if flops > 0 else None


def program_bytes(compiled) -> dict[str, int | None]:
  """Arguments, outputs and scratch of a compiled program (bytes)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001  pylint: disable=broad-except
    m = None
  if m is None:
    return {'xla_temp_bytes': None, 'xla_total_bytes': None}
  total = (m.argument_size_in_bytes + m.output_size_in_bytes
           + m.temp_size_in_bytes - m.alias_size_in_bytes)
  return {'xla_temp_bytes': int(m.temp_size_in_bytes),
          'xla_total_bytes': int(total)}


def device_peak_bytes() -> int | None:
  """``peak_bytes_in_use`` of the first device (None on CPU)."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # noqa: BLE001  pylint: disable=broad-except
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return int(stats['peak_bytes_in_use'])


def median_time(call: Callable[[], Any], repeats: int, *,
                sync: Callable[[Any], Any] = jax.block_until_ready
                ) -> tuple[float, list[float]]:
  """Median seconds of `repeats` calls of `call`, each ended by `sync`."""
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    sync(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def time_jax(fn: Callable[..., Any], *args, repeats: int,
             donate_argnums: tuple[int, ...] = ()) -> dict[str, Any]:
  """Compiles ``jit(fn)`` for `args`, then times steady-state calls.

  Args:
    fn: the function (not yet jitted).
    *args: its arguments (arrays); not donated unless `donate_argnums`.
    repeats: timed calls; the median is reported.
    donate_argnums: passed to jit (then the same args cannot be reused, so
      do not donate here; `time_compiled` handles stateful loops).

  Returns:
    ``compile_s``, ``median_s``, ``times_s``, ``flops`` (per call, or None),
    ``xla_temp_bytes``, ``xla_total_bytes``, ``device_peak_bytes``.
  """
  # Inputs on the device first: numpy weights would be copied every call.
  args = jax.device_put(args)
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(
      *args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # Warm-up (allocations, autotune).
  median, times = median_time(lambda: compiled(*args), repeats)
  return {'compile_s': compile_s, 'median_s': median, 'times_s': times,
          'flops': cost_flops(compiled), **program_bytes(compiled),
          'device_peak_bytes': device_peak_bytes()}


# --------------------------------------------------------------------------
# PyTorch timing and memory.


def time_torch(call: Callable[[], Any], repeats: int, *,
               device: str) -> dict[str, Any]:
  """Warm-up plus median of `repeats` calls; CUDA-synchronised on a GPU.

  Returns:
    ``median_s``, ``times_s``, ``peak_bytes`` (CUDA max allocated since the
    start of this case; None on CPU).
  """
  torch = _torch()
  cuda = device.startswith('cuda')
  if cuda:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

  def sync(_):
    if cuda:
      torch.cuda.synchronize()

  call()  # Warm-up (cuDNN autotune, allocator).
  sync(None)
  median, times = median_time(call, repeats, sync=sync)
  peak = int(torch.cuda.max_memory_allocated()) if cuda else None
  return {'median_s': median, 'times_s': times, 'peak_bytes': peak}


def release_torch(*models) -> None:
  """Moves `models` to the CPU and empties torch's CUDA cache.

  The torch side of a benchmark runs before the JAX side, and hands its
  memory back so that JAX can grow into the whole device.
  """
  torch = _torch()
  if torch is None or not torch.cuda.is_available():
    return
  for m in models:
    if m is not None:
      m.to('cpu')
  torch.cuda.synchronize()
  torch.cuda.empty_cache()


def fill_flops(rows: list[dict[str, Any]], flops: dict[int, Any], *,
               unit: str, peak: dict[str, Any] | None,
               work_per_n: Callable[[int], float] = float) -> None:
  """Gives torch rows the JAX FLOP count of the same N, then the rates."""
  for r in rows:
    if r.get('median_s'):
      r['flops'] = flops.get(r['N'])
      add_rates(r, work=work_per_n(r['N']), unit=unit, peak=peak)


def is_oom(error: BaseException) -> bool:
  """Whether `error` is an out-of-memory error of XLA or torch."""
  text = f'{type(error).__name__}: {error}'
  return any(s in text for s in ('RESOURCE_EXHAUSTED', 'OutOfMemory',
                                 'out of memory', 'Out of memory'))


# --------------------------------------------------------------------------
# Peak throughput of this device, measured now.


def measure_peak(dtype: str = 'float32', *, smoke: bool = False,
                 repeats: int = 3) -> dict[str, Any]:
  """FLOP/s of a big matmul and a big 3x3 conv on the default device.

  The larger of the two is the `peak_flops_per_s` that other numbers are
  compared with ("fraction of measured peak").
  """
  on_cpu = jax.default_backend() == 'cpu'
  # Big enough to reach the CPU's rate in a --smoke run (~0.1 s each).
  n = 1024 if smoke else (2048 if on_cpu else 8192)
  b, hw, c = (4, 56, 128) if smoke else ((8, 64, 128) if on_cpu
                                          else (64, 128, 512))
  key_a, key_b, key_x, key_w = jax.random.split(jax.random.key(0), 4)
  dt = jnp.dtype(dtype)
  out = {'dtype': dtype}
  a = jax.random.normal(key_a, (n, n), dt)
  bm = jax.random.normal(key_b, (n, n), dt)
  r = time_jax(lambda x, y: x @ y, a, bm, repeats=repeats)
  flops = 2.0 * n ** 3
  out['matmul'] = {'shape': [n, n, n], 'median_s': r['median_s'],
                   'flops_per_s': flops / r['median_s']}
  x = jax.random.normal(key_x, (b, hw, hw, c), dt)
  w = jax.random.normal(key_w, (3, 3, c, c), dt)

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  r = time_jax(conv, x, w, repeats=repeats)
  flops = 2.0 * b * hw * hw * c * c * 9
  out['conv3x3'] = {'shape': [b, hw, hw, c, c], 'median_s': r['median_s'],
                    'flops_per_s': flops / r['median_s']}
  out['peak_flops_per_s'] = max(out['matmul']['flops_per_s'],
                                out['conv3x3']['flops_per_s'])
  return out


def add_rates(row: dict[str, Any], *, work: float, unit: str,
              peak: dict[str, Any] | None) -> dict[str, Any]:
  """Adds throughput (`work` / median_s), FLOP/s and fraction of peak."""
  t = row.get('median_s')
  if not t:
    return row
  row['throughput'] = work / t
  row['throughput_unit'] = unit
  flops = row.get('flops')
  if flops:
    row['flops_per_s'] = flops / t
    if peak and peak.get('peak_flops_per_s'):
      row['fraction_of_peak'] = row['flops_per_s'] / peak['peak_flops_per_s']
  return row


# --------------------------------------------------------------------------
# Output.


def result_name(benchmark: str, smoke: bool) -> str:
  """``<benchmark>_<platform>[_smoke]``, e.g. ``inversion_cpu_smoke``."""
  return f'{benchmark}_{jax.default_backend()}{"_smoke" if smoke else ""}'


def _clean(value: Any) -> Any:
  """JSON-safe: floats rounded to 6 significant digits, NaN/Inf -> None."""
  if isinstance(value, float):
    if not math.isfinite(value):
      return None
    return float(f'{value:.6g}')
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  return value


def write_json(report: dict[str, Any], name: str, *,
               out_dir: str = RESULTS_DIR) -> str:
  """Writes ``<out_dir>/<name>.json`` and returns its path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f'{name}.json')
  with open(path, 'w') as f:
    json.dump(_clean(report), f, indent=1)
    f.write('\n')
  return path


def start_report(benchmark: str, args: Any, *, use_torch: bool
                 ) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
  """The header every benchmark writes first: env, the measured peak.

  Args:
    benchmark: its name in the JSON and the result file.
    args: parsed flags with ``dtype``, ``smoke`` and ``no_peak``.
    use_torch: whether the torch side was asked for.

  Returns:
    (report with 'benchmark', 'env', 'peak' and 'notes', the peak, whether
    the torch side runs: False when torch is not installed, noted).
  """
  report = {'benchmark': benchmark,
            'env': environment(dtype=args.dtype), 'notes': []}
  if use_torch and not have_torch():
    use_torch = False
    report['notes'].append('torch not installed: PyTorch side skipped')
  peak = None if args.no_peak else measure_peak(args.dtype, smoke=args.smoke)
  report['peak'] = peak
  return report, peak, use_torch


def finish_report(report: dict[str, Any], args: Any) -> dict[str, Any]:
  """Writes the report (name from ``args.name`` or `result_name`)."""
  path = write_json(report, args.name or result_name(
      report['benchmark'], args.smoke), out_dir=args.out_dir)
  print(f'wrote {path}')
  return report


def sizes(text: str) -> list[int]:
  """'1,4,16' -> [1, 4, 16]."""
  return [int(s) for s in text.split(',') if s.strip()]


def summary_line(row: dict[str, Any]) -> str:
  """One printable line of a result row."""
  keys = ('impl', 'variant', 'encoder', 'pass', 'resolution', 'N',
          'compile_s', 'median_s',
          'throughput', 'fraction_of_peak', 'xla_total_bytes', 'peak_bytes',
          'skipped', 'error')
  parts = []
  for k in keys:
    v = row.get(k)
    if v is None:
      continue
    parts.append(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}')
  return '  '.join(parts)
