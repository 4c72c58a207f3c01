"""The audit report: one self-contained HTML file (pictures and plots
embedded as data URIs; opens offline) and ``audit.json`` with every figure.

Every number shown is read from the results dict that is also written as
JSON, and carries ``data-key="<path>"`` so that a test (or a reader) can
match each rendered figure to its JSON value.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from id2image_jax import metrics
from id2image_jax.reports import leakage as leakage_report
from id2image_jax.reports import outputs
from id2image_jax.reports import protect as protect_report

SECTIONS = ('summary', 'leakage', 'attack', 'blackbox', 'facts')


def png_uri(image: np.ndarray) -> str:
  """A uint8 image as a ``data:image/png;base64,...`` URI."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG',
                                                    optimize=True)
  return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


def figure_uri(fig) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90)
  return 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode()


def key_path(*parts: Any) -> str:
  """A JSON path of '/'-joined parts; a '/' or '~' inside a part (an
  attribute named 'A/B') is escaped the JSON-pointer way ('~1', '~0')."""
  return '/'.join(str(p).replace('~', '~0').replace('/', '~1')
                  for p in parts)


def _get(results: Mapping[str, Any], path: str) -> Any:
  node = results
  for part in path.split('/'):
    part = part.replace('~1', '/').replace('~0', '~')
    node = node[part] if isinstance(node, Mapping) else node[int(part)]
  return node


def _num(results, path: str, spec: str = '{:.3f}') -> str:
  """A figure of `results`, formatted, tagged with its JSON path."""
  value = _get(results, path)
  text = 'n/a' if value is None else spec.format(value)
  return f'<span data-key="{html.escape(path)}">{text}</span>'


# --------------------------------------------------------------------------
# Verdicts: what a non-specialist reads first.


def _level(value: float | None, high: float, moderate: float) -> str:
  if value is None:
    return 'unknown'
  return 'HIGH' if value >= high else 'MODERATE' if value >= moderate else (
      'LOW')


# An attack rate is HIGH from half of the attempts on (when the interval
# shows at least a tenth), MODERATE from a tenth on, and LOW only when its
# 95 % interval stays under a tenth: 0 of 2 accepted is UNCLEAR, not LOW.
_RATE_HIGH, _RATE_SHOWN = 0.5, 0.1


def rate_level(rate: float | None, interval: Sequence[float] | None) -> str:
  """The verdict on an attack success rate, read with its 95 % interval."""
  if rate is None or interval is None:
    return 'unknown'
  low, high = interval
  if high < _RATE_SHOWN:
    return 'LOW'
  if rate >= _RATE_HIGH and low >= _RATE_SHOWN:
    return 'HIGH'
  return 'MODERATE' if rate >= _RATE_SHOWN else 'UNCLEAR'


def _interval_words(entry: Mapping[str, Any]) -> str:
  """' (95 % interval 12-40 %, 25 people)' or ''."""
  if not entry.get('interval'):
    return ''
  low, high = entry['interval']
  people = entry.get('num_people') or entry.get('num_genuine')
  return (f' (95 % interval {low:.0%} to {high:.0%}'
          + (f' over {people} people' if people else '') + ')')


# Fewer test faces than this: leakage intervals are too wide for a verdict.
MIN_TEST_FACES = 100


def _measurable_fmr(tmrs: Mapping[str, Any], fmrs) -> str:
  """The strictest false-match rate whose TMR could be measured."""
  for fmr in sorted(fmrs):
    if (tmrs.get(f'{fmr:g}') or {}).get('tmr') is not None:
      return f'{fmr:g}'
  return f'{max(fmrs):g}'


def verdicts(results: Mapping[str, Any]) -> list[dict[str, str]]:
  """One plain-language line per risk, with the number behind it.

  Returns:
    ``{'risk', 'level', 'text', 'key', 'spec'}`` per risk: ``text`` holds
    ``{}`` where the figure at JSON path ``key`` goes, formatted by
    ``spec``.
  """
  leak = results.get('leakage') or {}
  out = [_identity_verdict(results) if not results.get('attack_not_run')
         else {'risk': 'Identity reconstruction (white-box)',
               'level': 'unknown', 'text': 'Not measured: {}.',
               'key': 'attack_not_run', 'spec': '{}'},
         _attribute_verdict(leak)]
  out += [_leak_verdict(leak, name, label, unit)
          for name, label, unit in (
              ('landmarks', 'Face geometry (68 landmarks)',
               '% of the eye distance'),
              ('histogram', 'Colour (RGB histogram)', 'bins of EMD'))]
  if results.get('blackbox'):
    out.append(_blackbox_verdict(results))
  return out


