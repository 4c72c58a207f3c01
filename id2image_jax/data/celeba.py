"""CelebA (aligned & cropped, 218x178) with its 40 attributes, identities and
5 landmarks, on the official train / validation / test partition.

Two ways to read it, never a download:

* a prepared TFDS dataset (``<data_dir>/celeb_a/2.1.0``), as written by
  ``tfds build celeb_a --manual_dir=...`` or by ``celeb_a(..., prepare=True)``;
* the original files in a manual directory (the files TFDS' own builder reads,
  named as in its ``checksums.tsv``), read directly: no TFRecord copy needed.
  This is also the layout of any CelebA-like folder: images (any size, e.g.
  a half-resolution copy) plus ``list_attr_celeba.txt`` and
  ``identity_CelebA.txt`` are required; without ``list_eval_partition.txt``
  the splits are **identity-disjoint** (`identity_split`: no person in two
  splits), without ``list_landmarks_align_celeba.txt`` there is no
  ``landmarks5`` label, and annotation rows whose image is not in the
  folder are left out.

Example keys are the CelebA file names (``'000001.jpg'``) when reading the
original files and TFDS record ids when reading a prepared dataset.
"""

from __future__ import annotations

import os
import zipfile
from typing import Literal

import numpy as np

from id2image_jax.data import _tfds
from id2image_jax.data import pipeline

TFDS_NAME = 'celeb_a'
TFDS_VERSION = '2.1.0'
SPLITS = ('train', 'validation', 'test')
# Partition ids of list_eval_partition.txt.
_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}
IMAGE_SIZE = (218, 178)  # (height, width) of img_align_celeba

# The 40 attributes in the order of list_attr_celeba.txt (and of TFDS).
ATTRIBUTE_NAMES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick', 'Wearing_Necklace',
    'Wearing_Necktie', 'Young')
# The 5 landmarks in the order of list_landmarks_align_celeba.txt.
LANDMARK_NAMES = ('lefteye', 'righteye', 'nose', 'leftmouth', 'rightmouth')

# The files TFDS' celeb_a builder reads (names and sizes from its
# checksums.tsv), which is also what `celeb_a` reads from a manual dir.
IMAGES_ZIP = 'img_align_celeba.zip'
IMAGES_DIR = 'img_align_celeba'  # the zip, extracted (accepted as well)
PARTITION_FILE = 'list_eval_partition.txt'
ATTRIBUTE_FILE = 'list_attr_celeba.txt'
LANDMARK_FILE = 'list_landmarks_align_celeba.txt'
IDENTITY_FILE = 'identity_CelebA.txt'
MANUAL_FILES = {
    IMAGES_ZIP: 1443490838,
    PARTITION_FILE: 2836386,
    ATTRIBUTE_FILE: 26721026,
    LANDMARK_FILE: 12156055,
    IDENTITY_FILE: 3424458,
}
# 68 dlib landmarks of an aligned copy (`id2image align`), when present.
LANDMARK68_FILE = 'landmarks68_ffhq.txt'
# What a CelebA-layout folder cannot do without (the rest is optional).
REQUIRED_FILES = (IMAGES_ZIP, ATTRIBUTE_FILE, IDENTITY_FILE)
# Identity-disjoint split used when there is no partition file: fractions of
# the identities (train, validation, test), drawn with a fixed seed.
IDENTITY_SPLIT = (0.8, 0.1, 0.1)
IDENTITY_SPLIT_SEED = 0

_INFO = {
    'dataset': 'celeb_a',
    'attribute_names': list(ATTRIBUTE_NAMES),
    'landmark5_names': list(LANDMARK_NAMES),
    'image_size': list(IMAGE_SIZE),
    'landmarks5': '(x + 0.5, y + 0.5) / (width, height): pixel centres in '
                  'image coordinates normalised to [0, 1]',
}


def default_data_dir() -> str:
  """TFDS' default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.path.expanduser(
      os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets'))


def default_manual_dir(data_dir: str | None = None) -> str:
  """TFDS' default manual dir: ``<data_dir>/downloads/manual``."""
  return os.path.join(data_dir or default_data_dir(), 'downloads', 'manual')


