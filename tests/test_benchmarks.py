"""The benchmark scripts run (--smoke, smallest settings) and report sanely.

Each script's ``main(argv)`` is called in-process (one JAX start-up) with
the smallest settings; the JSON it writes must carry the environment
record, positive finite throughput for every implementation and the
ratios. The helpers in ``benchmarks/common.py`` and the table writer are
checked on their own. The torch comparisons carry the ``torch`` marker.
"""

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks')
if BENCH not in sys.path:
  sys.path.insert(0, BENCH)

import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import make_tables  # pylint: disable=g-import-not-at-top,wrong-import-position

ENV_KEYS = {'platform', 'device_kind', 'dtype', 'jax', 'jaxlib', 'flax',
            'torch', 'cpu_count', 'command'}


def _load(out_dir, name):
  with open(os.path.join(out_dir, f'{name}.json')) as f:
    return json.load(f)


def _check_report(report, *, benchmark, impls):
  assert report['benchmark'] == benchmark
  assert ENV_KEYS <= set(report['env'])
  assert report['env']['platform'] == jax.default_backend()
  rows = report['results']
  assert {r['impl'] for r in rows} >= set(impls)
  for r in rows:
    assert 'error' not in r, r
    assert r['median_s'] > 0 and math.isfinite(r['median_s'])
    assert r['throughput'] > 0 and math.isfinite(r['throughput'])
    assert r['throughput_unit']
  for r in rows:
    if r['impl'] == 'jax':
      assert r['compile_s'] > 0
      assert r['flops'] > 0  # XLA's CPU backend reports FLOPs.
      assert r['xla_total_bytes'] > 0
  return rows


# --------------------------------------------------------------------------
# Helpers.


def test_time_jax_counts_flops_and_memory():
  a = jnp.ones((64, 32), jnp.float32)
  b = jnp.ones((32, 16), jnp.float32)
  r = common.time_jax(lambda x, y: x @ y, a, b, repeats=2)
  assert r['flops'] == pytest.approx(2 * 64 * 32 * 16, rel=0.01)
  assert r['median_s'] > 0 and len(r['times_s']) == 2
  assert r['compile_s'] > 0
  assert r['xla_total_bytes'] >= (64 * 32 + 32 * 16 + 64 * 16) * 4
  row = common.add_rates(dict(r), work=64, unit='rows/s',
                         peak={'peak_flops_per_s': 1e12})
  assert row['throughput'] == pytest.approx(64 / r['median_s'])
  assert 0 < row['fraction_of_peak'] == pytest.approx(
      row['flops_per_s'] / 1e12)


def test_write_json_is_strict_json(tmp_path):
  path = common.write_json({'a': float('nan'), 'b': [1.23456789, np.inf],
                            'c': {'d': 2}}, 'x', out_dir=str(tmp_path))
  with open(path) as f:
    text = f.read()
  assert 'NaN' not in text and 'Infinity' not in text
  assert json.loads(text) == {'a': None, 'b': [1.23457, None], 'c': {'d': 2}}


def test_environment_and_oom_detection():
  env = common.environment(dtype='bfloat16')
  assert ENV_KEYS <= set(env) and env['dtype'] == 'bfloat16'
  assert common.is_oom(RuntimeError('RESOURCE_EXHAUSTED: Out of memory'))
  assert not common.is_oom(ValueError('shapes do not match'))


def test_make_tables_rewrites_only_the_marked_section():
  readme = f'intro\n{make_tables.BEGIN}\nold\n{make_tables.END}\noutro\n'
  new = make_tables.rewrite(readme, 'TABLES\n')
  assert new == (f'intro\n{make_tables.BEGIN}\nTABLES\n'
                 f'{make_tables.END}\noutro\n')
  with pytest.raises(ValueError, match='tables:begin'):
    make_tables.rewrite('no markers', 'x')


