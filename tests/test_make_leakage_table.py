"""docs/make_leakage_table.py: leakage.json -> the README's Table 1."""

import json

import repo_scripts


def _attribute(acc, gain_low, leaks, head='linear', mlp_leaks=False):
  return {'accuracy': acc, 'accuracy_ci': [acc - 2, acc + 2],
          'gain_ci': [gain_low, gain_low + 4], 'leaks': leaks, 'head': head,
          'baseline': 60.0, 'validation': {'l2': 0.0316228},
          'mlp': {'accuracy': acc - 5, 'leaks': mlp_leaks}}


def _dense(key, value, leaks):
  return {key: value, 'ci': [value - 0.1, value + 0.1], 'leaks': leaks,
          'head': 'MLP', 'baseline': 8.0,
          'mlp': {key: value, 'leaks': leaks}}


def _report():
  def encoder(smile, hat):
    return {'attributes': {'Smiling': smile, 'Wearing_Hat': hat,
                           'Bald': _attribute(60.0, -1.0, False)},
            'landmarks': _dense('nme', 7.5, True),
            'histogram': _dense('emd', 3.1, False)}
  return {'details': {
      'dlib': encoder(_attribute(70.0, 1.0, True, mlp_leaks=True),
                      _attribute(61.0, -0.5, False, head='MLP')),
      'other': encoder(_attribute(65.0, 0.5, True),
                       _attribute(66.0, 2.0, True)),
      'image': {'landmarks': {'nme': 6.0}}}}


def test_rows_are_the_leaking_attributes_with_the_winning_head(tmp_path,
                                                               capsys):
  maker = repo_scripts.load('docs/make_leakage_table.py')
  path = tmp_path / 'leakage.json'
  path.write_text(json.dumps(_report()))
  maker.main([str(path)])
  out = capsys.readouterr().out
  lines = out.splitlines()
  # Largest lower gain bound first; Bald leaks nowhere and is listed apart.
  assert lines[2].startswith('| Wearing Hat | 60.0 | 61.0 [59.0, 63.0] MLP')
  assert lines[3] == ('| Smiling | 60.0 | **70.0 [68.0, 72.0]** linear '
                      '(L2 0.032) | 65.0 | **65.0 [63.0, 67.0]** linear '
                      '(L2 0.032) | 60.0 (no leak) |')
  assert '| **landmarks, NME % (lower is better)** | 8.00 | **7.50' in out
  assert '3.10 [3.00, 3.20] MLP | 3.10 (no leak)' in out
  assert out.strip().endswith('No leak shown for any encoder (1): Bald')
