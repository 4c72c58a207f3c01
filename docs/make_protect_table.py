"""The README's "What protection buys on CelebA" table from protect.json.

  python docs/make_protect_table.py runs/protect_celeba/protect.json

Prints one markdown row per setting (the unprotected reference first):
utility, reconstruction under the two threat models, attribute leakage and
unlinkability, each rate with the number of attempts behind it.
"""

import argparse
import json

from id2image_jax.reports import protect as report


def _rate(block, fmr):
  """'0.67 (4/6)' for a TMR entry; '-' where there is none."""
  entry = ((block or {}).get('tmr') or {}).get(fmr) or {}
  if entry.get('tmr') is None:
    return '-'
  n = entry.get('num_genuine')
  hits = round(entry['tmr'] * n) if n else None
  return f'{entry["tmr"]:.2f}' + (f' ({hits}/{n})' if n else '')


def _attack(entry, threat, ax):
  rec = entry.get(f'reconstruction_{threat}')
  if not rec:
    return 'n/a'
  verifier = _rate(rec.get('verifier'), ax['y_fmr'])
  system = _rate(rec.get('system'), ax['system_fmr'])
  return f'{verifier} / {system}'


def rows(results):
  """Markdown table lines."""
  ax = report.axes(results)
  head = ['setting', 'template', 'ROC AUC',
          f'TMR @ FMR {ax["x_fmr"]}',
          f'informed: verifier type I / system @ {ax["y_fmr"]}',
          'key unknown: same', 'attributes leaking (largest gain, pp)',
          'D<->sys']
  lines = ['| ' + ' | '.join(head) + ' |',
           '|' + '---|' * len(head)]
  for e in results['settings']:
    u, leak = e['utility'], e.get('leakage') or {}
    attrs = leak.get('attributes') or {}
    d_sys = (e.get('linkability') or {}).get('d_sys')
    cells = [
        f'`{e["setting"]}`', f'{e["template_size"]} ({e["score"]})',
        f'{u["auc"]:.3f}' if u.get('auc') is not None else '-',
        _rate(u, ax['x_fmr']),
        _attack(e, 'informed', ax),
        _attack(e, 'key_unknown', ax) if e.get('reconstruction_key_unknown')
        else 'no key',
        f'{leak.get("num_leaking", 0)} of {len(attrs)} '
        f'({leak.get("max_attribute_gain", 0.0):.1f})',
        f'{d_sys:.2f}' if d_sys is not None else '-']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('report', help='protect.json of `id2image protect`')
  args = parser.parse_args()
  with open(args.report) as f:
    results = json.load(f)
  print('\n'.join(rows(results)))
  print(f'\n{results["settings"][0]["utility"].get("num_genuine")} genuine '
        f'pairs; seconds: {results.get("facts", {}).get("seconds")}')


if __name__ == '__main__':
  main()
