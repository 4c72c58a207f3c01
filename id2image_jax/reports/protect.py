"""The protection report: ``protect.html`` (self-contained: pictures and
the chart embedded, opens offline), ``protect.json`` with every figure, and
``protect_chart.png``: utility (x) against reconstruction success (y), one
point per scheme setting, the unprotected templates as the reference.

Every number shown is read from the results also written as JSON and
carries ``data-key="<path>"``, its place in ``protect.json``; every column
names the threat model its numbers belong to.
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

from id2image_jax.reports import outputs

SECTIONS = ('summary', 'chart', 'threats', 'details', 'grid', 'facts')

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;
padding:.25em .5em;font-size:.85em;vertical-align:top}th{background:#f4f4f4}
img{max-width:100%}.note{color:#555;font-size:.9em}.bad{color:#c62828;
font-weight:bold}.ref{background:#f6f6f6}
"""


def _get(results: Mapping[str, Any], path: str) -> Any:
  node = results
  for part in path.split('/'):
    if isinstance(node, Mapping):
      node = node.get(part)
    elif isinstance(node, Sequence) and not isinstance(node, str):
      node = node[int(part)]
    else:
      return None
    if node is None:
      return None
  return node


def _num(results, path: str, spec: str = '{:.3f}') -> str:
  """A figure of `results`, formatted, tagged with its JSON path."""
  value = _get(results, path)
  text = 'n/a' if value is None else spec.format(value)
  return f'<span data-key="{html.escape(path)}">{text}</span>'


def _uri(png: bytes) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png).decode()


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG',
                                                    optimize=True)
  return buf.getvalue()


def _strictest(tmrs: Mapping[str, Any] | None, fmrs) -> str | None:
  """The smallest FMR whose TMR was measurable, as its JSON key."""
  for fmr in sorted(fmrs):
    if ((tmrs or {}).get(f'{fmr:g}') or {}).get('tmr') is not None:
      return f'{fmr:g}'
  return None


def axes(results: Mapping[str, Any]) -> dict[str, Any]:
  """Which figures the chart and the summary use (same for every point).

  Returns:
    ``{'x_fmr', 'y_fmr', 'system_fmr'}``: the strictest measurable FMR of
    the reference's utility, of its independent verifier's type I rate and
    of the protected system's acceptance (None: not measurable; then the
    chart's x is the ROC AUC).
  """
  fmrs = results['config']['fmrs']
  ref = results['settings'][0]
  rec = ref.get('reconstruction_informed') or {}
  return {'x_fmr': _strictest(ref['utility']['tmr'], fmrs),
          'y_fmr': _strictest((rec.get('verifier') or {}).get('tmr'), fmrs),
          'system_fmr': _strictest((rec.get('system') or {}).get('tmr'),
                                   fmrs)}


def _x(entry, ax):
  u = entry['utility']
  if ax['x_fmr'] is None:
    return u.get('auc')
  return (u['tmr'].get(ax['x_fmr']) or {}).get('tmr')


def _y(entry, ax, threat='informed'):
  rec = entry.get(f'reconstruction_{threat}') or {}
  if ax['y_fmr'] is None:
    return None
  return ((rec.get('verifier') or {}).get('tmr', {}).get(ax['y_fmr'])
          or {}).get('tmr')


def one_line(entry: Mapping[str, Any]) -> str:
  """A console summary of one setting."""
  u = entry['utility']
  parts = [f'AUC {u["auc"]:.3f}' if u.get('auc') is not None else 'AUC n/a']
  rec = entry.get('reconstruction_informed')
  if rec:
    g = np.asarray(rec['verifier'].get('genuine', []), float)
    if g.size:
      parts.append(f'verifier cosine {g.mean():.3f}')
  d = entry['linkability'].get('d_sys')
  parts.append(f'D<->sys {d:.2f}' if d is not None else 'D<->sys n/a')
  return ', '.join(parts) + (' (does not verify)' if u.get('verifies') is
                             False else '')