def instructions(data_dir: str, manual_dir: str) -> str:
  """What to put where; part of every "not found" error."""
  lines = [
      'CelebA was not found. Nothing is downloaded; either',
      f'  (a) put a prepared TFDS dataset at '
      f'{os.path.join(data_dir, TFDS_NAME, TFDS_VERSION)} '
      f'(e.g. `tfds build celeb_a --manual_dir={manual_dir}`), or',
      f'  (b) put these files from the CelebA site '
      f'(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: '
      f'"Align&Cropped Images", "Anno", "Eval") in {manual_dir}:',
  ]
  for name, size in MANUAL_FILES.items():
    extra = f' (or the extracted folder {IMAGES_DIR}/)' if (
        name == IMAGES_ZIP) else ''
    if name not in REQUIRED_FILES:
      extra += ' (optional when reading the folder directly)'
    lines.append(f'      {name}  [{size} bytes]{extra}')
  return '\n'.join(lines)


def missing_manual_files(manual_dir: str, *,
                         need_zip: bool = False) -> list[str]:
  """Names of the needed manual files absent from `manual_dir`.

  `need_zip` (building TFDS from them) needs all of `MANUAL_FILES`;
  reading the folder directly needs `REQUIRED_FILES`.
  """
  missing = []
  for name in MANUAL_FILES if need_zip else REQUIRED_FILES:
    path = os.path.join(manual_dir, name)
    if name == IMAGES_ZIP and not need_zip and os.path.isdir(
        os.path.join(manual_dir, IMAGES_DIR)):
      continue
    if not os.path.isfile(path):
      missing.append(name)
  return missing


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'CelebA split must be one of {SPLITS}, got {split!r}')


def celeb_a(split: str, *, data_dir: str | None = None,
            manual_dir: str | None = None,
            mode: Literal['auto', 'tfds', 'manual'] = 'auto',
            prepare: bool = False) -> pipeline.Source:
  """CelebA as a `Source` of (image, 40 attributes, identity, 5 landmarks).

  Labels per example: ``attributes`` bool [40] (order `ATTRIBUTE_NAMES`),
  ``identity`` int32 (CelebA identity number), ``landmarks5`` float32 [5, 2]
  as (x, y) normalised to [0, 1]: a point on pixel column i lies at
  (i + 0.5) / width (pixel centres; the same convention as the 68 dlib
  landmarks of `id2image_jax.data.dlib_landmarks`).

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'`` (official partition).
    data_dir: TFDS data dir; default `default_data_dir()`.
    manual_dir: folder with the original files (see `MANUAL_FILES`); default
      ``<data_dir>/downloads/manual``.
    mode: ``'tfds'`` reads a prepared TFDS dataset, ``'manual'`` the original
      files, ``'auto'`` the first of those that exists.
    prepare: when only the manual files exist, build the TFDS dataset from
      them first (``download_and_prepare`` with a manual dir; slower once,
      then read as TFDS). Needs ``img_align_celeba.zip`` itself.

  Returns:
    A `pipeline.Source` named ``'celeb_a/<split>'``.

  Raises:
    DataNotFoundError: nothing usable on disk; the message lists the files
      and where they go.
  """
  _check_split(split)
  data_dir = os.path.expanduser(data_dir or default_data_dir())
  manual_dir = os.path.expanduser(manual_dir or default_manual_dir(data_dir))
  if mode not in ('auto', 'tfds', 'manual'):
    raise ValueError(f'mode must be auto, tfds or manual, got {mode!r}')
  if mode == 'tfds':
    return _from_tfds(split, data_dir, manual_dir)
  if mode == 'auto' and _tfds.is_prepared(data_dir, TFDS_NAME, TFDS_VERSION):
    return _from_tfds(split, data_dir, manual_dir)
  missing = missing_manual_files(manual_dir, need_zip=prepare)
  if missing:
    raise pipeline.DataNotFoundError(
        instructions(data_dir, manual_dir) + '\nMissing from '
        f'{manual_dir}: {", ".join(missing)}')
  if prepare:
    _tfds.prepare_from_manual(TFDS_NAME, data_dir, manual_dir)
    return _from_tfds(split, data_dir, manual_dir)
  return _from_manual(split, manual_dir)


# ----------------------------------------------------------------------------
# Prepared TFDS dataset.


