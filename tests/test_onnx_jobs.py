"""ONNX encoders in the jobs: `invert` white-box with the input convention
said and overridable, `audit` of a file only ONNX Runtime can run (the
black-box-only report). Tiny helper-built models, the demo generator."""

from __future__ import annotations

import json
import os
import sys

import pytest
import test_audit
import test_onnx

from id2image_jax import cli

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
helper = onnx.helper


def test_invert_with_an_onnx_encoder(tmp_path, capsys):
  path = test_onnx._save(test_onnx._encoder_graph(), tmp_path / 'enc.onnx')
  out = tmp_path / 'run'
  assert cli.main(['invert', '--encoder', path, '--generator', 'demo:demo-8',
                   '--set', 'steps=2', '--set', 'num_targets=2',
                   '--set', 'eval_encoder=', '--set', 'progress=False',
                   '--set', 'encoder_input.preset=sface',
                   '--out', str(out)]) == 0
  said = capsys.readouterr().out
  assert "input convention 'sface' (set by encoder_input.preset)" in said
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['encoder'].startswith('onnx: ')
  assert summary['quality']['mean']['id_cosine'] is not None


@pytest.fixture(scope='module')
def blackbox_audit(tmp_path_factory):
  root = tmp_path_factory.mktemp('onnx_audit')
  # Selu: ONNX Runtime runs it, the JAX interpreter does not.
  graph = test_onnx._encoder_graph(extra_nodes=(
      helper.make_node('Selu', ['p'], ['s'], name='the_selu'),
      helper.make_node('Add', ['p', 's'], ['q'])))
  path = test_onnx._save(graph, root / 'selu.onnx')
  # A flat folder: pseudo labels from one attribute net, few heads (a
  # CelebA-layout folder trains 40 of them: minutes on 2 cores).
  test_audit._aligned_flat_folder(root / 'faces', 12)
  out = root / 'run'
  assert cli.main(['audit', '--encoder', path, '--data', str(root / 'faces'),
                   '--out', str(out), *test_audit.TINY]) == 0
  return out


def test_audit_of_a_black_box_says_why_no_white_box(blackbox_audit):
  results = json.loads((blackbox_audit / 'audit.json').read_text())
  why = results['attack_not_run']
  assert 'black box' in why and "Selu (node 'the_selu')" in why
  assert results['attack'] == {}
  assert 'Selu' in results['facts']['encoder']['black_box']
  bb = results['blackbox']
  assert bb['num_targets'] == 2 and len(bb['final_score']) == 2
  # Its faces scored under the encoder (12 photos: 66 impostor pairs, too
  # few for a threshold at FMR 1e-2, which the report says).
  assert bb['attacked']['num_impostor_pairs'] == 66
  assert 'not measurable' in bb['attacked']['tmr']['0.01']['note']
  # The leakage heads ran on ONNX Runtime's templates.
  assert results['leakage']['histogram']['emd'] > 0
  page = (blackbox_audit / 'audit.html').read_text()
  assert '<b>Not run:</b>' in page and 'black-box reconstructions' in page
  assert 'data-key="attack_not_run"' in page
  assert 'not measurable: FMR 0.01 needs at least 100' in page


@pytest.mark.torch
def test_benchmark_smoke(tmp_path):
  pytest.importorskip('torch')
  bench = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'benchmarks')
  if bench not in sys.path:
    sys.path.insert(0, bench)
  import bench_onnx  # pylint: disable=g-import-not-at-top
  report = bench_onnx.main(['--smoke', '--batches', '1', '--repeats', '1',
                            '--no-peak', '--out-dir', str(tmp_path)])
  with open(tmp_path / 'onnx_cpu_smoke.json') as f:
    written = json.load(f)
  assert written['benchmark'] == 'onnx' and written['env']['onnxruntime']
  rows = {(r['impl'], r['pass']) for r in report['results']}
  assert rows == {('jax', 'forward'), ('jax', 'forward+backward'),
                  ('onnxruntime', 'forward')}
  assert all(r['median_s'] > 0 for r in report['results'])
  ratio = written['ratios'][0]
  assert ratio['jax_forward_over_onnxruntime_forward_time'] > 0
  assert written['parity_relative_max_error']['float32'] <= 1e-4