def test_run_all_passes_options_through(monkeypatch):
  import run_all  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(run_all.subprocess, 'call',
                      lambda cmd, cwd: calls.append(cmd) or 0)
  assert run_all.main(['--smoke', '--dtype', 'bfloat16', '--repeats', '3',
                       '--no-tables']) == 0
  scripts = [os.path.basename(c[1]) for c in calls]
  assert scripts == ['bench_inversion.py', 'bench_generator.py',
                     'bench_encoders.py', 'soft_histogram.py']
  for cmd in calls[:3]:
    assert cmd[2:] == ['--smoke', '--dtype', 'bfloat16', '--repeats', '3']
  # soft_histogram.py takes only --smoke, --dtype and its own --out.
  assert calls[3][2:5] == ['--smoke', '--dtype', 'bfloat16']
  assert '--repeats' not in calls[3]
  calls.clear()
  monkeypatch.setattr(run_all.subprocess, 'call',
                      lambda cmd, cwd: calls.append(cmd) or 3)
  assert run_all.main(['--only', 'generator', '--no-tables']) == 1
  assert [os.path.basename(c[1]) for c in calls] == ['bench_generator.py']


# --------------------------------------------------------------------------
# The scripts (torch comparisons).


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory):
  """Runs the three benchmarks once, smallest settings; returns the dir."""
  pytest.importorskip('torch')
  import bench_encoders  # pylint: disable=g-import-not-at-top
  import bench_generator  # pylint: disable=g-import-not-at-top
  import bench_inversion  # pylint: disable=g-import-not-at-top
  out = str(tmp_path_factory.mktemp('bench'))
  base = ['--smoke', '--repeats', '1', '--out-dir', out]
  bench_generator.main(base + ['--batches', '1', '--forms', 'shared'])
  bench_encoders.main(base + ['--no-peak', '--encoders', 'iresnet50',
                              '--batches', '1'])
  bench_inversion.main(base + ['--no-peak', '--targets', '1', '--steps', '1',
                               '--encoder', 'iresnet50'])
  return out


@pytest.mark.torch
def test_generator_smoke(smoke_runs):
  report = _load(smoke_runs, 'generator_cpu_smoke')
  rows = _check_report(report, benchmark='generator', impls={'jax', 'torch'})
  assert {r['variant'] for r in rows if r['impl'] == 'torch'} == {
      'fused', 'shared'}
  assert report['peak']['peak_flops_per_s'] > 0
  assert all(r['fraction_of_peak'] > 0 for r in rows)
  assert report['ratios'][0]['jax_over_torch_shared'] > 0


@pytest.mark.torch
def test_encoders_smoke(smoke_runs):
  report = _load(smoke_runs, 'encoders_cpu_smoke')
  _check_report(report, benchmark='encoders', impls={'jax', 'torch'})
  (ratio,) = report['ratios']
  assert ratio['encoder'] == 'iresnet50' and ratio['jax_over_reference'] > 0


@pytest.mark.torch
def test_inversion_smoke(smoke_runs):
  report = _load(smoke_runs, 'inversion_cpu_smoke')
  rows = _check_report(report, benchmark='inversion', impls={'jax', 'torch'})
  assert {r['variant'] for r in rows if r['impl'] == 'torch'} == {
      'batched', 'loop'}
  assert all(r['throughput_unit'] == 'latent-steps/s' for r in rows)
  (jax_row,) = [r for r in rows if r['impl'] == 'jax']
  # The engine really optimised: finite losses, recorded before/after.
  assert math.isfinite(jax_row['loss_first'])
  assert math.isfinite(jax_row['loss_last'])
  (ratio,) = report['ratios']
  assert ratio['jax_over_torch_batched'] > 0
  assert ratio['jax_over_torch_loop'] > 0
  # Same weights, same Adam steps: JAX and torch did the same work.
  (torch_row,) = [r for r in rows if r['variant'] == 'batched']
  assert torch_row['loss_last'] == pytest.approx(jax_row['loss_last'],
                                                 rel=1e-3)
  assert ratio['loss_rel_diff_vs_torch'] < 1e-3
  assert jax_row['loss_last'] < jax_row['loss_first']  # Adam descended.


@pytest.mark.torch
def test_tables_and_plot_from_smoke_results(smoke_runs, tmp_path):
  import plot_scaling  # pylint: disable=g-import-not-at-top
  text = make_tables.render(smoke_runs)
  assert 'not measured' in text  # CPU only.
  for name in ('inversion_cpu_smoke', 'generator_cpu_smoke',
               'encoders_cpu_smoke'):
    assert f'`{name}`' in text
  assert plot_scaling.main([os.path.join(smoke_runs,
                                         'inversion_cpu_smoke.json'),
                            '--out-dir', str(tmp_path)]) == 0
  assert os.path.getsize(tmp_path / 'inversion_cpu_smoke_scaling.png') > 0
