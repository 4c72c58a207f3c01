"""The Table-1 report: markdown, JSON and figures (paper Table 1, Fig. 3).

`table` lays out results from `leakage` as the paper does (one row per
encoder "From ID (...)", "From image", "Baseline"; columns: the attributes,
landmark error, histogram EMD). Where the heads were chosen on validation,
an encoder has two "From ID" rows (`descriptor_rows`): the paper's MLP and
the best on validation of that MLP and a linear probe, the leakage
reported. `to_markdown` renders the table next to the paper's published
numbers, with which head won per column; `landmark_figure` and
`histogram_figure` draw Fig. 3's rows. The ``id2image leakage`` job is
`id2image_jax.jobs.leakage`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from id2image_jax.reports import outputs

# The paper's Table 1 (VGGFace2 / ArcFace descriptors of CelebA), for
# comparison in every report. Landmarks: % of interocular distance;
# histogram: EMD (the paper does not state its units).
PAPER_TABLE1 = {
    'columns': ['Smiling', 'Wearing_Hat', 'Eyeglasses', 'Landmarks',
                'Histogram'],
    'rows': {
        'From ID (VGGFace2)': [91.0, 99.0, 99.7, 9.3, 2.68],
        'From ID (ArcFace)': [81.7, 96.7, 96.7, 7.3, 2.45],
        'From image [20]': [92.0, 99.0, 99.0, 8.2, 0.0],
        'Baseline': [50.4, 96.7, 94.0, 11.0, 2.97],
    },
}

UNITS = {
    'attributes': 'accuracy, % of test images (higher is better)',
    'landmarks': 'mean point-to-point error of the 68 points, % of the '
                 'ground-truth interocular distance (outer eye corners, '
                 'points 36 and 45), measured in pixels (lower is better)',
    'histogram': 'earth mover\'s distance between 10-bin normalised '
                 'histograms, in bins, per channel and summed over R, G, B '
                 '(lower is better)',
}


def table(attribute_names: Sequence[str],
          encoders: Mapping[str, Mapping[str, Any]],
          image: Mapping[str, Any] | None,
          baseline: Mapping[str, Any]) -> dict[str, Any]:
  """Arranges results as Table 1.

  Args:
    attribute_names: the attribute columns, in order.
    encoders: ``{row label: {'attributes': {name: acc %}, 'landmarks': nme
      %, 'histogram': emd}}`` for the "From ID" rows.
    image: the "From image" row in the same form (None entries: not run).
    baseline: the baseline row in the same form.

  Returns:
    ``{'columns': [...], 'rows': {label: [values or None]}}``.
  """
  columns = list(attribute_names) + ['Landmarks', 'Histogram']

  def row(r):
    r = r or {}
    attrs = r.get('attributes') or {}
    return [attrs.get(n) for n in attribute_names] + [
        r.get('landmarks'), r.get('histogram')]

  rows = {label: row(r) for label, r in encoders.items()}
  rows['From image'] = row(image)
  rows['Baseline'] = row(baseline)
  return {'columns': columns, 'rows': rows}


# The table's row labels of one encoder's "From ID" rows (`descriptor_rows`).
PAPER_MLP = 'paper MLP'
BEST = 'best on validation'


def _figures(measures: Mapping[str, Any], key: str) -> dict[str, Any]:
  """One "From ID" row from the measures of each column (``key``: the
  chosen head's figures, or ``'mlp'``: the paper's MLP's)."""
  def pick(r):
    return r if key is None else r[key]
  row = {}
  if 'attributes' in measures:
    row['attributes'] = {n: pick(r)['accuracy']
                         for n, r in measures['attributes'].items()}
  for name, figure in (('landmarks', 'nme'), ('histogram', 'emd')):
    if name in measures:
      row[name] = pick(measures[name])[figure]
  return row


def _chose(measures: Mapping[str, Any]) -> bool:
  """Whether the heads were chosen on validation (a probe was compared)."""
  each = list((measures.get('attributes') or {}).values()) + [
      measures[n] for n in ('landmarks', 'histogram') if n in measures]
  return any('validation' in r for r in each)


def descriptor_rows(encoder: str, measures: Mapping[str, Any]
                    ) -> dict[str, dict[str, Any]]:
  """The "From ID" rows of one encoder, for `table`.

  Args:
    encoder: its name.
    measures: its results from `analysis.leakage` (``attributes``,
      ``landmarks``, ``histogram``).

  Returns:
    ``{'From ID (<encoder>), paper MLP': row, 'From ID (<encoder>), best on
    validation': row}`` when the heads were chosen on validation (per
    column, the better of the paper's MLP and a linear probe), else
    ``{'From ID (<encoder>)': row}`` (the paper's MLP alone).
  """
  label = f'From ID ({encoder})'
  if not _chose(measures):
    return {label: _figures(measures, None)}
  return {f'{label}, {PAPER_MLP}': _figures(measures, 'mlp'),
          f'{label}, {BEST}': _figures(measures, None)}


def _fmt(value: Any, column: str) -> str:
  if value is None:
    return 'n/a'
  if column == 'Histogram':
    return f'{value:.2f}'
  return f'{value:.1f}%'


def _markdown_table(tab: Mapping[str, Any]) -> list[str]:
  cols = tab['columns']
  lines = ['| | ' + ' | '.join(c.replace('_', ' ') for c in cols) + ' |',
           '|---|' + '---:|' * len(cols)]
  for label, values in tab['rows'].items():
    lines.append(f'| {label} | ' + ' | '.join(
        _fmt(v, c) for v, c in zip(values, cols)) + ' |')
  return lines


def _head(r: Mapping[str, Any]) -> str:
  """Which head gives a figure: 'MLP' or 'linear (L2 ...)'."""
  if r.get('head') == 'linear':
    return f"linear (L2 {r['validation']['l2']:.2g})"
  return 'MLP'


def leak_rows(details: Mapping[str, Any]) -> dict[str, list[dict]]:
  """Per encoder, one row per measured quantity: the reported figure (the
  head chosen on validation) and its interval, which head that is, the
  paper's MLP's figure, both heads' validation figures, the baseline, the
  gain over it (interval) and whether it leaks (the gain's 95 % interval
  lies above 0)."""
  out = {}
  for encoder, det in details.items():
    if not isinstance(det, Mapping) or encoder == 'image':
      continue
    rows = []
    for name, r in (det.get('attributes') or {}).items():
      rows.append(_leak_row(name, '% accuracy', r, 'accuracy',
                            ('accuracy_ci', 'accuracy_ci')))
    for name, key, unit in (('landmarks', 'nme', '% NME'),
                            ('histogram', 'emd', 'EMD (bins)')):
      r = det.get(name)
      if r:
        rows.append(_leak_row(name, unit, r, key, ('ci', 'ci')))
    out[encoder] = rows
  return out


def _leak_row(what: str, unit: str, r: Mapping[str, Any], key: str,
              ci_keys: tuple[str, str]) -> dict[str, Any]:
  mlp = r.get('mlp') or r
  val = r.get('validation') or {}
  return {'what': what, 'unit': unit, 'key': key, 'value': r[key],
          'ci': r.get(ci_keys[0]), 'head': _head(r),
          'mlp': mlp[key], 'mlp_ci': mlp.get(ci_keys[1]),
          'mlp_leaks': mlp.get('leaks'),
          'validation': ((val['mlp'], val['linear']) if val else None),
          'baseline': r['baseline'], 'gain_ci': r.get('gain_ci'),
          'leaks': r.get('leaks')}


def _num(value: float, unit: str) -> str:
  # EMDs differ in the second decimal; accuracies and NMEs in the first.
  return f'{value:.2f}' if unit.startswith('EMD') else f'{value:.1f}'


def _interval(values, unit: str) -> str:
  return f'[{_num(values[0], unit)}, {_num(values[1], unit)}]' if values else ''


def _validation_cell(r: Mapping[str, Any]) -> str:
  if not r['validation']:
    return 'n/a'
  mlp, linear = r['validation']
  return f"{_num(mlp, r['unit'])} / {_num(linear, r['unit'])}"


def _leak_markdown(details: Mapping[str, Any]) -> list[str]:
  lines = []
  for encoder, rows in leak_rows(details).items():
    lines += ['', f'### {encoder}: descriptor vs baseline (95 % bootstrap '
              'intervals over test identities)', '',
              '"from ID" is the better head on the validation split of the '
              'paper\'s MLP and a linear probe (logistic / ridge '
              'regression on standardised descriptors); the test split '
              'takes no part in the choice. "leaks" is judged on it.', '',
              '| | from ID | head | paper MLP | validation: MLP / linear '
              '| baseline | gain over baseline | leaks |',
              '|---|---:|:---:|---:|---:|---:|---:|:---:|']
    for r in rows:
      unit = r['unit']
      lines.append(
          f"| {r['what'].replace('_', ' ')} ({unit}) | "
          f"{_num(r['value'], unit)} {_interval(r['ci'], unit)} | "
          f"{r['head']} | {_num(r['mlp'], unit)} "
          f"{_interval(r['mlp_ci'], unit)} | {_validation_cell(r)} | "
          f"{_num(r['baseline'], unit)} | {_interval(r['gain_ci'], unit)} | "
          f"{'**yes**' if r['leaks'] else 'no'} |")
  return lines


def to_markdown(results: Mapping[str, Any]) -> str:
  """The report page: our table, units, notes, the paper's table, figures.

  Args:
    results: as written by `run_leakage` (keys ``table``, ``notes``,
      ``details``, ``figures``).

  Returns:
    Markdown text.
  """
  lines = ['# Non-ID leakage into face descriptors (ID2image Table 1)', '']
  lines += _markdown_table(results['table'])
  lines += ['', 'Units:', '']
  lines += [f'- {k}: {v}' for k, v in UNITS.items()]
  lines += _leak_markdown(results.get('details') or {})
  notes = results.get('notes') or []
  if notes:
    lines += ['', 'Notes:', '']
    lines += [f'- {n}' for n in notes]
  lines += ['', '## Paper (Li, Smith & Huber 2023, Table 1)', '']
  lines += _markdown_table(PAPER_TABLE1)
  for title, path in (results.get('figures') or {}).items():
    lines += ['', f'## {title}', '', f'![{title}]({path})']
  lines += ['', '## Details', '', '```json',
            json.dumps(results.get('details', {}), indent=2, default=str),
            '```', '']
  return '\n'.join(lines)


def write(results: Mapping[str, Any], workdir: str) -> dict[str, str]:
  """Writes ``leakage.md`` and ``leakage.json`` into `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  paths = {'markdown': os.path.join(workdir, 'leakage.md'),
           'json': os.path.join(workdir, 'leakage.json')}
  with open(paths['markdown'], 'w') as f:
    f.write(to_markdown(results))
  with open(paths['json'], 'w') as f:
    json.dump(outputs.json_safe(results), f, indent=2, default=str)
  return paths


# ----------------------------------------------------------------------------
# Figures (paper Fig. 3).


def _to_pixels(points: np.ndarray, height: int, width: int) -> np.ndarray:
  # Normalised (i + 0.5) / size -> imshow's axes, where pixel i is centred
  # on coordinate i.
  return points * np.asarray([width, height]) - 0.5


def landmark_figure(path: str, images: np.ndarray | None, gt: np.ndarray,
                    pred: np.ndarray, *, image_size: Sequence[int],
                    titles: Sequence[str] | None = None) -> str:
  """Fig. 3 rows 1-2: ground-truth (top) and predicted (bottom) landmarks.

  Args:
    path: PNG to write.
    images: uint8 [K, H, W, 3] images, or None to draw on a blank canvas.
    gt: [K, 68, 2] normalised ground truth.
    pred: [K, 68, 2] normalised predictions.
    image_size: (height, width) of the canvas when `images` is None.
    titles: optional per-column titles.

  Returns:
    `path`.
  """
  plt = outputs.pyplot()
  k = len(gt)
  if images is not None:  # normalised points fit any size of the image
    image_size = images.shape[1:3]
  h, w = int(image_size[0]), int(image_size[1])
  fig, axes = plt.subplots(2, k, figsize=(2.0 * k, 2.0 * 2 * h / w),
                           squeeze=False)
  for j in range(k):
    for i, (points, colour, label) in enumerate(
        ((gt[j], 'lime', 'dlib (pseudo GT)'), (pred[j], 'red', 'from ID'))):
      ax = axes[i, j]
      if images is not None:
        ax.imshow(images[j], extent=(-0.5, w - 0.5, h - 0.5, -0.5))
      else:
        ax.imshow(np.full((h, w, 3), 235, np.uint8))
      xy = _to_pixels(points, h, w)
      ax.scatter(xy[:, 0], xy[:, 1], s=4, c=colour, label=label)
      ax.set_xlim(-0.5, w - 0.5)
      ax.set_ylim(h - 0.5, -0.5)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0 and titles is not None:
        ax.set_title(titles[j], fontsize=7)
      if j == 0:
        ax.set_ylabel(label, fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def histogram_figure(path: str, gt: np.ndarray, pred: np.ndarray, *,
                     titles: Sequence[str] | None = None) -> str:
  """Fig. 3 row 3: ground-truth (dotted) and predicted (solid) histograms.

  Args:
    path: PNG to write.
    gt: [K, 3, bins] ground-truth histograms (R, G, B).
    pred: [K, 3, bins] predictions.
    titles: optional per-panel titles.

  Returns:
    `path`.
  """
  plt = outputs.pyplot()
  k, channels, bins = gt.shape
  centres = (np.arange(bins) + 0.5) * 255.0 / bins
  fig, axes = plt.subplots(1, k, figsize=(2.4 * k, 2.0), squeeze=False)
  colours = ('red', 'green', 'blue')
  for j in range(k):
    ax = axes[0, j]
    for c in range(channels):
      ax.plot(centres, gt[j, c], ':', color=colours[c % 3], lw=1.5)
      ax.plot(centres, pred[j, c], '-', color=colours[c % 3], lw=1.2)
    ax.set_xlim(0, 255)
    ax.tick_params(labelsize=6)
    if titles is not None:
      ax.set_title(titles[j], fontsize=7)
  axes[0, 0].set_ylabel('fraction of pixels', fontsize=7)
  fig.text(0.5, 0.01, 'intensity  (dotted: image, solid: from ID)',
           ha='center', fontsize=7)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