def _identity_verdict(results: Mapping[str, Any]) -> dict[str, str]:
  attack = results.get('attack') or {}
  ev = attack.get('evaluation') or attack.get('attacked') or {}
  fmr = _measurable_fmr(ev.get('tmr') or {}, results['config']['fmrs'])
  entry = (ev.get('tmr') or {}).get(fmr, {})
  who = attack.get('evaluation_encoder', 'the attacked encoder')
  attempts = attack.get('num_targets')
  role = 'evaluation' if attack.get('evaluation') else 'attacked'
  level = rate_level(entry.get('tmr'), entry.get('interval'))
  return {
      'risk': 'Identity reconstruction',
      'level': level,
      'text': ('Faces rebuilt from stored templates are accepted as the '
               f'same person by {who} in {{}} of attempts'
               + (f' ({attempts} people attacked)' if attempts else '')
               + f' at a false-match rate of {fmr}'
               + _interval_words(entry) + '.'
               + (' Too few attempts to rule the risk out: attack more '
                  'people (--budget standard).' if level == 'UNCLEAR'
                  else '')),
      'key': f'attack/{role}/tmr/{fmr}/tmr',
      'spec': '{:.0%}'}


def _too_few(leak: Mapping[str, Any]) -> tuple[bool, str]:
  """Whether there are too few test faces to rule a leak out, and the
  sentence that says so ('' when there are enough)."""
  # A leak shown on few faces stands; its absence on few faces says little.
  few = leak.get('num_test', 0) < MIN_TEST_FACES
  return few, (f' Only {leak.get("num_test", 0)} test faces: too few to '
               'rule leakage out (use --budget standard or more faces).'
               if few else '')


def _attribute_verdict(leak: Mapping[str, Any]) -> dict[str, str]:
  attrs = leak.get('attributes') or {}
  leaking = [n for n, r in attrs.items() if r.get('leaks')]
  few, unclear = _too_few(leak)
  level = _level(len(leaking) / max(1, len(attrs)), 0.5, 0.1)
  return {
      'risk': 'Attribute leakage',
      'level': 'UNCLEAR' if few and level == 'LOW' else level,
      'text': ((f'{len(leaking)} of {len(attrs)} attributes are '
                'predicted from the template better than by guessing the '
                'most common value (95 % interval above the baseline; each '
                'by the better on validation people of the paper\'s MLP '
                'and a linear probe), e.g. '
                f'{", ".join(leaking[:3])}; the largest gain is {{}} '
                'percentage points.') if leaking else
               (f'None of {len(attrs)} attributes is shown to be predicted '
                'from the template better than by guessing the most common '
                'value; the largest gain seen, {} percentage points, is '
                'within chance on this many faces.') + unclear),
      'key': 'leakage/max_attribute_gain', 'spec': '{:.1f}'}


def _leak_verdict(leak: Mapping[str, Any], name: str, label: str,
                  unit: str) -> dict[str, str]:
  """Landmarks or histogram: predictable beyond the average face?"""
  r = leak.get(name) or {}
  few, unclear = _too_few(leak)
  return {
      'risk': f'{label} leakage',
      'level': ('HIGH' if r.get('leaks') else 'unknown' if not r
                else 'UNCLEAR' if few else 'LOW'),
      'text': (('Predictable from the template' if r.get('leaks') else
                'Not shown to be predictable beyond the average face')
               + f': error {{}} {unit} vs {r.get("baseline", 0):.2f} for '
               'the average' + _by_head(r) + '.'
               + (unclear if r and not r.get('leaks')
                                 else '')),
      'key': f'leakage/{name}/{"nme" if name == "landmarks" else "emd"}',
      'spec': '{:.2f}'}


