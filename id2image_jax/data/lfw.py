"""Labeled Faces in the Wild (250x250, one folder per person), never
downloaded.

Read from a prepared TFDS dataset (``<data_dir>/lfw/0.1.1``), from the
extracted archive (``<manual_dir>/lfw/<Person_Name>/<Person_Name>_0001.jpg``)
directly, or built into TFDS from ``<manual_dir>/lfw.tgz`` with
``prepare=True``. Each example has the label ``name`` (the person, a string).
TFDS has one split, ``'train'``, holding all 13,233 images.
"""

from __future__ import annotations

import os
from typing import Literal

from id2image_jax.data import _tfds
from id2image_jax.data import celeba
from id2image_jax.data import folder
from id2image_jax.data import pipeline

TFDS_NAME = 'lfw'
TFDS_VERSION = '0.1.1'
ARCHIVE = 'lfw.tgz'  # name and size from TFDS' lfw checksums.tsv
ARCHIVE_SIZE = 180566744
EXTRACTED_DIR = 'lfw'
IMAGE_SIZE = (250, 250)


def instructions(data_dir: str, manual_dir: str) -> str:
  return '\n'.join([
      'LFW was not found. Nothing is downloaded; either',
      f'  (a) put a prepared TFDS dataset at '
      f'{os.path.join(data_dir, TFDS_NAME, TFDS_VERSION)}, or',
      f'  (b) extract lfw.tgz (http://vis-www.cs.umass.edu/lfw/, "All images '
      f'as gzipped tar file", {ARCHIVE_SIZE} bytes) so that '
      f'{os.path.join(manual_dir, EXTRACTED_DIR, "<Person_Name>", "*.jpg")} '
      'exist, or',
      f'  (c) put {ARCHIVE} itself in {manual_dir} and pass prepare=True.',
  ])


def lfw(*, data_dir: str | None = None, manual_dir: str | None = None,
        mode: Literal['auto', 'tfds', 'manual'] = 'auto',
        prepare: bool = False) -> pipeline.Source:
  """LFW as a `Source` with the string label ``name``.

  Args:
    data_dir: TFDS data dir; default TFDS' default.
    manual_dir: folder holding ``lfw/`` (extracted) or ``lfw.tgz``; default
      ``<data_dir>/downloads/manual``.
    mode: ``'tfds'``, ``'manual'`` or ``'auto'`` (first that exists).
    prepare: build the TFDS dataset from ``lfw.tgz`` in `manual_dir` when no
      prepared one exists.

  Returns:
    A `pipeline.Source` named ``'lfw/train'`` (all images).

  Raises:
    DataNotFoundError: nothing usable on disk; says what goes where.
  """
  data_dir = os.path.expanduser(data_dir or celeba.default_data_dir())
  manual_dir = os.path.expanduser(
      manual_dir or celeba.default_manual_dir(data_dir))
  help_text = instructions(data_dir, manual_dir)
  if mode not in ('auto', 'tfds', 'manual'):
    raise ValueError(f'mode must be auto, tfds or manual, got {mode!r}')
  use_tfds = mode == 'tfds' or (
      mode == 'auto' and _tfds.is_prepared(data_dir, TFDS_NAME, TFDS_VERSION))
  extracted = os.path.join(manual_dir, EXTRACTED_DIR)
  if not use_tfds and mode != 'manual' and prepare:
    if not os.path.isfile(os.path.join(manual_dir, ARCHIVE)):
      raise pipeline.DataNotFoundError(
          f'{help_text}\nMissing: {os.path.join(manual_dir, ARCHIVE)}')
    _tfds.prepare_from_manual(TFDS_NAME, data_dir, manual_dir)
    use_tfds = True
  if use_tfds:

    def convert(ex):
      return {pipeline.IMAGE: ex['image'], pipeline.KEY: ex['tfds_id'],
              'name': ex['label']}

    return _tfds.source(TFDS_NAME, 'train', data_dir=data_dir,
                        convert=convert, help_text=help_text,
                        info={'dataset': 'lfw', 'image_size': IMAGE_SIZE})
  if not os.path.isdir(extracted):
    raise pipeline.DataNotFoundError(f'{help_text}\nMissing: {extracted}/')
  src = folder.image_folder(extracted, parent_label='name', name='lfw/train')
  return pipeline.Source(name=src.name, num_examples=src.num_examples,
                         make_dataset=src.make_dataset,
                         info={'dataset': 'lfw', 'image_size': IMAGE_SIZE,
                               'reader': 'manual'})