def chart_png(results: Mapping[str, Any]) -> bytes | None:
  """Utility (x) against reconstruction success (y); None without both."""
  ax = axes(results)
  settings = results['settings']
  if ax['y_fmr'] is None or all(_x(e, ax) is None for e in settings):
    return None
  plt = outputs.pyplot()
  fig, axis = plt.subplots(figsize=(7, 5))
  families = list(dict.fromkeys(e['family'] for e in settings[1:]))
  colour = {f: f'C{i % 10}' for i, f in enumerate(families)}
  shown = set()
  for e in settings:
    x, y = _x(e, ax), _y(e, ax)
    if x is None or y is None:
      continue
    if e['scheme'] == 'none':
      axis.scatter([x], [y], marker='*', s=260, color='k', zorder=5,
                   label='unprotected (reference)')
    else:
      label = e['family'] if e['family'] not in shown else None
      shown.add(e['family'])
      axis.scatter([x], [y], s=50, color=colour[e['family']], zorder=4,
                   label=label)
      y_guess = _y(e, ax, 'key_unknown')
      if y_guess is not None:
        axis.scatter([x], [y_guess], s=50, facecolors='none',
                     edgecolors=colour[e['family']], zorder=3)
        axis.plot([x, x], [y, y_guess], ls=':', lw=0.8,
                  color=colour[e['family']])
    axis.annotate(e.get('short_label', e['setting']), (x, y), fontsize=6,
                  xytext=(3, 3),
                  textcoords='offset points')
  if any(e.get('reconstruction_key_unknown') for e in settings):
    axis.scatter([], [], s=50, facecolors='none', edgecolors='0.4',
                 label='same, key unknown (guessed)')
  xlabel = ('ROC AUC' if ax['x_fmr'] is None
            else f'TMR at FMR {ax["x_fmr"]}')
  axis.set_xlabel(f'utility: protected vs protected, {xlabel}')
  axis.set_ylabel('reconstruction success: type I TMR at FMR '
                  f'{ax["y_fmr"]}\n(independent verifier, fully informed)')
  axis.set_xlim(-0.03, 1.03)
  axis.set_ylim(-0.03, 1.03)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=7, loc='best')
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110)
  plt.close(fig)
  return buf.getvalue()


