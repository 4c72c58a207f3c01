"""Writing an inversion's results: PNGs, npz arrays, a grid and a summary.

Layout written by `write_outputs(directory, result, ...)`::

  images/<row>.png    one reconstruction per inverted row (6-digit row index)
  latents.npz         latents/<name> [N, ...], descriptors [N, D] (optional),
                      rows, done, diverged
  history.npz         steps [T] and loss/<term> [N, T]
  grid.png            source | reconstruction pairs (or reconstructions)
  summary.json        counts, skipped rows with reasons, diverged rows,
                      final-loss statistics, mean loss curves, run stats

Row indices are always the caller's: skipped rows keep their place (NaN in
arrays, no PNG) and are listed with their reason in ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from PIL import Image

from id2image_jax.inversion.engine import InversionResult
from id2image_jax.reports.outputs import json_safe
from id2image_jax.reports.outputs import pyplot
from id2image_jax.reports.outputs import to_uint8


def save_images(directory: str | os.PathLike, images: np.ndarray,
                rows: np.ndarray) -> list[str]:
  """Writes ``images[i]`` ([K, H, W, 3] in [-1, 1]) to ``<row[i]>.png``."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for image, row in zip(to_uint8(images), np.asarray(rows)):
    path = os.path.join(directory, f'{int(row):06d}.png')
    Image.fromarray(image).save(path)
    paths.append(path)
  return paths


def image_grid(images: np.ndarray, *, sources: np.ndarray | None = None,
               columns: int = 8, pad: int = 2,
               max_size: int = 256) -> np.ndarray:
  """Tiles [K, H, W, 3] images (in [-1, 1]) into one uint8 picture.

  Args:
    images: reconstructions.
    sources: optional [K, H', W', 3] originals in [-1, 1]; each cell is then
      ``source | reconstruction`` (sources resized to the images' size).
    columns: cells per grid row.
    pad: white border between cells, in pixels.
    max_size: larger images are shrunk (antialiased) to this height, so a
      grid of 1024 px faces stays a picture one can open.

  Returns:
    [rows * (H + pad) + pad, columns * (cell_w + pad) + pad, 3] uint8.
  """
  cells = to_uint8(images)
  if cells.shape[1] > max_size:
    size = (round(cells.shape[2] * max_size / cells.shape[1]), max_size)
    cells = np.stack([np.asarray(Image.fromarray(c).resize(
        size, Image.LANCZOS)) for c in cells])
  k, h, w, _ = cells.shape
  if sources is not None:
    src = [np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR))
           for s in to_uint8(sources)]
    cells = np.concatenate([np.stack(src), cells], axis=2)
  cw = cells.shape[2]
  columns = max(1, min(columns, k))
  grid_rows = math.ceil(k / columns)
  grid = np.full((grid_rows * (h + pad) + pad, columns * (cw + pad) + pad, 3),
                 255, np.uint8)
  for i, cell in enumerate(cells):
    r, c = divmod(i, columns)
    y, x = pad + r * (h + pad), pad + c * (cw + pad)
    grid[y:y + h, x:x + cw] = cell
  return grid


def save_latents(path: str | os.PathLike, result: InversionResult, *,
                 descriptors: np.ndarray | None = None) -> str:
  """latents/<name> [N, ...], descriptors [N, D] if given, done, diverged."""
  arrays = {'latents/' + _name(p): x for p, x in
            jax.tree_util.tree_leaves_with_path(result.latents)}
  if descriptors is not None:
    arrays['descriptors'] = np.asarray(descriptors)
  n = result.done.shape[0]
  arrays.update(rows=np.arange(n), done=result.done,
                diverged=result.diverged)
  np.savez(path, **arrays)
  return os.fspath(path)


def save_history(path: str | os.PathLike, result: InversionResult) -> str:
  """steps [T] and loss/<term> [N, T] (NaN for rows not inverted)."""
  np.savez(path, steps=result.history_steps,
           **{'loss/' + k: v for k, v in result.history.items()})
  return os.fspath(path)


def summary(result: InversionResult, *,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """A JSON-able overview of `result` (NaN written as null)."""
  done = result.done
  final = {}
  for name, values in result.final.items():
    v = values[done]
    final[name] = ({'mean': float(v.mean()), 'median': float(np.median(v)),
                    'min': float(v.min()), 'max': float(v.max())}
                   if v.size else None)
  return json_safe({
      'num_targets': int(done.shape[0]),
      'num_done': int(done.sum()),
      'skipped': [{'row': r, 'reason': why}
                  for r, why in sorted(result.skipped.items())],
      'diverged_rows': np.flatnonzero(result.diverged).tolist(),
      'not_done_rows': [int(r) for r in np.flatnonzero(~done)
                        if int(r) not in result.skipped],
      'final': final,
      'history_steps': result.history_steps.tolist(),
      'mean_history': {k: (np.nanmean(v[done], axis=0).tolist()
                           if done.any() else None)
                       for k, v in result.history.items()},
      'stats': dict(result.stats),
      **dict(extra or {}),
  })


def write_outputs(directory: str | os.PathLike, result: InversionResult, *,
                  images: np.ndarray | None = None,
                  sources: np.ndarray | None = None,
                  descriptors: np.ndarray | None = None,
                  grid_size: int = 64,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes everything listed in the module docstring (process 0 only).

  Args:
    directory: output directory (created).
    result: from `invert`.
    images: optional [N, H, W, 3] renders of the final latents in [-1, 1]
      (rows not done are ignored), e.g. from ``engine.map_targets``.
    sources: optional [N, H', W', 3] original images, for the grid.
    descriptors: optional [N, D] descriptors of the renders.
    grid_size: at most this many done rows in the grid.
    extra: more JSON-able entries for the summary (config, device, ...).

  Returns:
    name -> path of what was written ({} on processes other than 0).
  """
  if jax.process_index() != 0:
    return {}
  os.makedirs(directory, exist_ok=True)
  done_rows = np.flatnonzero(result.done)
  paths = {
      'latents': save_latents(os.path.join(directory, 'latents.npz'), result,
                              descriptors=descriptors),
      'history': save_history(os.path.join(directory, 'history.npz'), result),
  }
  if images is not None and done_rows.size:
    # A block at a time: a test set's renders are not copied at once.
    paths['images'] = [
        path for start in range(0, done_rows.size, 64)
        for path in save_images(
            os.path.join(directory, 'images'),
            np.asarray(images)[done_rows[start:start + 64]],
            done_rows[start:start + 64])]
    shown = done_rows[:grid_size]
    grid = image_grid(np.asarray(images)[shown], sources=(
        None if sources is None else np.asarray(sources)[shown]))
    paths['grid'] = os.path.join(directory, 'grid.png')
    Image.fromarray(grid).save(paths['grid'])
  paths['summary'] = os.path.join(directory, 'summary.json')
  with open(paths['summary'], 'w') as f:
    json.dump(summary(result, extra=extra), f, indent=2)
  return paths


def _name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def plot_history(path: str, result: InversionResult) -> None:
  """Mean (and per-target) loss curves, log scale."""
  plt = pyplot()
  names = [n for n in result.history if n != 'loss'] or ['loss']
  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3),
                           squeeze=False)
  rows = np.flatnonzero(result.done)
  for ax, name in zip(axes[0], names):
    values = result.history[name][rows]
    for v in values[:32]:
      ax.plot(result.history_steps, v, color='0.8', lw=0.6)
    ax.plot(result.history_steps, np.nanmean(values, axis=0), color='C0',
            lw=2, label='mean')
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_title(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
