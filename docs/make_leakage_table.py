"""The README's Table 1 on CelebA, from a `id2image leakage` run.

Reads ``leakage.json`` (``runs/leakage_celeba`` by default) and prints the
markdown table: per attribute that leaks for some encoder, the reported
figure (the better on validation of the paper's MLP and a linear probe)
with its 95 % interval and which head won, the paper's MLP beside it, and
the majority baseline; then the landmark and histogram rows and the
attributes with no leak shown. Development data only; never a test
fixture::

  python docs/make_leakage_table.py runs/leakage_celeba/leakage.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

# (measure key, label, unit, lower is better)
_DENSE = (('landmarks', 'nme', 'landmarks, NME % (lower is better)'),
          ('histogram', 'emd', 'histogram, EMD bins (lower is better)'))


def _head(entry: dict[str, Any]) -> str:
  if entry.get('head') != 'linear':
    return 'MLP'
  l2 = entry.get('validation', {}).get('l2')
  return f'linear (L2 {l2:.2g})' if l2 is not None else 'linear'


def _best(entry: dict[str, Any], key: str, digits: int) -> str:
  value, (low, high) = entry[key], entry.get('accuracy_ci' if key ==
                                             'accuracy' else 'ci')
  text = f'{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]'
  return (f'**{text}**' if entry['leaks'] else text) + f' {_head(entry)}'


def _mlp(entry: dict[str, Any], key: str, digits: int) -> str:
  mlp = entry.get('mlp', entry)
  text = f'{mlp[key]:.{digits}f}'
  return text + ('' if mlp['leaks'] else ' (no leak)')


def leaking(details: dict[str, Any], encoders: Sequence[str]) -> list[str]:
  """Attributes that leak under some encoder, largest dlib-first gain
  first (the lower end of the gain's interval)."""
  names = details[encoders[0]]['attributes']
  found = [n for n in names
           if any(details[e]['attributes'][n]['leaks'] for e in encoders)]
  return sorted(found, key=lambda n: -max(
      details[e]['attributes'][n]['gain_ci'][0] for e in encoders))


def table(report: dict[str, Any], encoders: Sequence[str]) -> str:
  """The markdown table (see the module docstring)."""
  details = report['details']
  head = ['attribute', 'baseline'] + [
      c for e in encoders for c in (f'{e}: reported [95 %], head',
                                    f'{e}: paper MLP')]
  lines = ['| ' + ' | '.join(head) + ' |',
           '|---|' + '---:|' * (len(head) - 1)]
  for name in leaking(details, encoders):
    rows = [details[e]['attributes'][name] for e in encoders]
    cells = [name.replace('_', ' '), f'{rows[0]["baseline"]:.1f}']
    for entry in rows:
      cells += [_best(entry, 'accuracy', 1), _mlp(entry, 'accuracy', 1)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  for term, key, label in _DENSE:
    rows = [details[e][term] for e in encoders]
    cells = [f'**{label}**', f'{rows[0]["baseline"]:.2f}']
    for entry in rows:
      cells += [_best(entry, key, 2), _mlp(entry, key, 2)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def quiet(report: dict[str, Any], encoders: Sequence[str]) -> list[str]:
  """Attributes with no leak shown under any encoder."""
  details = report['details']
  shown = set(leaking(details, encoders))
  return [n.replace('_', ' ') for n in details[encoders[0]]['attributes']
          if n not in shown]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('report', nargs='?',
                      default='runs/leakage_celeba/leakage.json')
  args = parser.parse_args(argv)
  with open(args.report) as f:
    report = json.load(f)
  encoders = [e for e in report['details'] if 'attributes' in
              report['details'][e]]
  print(table(report, encoders))
  names = quiet(report, encoders)
  print(f'\nNo leak shown for any encoder ({len(names)}): '
        + ', '.join(names))


if __name__ == '__main__':
  main()
