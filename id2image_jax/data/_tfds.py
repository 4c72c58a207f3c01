"""Reading prepared TFDS datasets as `Source`s, never downloading."""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from id2image_jax.data import pipeline


def is_prepared(data_dir: str, name: str, version: str) -> bool:
  """Whether ``<data_dir>/<name>/<version>`` holds a prepared dataset."""
  return os.path.isfile(os.path.join(data_dir, name, version,
                                     'dataset_info.json'))


def prepare_from_manual(name: str, data_dir: str, manual_dir: str) -> None:
  """``download_and_prepare`` that may only use files in `manual_dir`.

  TFDS' download manager takes a file from the manual dir, named as in the
  builder's checksums.tsv, before it would fetch the URL. Callers check that
  every such file is present first, so no download is attempted; a file with
  the wrong checksum makes TFDS raise instead.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  pipeline.tf()
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def source(name: str, split: str, *, data_dir: str,
           convert: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           info: Mapping[str, Any], help_text: str) -> pipeline.Source:
  """A `Source` over a prepared TFDS split.

  Images are read undecoded (decoding happens in parallel in the batch
  pipeline) and each example gets its TFDS record id as ``key``.

  Args:
    name: TFDS name, e.g. ``'celeb_a'``.
    split: split name.
    data_dir: TFDS data dir.
    convert: maps a TFDS example (``image`` bytes, ``tfds_id``, features) to
      our example dict (``image``, ``key``, labels); runs inside tf.data.
    info: JSON-able facts stored with the source.
    help_text: appended to the error when the data is missing.

  Returns:
    The source, named ``'<name>/<split>'``.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  t = pipeline.tf()
  builder = tfds.builder(name, data_dir=data_dir)

  def make_dataset(start: int):
    try:
      ds = builder.as_dataset(
          split=f'{split}[{start}:]' if start else split,
          shuffle_files=False,
          decoders={'image': tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(add_tfds_id=True))
    except AssertionError as e:  # TFDS' "could not find data in ..."
      raise pipeline.DataNotFoundError(f'{e}\n{help_text}') from e
    return ds.map(convert, num_parallel_calls=t.data.AUTOTUNE,
                  deterministic=True)

  num = int(make_dataset(0).cardinality())
  if num < 0:
    raise ValueError(f'TFDS did not report the size of {name}/{split}')
  return pipeline.Source(name=f'{name}/{split}', num_examples=num,
                         make_dataset=make_dataset,
                         info=dict(info, reader='tfds'))