def _by_head(r: Mapping[str, Any]) -> str:
  """Which head gave a figure, as words for a verdict ('' if unknown)."""
  if r.get('head') == 'linear':
    return ' (a linear probe, better than the paper\'s MLP on validation)'
  if r.get('head') == 'mlp' and r.get('validation'):
    return ' (the paper\'s MLP, better than a linear probe on validation)'
  return ''


def _blackbox_verdict(results: Mapping[str, Any]) -> dict[str, str]:
  bb = results['blackbox']
  # Judged against the attacked system's own acceptance threshold: raw
  # cosines mean little (dlib gives strangers ~0.85).
  # (A black-box-only audit scores its reconstructions itself.)
  attacked = ((results.get('attack') or {}).get('attacked')
              or bb.get('attacked') or {}).get('tmr') or {}
  bb_fmr = _measurable_fmr(attacked, results['config']['fmrs'])
  threshold = (attacked.get(bb_fmr) or {}).get('threshold')
  # A list from audit.json or an array from a fresh run.
  scores_ = np.asarray(bb.get('final_score', []), float)
  accepted = interval = None
  if threshold is not None and scores_.size:
    hits = int(np.sum(scores_ >= threshold))
    accepted = hits / scores_.size
    interval = metrics.wilson_interval(hits, scores_.size)
  return {
      'risk': 'Black-box attacker (scores only)',
      'level': rate_level(accepted, interval),
      'text': ('Without weights or gradients, only by querying similarity '
               f'scores ({bb.get("queries_per_target")} queries per '
               'person, this budget\'s limit), an attacker reaches a mean '
               'similarity of {} to the stored template; '
               + ('the threshold is unknown.' if accepted is None else
                  f'{accepted:.0%} of its faces pass the system\'s '
                  f'threshold ({threshold:.3f} at FMR {bb_fmr})'
                  + _interval_words({'interval': interval,
                                     'num_people': scores_.size}) + '.')),
      'key': 'blackbox/mean_final_score', 'spec': '{:.3f}'}


# --------------------------------------------------------------------------
# Plots.


def leakage_chart(results: Mapping[str, Any]) -> str | None:
  """Bar chart: accuracy gain over the baseline per attribute, with
  95 % intervals; leaking attributes in colour."""
  attrs = (results.get('leakage') or {}).get('attributes') or {}
  if not attrs:
    return None
  plt = outputs.pyplot()
  names = sorted(attrs, key=lambda n: -(attrs[n]['accuracy']
                                        - attrs[n]['baseline']))
  gains = [attrs[n]['accuracy'] - attrs[n]['baseline'] for n in names]
  # A bootstrap interval need not contain the point estimate (tiny sets).
  lo = [max(0.0, g - attrs[n]['gain_ci'][0]) for n, g in zip(names, gains)]
  hi = [max(0.0, attrs[n]['gain_ci'][1] - g) for n, g in zip(names, gains)]
  fig, ax = plt.subplots(figsize=(max(4, 0.28 * len(names) + 1), 3.2))
  ax.bar(range(len(names)), gains, yerr=[lo, hi], capsize=2,
         color=['C3' if attrs[n].get('leaks') else '0.7' for n in names])
  ax.axhline(0, color='k', lw=0.8)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels([n.replace('_', ' ') for n in names], rotation=70,
                     fontsize=7, ha='right')
  ax.set_ylabel('accuracy above baseline\n(percentage points)')
  ax.set_title('Attribute leakage (red: interval above 0)', fontsize=9)
  fig.tight_layout()
  uri = figure_uri(fig)
  plt.close(fig)
  return uri


