"""A face data set of TFDS written out as a folder, one subfolder a person.

The audit reads faces from folders (`data.faces`); ``tfds:lfw`` becomes one
with `tfds_folder`, written once and reused.
"""

from __future__ import annotations

import os

from PIL import Image

from id2image_jax.data import pipeline
from id2image_jax.data import sources


def tfds_folder(name: str, root: str) -> str:
  """TFDS data set `name` as ``root/name/<person>/<key>.png``.

  A folder already there is returned as it is; a new one is written under
  a temporary name and renamed when complete.

  Args:
    name: the TFDS name, e.g. ``'lfw'`` (prepared, never downloaded).
    root: where the folder goes.

  Returns:
    The folder's path.
  """
  out = os.path.join(root, name)
  if os.path.isdir(out):
    return out
  source = sources.from_config({'source': name})
  tmp = out + '.tmp'
  for batch in pipeline.batches(source, 32):
    for key, image, ok, person in zip(
        batch['key'], batch['image'], batch['valid'],
        batch.get('name', batch['key'])):
      if ok:
        folder = os.path.join(tmp, str(person).replace('/', '_'))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(
            folder, os.path.basename(str(key)) + '.png'))
  os.replace(tmp, out)
  return out
