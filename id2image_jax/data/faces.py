"""A set of aligned faces in memory, with what is known about each.

Reads a folder written by `align.align_folder` (FFHQ-aligned squares and
their 68 dlib landmarks): flat, one subfolder per person (LFW), or CelebA
layout (identities and 40 attributes from its annotation files). Used by
the audit, which works on a few hundred to a few thousand faces.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from id2image_jax import errors
from id2image_jax.data import align
from id2image_jax.data import celeba
from id2image_jax.data import images as images_lib
from id2image_jax.preprocess import uint8_to_unit_range


@dataclasses.dataclass
class Faces:
  """Aligned faces, row-aligned.

  Attributes:
    keys: [N] file names (relative to the images folder).
    images: [N, S, S, 3] float32 in [-1, 1], FFHQ-aligned.
    landmarks: [N, 68, 2] dlib points, (x, y) in [0, 1] of the image.
    identity: [N] person labels, or None when unknown (each image its own).
    attributes: name -> bool [N] (CelebA's, when the folder has them).
    skipped: file -> why it was left out (no face found).
  """
  keys: list[str]
  images: np.ndarray
  landmarks: np.ndarray
  identity: np.ndarray | None
  attributes: dict[str, np.ndarray]
  skipped: dict[str, str]

  def __len__(self) -> int:
    return len(self.keys)


def _read_table(path: str) -> dict[str, list[str]]:
  with open(path) as f:
    return {r[0]: r[1:] for r in (line.split() for line in f) if r}


def select(num_rows: int, identity: np.ndarray | None, num: int, *,
           seed: int = 0) -> np.ndarray:
  """Up to `num` of `num_rows` rows, people with two or more images first
  (type-II attacks need a second photo), in a fixed shuffled order.

  With `identity` None (a flat folder: who is who is unknown) every image
  counts as its own person, and the rows are a seeded random choice.
  """
  rng = np.random.default_rng(seed)
  if identity is None:
    return np.sort(rng.permutation(num_rows)[:num])
  if len(identity) != num_rows:
    raise ValueError(f'{len(identity)} identities for {num_rows} rows')
  ids, counts = np.unique(identity, return_counts=True)
  order = np.concatenate([rng.permutation(ids[counts >= 2]),
                          rng.permutation(ids[counts < 2])])
  rows = np.concatenate([np.flatnonzero(identity == p) for p in order])
  return np.sort(rows[:num])


def identities(folder: str, keys: list[str]) -> np.ndarray | None:
  """Person labels of `keys` (relative image names) in `folder`: from a
  CelebA-layout identity file, or the person subfolders; None if unknown."""
  id_path = os.path.join(folder, celeba.IDENTITY_FILE)
  if os.path.isfile(id_path):
    ids = _read_table(id_path)
    return np.asarray([int(ids[k][0]) for k in keys])
  if any('/' in k for k in keys):
    return np.unique([k.split('/')[0] for k in keys], return_inverse=True)[1]
  return None


def images_folder(folder: str) -> str:
  """Where the images of a (raw or aligned) face folder are."""
  inner = os.path.join(folder, celeba.IMAGES_DIR)
  return inner if os.path.isdir(inner) else folder


def choose(folder: str, num: int, *, seed: int = 0) -> list[str]:
  """Up to `num` image names of a raw face folder, chosen by `select`, so a
  budgeted audit aligns only what it will use."""
  keys = align.image_names(images_folder(folder))
  chosen = select(len(keys), identities(folder, keys), num, seed=seed)
  return [keys[i] for i in chosen]


def read_aligned(folder: str, *, max_images: int = 0, seed: int = 0
                 ) -> Faces:
  """The faces of an aligned folder (module docstring).

  Args:
    folder: written by `align.align_folder`.
    max_images: keep at most this many (0: all), chosen by `select`.
    seed: of the selection.

  Unreadable images (`images.read_rgb`) are left out and named in
  ``skipped``.

  Raises:
    errors.MissingInputError: not an aligned folder (no landmark file).
    errors.BadInputError: none of the chosen images is readable.
  """
  lm_path = os.path.join(folder, align.LANDMARK_FILE)
  if not os.path.isfile(lm_path):
    raise errors.MissingInputError(
        f'{folder} is not an aligned folder (no {align.LANDMARK_FILE}): run '
        '`id2image align`')
  points = _read_table(lm_path)
  skipped = {}
  skipped_path = os.path.join(folder, align.SKIPPED_FILE)
  if os.path.isfile(skipped_path):
    skipped = {k: ' '.join(v) for k, v in _read_table(skipped_path).items()}
  images_dir = images_folder(folder)
  keys = sorted(points)
  identity, attributes = identities(folder, keys), {}
  attr_path = os.path.join(folder, celeba.ATTRIBUTE_FILE)
  if os.path.isfile(attr_path):
    with open(attr_path) as f:
      f.readline()
      names = f.readline().split()
      rows = {r[0]: r[1:] for r in (line.split() for line in f) if r}
    values = np.asarray([[int(v) > 0 for v in rows[k]] for k in keys])
    attributes = {n: values[:, i] for i, n in enumerate(names)}
  chosen = (select(len(keys), identity, max_images, seed=seed) if max_images
            else np.arange(len(keys)))
  images, readable = [], []
  for i in chosen:
    try:
      images.append(images_lib.read_rgb(os.path.join(images_dir, keys[i])))
      readable.append(i)
    except images_lib.UnreadableImageError as e:
      skipped[keys[i]] = f'unreadable image: {e.why}'
  if not images:
    raise errors.BadInputError(f'{folder}: none of its {len(chosen)} '
                               'chosen images is readable')
  chosen = np.asarray(readable, int)
  keys = [keys[i] for i in chosen]
  return Faces(
      keys=keys,
      images=np.asarray(uint8_to_unit_range(np.stack(images))),
      landmarks=np.asarray([points[k] for k in keys], np.float32).reshape(
          -1, 68, 2),
      identity=None if identity is None else identity[chosen],
      attributes={n: v[chosen] for n, v in attributes.items()},
      skipped=skipped)
