"""Builds a `Source` from a config, for the command-line jobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from id2image_jax.data import celeba
from id2image_jax.data import folder
from id2image_jax.data import pipeline

# Not `from id2image_jax.data import lfw`: the package's __init__ binds the
# name `lfw` to this function, so that import gave the function where the
# module was meant (and ``source: lfw`` failed).
from id2image_jax.data.lfw import lfw as lfw_source


def from_config(config: Mapping[str, Any]) -> pipeline.Source:
  """A `Source` from a dict / ConfigDict (the ``data`` field of a job).

  Args:
    config: ``source`` is ``'celeb_a'``, ``'lfw'``, ``'folder'`` or the path
      of an image folder; the other fields are keyword arguments of
      `celeba.celeb_a` (``split``, ``data_dir``, ``manual_dir``, ``mode``,
      ``prepare``), `lfw.lfw` or `folder.image_folder` (``root``,
      ``labels_csv``, ``key_column``, ...). Fields that do not apply to the
      chosen source, or are None, are ignored.

  Returns:
    The source.
  """
  config = {k: v for k, v in dict(config).items() if v is not None}
  name = config.pop('source', None) or config.pop('name', None)
  if name is None:
    raise ValueError('data config needs a `source` (celeb_a, lfw, folder or '
                     'a folder path)')

  def pick(*fields):
    return {k: config[k] for k in fields if k in config}

  if name == 'celeb_a':
    return celeba.celeb_a(config.get('split', 'test'),
                          **pick('data_dir', 'manual_dir', 'mode', 'prepare'))
  if name == 'lfw':
    return lfw_source(**pick('data_dir', 'manual_dir', 'mode', 'prepare'))
  if name == 'folder' or os.path.isdir(os.path.expanduser(str(name))):
    root = config.get('root', name if name != 'folder' else None)
    if root is None:
      raise ValueError('data.source=folder needs data.root')
    return folder.image_folder(
        root, **pick('labels_csv', 'key_column', 'recursive', 'parent_label'))
  raise ValueError(f'unknown dataset {name!r}: use celeb_a, lfw, folder or '
                   'an existing folder path')
