"""Builds a `Source` from a config, for the command-line jobs."""

from __future__ import annotations

from typing import Any, Mapping

from id2image_jax.data import celeba
from id2image_jax.data import folder
from id2image_jax.data import lfw
from id2image_jax.data import pipeline


def from_config(config: Mapping[str, Any]) -> pipeline.Source:
  """A `Source` from a dict / ConfigDict.

  Args:
    config: ``name`` is ``'celeb_a'``, ``'lfw'`` or ``'folder'``; the other
      fields are the keyword arguments of `celeba.celeb_a` (``split``,
      ``data_dir``, ``manual_dir``, ``mode``, ``prepare``), `lfw.lfw` or
      `folder.image_folder` (``root``, ``labels_csv``, ``key_column``, ...).
      Fields set to None are left at their defaults.

  Returns:
    The source.
  """
  config = dict(config)
  name = config.pop('name')
  kwargs = {k: v for k, v in config.items() if v is not None}
  if name == 'celeb_a':
    split = kwargs.pop('split', 'test')
    return celeba.celeb_a(split, **kwargs)
  if name == 'lfw':
    kwargs.pop('split', None)
    return lfw.lfw(**kwargs)
  if name == 'folder':
    kwargs.pop('split', None)
    return folder.image_folder(kwargs.pop('root'), **kwargs)
  raise ValueError(f'unknown dataset {name!r}: use celeb_a, lfw or folder')