def score_histogram(attack: Mapping[str, Any], role: str) -> str | None:
  """Genuine (type I and II) vs impostor similarity, with thresholds."""
  ev = attack.get(role) or {}
  if not ev.get('genuine'):
    return None
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3))
  sets = [('impostor (other people)', ev.get('attack_impostor_scores', []),
           'C1'), ('type I (vs photo A)', ev['genuine'], 'C0')]
  if 'type2' in ev:
    sets.append(('type II (vs photo B)', ev['type2']['genuine'], 'C2'))
  values = np.concatenate([np.asarray(v, float) for _, v, _ in sets if v])
  bins = np.linspace(values.min() - 1e-3, values.max() + 1e-3, 40)
  for label, v, colour in sets:
    if len(v):
      ax.hist(v, bins=bins, density=True, alpha=0.5, color=colour,
              label=label)
  for i, (fmr, e) in enumerate((ev.get('tmr') or {}).items()):
    if e.get('threshold') is not None:
      ax.axvline(e['threshold'], color='k', ls=('--', ':')[i % 2], lw=1,
                 label=f'threshold @ FMR {fmr}')
  ax.set_xlabel(f'cosine similarity ({attack.get(role + "_encoder", role)})')
  ax.legend(fontsize=7)
  fig.tight_layout()
  uri = figure_uri(fig)
  plt.close(fig)
  return uri


def blackbox_chart(bb: Mapping[str, Any]) -> str | None:
  """Cosine to the template vs encoder calls, black-box and white-box."""
  equal = bb.get('equal_budget')
  if not equal:
    return None
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.plot(equal['blackbox_calls'], equal['blackbox_curve'], color='C3',
          lw=2, marker='.', label='black-box: score queries (mean)')
  ax.plot(equal['whitebox_calls'], equal['whitebox_curve'], color='C0',
          lw=2, marker='.', label='white-box: forward + backward (mean)')
  ax.set_xscale('log')
  ax.set_xlabel('encoder calls per target')
  ax.set_ylabel('cosine to the template')
  ax.legend(fontsize=7)
  fig.tight_layout()
  uri = figure_uri(fig)
  plt.close(fig)
  return uri


