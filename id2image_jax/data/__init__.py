"""Face image datasets (CelebA, LFW, local folders) as host input pipelines.

Every dataset becomes a `Source`; `batches` turns one into fixed-size numpy
batches (uint8 NHWC images, string keys, labels, a ``valid`` mask) and
`prefetch_to_device` moves them to the accelerator ahead of use. Nothing is
ever downloaded: missing data raises `DataNotFoundError` naming the files.
"""

from id2image_jax.data.celeba import ATTRIBUTE_NAMES as CELEBA_ATTRIBUTES
from id2image_jax.data.celeba import celeb_a
from id2image_jax.data.folder import image_folder
from id2image_jax.data.lfw import lfw
from id2image_jax.data.pipeline import DataNotFoundError
from id2image_jax.data.pipeline import Source
from id2image_jax.data.pipeline import batches
from id2image_jax.data.pipeline import pad_batch
from id2image_jax.data.pipeline import prefetch_to_device
from id2image_jax.data.sources import from_config

__all__ = [
    'CELEBA_ATTRIBUTES', 'DataNotFoundError', 'Source', 'batches', 'celeb_a',
    'from_config', 'image_folder', 'lfw', 'pad_batch', 'prefetch_to_device',
]