def _table(rows: list[list[str]], head: list[str],
           classes: Sequence[str] = ()) -> str:
  out = ['<table><tr>' + ''.join(f'<th>{h}</th>' for h in head) + '</tr>']
  for i, r in enumerate(rows):
    cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ''
    out.append(f'<tr{cls}>' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>')
  return '\n'.join(out + ['</table>'])


def _rate(results, path: str) -> str:
  """A TMR with its N (genuine scores) when known."""
  text = _num(results, f'{path}/tmr', '{:.2f}')
  n = _get(results, f'{path}/num_genuine')
  return text + (f' <span class="note">(N={n})</span>' if n is not None
                 else '')


def _summary_rows(results: Mapping[str, Any], *, base: str = ''
                  ) -> list[list[str]]:
  """One row per setting; `base`: where the comparison sits in `results`
  (the audit page holds it under 'protection/')."""
  section = _get(results, base.rstrip('/')) if base else results
  ax = axes(section)
  esc = html.escape
  rows = []
  for i, e in enumerate(section['settings']):
    p = f'{base}settings/{i}'
    u = e['utility']
    utility = (_num(results, f'{p}/utility/auc') + ' <span class="note">'
               f'({u["num_genuine"]} genuine / {u["num_impostor"]} impostor '
               'pairs)</span>')
    if ax['x_fmr'] is not None:
      utility += '<br>TMR ' + _rate(results, f'{p}/utility/tmr/{ax["x_fmr"]}')
    cells = [f'<b>{esc(e["setting"]).replace(",", ",<wbr>")}</b><br>'
             '<span class="note">'
             f'{esc(e["family"])}</span>',
             f'{e["template_size"]} values, {esc(e["score"])}; gradient: '
             f'{esc(e["gradient"])}', utility]
    for threat in ('informed', 'key_unknown'):
      rec = e.get(f'reconstruction_{threat}')
      if not rec:
        cells.append('not applicable' if threat == 'key_unknown' else 'n/a')
        continue
      q = f'{p}/reconstruction_{threat}'
      text = []
      if ax['y_fmr'] is not None:
        text.append('verifier, type I: '
                    + _rate(results, f'{q}/verifier/tmr/{ax["y_fmr"]}'))
        if (rec['verifier'].get('type2') or {}).get('tmr'):
          text.append('type II: ' + _rate(
              results, f'{q}/verifier/type2/tmr/{ax["y_fmr"]}'))
      if ax['system_fmr'] is not None:
        text.append('protected system accepts: ' + _rate(
            results, f'{q}/system/tmr/{ax["system_fmr"]}'))
      cells.append('<br>'.join(text) or 'n/a')
    leak = e.get('leakage') or {}
    attrs = leak.get('attributes') or {}
    lm, hist = leak.get('landmarks') or {}, leak.get('histogram') or {}
    cells.append(
        f'{leak.get("num_leaking", 0)} of {len(attrs)} attributes leak; '
        'largest gain ' + _num(results, f'{p}/leakage/max_attribute_gain',
                               '{:.1f}') + ' pp<br>landmarks: '
        + ('leak' if lm.get('leaks') else 'no leak shown') + '; colour: '
        + ('leak' if hist.get('leaks') else 'no leak shown'))
    cells.append(_num(results, f'{p}/linkability/d_sys', '{:.2f}'))
    notes = [u.get('note', ''), e['linkability'].get('note', '')]
    cells.append(''.join(
        f'<span class="{"bad" if "no longer verify" in n else "note"}">'
        f'{esc(n)}</span><br>' for n in notes if n))
    rows.append(cells)
  return rows


def _lead(results: Mapping[str, Any]) -> str:
  facts, config = results['facts'], results['config']
  return (
      '<p>If the stored templates of this system are protected or shrunk, '
      'how much of what they give away goes, and how much recognition is '
      f'lost? Tested on {facts["faces"]} faces of {facts["people"]} people '
      f'from <code>{html.escape(str(facts["data"]))}</code> '
      f'({facts["seconds"]:.0f} s on {html.escape(str(facts["device"]))}). '
      f'Each attack inverts {config["targets"]} people\'s templates for '
      f'{config["steps"]} steps through the scheme, starting from the mean '
      'face. Keys come from a seed the user gave; neither the seed nor the '
      'keys are stored in this report.</p>')


def _details(results: Mapping[str, Any]) -> str:
  esc = html.escape
  parts = []
  for i, e in enumerate(results['settings']):
    p = f'settings/{i}'
    parts.append(f'<h3>{esc(e["setting"])}</h3><p class="note">'
                 f'{esc(e["source"])}. Key: {esc(e["key"])}.</p>')
    leak = e.get('leakage') or {}
    attrs = leak.get('attributes') or {}
    rows = []
    for name in sorted(attrs, key=lambda n: -(attrs[n]['accuracy']
                                              - attrs[n]['baseline']))[:8]:
      r = attrs[name]
      rows.append([esc(name.replace('_', ' ')),
                   _num(results, f'{p}/leakage/attributes/{name}/accuracy',
                        '{:.1f}'), f'{r["baseline"]:.1f}',
                   esc(f'[{r["gain_ci"][0]:.1f}, {r["gain_ci"][1]:.1f}]'),
                   '<b>yes</b>' if r['leaks'] else 'no'])
    for name, value in (('landmarks', 'nme'), ('histogram', 'emd')):
      r = leak.get(name) or {}
      if r:
        rows.append([name, _num(results, f'{p}/leakage/{name}/{value}',
                                '{:.2f}'), f'{r["baseline"]:.2f}',
                     esc(f'[{r["gain_ci"][0]:.2f}, {r["gain_ci"][1]:.2f}]'),
                     '<b>yes</b>' if r['leaks'] else 'no'])
    if rows:
      parts.append(
          f'<p>Leakage ({esc(results["threat_models"]["leakage"])}): heads '
          f'trained on {leak.get("num_train")} templates, tested on '
          f'{leak.get("num_test")} of other people; the 8 largest attribute '
          'gains, landmarks (NME %) and colour (EMD bins).</p>'
          + _table(rows, ['what', 'from the template', 'baseline',
                          'gain (95 %)', 'leaks']))
    for threat in ('informed', 'key_unknown'):
      rec = e.get(f'reconstruction_{threat}')
      if not rec:
        continue
      q = f'{p}/reconstruction_{threat}'
      rows = []
      for fmr in (f'{f:g}' for f in results['config']['fmrs']):
        rows.append([fmr, _rate(results, f'{q}/verifier/tmr/{fmr}'),
                     _rate(results, f'{q}/verifier/type2/tmr/{fmr}')
                     if rec['verifier'].get('type2') else 'n/a',
                     _rate(results, f'{q}/system/tmr/{fmr}'),
                     esc((rec['verifier'].get('tmr', {}).get(fmr) or {}
                          ).get('note', ''))])
      parts.append(
          f'<p>Reconstruction ({esc(results["threat_models"][threat])}); '
          + ('white-box' if rec['attack'] == 'gradient' else
             'score-only (NES)') + ' attack, gradient: '
          f'{esc(str(rec["gradient"]))}, {rec["steps"]} steps, '
          + _num(results, f'{q}/seconds', '{:.0f}') + ' s; verifier cosine '
          'to photo A: ' + _num(results, f'{q}/verifier/cosine/mean')
          + '.</p>' + _table(rows, ['FMR', 'verifier type I (photo A)',
                                    'verifier type II (photo B)',
                                    'protected system accepts', 'note']))
    link = e.get('linkability') or {}
    if link.get('d_sys') is not None:
      parts.append(
          '<p>Unlinkability (' + esc(results['threat_models']['linkage'])
          + '): D&harr;sys ' + _num(results, f'{p}/linkability/d_sys',
                                    '{:.3f}')
          + f' from {link["num_mated"]} mated and {link["num_non_mated"]} '
          f'non-mated pairs ({link["bins"]} score bins; 0 = unlinkable, 1 = '
          'fully linkable).</p>')
  return '\n'.join(parts)


_SUMMARY_HEAD = ['setting', 'template', 'utility (system): ROC AUC, TMR',
                 'reconstruction, fully informed',
                 'reconstruction, key unknown',
                 'attribute / landmark / colour leakage (thief with labels)',
                 'D&harr;sys (two keys)', 'notes']


def _summary(results: Mapping[str, Any], verifier: str, *,
             base: str = '') -> str:
  """The note on what each column measures, and the table."""
  esc = html.escape
  section = _get(results, base.rstrip('/')) if base else results
  ax, threats = axes(section), section['threat_models']
  y = (f'type I TMR at FMR {ax["y_fmr"]}' if ax['y_fmr'] else 'n/a')
  note = ('<p class="note">Utility: ' + esc(threats['system']) + '. '
          'Reconstruction: ' + esc(y) + ' of the independent verifier '
          f'({esc(verifier)}), and how often the protected system itself '
          'accepts the rebuilt face. Fully informed: '
          + esc(threats['informed']) + '. Key unknown: '
          + esc(threats['key_unknown']) + '. Leakage: '
          + esc(threats['leakage']) + '. D&harr;sys: '
          + esc(threats['linkage']) + '. N: genuine scores behind each '
          'rate.</p>')
  return note + _table(_summary_rows(results, base=base), _SUMMARY_HEAD,
                       ['ref'] + [''] * (len(section['settings']) - 1))


def _chart_html(chart: bytes | None) -> str:
  if chart is None:
    return ('<p>No chart: reconstruction was not run, or its rates could '
            'not be measured on this data.</p>')
  return (f'<p><img src="{_uri(chart)}" alt="utility against '
          'reconstruction success"></p><p class="note">One point per '
          'setting (filled: fully informed attacker; hollow: the same scheme '
          'attacked with a guessed key); the star is the unprotected '
          'template. Right is more useful, down is safer.</p>')


def audit_section(results: Mapping[str, Any]) -> str:
  """The audit page's "What protection buys" section ('' without one).

  Args:
    results: the audit's results; the comparison is under 'protection'
      (`evaluation.protection.compare`), its figures tagged there.
  """
  if not results.get('protection'):
    return ''
  verifier = (results.get('facts') or {}).get('verifier', {}).get('kind',
                                                                  '-')
  return ('<section id="protection"><h2>What protection buys</h2>'
          '<p>The same faces, with the stored templates protected: each '
          'setting next to the unprotected templates, all attacked alike '
          '(from the mean face, through the scheme). Keys come from the '
          'key seed given and are not stored.</p>'
          + _summary(results, verifier, base='protection/')
          + _chart_html(chart_png(results['protection'])) + '</section>')


def render(results: Mapping[str, Any], *, chart: bytes | None,
           grid: np.ndarray | None) -> str:
  """The HTML page (module docstring)."""
  esc = html.escape
  threats = results['threat_models']
  parts = ['<!doctype html><html><head><meta charset="utf-8">',
           '<title>What template protection buys</title>',
           f'<style>{_STYLE}</style></head><body>',
           '<h1>What protecting the stored templates of '
           f'<code>{esc(results["facts"]["encoder"]["kind"])}</code> buys'
           '</h1>', _lead(results)]
  parts.append('<section id="summary"><h2>Summary</h2>'
               + _summary(results, results['facts']['verifier']['kind'])
               + '</section>')
  parts.append('<section id="chart"><h2>Utility against reconstruction '
               'success</h2>' + _chart_html(chart) + '</section>')
  parts.append('<section id="threats"><h2>Threat models</h2>' + _table(
      [[esc(k), esc(v)] for k, v in threats.items()],
      ['name', 'who the attacker is']) + '</section>')
  parts.append('<section id="details"><h2>Each setting</h2>'
               + _details(results) + '</section>')
  parts.append('<section id="grid"><h2>Reconstructions (fully informed)'
               '</h2>')
  if grid is not None:
    parts.append('<p>Photo A | its reconstruction from each setting\'s '
                 'protected template:</p>'
                 f'<p><img src="{_uri(_png(grid))}" alt="grid"></p>')
  parts.append('</section>')
  facts = results['facts']
  parts.append('<section id="facts"><h2>Run facts</h2>' + _table(
      [[esc(k), esc(json.dumps(v) if not isinstance(v, str) else v)]
       for k, v in facts.items()], ['fact', 'value']) + '</section>')
  parts.append('</body></html>')
  return '\n'.join(parts)


def write(workdir: str, results: dict[str, Any], *,
          grid: np.ndarray | None) -> dict[str, str]:
  """Writes protect.html, protect.json and protect_chart.png (atomically).

  Returns:
    their paths (no 'chart' when there is none).
  """
  os.makedirs(workdir, exist_ok=True)
  results = outputs.json_safe(results)
  chart = chart_png(results)
  paths = {'html': os.path.join(workdir, 'protect.html'),
           'json': os.path.join(workdir, 'protect.json')}
  files = [(paths['html'], render(results, chart=chart, grid=grid).encode()),
           (paths['json'], json.dumps(results, indent=1).encode())]
  if chart is not None:
    paths['chart'] = os.path.join(workdir, 'protect_chart.png')
    files.append((paths['chart'], chart))
  for path, data in files:
    with open(path + '.tmp', 'wb') as f:
      f.write(data)
    os.replace(path + '.tmp', path)
  return paths
