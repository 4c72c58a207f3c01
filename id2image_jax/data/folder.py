"""A folder of images (+ an optional CSV of labels) as a `Source`.

For any local test set, e.g. MoFA-test (84 images). Keys are image paths
relative to the folder, with '/' separators, in sorted order. The CSV has a
header; one column names the image (relative path or bare file name), every
other column becomes a label: integers -> int64, numbers -> float32,
``true``/``false`` -> bool, anything else -> string.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np

from id2image_jax.data import pipeline

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


def list_images(root: str, *, recursive: bool = True,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
  """Relative paths (with '/') of the images under `root`, sorted."""
  extensions = tuple(e.lower() for e in extensions)
  found = []
  for directory, subdirs, files in os.walk(root):
    subdirs.sort()
    rel = os.path.relpath(directory, root)
    for name in files:
      if name.lower().endswith(extensions) and not name.startswith('.'):
        path = name if rel == '.' else os.path.join(rel, name)
        found.append(path.replace(os.sep, '/'))
    if not recursive:
      break
  return sorted(found)


def _parse_column(values: list[str]) -> np.ndarray:
  lowered = [v.strip().lower() for v in values]
  if all(v in ('true', 'false') for v in lowered):
    return np.asarray([v == 'true' for v in lowered])
  for kind in (np.int64, np.float32):
    try:
      return np.asarray([kind(v) for v in values], kind)
    except ValueError:
      pass
  return np.asarray(values, np.str_)


def read_labels_csv(path: str, keys: Sequence[str], *,
                    key_column: str | None = None) -> dict[str, np.ndarray]:
  """Reads a CSV of labels and orders its rows like `keys`.

  Args:
    path: CSV file with a header row.
    keys: image keys (relative paths) to find rows for.
    key_column: column naming the image; default the first column. Values
      may be relative paths or bare file names (then they must be unique).

  Returns:
    ``{column: array [len(keys)]}`` for every column except `key_column`.

  Raises:
    ValueError: images without a row (named), or duplicate rows.
  """
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f'{path} has no rows')
  columns = list(rows[0].keys())
  key_column = key_column or columns[0]
  if key_column not in columns:
    raise ValueError(f'{path} has no column {key_column!r}; it has {columns}')
  by_key = {}
  for row in rows:
    name = row[key_column].strip().replace('\\', '/')
    if name in by_key:
      raise ValueError(f'{path}: two rows for {name!r}')
    by_key[name] = row
  basenames = [k.rsplit('/', 1)[-1] for k in keys]
  unique_basenames = len(set(basenames)) == len(basenames)
  ordered, missing = [], []
  for key, base in zip(keys, basenames):
    row = by_key.get(key)
    if row is None and unique_basenames:
      row = by_key.get(base)
    if row is None:
      missing.append(key)
    ordered.append(row)
  if missing:
    raise ValueError(f'{path} has no row for {len(missing)} image(s), e.g. '
                     f'{missing[:5]} (column {key_column!r})')
  return {c: _parse_column([r[c] for r in ordered])
          for c in columns if c != key_column}


def image_folder(root: str, *, labels_csv: str | None = None,
                 key_column: str | None = None, recursive: bool = True,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 parent_label: str | None = None,
                 name: str | None = None) -> pipeline.Source:
  """Every image under `root` as a `Source`, with labels from a CSV.

  Images may have different sizes; pass ``image_size`` to
  `pipeline.batches` to batch them.

  Args:
    root: folder to scan.
    labels_csv: optional CSV of labels keyed by file name (see module doc).
    key_column: the CSV column naming the image (default: first column).
    recursive: also scan subfolders.
    extensions: file name endings counted as images (case-insensitive).
    parent_label: if set, add a string label of this name holding each
      image's parent folder name (e.g. the person in LFW's layout).
    name: source name; default ``'folder:<basename of root>'``.

  Returns:
    A `pipeline.Source`.

  Raises:
    DataNotFoundError: `root` is missing or holds no images.
  """
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise pipeline.DataNotFoundError(
        f'image folder {root} does not exist; put the test images there '
        f'({", ".join(extensions)}), optionally with a CSV of labels')
  keys = list_images(root, recursive=recursive, extensions=extensions)
  if not keys:
    raise pipeline.DataNotFoundError(
        f'no images ({", ".join(extensions)}) in {root}')
  labels = {}
  if labels_csv is not None:
    labels = read_labels_csv(labels_csv, keys, key_column=key_column)
  if parent_label is not None:
    labels[parent_label] = np.asarray(
        [k.rsplit('/', 2)[-2] if '/' in k else '' for k in keys], np.str_)
  for reserved in (pipeline.IMAGE, pipeline.KEY, pipeline.VALID):
    if reserved in labels:
      raise ValueError(f'label column {reserved!r} clashes with a reserved '
                       'name; rename it in the CSV')
  keys = np.asarray(keys, np.str_)

  def make_dataset(start: int):
    t = pipeline.tf()
    paths = [os.path.join(root, k) for k in keys[start:]]
    columns = {pipeline.KEY: keys[start:],
               **{k: v[start:] for k, v in labels.items()}}
    return t.data.Dataset.zip((
        t.data.Dataset.from_tensor_slices(t.constant(paths, t.string)).map(
            t.io.read_file),
        t.data.Dataset.from_tensor_slices(columns),
    )).map(lambda image, ex: {pipeline.IMAGE: image, **ex})

  return pipeline.Source(
      name=name or f'folder:{os.path.basename(os.path.normpath(root))}',
      num_examples=len(keys), make_dataset=make_dataset,
      info={'dataset': 'folder', 'root': root,
            'labels': sorted(labels), 'labels_csv': labels_csv})