# --------------------------------------------------------------------------
# The page.

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;
padding:.25em .6em;font-size:.9em}th{background:#f4f4f4}
.HIGH{background:#c62828;color:#fff}.MODERATE{background:#f9a825}
.LOW{background:#2e7d32;color:#fff}.unknown,.UNCLEAR{background:#999;color:#fff}
.level{font-weight:bold;padding:.15em .6em;border-radius:.3em}
img{max-width:100%}.note{color:#555;font-size:.9em}
"""


def _table(rows: list[list[str]], head: list[str]) -> str:
  out = ['<table><tr>' + ''.join(f'<th>{h}</th>' for h in head) + '</tr>']
  out += ['<tr>' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>'
          for r in rows]
  return '\n'.join(out + ['</table>'])


def _img(uri: str | None, alt: str) -> str:
  return f'<p><img src="{uri}" alt="{html.escape(alt)}"></p>' if uri else ''


# Longer lists of run facts (e.g. skipped photos) fold away.
_FOLD_AFTER = 10


def _fact(value: Any) -> str:
  """A run fact as readable HTML: dicts as 'key: value' lines, lists as
  lists (long ones folded), numbers plainly; every text escaped."""
  if isinstance(value, Mapping):
    items = [f'<b>{html.escape(str(k))}</b>: {_fact(v)}'
             for k, v in value.items()]
  elif isinstance(value, (list, tuple)):
    items = [_fact(v) for v in value]
  elif value is None:
    return 'n/a'
  elif isinstance(value, float):
    return f'{value:.1f}'
  else:
    return html.escape(str(value))
  if not items:
    return 'none'
  listed = '<ul>' + ''.join(f'<li>{i}</li>' for i in items) + '</ul>'
  if len(items) > _FOLD_AFTER:
    return f'<details><summary>{len(items)}</summary>{listed}</details>'
  return listed


def _lead(results: Mapping[str, Any]) -> str:
  """What was tested and how to read the levels, before any number."""
  facts = results['facts']
  # A flat folder of photos does not say who is who.
  people = ('an unknown number of' if facts['people'] is None
            else facts['people'])
  return (
      f'<p>An attacker who steals the stored face templates (descriptors) '
      f'of this system: what can they learn, and can they rebuild the '
      f'faces? Tested on {facts["faces"]} faces of {people} people '
      f'from <code>{html.escape(str(facts["data"]))}</code>, budget '
      f'<b>{html.escape(str(facts["budget"]))}</b> '
      f'({facts["seconds"]:.0f} s on {html.escape(str(facts["device"]))}'
      + (f'; reused from an earlier run: {", ".join(facts["reused_parts"])}'
         if facts.get('reused_parts') else '') + ').'
      '</p><p class="note">HIGH: shown to be a real risk. MODERATE: shown, '
      'but in a minority of cases. LOW: measured and small at this budget. '
      'UNCLEAR: too few faces to tell; rerun with more.</p>')


def render(results: Mapping[str, Any], grid: np.ndarray | None) -> str:
  """The HTML page (module docstring): one section per `SECTIONS` entry."""
  parts = ['<!doctype html><html><head><meta charset="utf-8">',
           '<title>Face template privacy audit</title>',
           f'<style>{_STYLE}</style></head><body>',
           '<h1>What do the stored templates of '
           f'<code>{html.escape(results["facts"]["encoder"]["kind"])}</code>'
           ' give away?</h1>', _lead(results)]
  parts += _summary_section(results)
  parts += _leakage_section(results)
  parts += _attack_section(results, grid)
  parts += _blackbox_section(results, grid)
  parts.append(protect_report.audit_section(results))
  parts += _facts_section(results)
  parts.append('</body></html>')
  return '\n'.join(parts)


def _summary_section(results: Mapping[str, Any]) -> list[str]:
  """The verdicts, each with the number behind it."""
  esc = html.escape
  rows = []
  for v in verdicts(results):
    number = _num(results, v['key'], v['spec'])
    rows.append([esc(v['risk']),
                 f'<span class="level {v["level"]}">{v["level"]}</span>',
                 esc(v['text']).replace('{}', number)])
  return ['<section id="summary"><h2>Summary</h2>',
          _table(rows, ['risk', 'level', 'what it means']), '</section>']


def _leakage_section(results: Mapping[str, Any]) -> list[str]:
  """Table 1 for this encoder, the chart of gains, what was skipped."""
  esc = html.escape
  leak = results.get('leakage') or {}
  parts = ['<section id="leakage"><h2>Leakage: what a template reveals '
           'besides identity (paper Table 1)</h2>']
  if not leak:
    parts.append(f'<p>{esc(results.get("leakage_note", "not run"))}</p>')
    return parts + ['</section>']
  parts.append(f'<p class="note">Heads trained on {leak["num_train"]} '
               f'templates, tested on {leak["num_test"]} of other people; '
               f'labels: {esc(leak["label_source"])}. Intervals: 95 % '
               'bootstrap over test people. ' + esc(_choice_note(leak))
               + '</p>')
  rows = [_leak_cells(leak, r)
          for r in leakage_report.leak_rows({'e': leak})['e']]
  parts.append(_table(rows, ['what', 'unit', 'from the template', 'head',
                             'paper MLP', 'baseline', 'gain (95 %)',
                             'leaks']))
  parts.append(_img(results.get('_figures', {}).get('leakage_chart'),
                    'attribute leakage chart'))
  for n, why in (leak.get('skipped_attributes') or {}).items():
    parts.append(f'<p class="note">{esc(n)}: not measured ({esc(why)})'
                 '</p>')
  return parts + ['</section>']


def _choice_note(leak: Mapping[str, Any]) -> str:
  """How the reported head was chosen, in words."""
  if leak.get('head_choice'):
    return f'Head: {leak["head_choice"]}.'
  return ('Each figure comes from the better, on '
          f'{leak.get("num_validation", 0)} templates of validation people '
          '(part of the training people, none of the test people), of the '
          'paper\'s MLP and a linear probe (logistic / ridge regression); '
          'the verdicts use it, and the paper\'s MLP is shown beside it.')


def _leak_cells(leak: Mapping[str, Any], r: Mapping[str, Any]) -> list[str]:
  """One row of the leakage table, each figure tagged with its JSON path."""
  esc = html.escape
  path = ((r['what'],) if r['what'] in ('landmarks', 'histogram')
          else ('attributes', r['what']))
  value = _num(leak, key_path(*path, r['key']), '{:.1f}')
  mlp = (_num(leak, key_path(*path, 'mlp', r['key']), '{:.1f}')
         if 'mlp' in _get(leak, key_path(*path)) else value)
  return [esc(r['what'].replace('_', ' ')), esc(r['unit']),
          value + ' ' + esc(f'[{r["ci"][0]:.1f}, {r["ci"][1]:.1f}]'),
          esc(r['head']), mlp, f'{r["baseline"]:.1f}',
          esc(f'[{r["gain_ci"][0]:.1f}, {r["gain_ci"][1]:.1f}]'),
          '<b>yes</b>' if r['leaks'] else 'no']


def _attack_section(results: Mapping[str, Any],
                    grid: np.ndarray | None) -> list[str]:
  """The white-box attack: TMRs, score histogram, grid, attributes."""
  esc = html.escape
  attack = results.get('attack') or {}
  parts = ['<section id="attack"><h2>Reconstruction attack (white-box)'
           '</h2>']
  if not attack:
    if results.get('attack_not_run'):  # a black-box-only audit
      parts.append('<p><b>Not run:</b> <span data-key="attack_not_run">'
                   f'{esc(results["attack_not_run"])}</span>.</p>')
    return parts + ['</section>']
  parts.append(f'<p class="note">{attack["num_targets"]} templates '
               f'inverted through {esc(results["facts"]["generator"])} '
               f'({attack["steps"]} Adam steps); scores by '
               f'{esc(attack.get("evaluation_encoder", "-"))} (independent'
               f' verifier) and the attacked encoder; thresholds from '
               f'{attack.get("num_impostor_pairs", 0)} pairs of real photos '
               'of different people.</p>')
  parts.append(_table(_tmr_rows(attack, results['config']['fmrs']),
                      ['verifier', 'FMR', 'TMR type I (photo A)',
                       'TMR type II (other photo B)', 'note']))
  if attack.get('why_no_type2'):
    parts.append(f'<p class="note">Type II absent: '
                 f'{esc(attack["why_no_type2"])}</p>')
  parts.append(_img(results.get('_figures', {}).get('scores'),
                    'genuine vs impostor scores'))
  if grid is not None:
    parts.append('<p>Targets | reconstructions | another photo of the '
                 'same person:</p>' + _img(png_uri(grid), 'grid'))
  kept = attack.get('attributes') or {}
  rows = [[esc(net), esc(m.replace('_', ' ')),
           _num(attack, key_path('attributes', net, m, 'mean'), '{:.1f}')]
          for net, ms in kept.items() for m in ms]
  if rows:
    parts.append('<h3>Attribute preservation</h3>'
                 + _table(rows, ['network', 'measure', 'mean']))
  return parts + ['</section>']


def _tmr_rows(attack: Mapping[str, Any], fmrs) -> list[list[str]]:
  """One row per verifier and FMR: type I and II rates, and how far to
  trust them (too few pairs or genuine scores)."""
  rows = []
  for role in ('evaluation', 'attacked'):
    ev = attack.get(role)
    if not ev:
      continue
    for fmr in (f'{f:g}' for f in fmrs):
      cells = [html.escape(attack.get(f'{role}_encoder', role)), fmr,
               _num(attack, f'{role}/tmr/{fmr}/tmr', '{:.3f}')]
      cells.append(_num(attack, f'{role}/type2/tmr/{fmr}/tmr', '{:.3f}')
                   if 'type2' in ev else 'n/a')
      notes = [(ev.get('tmr') or {}).get(fmr, {}).get('note'),
               ((ev.get('type2') or {}).get('tmr') or {}).get(
                   fmr, {}).get('note')]
      cells.append(html.escape('; '.join(dict.fromkeys(
          part for n in notes if n for part in n.split('; ')))))
      rows.append(cells)
  return rows


def _blackbox_section(results: Mapping[str, Any],
                      grid: np.ndarray | None) -> list[str]:
  """The score-only attacker against the white-box one, at equal budgets
  (or alone, when the encoder is a black box)."""
  bb = results.get('blackbox') or {}
  parts = ['<section id="blackbox"><h2>Black-box attacker: similarity '
           'scores only</h2>']
  if not bb:
    return parts + ['</section>']
  if 'whitebox_steps' not in bb:  # a black-box-only audit
    return parts + [_blackbox_only_section(results, bb, grid), '</section>']
  parts.append(_table([
      ['white-box (gradients)', f'{bb["whitebox_steps"]} forward + '
       'backward, 1 final forward', _num(bb, 'whitebox_seconds', '{:.0f}'),
       _num(bb, 'whitebox_final_score', '{:.3f}')],
      ['black-box (antithetic NES)', _num(bb, 'queries_per_target', '{}')
       + ' score queries', _num(bb, 'seconds', '{:.0f}'),
       _num(bb, 'mean_final_score', '{:.3f}')]],
      ['attacker', 'encoder calls per target', 'wall time [s]',
       'cosine to the template']))
  parts.append('<p>At equal budgets (cosine to the template, mean over '
               'the same targets; wall time per step is each run\'s '
               'mean, compilation included):</p>')
  parts.append(_table([
      [_num(bb, 'equal_budget/calls', '{}') + ' encoder calls per '
       'target', _num(bb, 'equal_budget/whitebox_at_calls'),
       _num(bb, 'equal_budget/blackbox_at_calls')],
      [_num(bb, 'equal_budget/seconds', '{:.0f}') + ' s wall time',
       _num(bb, 'equal_budget/whitebox_at_seconds'),
       _num(bb, 'equal_budget/blackbox_at_seconds')]],
      ['budget', 'white-box', 'black-box']))
  parts.append(_img(results.get('_figures', {}).get('blackbox'),
                    'black-box progress'))
  return parts + ['</section>']


def _blackbox_only_section(results: Mapping[str, Any],
                           bb: Mapping[str, Any], grid) -> str:
  """The score-only attacker when no white-box attack ran: its cost, the
  cosine it reached and how often its faces pass the encoder's threshold."""
  out = [_table([[
      _num(bb, 'num_targets', '{}'),
      _num(bb, 'queries_per_target', '{}') + ' score queries',
      _num(bb, 'seconds', '{:.0f}'), _num(bb, 'mean_final_score', '{:.3f}')]],
      ['templates attacked', 'encoder calls per target', 'wall time [s]',
       'cosine to the template'])]
  tmrs = (bb.get('attacked') or {}).get('tmr') or {}
  rows = [[f'{fmr:g}', _num(bb, f'attacked/tmr/{fmr:g}/threshold', '{:.3f}'),
           _num(bb, f'attacked/tmr/{fmr:g}/tmr', '{:.3f}'),
           html.escape(tmrs[f'{fmr:g}'].get('note') or '')]
          for fmr in results['config']['fmrs'] if f'{fmr:g}' in tmrs]
  if rows:
    out.append('<p>Its reconstructions under the attacked encoder '
               '(thresholds from pairs of real photos of different '
               'people):</p>' + _table(rows, ['FMR', 'threshold',
                                             'TMR type I (photo A)',
                                             'note']))
  if grid is not None:
    out.append('<p>Targets | black-box reconstructions:</p>'
               + _img(png_uri(grid), 'grid'))
  return '\n'.join(out)


def _facts_section(results: Mapping[str, Any]) -> list[str]:
  """Models, data, budget, time, device, versions: one row each."""
  esc = html.escape
  rows = [[esc(k.replace('_', ' ')), _fact(v)]
          for k, v in results['facts'].items()]
  return ['<section id="facts"><h2>Run facts</h2>',
          _table(rows, ['fact', 'value']) + '</section>']


def write(workdir: str, results: dict[str, Any], *,
          grid: np.ndarray | None) -> dict[str, str]:
  """Writes ``audit.html`` and ``audit.json`` (atomically); their paths."""
  os.makedirs(workdir, exist_ok=True)
  figures = {'leakage_chart': leakage_chart(results),
             'scores': score_histogram(results.get('attack') or {},
                                       'evaluation')
             or score_histogram(results.get('attack') or {}, 'attacked'),
             'blackbox': blackbox_chart(results.get('blackbox') or {})}
  page = render({**results, '_figures': figures}, grid)
  paths = {'html': os.path.join(workdir, 'audit.html'),
           'json': os.path.join(workdir, 'audit.json')}
  for path, text in ((paths['html'], page), (paths['json'], json.dumps(
      outputs.json_safe(results), indent=1))):
    with open(path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(path + '.tmp', path)
  return paths
