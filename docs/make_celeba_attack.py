"""One table of attack success on CelebA, from the evaluate runs behind it.

Reads the ``report.json`` of each `id2image evaluate` run named on the
command line and writes, for the README's "Attack success on CelebA":

* ``docs/results/celeba_attack.json``: every row's rates (type I and II, at
  each FMR, under the attacked and the independent encoder) with their
  95 % intervals, numbers of people and attempts, the thresholds with their
  own bootstrap intervals, the steps, the command and the wall time;
* ``docs/attack_vs_steps.png``: the rates after 0, 5, 10, 30, 100 steps of
  one run (its snapshots), with interval bands, for each ``--curve``;
* the markdown table, printed.

A row is ``LABEL=REPORT[:ARM[@STEP]]``: the arm of that report (default its
only or first arm) at the given snapshot step (default: its final result);
``@real`` gives the type-II ceiling instead (the real photo A against the
person's other photos, at the same thresholds).
Development data only; never a test fixture::

  python docs/make_celeba_attack.py \\
      --row 'optimisation, ID, 30 steps=runs/attack_celeba_id/report.json' \\
      --row 'shipped regressor, 0 steps=runs/attack_celeba_id/report.json:id@0' \\
      --curve '290 people=runs/attack_celeba_id/report.json' \\
      --curve '50 people=runs/attack_celeba_steps/report.json'
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

# ``@real`` in a row: the type-II ceiling (`_real_photos`), not a step.
REAL = 'real'
ROLES = {'attacked': 'dlib (attacked)', 'evaluation': 'FaceRes (independent)'}
KINDS = {'type1': 'type I', 'type2': 'type II'}


def rates_of(scored: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """``{'type1': tmr_report, 'type2': tmr_report}`` of one scored arm."""
  out = {'type1': scored.get('tmr', {})}
  if 'type2' in scored:
    out['type2'] = scored['type2'].get('tmr', {})
  return out


def pick(report: dict[str, Any], arm: str | None = None,
         step: int | str | None = None) -> dict[str, Any]:
  """The scored results of `arm` (at snapshot `step`) of a report.

  Returns:
    ``{role: {'cosine', 'rates': {kind: {fmr: entry}}}}`` for each scored
    role.
  """
  arms = report['arms']
  arm = arm or next(iter(arms))
  if arm not in arms:
    raise KeyError(f'no arm {arm!r} in the report (arms: {list(arms)})')
  source = arms[arm]
  if step == REAL:
    return _real_photos(source)
  if step is not None:
    snaps = source.get('snapshots', {})
    if str(step) not in snaps:
      raise KeyError(f'arm {arm!r} has no snapshot at step {step} '
                     f'(snapshots: {list(snaps)})')
    source = snaps[str(step)]
  return {role: {'cosine': source[role].get('cosine', {}).get('mean'),
                 'rates': rates_of(source[role])}
          for role in ROLES if role in source and 'tmr' in source[role]}


def _real_photos(source: dict[str, Any]) -> dict[str, Any]:
  """The type-II ceiling: the verifier on the real photo A against the
  same other photos (no type I: A against itself)."""
  out = {}
  for role in ROLES:
    real = source.get(role, {}).get('type2', {}).get('real_photos')
    if real:
      out[role] = {'cosine': real['cosine'].get('mean'),
                   'rates': {'type2': real['tmr']}}
  if not out:
    raise KeyError('the report has no type2.real_photos (scored before '
                   'the ceiling was added: rerun the evaluate command)')
  return out


def cell(entry: dict[str, Any] | None) -> str:
  """'0.95 [0.92, 0.97], 290' or why there is no rate."""
  if not entry or entry.get('tmr') is None:
    return 'n/a'
  low, high = entry['interval']
  return (f'{entry["tmr"]:.2f} [{low:.2f}, {high:.2f}], '
          f'{entry["num_people"]}')


def table(rows: dict[str, dict[str, Any]], fmrs: Sequence[str]) -> str:
  """The README's markdown table: a row per attack, a column per role,
  kind and FMR."""
  columns = [(r, k, f) for r in ROLES for k in KINDS for f in fmrs]
  head = '| attack | ' + ' | '.join(
      f'{ROLES[r].split(" ")[0]} {KINDS[k]} @ {f}' for r, k, f in columns)
  lines = [head + ' |', '|---|' + '---:|' * len(columns)]
  for label, scored in rows.items():
    cells = [cell(scored.get(r, {}).get('rates', {}).get(k, {}).get(f))
             for r, k, f in columns]
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def curve(report: dict[str, Any], arm: str | None = None
          ) -> dict[str, Any]:
  """Rates and mean cosines after each snapshot step of one arm."""
  arms = report['arms']
  arm = arm or next(iter(arms))
  snaps = arms[arm].get('snapshots')
  if not snaps:
    raise KeyError(f'arm {arm!r} has no snapshots (run with snapshot_steps)')
  steps = sorted(int(s) for s in snaps)
  return {'arm': arm, 'steps': steps,
          'scores': {str(s): pick(report, arm, s) for s in steps}}


def plot_curves(curves: Sequence[dict[str, Any]], fmrs: Sequence[str],
                path: str) -> None:
  """TMR against optimisation steps, one panel per role and attack type,
  with the 95 % intervals as bands; a colour per FMR, a line style per
  curve (e.g. every person to 30 steps, a subset to 100)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), sharey=True)
  panels = [(r, k) for r in ROLES for k in KINDS]
  all_steps = sorted({s for c in curves for s in c['steps']})
  for ax, (role, kind) in zip(axes, panels):
    for data, style, marker in zip(curves, ('-', '--', ':'), 'osd'):
      _plot_one(ax, data, role, kind, fmrs, style, marker)
    ax.set_xscale('symlog', linthresh=5)
    ax.set_xticks(all_steps)
    ax.set_xticklabels([str(s) for s in all_steps])
    ax.set_xlabel('Adam steps (0 = the initialisation)')
    ax.set_title(f'{ROLES[role]}: {KINDS[kind]}', fontsize=10)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('true-match rate (95 % interval)')
  axes[0].legend(loc='lower right', fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_one(ax, data: dict[str, Any], role: str, kind: str,
              fmrs: Sequence[str], style: str, marker: str) -> None:
  """One curve's rates (a line per FMR) and interval bands on `ax`."""
  steps = np.asarray(data['steps'])
  for i, fmr in enumerate(fmrs):
    entries = [data['scores'][str(s)].get(role, {}).get('rates', {})
               .get(kind, {}).get(fmr) for s in steps]
    ok = np.asarray([bool(e and e.get('tmr') is not None) for e in entries])
    if not ok.any():
      continue
    kept = [e for e, k in zip(entries, ok) if k]
    x = steps[ok]
    ax.plot(x, [e['tmr'] for e in kept], style, marker=marker,
            color=f'C{i}', label=f'{data["label"]}, FMR {fmr}')
    ax.fill_between(x, [e['interval'][0] for e in kept],
                    [e['interval'][1] for e in kept], color=f'C{i}',
                    alpha=0.12)


def _parse_row(text: str) -> tuple[str, str, str | None, int | None]:
  label, sep, spec = text.rpartition('=')
  if not sep or not label:
    raise SystemExit(f'--row expects LABEL=REPORT[:ARM[@STEP]], got {text!r}')
  path, _, arm = spec.partition(':')
  arm, _, step = arm.partition('@')
  step = step if step == REAL else int(step) if step else None
  return label, path, arm or None, step


def _parse_curve(text: str) -> tuple[str, str, str | None]:
  label, _, spec = text.rpartition('=')
  path, _, arm = spec.partition(':')
  return label, path, arm or None


def _load(path: str) -> dict[str, Any]:
  with open(path) as f:
    return json.load(f)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--row', action='append', default=[],
                      help='LABEL=REPORT[:ARM[@STEP]] (repeatable, in order)')
  parser.add_argument('--curve', action='append', default=[],
                      help='[LABEL=]REPORT[:ARM] whose snapshots give a '
                      'steps curve (repeatable)')
  parser.add_argument('--out', default='docs/results/celeba_attack.json')
  parser.add_argument('--plot', default='docs/attack_vs_steps.png')
  args = parser.parse_args(argv)
  rows, sources = {}, {}
  fmrs = None
  for text in args.row:
    label, path, arm, step = _parse_row(text)
    report = _load(path)
    fmrs = fmrs or [f'{f:g}' for f in report['fmrs']]
    rows[label] = pick(report, arm, step)
    sources[label] = {
        'report': path, 'arm': arm or next(iter(report['arms'])),
        'step': step if step is not None else report['config']['steps'],
        'num_targets': report['num_targets'],
        'targets_detail': report.get('targets_detail', {}),
        'num_impostor_pairs': report['pool'].get('num_impostor_pairs'),
        # A resumed run's report counts only its own work; the arm's
        # inversion time over every run is in its 'inversion' entry
        # (None for reports written before it was recorded).
        'seconds_of_this_report': report['seconds'],
        'inversion_seconds_all_runs': report['arms'][
            arm or next(iter(report['arms']))].get('inversion', {}).get(
                'seconds_all_runs'),
        'encoder': report['encoder'], 'eval_encoder': report['eval_encoder'],
        'generator': report['generator']}
  out = {'rows': rows, 'sources': sources, 'fmrs': fmrs,
         'interval': ('95 % Wilson score interval over attempts, attempts of '
                      'one person counted as fewer independent ones '
                      '(evaluation.scores.INTERVAL_METHOD)')}
  curves = []
  for text in args.curve:
    label, path, arm = _parse_curve(text)
    report = _load(path)
    fmrs = fmrs or [f'{f:g}' for f in report['fmrs']]
    curves.append({**curve(report, arm), 'report': path,
                   'num_targets': report['num_targets'],
                   'label': label or f'{report["num_targets"]} people'})
  if curves:
    out['curves'] = curves
    plot_curves(curves, fmrs, args.plot)
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=1)
  print(table(rows, fmrs or []))


if __name__ == '__main__':
  main()
