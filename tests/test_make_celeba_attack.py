"""docs/make_celeba_attack.py: report.json -> the README's table and JSON."""

import json

import pytest
import repo_scripts


@pytest.fixture(scope='module')
def maker():
  return repo_scripts.load('docs/make_celeba_attack.py')


def _entry(tmr, low, high, people):
  return {'tmr': tmr, 'interval': [low, high], 'num_people': people}


def _scored(tmr):
  return {'cosine': {'mean': 0.5},
          'tmr': {'0.001': _entry(tmr, tmr - 0.1, tmr + 0.1, 10)},
          'type2': {'tmr': {'0.001': _entry(tmr / 2, 0.0, tmr, 10)},
                    'real_photos': {'cosine': {'mean': 0.7}, 'tmr': {
                        '0.001': _entry(0.8, 0.7, 0.9, 10)}}}}


def _report():
  return {
      'fmrs': [0.001], 'num_targets': 10, 'seconds': 12.5,
      'pool': {'num_impostor_pairs': 45}, 'config': {'steps': 30},
      'encoder': {'kind': 'dlib'}, 'eval_encoder': {'kind': 'faceres'},
      'generator': 'toy',
      'arms': {'id': {
          'attacked': _scored(0.9), 'evaluation': _scored(0.6),
          'snapshots': {'0': {'attacked': _scored(0.3),
                              'evaluation': _scored(0.1)},
                        '30': {'attacked': _scored(0.9),
                               'evaluation': _scored(0.6)}}}}}


def test_rows_pick_the_arm_at_a_snapshot_and_the_table_shows_intervals(
    maker, tmp_path):
  path = tmp_path / 'report.json'
  path.write_text(json.dumps(_report()))
  out = tmp_path / 'attack.json'
  maker.main(['--row', f'start={path}:id@0', '--row', f'final={path}',
              '--out', str(out), '--curve', str(path),
              '--curve', f'again={path}:id', '--plot', str(tmp_path / 'curve.png')])
  got = json.loads(out.read_text())
  start = got['rows']['start']['evaluation']['rates']
  assert start['type1']['0.001']['tmr'] == 0.1
  assert got['rows']['final']['attacked']['rates']['type2']['0.001'][
      'tmr'] == 0.45
  assert got['sources']['start']['step'] == 0
  assert got['sources']['final']['step'] == 30
  assert [c['steps'] for c in got['curves']] == [[0, 30], [0, 30]]
  assert [c['label'] for c in got['curves']] == ['10 people', 'again']
  assert (tmp_path / 'curve.png').stat().st_size > 0
  table = maker.table({'final': maker.pick(_report())}, ['0.001'])
  assert '| final | 0.90 [0.80, 1.00], 10 | 0.45 [0.00, 0.90], 10 |' in table


def test_the_real_photos_row_is_type_two_only(maker):
  got = maker.pick(_report(), 'id', maker.REAL)
  assert got['evaluation']['rates'] == {
      'type2': {'0.001': _entry(0.8, 0.7, 0.9, 10)}}
  table = maker.table({'ceiling': got}, ['0.001'])
  assert '| ceiling | n/a | 0.80 [0.70, 0.90], 10 |' in table


def test_a_missing_snapshot_is_named(maker):
  with pytest.raises(KeyError, match='no snapshot at step 5'):
    maker.pick(_report(), 'id', 5)
  assert maker.cell(None) == 'n/a'
