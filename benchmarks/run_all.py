"""Runs every benchmark, then writes the README tables and scaling plots.

GPU settings by default; ``--smoke`` (tiny sizes, CPU, a few minutes in
all) and any other options (``--dtype bfloat16``, ``--repeats 3``,
``--no-torch`` ...) pass through to the benchmark scripts. Each benchmark
runs in its own process (fresh device memory and peak statistics); a
failing one is reported and the others still run.

  python benchmarks/run_all.py --smoke          # CPU: proves it all runs
  python benchmarks/run_all.py                  # GPU: the full figures
  python benchmarks/run_all.py --dtype bfloat16 --only inversion
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAIN = ('bench_inversion', 'bench_generator', 'bench_encoders')


def _run(cmd: list[str]) -> tuple[int, float]:
  print('\n$ ' + ' '.join(cmd), flush=True)
  start = time.perf_counter()
  rc = subprocess.call(cmd, cwd=ROOT)
  return rc, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--smoke', action='store_true')
  parser.add_argument('--only', default=None,
                      help='comma list of benchmarks to run (inversion, '
                      'generator, encoders, soft_histogram)')
  parser.add_argument('--no-tables', action='store_true',
                      help='do not rewrite README tables / plots')
  args, passthrough = parser.parse_known_args(argv)
  only = None if args.only is None else {
      s.strip() for s in args.only.split(',')}
  smoke = ['--smoke'] if args.smoke else []
  py = sys.executable
  status = {}
  for script in MAIN:
    name = script.removeprefix('bench_')
    if only and name not in only:
      continue
    status[name] = _run([py, os.path.join('benchmarks', f'{script}.py'),
                         *smoke, *passthrough])
  if not only or 'soft_histogram' in only:
    import jax  # pylint: disable=g-import-not-at-top
    suffix = f'{jax.default_backend()}{"_smoke" if args.smoke else ""}'
    # Relative to the repository root (the cwd of the run): the JSON
    # records the command line, which should not hold machine paths.
    out = os.path.join('benchmarks', 'results',
                       f'soft_histogram_{suffix}.json')
    os.makedirs(os.path.join(ROOT, os.path.dirname(out)), exist_ok=True)
    extra = []  # soft_histogram.py takes --dtype only.
    for i, a in enumerate(passthrough):
      if a.startswith('--dtype='):
        extra = [a]
      elif a == '--dtype' and i + 1 < len(passthrough):
        extra = [a, passthrough[i + 1]]
    status['soft_histogram'] = _run(
        [py, os.path.join('benchmarks', 'soft_histogram.py'), *smoke,
         *extra, '--out', out])
  if not args.no_tables:
    _run([py, os.path.join('benchmarks', 'make_tables.py')])
    _run([py, os.path.join('benchmarks', 'plot_scaling.py')])
  print('\nsummary:')
  for name, (rc, seconds) in status.items():
    print(f'  {name:15s} {"ok" if rc == 0 else f"FAILED (rc {rc})":18s} '
          f'{seconds:7.1f} s')
  return 0 if all(rc == 0 for rc, _ in status.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