def _from_tfds(split: str, data_dir: str,
               manual_dir: str) -> pipeline.Source:
  t = pipeline.tf()
  scale = [IMAGE_SIZE[1], IMAGE_SIZE[0]]

  def convert(ex):
    xy = t.stack([
        t.stack([ex['landmarks'][f'{n}_x'], ex['landmarks'][f'{n}_y']])
        for n in LANDMARK_NAMES])
    return {
        pipeline.IMAGE: ex['image'],
        pipeline.KEY: ex['tfds_id'],
        'attributes': t.stack([ex['attributes'][n] for n in ATTRIBUTE_NAMES]),
        'identity': t.cast(ex['identity']['Identity_No'], t.int32),
        'landmarks5': (t.cast(xy, t.float32) + 0.5) / t.constant(scale,
                                                                  t.float32),
    }

  return _tfds.source(TFDS_NAME, split, data_dir=data_dir, convert=convert,
                      info=_INFO, help_text=instructions(data_dir, manual_dir))


# ----------------------------------------------------------------------------
# Original files, read directly.


def _read_table(path: str, *, header: bool) -> tuple[list[str], list[str],
                                                     np.ndarray]:
  """Parses a CelebA annotation file -> (column names, file names, ints)."""
  with open(path) as f:
    lines = [line.split() for line in f.read().splitlines() if line.strip()]
  names = []
  if header:  # line 0: number of rows; line 1: column names
    names, lines = lines[1], lines[2:]
  files = [row[0] for row in lines]
  values = np.asarray([[int(v) for v in row[1:]] for row in lines], np.int64)
  if header and values.shape[1] != len(names):
    raise ValueError(f'{path}: {len(names)} column names but '
                     f'{values.shape[1]} values per row')
  return names, files, values


def identity_split(identities: np.ndarray, split: str, *,
                   fractions: tuple[float, float, float] = IDENTITY_SPLIT,
                   seed: int = IDENTITY_SPLIT_SEED) -> np.ndarray:
  """Rows of `split` in an identity-disjoint split (no person in two).

  The distinct identities are shuffled with `seed` and cut by `fractions`
  (train, validation, test); every image goes where its identity went.

  Args:
    identities: [N] identity of each image.
    split: ``'train'``, ``'validation'`` or ``'test'``.
    fractions: of the identities, summing to 1.
    seed: shuffling seed.

  Returns:
    [K] row indices into `identities` (ascending) of the images in `split`.
  """
  _check_split(split)
  if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(
      fractions) < 0:
    raise ValueError(f'fractions must be 3 non-negative numbers summing to '
                     f'1, got {fractions}')
  people = np.random.default_rng(seed).permutation(np.unique(identities))
  cuts = np.round(np.cumsum(fractions)[:2] * len(people)).astype(int)
  chosen = np.split(people, cuts)[SPLITS.index(split)]
  return np.flatnonzero(np.isin(identities, chosen))


def _image_names(manual_dir: str) -> set[str] | None:
  """File names of the extracted image folder, or None (zip: all)."""
  folder = os.path.join(manual_dir, IMAGES_DIR)
  return set(os.listdir(folder)) if os.path.isdir(folder) else None


