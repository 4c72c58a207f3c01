"""``id2image embed``: a face encoder run over a dataset, with labels.

Writes one descriptor ``.npz`` per split (`data.descriptors.embed_dataset`:
descriptors, keys, histograms, dlib landmark pseudo ground truth, the
source's labels), resumable. Config: configs/embed.py.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax.numpy as jnp

from id2image_jax import data as data_lib
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax.data import descriptors
from id2image_jax.data import dlib_landmarks
from id2image_jax.inversion import sharding
from id2image_jax.jobs import common

log = logging.getLogger(__name__)


def run(config: Any, *, embed_fn: descriptors.EmbedFn | None = None,
              landmarker: Any = None) -> list[str]:
  """Embeds the configured dataset splits (configs/embed.py).

  Args:
    config: see configs/embed.py (``data.split`` may list several splits,
      comma-separated; ``out`` is a pattern with ``{encoder}`` and
      ``{split}``).
    embed_fn: use this instead of loading ``config.encoder``.
    landmarker: use this instead of dlib (tests, other labellers).

  Returns:
    The written ``.npz`` paths, one per split.
  """
  if embed_fn is None:
    if not config.encoder:
      raise errors.UsageError(
          'set config.encoder (--encoder): dlib, a public encoder checkpoint '
          'file, KIND:PATH or a converted checkpoint directory')
    # config.crop: the box of the dataset's images the encoder reads; ()
    # = the encoder's own FFHQ box (for FFHQ-aligned images, `id2image
    # align`).
    encoder = loading.load_encoder(config.encoder,
                                   crop=tuple(config.crop) or None,
                                   dtype=jnp.dtype(config.dtype))
    embed_fn = functools.partial(encoder.batch_fn(), encoder.variables)
  name = config.encoder_name or common.encoder_file_stem(config.encoder)
  lm = config.landmarks
  own_landmarker = landmarker is None and lm.enabled
  if own_landmarker:
    landmarker = dlib_landmarks.Dlib68(face_box=lm.face_box,
                                       upsample=lm.upsample,
                                       num_workers=lm.num_workers)
  paths = []
  try:
    for split in common.names(config.data.split or 'test'):
      source = data_lib.from_config({**config.data.to_dict(), 'split': split})
      out = config.out.format(encoder=name, split=split)
      log.info('embedding %s (%d images) -> %s', source.name,
               source.num_examples, out)
      paths.append(descriptors.embed_dataset(
          embed_fn, source, out, batch_size=config.batch_size,
          sharding=sharding.batch_sharding(config.batch_size),
          image_size=tuple(config.image_size) if config.image_size else None,
          histogram_bins=config.histogram_bins, landmarker=landmarker,
          save_every=config.save_every, progress=config.progress,
          overwrite=config.overwrite,
          meta={'encoder': name, 'encoder_path': str(config.encoder)}))
  finally:
    if own_landmarker:
      landmarker.close()
  return paths
