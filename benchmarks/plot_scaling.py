"""Scaling plot: throughput and memory vs N from the benchmark JSON files.

One PNG per result file (inversion and generator benchmarks): left,
throughput (latent-steps/s or images/s) against N on log-log axes, one line
per implementation / variant / resolution; right, memory against N (the
device peak where measured, else XLA's compiled-program size for JAX).

  python benchmarks/plot_scaling.py                  # all results
  python benchmarks/plot_scaling.py benchmarks/results/inversion_gpu.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import matplotlib

matplotlib.use('Agg')
# pylint: disable-next=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
KINDS = ('inversion', 'generator', 'encoders')


def _series(report):
  """{label: [(N, throughput, memory bytes or None)]} sorted by N."""
  out = {}
  for r in report.get('results', []):
    if not r.get('throughput'):
      continue
    parts = [r['impl'], r.get('variant') or r.get('pass', '')]
    if 'resolution' in r:
      parts.append(f"{r['resolution']}px")
    if 'encoder' in r and report.get('benchmark') == 'encoders':
      parts.insert(0, r['encoder'])
    label = ' '.join(str(p) for p in parts if p)
    mem = (r.get('device_peak_bytes') or r.get('peak_bytes')
           or r.get('xla_total_bytes'))
    out.setdefault(label, []).append((r['N'], r['throughput'], mem))
  return {k: sorted(v) for k, v in out.items()}


def plot(report, path: str) -> str:
  """Writes the two-panel figure of `report` to `path`."""
  series = _series(report)
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  unit = 'throughput'
  for r in report.get('results', []):
    unit = r.get('throughput_unit', unit)
    break
  for label, pts in series.items():
    ns = [p[0] for p in pts]
    ax_t.plot(ns, [p[1] for p in pts], marker='o', label=label)
    mem = [(p[0], p[2]) for p in pts if p[2]]
    if mem:
      ax_m.plot([m[0] for m in mem], [m[1] / 2**20 for m in mem],
                marker='o', label=label)
  env = report.get('env', {})
  title = (f"{report.get('benchmark')} on {env.get('platform')} / "
           f"{env.get('device_kind')}, {env.get('dtype')}")
  for ax, ylabel in ((ax_t, unit), (ax_m, 'memory (MiB)')):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('N (targets / batch)')
    ax.set_ylabel(ylabel)
    ax.grid(True, which='both', alpha=0.3)
  ax_t.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('files', nargs='*',
                      help='result JSON files (default: results/*.json)')
  parser.add_argument('--out-dir', default=None,
                      help='where the PNGs go (default: next to the JSON)')
  args = parser.parse_args(argv)
  files = args.files or [
      f for f in sorted(glob.glob(os.path.join(RESULTS, '*.json')))
      if os.path.basename(f).split('_')[0] in KINDS]
  for path in files:
    with open(path) as f:
      report = json.load(f)
    if report.get('benchmark') not in KINDS:
      continue
    out_dir = args.out_dir or os.path.dirname(path)
    png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0]
                       + '_scaling.png')
    print(f'wrote {plot(report, png)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