def read_annotations(manual_dir: str, split: str) -> dict[str, np.ndarray]:
  """Labels of one split from the original text files, sorted by file name.

  Args:
    manual_dir: folder with the CelebA text files.
    split: ``'train'``, ``'validation'`` or ``'test'``: the official
      partition when ``list_eval_partition.txt`` is there, else the
      identity-disjoint `identity_split`.

  Returns:
    ``{'key': str [N], 'attributes': bool [N, 40], 'identity': int32 [N]}``
    and, with the landmark file, ``'landmarks5': float32 [N, 5, 2]`` in
    [0, 1]; in file-name order (as TFDS orders them).
  """
  _check_split(split)
  _, id_files, identity = _read_table(
      os.path.join(manual_dir, IDENTITY_FILE), header=False)
  present = _image_names(manual_dir)
  keep = [i for i, f in enumerate(id_files) if present is None or f in present]
  id_files = [id_files[i] for i in keep]
  identity = identity[keep, 0]
  partition_path = os.path.join(manual_dir, PARTITION_FILE)
  if os.path.isfile(partition_path):
    _, files, part = _read_table(partition_path, header=False)
    wanted = {f for f, p in zip(files, part[:, 0]) if p == _SPLIT_IDS[split]}
    keys = sorted(f for f in id_files if f in wanted)
  else:
    keys = sorted(id_files[i] for i in identity_split(identity, split))

  def rows(path, header):
    names, files, values = _read_table(path, header=header)
    index = {f: i for i, f in enumerate(files)}
    try:
      return names, values[[index[k] for k in keys]]
    except KeyError as e:
      raise ValueError(f'{path} has no row for {e.args[0]}') from e

  attr_names, attributes = rows(os.path.join(manual_dir, ATTRIBUTE_FILE), True)
  if tuple(attr_names) != ATTRIBUTE_NAMES:
    raise ValueError(f'{ATTRIBUTE_FILE}: unexpected attribute columns '
                     f'{attr_names[:5]}...')
  _, identity = rows(os.path.join(manual_dir, IDENTITY_FILE), False)
  out = {
      pipeline.KEY: np.asarray(keys, dtype=np.str_),
      'attributes': attributes > 0,  # the files say -1 / 1
      'identity': identity[:, 0].astype(np.int32),
  }
  lm68_path = os.path.join(manual_dir, LANDMARK68_FILE)
  if os.path.isfile(lm68_path):
    # Written by `id2image align` (data.align.align_folder): dlib's 68
    # points in the aligned images, as floats.
    with open(lm68_path) as f:
      rows68 = {r[0]: r[1:] for r in (line.split() for line in f) if r}
    missing = [k for k in keys if k not in rows68]
    if missing:
      raise ValueError(f'{lm68_path} has no row for {missing[:5]}')
    out['landmarks68'] = np.asarray([rows68[k] for k in keys],
                                    np.float32).reshape(-1, 68, 2)
    out['landmarks68_detected'] = np.ones(len(keys), bool)
  landmark_path = os.path.join(manual_dir, LANDMARK_FILE)
  if os.path.isfile(landmark_path):
    _, landmarks = rows(landmark_path, True)
    # The file's pixels are those of the 178x218 originals.
    scale = np.asarray([IMAGE_SIZE[1], IMAGE_SIZE[0]], np.float32)
    out['landmarks5'] = (landmarks.reshape(-1, 5, 2).astype(np.float32)
                         + 0.5) / scale
  return out


def _from_manual(split: str, manual_dir: str) -> pipeline.Source:
  t = pipeline.tf()
  labels = read_annotations(manual_dir, split)
  keys = labels['key']
  folder = os.path.join(manual_dir, IMAGES_DIR)
  zip_path = os.path.join(manual_dir, IMAGES_ZIP)
  use_folder = os.path.isdir(folder)

  def make_dataset(start: int):
    if use_folder:
      paths = [os.path.join(folder, k) for k in keys[start:]]
      images = t.data.Dataset.from_tensor_slices(
          t.constant(paths, t.string)).map(t.io.read_file)
    else:
      def read_zip():
        # Members are 'img_align_celeba/000001.jpg'; one sequential reader is
        # far faster than decoding, which runs in parallel downstream.
        with zipfile.ZipFile(zip_path) as z:
          members = {os.path.basename(n): n for n in z.namelist()}
          for key in keys[start:]:
            if key not in members:
              raise FileNotFoundError(f'{key} is not in {zip_path}')
            yield z.read(members[key])

      images = t.data.Dataset.from_generator(
          read_zip, output_signature=t.TensorSpec((), t.string))
      images = images.apply(
          t.data.experimental.assert_cardinality(len(keys) - start))
    rest = {name: value[start:] for name, value in labels.items()}
    return t.data.Dataset.zip(
        (images, t.data.Dataset.from_tensor_slices(rest))).map(
            lambda image, ex: {pipeline.IMAGE: image, **ex})

  split_kind = ('official partition' if os.path.isfile(
      os.path.join(manual_dir, PARTITION_FILE)) else
                'identity-disjoint split '
                f'{IDENTITY_SPLIT} (seed {IDENTITY_SPLIT_SEED})')
  return pipeline.Source(name=f'celeb_a/{split}', num_examples=len(keys),
                         make_dataset=make_dataset,
                         info=dict(_INFO, reader='manual', split=split_kind))
