"""Writing the evaluate job's report: JSON, markdown, image grid, Fig. 9.

Files written into the workdir by `write`::

  report.json     everything (per-row values included)
  report.md       Table 2 (ablation), identity and TMR@FMR, transfer table,
                  and the caveats (independence, pair counts, oracles)
  grid.png        original | one column per arm (| another photo of the
                  person, type II), one target per row
  similarity.png  paper Fig. 9 style: genuine vs impostor cosines per arm
                  under the evaluation encoder, with the FMR thresholds
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageDraw

from id2image_jax.reports import outputs

# Table 2 rows: (key in 'appearance', label, format).
_APPEARANCE_ROWS = (
    ('mse', 'MSE ([0, 1] scale) ↓', '{:.4f}'),
    ('psnr', 'PSNR [dB] ↑', '{:.2f}'),
    ('ssim', 'SSIM ↑', '{:.4f}'),
    ('histogram_emd', 'histogram EMD (bins, sum RGB) ↓', '{:.3f}'),
    ('landmark_nme', 'landmark NME (% interocular) ↓', '{:.2f}'),
)


def comparison_grid(sources: np.ndarray | None,
                    columns: Mapping[str, np.ndarray], *, rows: int = 8,
                    cell: int = 96, pad: int = 2) -> np.ndarray:
  """One target per row: original | each arm's reconstruction, labelled.

  Args:
    sources: [N, H, W, 3] originals in [-1, 1], or None (no first column).
    columns: arm name -> [N, H', W', 3] reconstructions in [-1, 1] (NaN rows
      show black).
    rows: at most this many targets.
    cell: side of each cell in pixels.
    pad: white border.

  Returns:
    uint8 [header + rows * (cell + pad) + pad, ..., 3].
  """
  named = ([('original', sources)] if sources is not None else []) + list(
      columns.items())
  if not named:
    raise ValueError('nothing to draw')
  n = min(rows, min(len(x) for _, x in named))
  header = 14
  height = header + n * (cell + pad) + pad
  width = len(named) * (cell + pad) + pad
  grid = Image.new('RGB', (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  for c, (name, images) in enumerate(named):
    x = pad + c * (cell + pad)
    draw.text((x + 2, 1), name, fill=(0, 0, 0))
    for r, image in enumerate(outputs.to_uint8(np.asarray(images[:n]))):
      grid.paste(Image.fromarray(image).resize((cell, cell),
                                               Image.Resampling.BILINEAR),
                 (x, header + pad + r * (cell + pad)))
  return np.asarray(grid)


def similarity_figure(path: str, arms: Mapping[str, Any], *,
                      encoder: str) -> None:
  """Paper Fig. 9 style histograms, one panel per arm."""
  plt = outputs.pyplot()
  panels = [(name, a['evaluation']) for name, a in arms.items()
            if a['evaluation'].get('genuine')]
  if not panels:
    return
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3),
                           squeeze=False, sharey=False)
  # Bins over the range the scores actually use: on non-face images (the
  # demo generator) every cosine can sit in a sliver near 1.
  values = np.concatenate([
      np.asarray(ev['genuine'] + ev.get('attack_impostor_scores', []) + [
          e['threshold'] for e in ev.get('tmr', {}).values()
          if e.get('threshold') is not None], np.float64)
      for _, ev in panels])
  lo, hi = float(values.min()), float(values.max())
  span = max(hi - lo, 1e-3)
  bins = np.linspace(lo - 0.02 * span, hi + 0.02 * span, 41)
  for ax, (name, ev) in zip(axes[0], panels):
    ax.hist(ev.get('attack_impostor_scores', []), bins=bins, density=True,
            alpha=0.5, color='C1', label='impostor (recon vs other)')
    ax.hist(ev['genuine'], bins=bins, density=True, alpha=0.6, color='C0',
            label='genuine (recon vs own original)')
    for i, (fmr, entry) in enumerate(ev.get('tmr', {}).items()):
      if entry.get('threshold') is not None:
        ax.axvline(entry['threshold'], color='k', ls=('--', ':')[i % 2],
                   lw=1, label=f'threshold @ FMR {fmr}')
    ax.set_title(f'{name} (mean {ev["cosine"]["mean"]:.3f})')
    ax.set_xlabel(f'cosine similarity ({encoder})')
  axes[0][0].set_ylabel('density')
  axes[0][-1].legend(fontsize=7, loc='upper left')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _fmt(value, spec='{:.4f}') -> str:
  return 'n/a' if value is None else spec.format(value)


def _tmr_cell(entry: Mapping[str, Any]) -> str:
  if not entry:
    return '–'
  if entry.get('tmr') is None:
    return 'n/a'
  return f'{entry["tmr"]:.3f}' + ('*' if entry.get('note') else '')


def to_markdown(report: Mapping[str, Any]) -> str:
  """The human-readable report (see the module docstring)."""
  names = list(report['arms'])
  lines = _setting_lines(report) + _plan_lines(report)
  if not names:
    lines += ['', 'No arm ran.']
    return '\n'.join(lines) + '\n'
  lines += _appearance_lines(report['arms'], names)
  lines += _attribute_lines(report['arms'], names)
  lines += _identity_lines(report, names)
  lines += _transfer_lines(report)
  lines += _file_lines(report, names)
  return '\n'.join(lines) + '\n'


def _setting_lines(report: Mapping[str, Any]) -> list[str]:
  """Models, targets and pool, run time; the landmark / histogram targets."""
  ev_enc = report['eval_encoder']
  lines = ['# ID2image evaluation', '']
  lines += [f'- generator: {report["generator"]}',
            (f'- attacked encoder (inverted): {report["encoder"]["kind"]}, '
             f'{report["encoder"]["source"]}'),
            f'- evaluation encoder: {ev_enc["kind"]}, {ev_enc["source"]}'
            + ('' if ev_enc['independent'] else
               ' — **the same encoder as the attacked one, so its '
               'identity scores are NOT an independent measure** (set '
               'eval_encoder to another face encoder; the paper used '
               'VGGFace for a VGGFace2 attack)'),
            (f'- targets: {report["targets"]}: {report["num_targets"]} '
             f'rows; pool of originals for impostor pairs: '
             f'{report["pool"]["num_originals"]}'
             + ('' if report['pool']['has_images'] else
                ' (descriptors only, no images)')),
            f'- seconds: {report["seconds"]:.1f} on {report["device"]}'
            + _inversion_seconds(report['arms']), '']
  lines += ['## Landmark and histogram targets', '']
  for term, info in report['aux_targets'].items():
    lines.append(f'- {term}: ' + (info.get('source') or
                                  'unavailable: ' + info['unavailable']))
  return lines


def _plan_lines(report: Mapping[str, Any]) -> list[str]:
  """Each requested arm: its weights, what it dropped, or why skipped."""
  lines = ['', '## Arms', '']
  for p in report['plans']:
    if p['skipped']:
      lines.append(f'- `{p["requested"]}`: **skipped**: {p["skipped"]}')
    else:
      w = ', '.join(f'{k} {v:g}' for k, v in p['weights'].items())
      extra = ('' if not p['dropped'] else ' (runs as `' + p['runs_as']
               + '`; dropped: ' + '; '.join(
                   f'{k}: {v}' for k, v in p['dropped'].items()) + ')')
      lines.append(f'- `{p["requested"]}`: weights {w}{extra}')
  return lines


def _appearance_lines(arms: Mapping[str, Any],
                      names: list[str]) -> list[str]:
  """Paper Table 2: reconstruction vs original, one column per arm."""
  lines = ['', '## Reconstruction vs original (paper Table 2)', '',
           '| metric | ' + ' | '.join(names) + ' |',
           '|---|' + '---:|' * len(names)]
  for key, label, spec in _APPEARANCE_ROWS:
    values = [arms[a]['appearance'].get(key, {}).get('mean') for a in names]
    if key == 'landmark_nme':
      values = [None if v is None else 100 * v for v in values]
    if any(v is not None for v in values):
      lines.append(f'| {label} | '
                   + ' | '.join(_fmt(v, spec) for v in values) + ' |')
  if not any(arms[a]['appearance'] for a in names):
    lines.append('| (no original images: pixel metrics need them) |'
                 + ' |' * len(names))
  return lines


def _attribute_lines(arms: Mapping[str, Any],
                     names: list[str]) -> list[str]:
  """Attribute preservation per network and measure ([] when none)."""
  measures = sorted({(net, m) for a in names
                     for net, ms in arms[a].get('attributes', {}).items()
                     for m in ms})
  if not measures:
    return []
  lines = ['', '## Attribute preservation (original vs reconstruction, '
           'labelled by the same network)', '',
           '| network | measure | ' + ' | '.join(names) + ' |',
           '|---|---|' + '---:|' * len(names)]
  for net, m in measures:
    lines.append(f'| {net} | {m.replace("_", " ")} | ' + ' | '.join(
        _fmt(arms[a].get('attributes', {}).get(net, {}).get(m, {}).get(
            'mean'), '{:.1f}') for a in names) + ' |')
  return lines


def _identity_lines(report: Mapping[str, Any], names: list[str]
                    ) -> list[str]:
  """Identity cosine and TMR @ FMR (type I, and II when known) under the
  attacked and the evaluation encoder, and how the thresholds were set."""
  arms = report['arms']
  fmrs = [f'{f:g}' for f in report['fmrs']]
  lines = ['', '## Identity', '',
           '| encoder | measure | ' + ' | '.join(names) + ' |',
           '|---|---|' + '---:|' * len(names)]
  for role, label in (
      ('attacked', f'attacked ({report["encoder"]["kind"]})'),
      ('evaluation', f'evaluation ({report["eval_encoder"]["kind"]})')):
    if any('unavailable' in arms[a][role] for a in names):
      lines.append(f'| {label} | – | ' + ' | '.join(
          arms[a][role].get('unavailable', '') for a in names) + ' |')
      continue
    lines.append(f'| {label} | cosine (recon vs original), mean | '
                 + ' | '.join(_fmt(arms[a][role]['cosine']['mean'])
                              for a in names) + ' |')
    for fmr in fmrs:
      lines.append(f'| {label} | TMR @ FMR {fmr} | ' + ' | '.join(
          _tmr_cell(arms[a][role]['tmr'].get(fmr, {})) for a in names)
                   + ' |')
    if all('type2' in arms[a][role] for a in names):
      lines += _type2_lines(label, [arms[a][role]['type2'] for a in names],
                            fmrs)
  return lines + ['', _pairs_note(report, names), '']


def _inversion_seconds(arms: Mapping[str, Any]) -> str:
  """'' or the arms' inversion time when a run resumed earlier chunks
  (this run's seconds leave those out)."""
  parts = []
  for name, arm in arms.items():
    inv = arm.get('inversion') or {}
    if not inv.get('chunks_restored'):
      continue
    total = inv.get('seconds_all_runs')
    parts.append(f'{name}: {total:.0f} s' if total is not None else
                 f'{name}: unknown (chunks stored without their time)')
    parts[-1] += (f' over {inv["chunks_run"] + inv["chunks_restored"]} '
                  f'chunks, {inv["chunks_restored"]} of them from earlier '
                  'runs')
  return ('; inverting across resumed runs: ' + '; '.join(parts)
          if parts else '')


def _type2_lines(label: str, type2: list[Mapping[str, Any]],
                 fmrs: Sequence[str]) -> list[str]:
  """Type II rows of one encoder (one cell per arm), and the ceiling: the
  real photo A against the same other photos."""
  lines = [f'| {label} | type II: cosine vs other photos, mean | '
           + ' | '.join(_fmt(t['cosine']['mean']) for t in type2) + ' |']
  for fmr in fmrs:
    lines.append(f'| {label} | type II: TMR @ FMR {fmr} | ' + ' | '.join(
        _tmr_cell(t['tmr'].get(fmr, {})) for t in type2) + ' |')
  real = type2[0].get('real_photos')  # the same photos for every arm
  for fmr in (fmrs if real else ()):
    lines.append(f'| {label} | type II ceiling: photo A itself vs its other '
                 f'photos, TMR @ FMR {fmr} | ' + ' | '.join(
                     _tmr_cell(real['tmr'].get(fmr, {})) for _ in type2)
                 + ' |')
  return lines


def _transfer_lines(report: Mapping[str, Any]) -> list[str]:
  """The transfer table (invert with A, score with B), or why none."""
  transfer = report['transfer']
  if not transfer.get('table'):
    return (['## Transfer', '', transfer['note']] if transfer.get('note')
            else [])
  fmrs = [f'{f:g}' for f in report['fmrs']]
  cols = transfer['encoders']
  lines = ['## Transfer (invert with A = row, score with B = column)', '',
           (f'Arm: `{transfer["arm"]}`. Cell: mean cosine (recon vs '
            f'original) / TMR @ FMR {" / ".join(fmrs)}.'), '',
           '| A \\ B | ' + ' | '.join(cols) + ' |',
           '|---|' + '---:|' * len(cols)]
  for a, row in transfer['table'].items():
    cells = []
    for b in cols:
      cell = row.get(b, {})
      if 'unavailable' in cell or 'cosine' not in cell:
        cells.append('n/a')
        continue
      cells.append(_fmt(cell['cosine']['mean'], '{:.3f}') + ' / ' +
                   ' / '.join(_tmr_cell(cell['tmr'].get(f, {}))
                              for f in fmrs))
    lines.append(f'| {a} | ' + ' | '.join(cells) + ' |')
  for a, note in transfer['attack'].items():
    lines.append(f'\n- {a}: {note}')
  if len(cols) == 1:
    lines.append('\n- only one encoder is available, so the table is the '
                 'white-box pair only; list more in transfer_encoders '
                 '(e.g. iresnet:/path/backbone.pth)')
  return lines


def _file_lines(report: Mapping[str, Any], names: list[str]) -> list[str]:
  """What each written file shows; the demo generator's caveat."""
  files = report.get('files', {})
  lines = ['', '## Files', '']
  if 'grid' in files:
    lines.append('- grid.png: ' + ' | '.join(
        (['original'] if report['pool']['has_images'] else []) + names
        + (['other photo of the person']
           if report['pool'].get('has_second_photos') else [])))
  if 'similarity' in files:
    lines.append('- similarity.png: genuine vs impostor cosines under the '
                 'evaluation encoder (paper Fig. 9)')
  lines.append('- arms/<arm>/: each inversion (images, latents, '
               'summary.json)')
  if report.get('generator_is_demo'):
    lines += ['', ('Note: the generator is the randomly initialised demo '
                   'StyleGAN2, not a face model: the numbers check the '
                   "pipeline, they are not the paper's.")]
  return lines


def _pairs_note(report, names) -> str:
  arm = report['arms'][names[0]]
  ev = arm['evaluation'] if 'unavailable' not in arm['evaluation'] else arm[
      'attacked']
  pairs = ev.get('num_impostor_pairs', 0)
  notes = {n for a in names for role in ('attacked', 'evaluation')
           for e in report['arms'][a][role].get('tmr', {}).values()
           if e.get('note') for n in [e['note']]}
  text = (f'Thresholds come from {pairs} impostor pairs (all pairs of '
          'distinct originals, under the scoring encoder). An FMR of 1e-2 '
          'needs >= 100 pairs and 1e-3 >= 1000 pairs to be measurable at '
          'all, and ~10x that to be stable. n/a = not measurable; * = see '
          'the notes:')
  return text + ''.join(f'\n- {n}' for n in sorted(notes))


def console_summary(report: Mapping[str, Any]) -> str:
  """A few lines for the terminal."""
  lines = []
  for name, arm in report['arms'].items():
    app, ev = arm['appearance'], arm['evaluation']
    parts = [f'arm {name:12s}']
    for key in ('psnr', 'ssim'):
      if key in app:
        parts.append(f'{key} {_fmt(app[key]["mean"], "{:.3f}")}')
    parts.append('id cos (attacked) '
                 + _fmt(arm['attacked']['cosine']['mean']))
    for net, ms in arm.get('attributes', {}).items():
      for m, v in ms.items():
        parts.append(f'{m} {_fmt(v["mean"], "{:.1f}")}')
    if 'cosine' in ev:
      parts.append(f'id cos (eval) {_fmt(ev["cosine"]["mean"])}')
      for fmr, e in ev['tmr'].items():
        parts.append(f'TMR@{fmr} {_fmt(e["tmr"], "{:.3f}")}')
    lines.append('  '.join(parts))
  if not report['eval_encoder']['independent']:
    lines.append('note: evaluation encoder == attacked encoder (not an '
                 'independent identity measure)')
  lines.append(f'results: {report["config"]["workdir"]} (report.md, '
               'report.json, grid.png, similarity.png)')
  return '\n'.join(lines)


def write(workdir: str, report: dict[str, Any], *,
          sources: np.ndarray | None,
          images: Mapping[str, np.ndarray],
          second_photos: np.ndarray | None = None,
          grid_rows: int = 8) -> dict[str, str]:
  """Writes the files listed in the module docstring; returns their paths.

  `second_photos` (another photo of each target's person, type II) become
  the grid's last column.
  """
  os.makedirs(workdir, exist_ok=True)
  paths = {}
  if images:
    paths['grid'] = os.path.join(workdir, 'grid.png')
    columns = dict(images)
    if second_photos is not None:
      columns['other photo'] = second_photos
    Image.fromarray(comparison_grid(sources, columns, rows=grid_rows)).save(
        paths['grid'])
  if any(a['evaluation'].get('genuine') for a in report['arms'].values()):
    paths['similarity'] = os.path.join(workdir, 'similarity.png')
    similarity_figure(paths['similarity'], report['arms'],
                      encoder=report['eval_encoder']['kind'])
  paths['markdown'] = os.path.join(workdir, 'report.md')
  paths['json'] = os.path.join(workdir, 'report.json')
  with open(paths['markdown'], 'w') as f:
    f.write(to_markdown({**report, 'files': paths}))
  with open(paths['json'], 'w') as f:
    json.dump(outputs.json_safe({**report, 'files': paths}), f, indent=1)
  return paths

