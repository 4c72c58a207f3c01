"""Sources of face images and the host pipeline that batches them.

A `Source` is a finite, ordered collection of examples: an encoded image,
a string key that names it, and labels. Every dataset in this package
(CelebA, LFW, a local folder) is turned into one, so the rest of the library
only sees `batches(source, ...)`: fixed-size numpy batches of uint8 NHWC
images (the last one padded, with a ``valid`` mask) decoded and resized in
parallel by tf.data on the host. TensorFlow only ever runs on the CPU here;
`tf()` hides the accelerators from it so it does not grab GPU memory that
JAX needs.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from id2image_jax import errors

# Keys every example dict carries besides its labels.
IMAGE = 'image'
KEY = 'key'
VALID = 'valid'


class DataNotFoundError(errors.MissingInputError):
  """A dataset is not on disk; the message says which files go where."""


@functools.cache
def tf():
  """Imports TensorFlow for input pipelines only, with accelerators hidden.

  TensorFlow would otherwise reserve most of the GPU memory on import of the
  first op. Hiding devices must happen before TF initialises them; if some
  other code already did, the devices stay as they are (nothing we can fix
  from here, and tensorflow-cpu has none anyway).

  Returns:
    The ``tensorflow`` module.
  """
  import tensorflow as tf_module  # pylint: disable=g-import-not-at-top
  try:
    tf_module.config.set_visible_devices([], 'GPU')
    tf_module.config.set_visible_devices([], 'TPU')
  except (RuntimeError, ValueError):
    pass
  return tf_module


@dataclasses.dataclass(frozen=True)
class Source:
  """A finite, deterministic, ordered dataset of face images.

  Attributes:
    name: what it is, e.g. ``'celeb_a/test'``; stored with descriptors.
    num_examples: number of examples.
    make_dataset: ``make_dataset(start) -> tf.data.Dataset`` of example dicts
      from index `start` on, always in the same order. Each example has
      ``'image'`` (encoded PNG/JPEG bytes, tf.string scalar), ``'key'``
      (tf.string scalar naming the example) and labels (fixed-shape tensors
      or strings).
    info: JSON-able facts about the labels, e.g. ``{'attribute_names': [...],
      'image_size': [218, 178]}``.
  """
  name: str
  num_examples: int
  make_dataset: Callable[[int], Any]
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return self.num_examples


def _decode(image_bytes, image_size):
  t = tf()
  image = t.io.decode_image(image_bytes, channels=3, expand_animations=False)
  if image_size is not None:
    # Antialiased so that downscaling (e.g. to a landmark CNN's input) does
    # not alias; rounded back to uint8 so every consumer sees one format.
    image = t.image.resize(image, image_size, method='bilinear',
                           antialias=True)
    image = t.cast(t.clip_by_value(t.round(image), 0, 255), t.uint8)
  return image


def make_tf_dataset(source: Source, batch_size: int, *, start: int = 0,
                    image_size: tuple[int, int] | None = None,
                    shuffle_buffer: int = 0, seed: int = 0,
                    drop_remainder: bool = False):
  """The tf.data pipeline behind `batches` (decoded, resized, batched).

  Args:
    source: what to read.
    batch_size: examples per batch.
    start: index of the first example (resuming).
    image_size: (height, width) to resize every image to, or None to keep
      the stored size (all images must then share one size).
    shuffle_buffer: if > 0, shuffle examples (before decoding) with this
      buffer and `seed`.
    seed: shuffle seed.
    drop_remainder: drop a last, smaller batch.

  Returns:
    A ``tf.data.Dataset`` of dict batches; images uint8 [B, H, W, 3].
  """
  t = tf()
  ds = source.make_dataset(start)
  if shuffle_buffer > 0:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
  ds = ds.map(_decoder(image_size), num_parallel_calls=t.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                num_parallel_calls=t.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(t.data.AUTOTUNE)


def _decoder(image_size):
  size = None if image_size is None else tuple(int(s) for s in image_size)

  def decode(example):
    example = dict(example)
    example[IMAGE] = _decode(example[IMAGE], size)
    return example

  return decode


def training_epochs(source: Source, batch_size: int, *,
                    image_size: Sequence[int] | None = None,
                    shuffle_buffer: int = 10_000, seed: int = 0,
                    cache: bool = False
                    ) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
  """Epochs of shuffled, full batches for training on images.

  One tf.data pipeline serves every epoch, so with `cache` the decoded and
  resized images are kept in host memory after the first epoch (e.g. CelebA
  at 128x128: 9 GB) instead of being decoded again each epoch; the shuffle
  order changes every epoch.

  Args:
    source: the images.
    batch_size: examples per batch; a last, smaller batch is dropped.
    image_size: (height, width) to resize to.
    shuffle_buffer: examples in the shuffle buffer (decoded images).
    seed: shuffle seed.
    cache: keep decoded images in memory.

  Returns:
    ``new_epoch()``, which iterates one epoch of numpy dict batches.
  """
  t = tf()
  ds = source.make_dataset(0).map(_decoder(image_size),
                                  num_parallel_calls=t.data.AUTOTUNE)
  if cache:
    ds = ds.cache()
  if shuffle_buffer > 0:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=True,
                num_parallel_calls=t.data.AUTOTUNE).prefetch(t.data.AUTOTUNE)

  def new_epoch():
    for batch in ds.as_numpy_iterator():
      yield _to_numpy(batch)

  return new_epoch


def _to_numpy(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.dtype == object:  # tf.string -> bytes objects -> str
      value = np.char.decode(value.astype(np.bytes_), 'utf-8')
    out[name] = value
  return out


def pad_batch(batch: Mapping[str, np.ndarray],
              batch_size: int) -> dict[str, np.ndarray]:
  """Pads every array of `batch` to `batch_size` rows; adds ``valid``.

  Padding keeps shapes fixed so a jitted consumer compiles once. Padded rows
  are zeros (empty strings for text) and ``valid`` is False for them.

  Args:
    batch: dict of arrays sharing their leading size n <= batch_size.
    batch_size: the size to pad to.

  Returns:
    A new dict with every array [batch_size, ...] and ``valid`` [batch_size].
  """
  sizes = {v.shape[0] for v in batch.values()}
  if len(sizes) != 1:
    raise ValueError(f'batch arrays disagree on their leading size: {sizes}')
  n = sizes.pop()
  if n > batch_size:
    raise ValueError(f'batch of {n} is larger than batch_size={batch_size}')
  out = {}
  for name, value in batch.items():
    if n < batch_size:
      pad = np.zeros((batch_size - n,) + value.shape[1:], value.dtype)
      value = np.concatenate([value, pad])
    out[name] = value
  out[VALID] = np.arange(batch_size) < n
  return out


def batches(source: Source, batch_size: int, *, start: int = 0,
            image_size: tuple[int, int] | None = None,
            shuffle_buffer: int = 0, seed: int = 0, pad: bool = True,
            drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Iterates over `source` in numpy batches of fixed size.

  Args:
    source: what to read.
    batch_size: examples per batch.
    start: index of the first example (to resume a partial run).
    image_size: (height, width) to resize to; None keeps the stored size.
    shuffle_buffer: > 0 to shuffle examples with a buffer of this size.
    seed: shuffle seed.
    pad: pad the last batch to `batch_size` (rows marked by ``valid``).
    drop_remainder: drop the last batch instead if it is smaller.

  Yields:
    dicts with ``image`` uint8 [B, H, W, 3], ``key`` str [B], the source's
    labels [B, ...] and ``valid`` bool [B] (all True except padding).
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if not 0 <= start <= source.num_examples:
    raise ValueError(f'start={start} is outside [0, {source.num_examples}]')
  if start == source.num_examples:
    return
  ds = make_tf_dataset(source, batch_size, start=start, image_size=image_size,
                       shuffle_buffer=shuffle_buffer, seed=seed,
                       drop_remainder=drop_remainder)
  for batch in ds.as_numpy_iterator():
    batch = _to_numpy(batch)
    if pad:
      batch = pad_batch(batch, batch_size)
    else:
      batch[VALID] = np.ones(batch[IMAGE].shape[0], bool)
    yield batch


def _is_numeric(value: np.ndarray) -> bool:
  return value.dtype.kind in 'biuf'


def prefetch_to_device(iterator: Iterable[Mapping[str, np.ndarray]], *,
                       size: int = 2,
                       sharding: jax.sharding.Sharding | None = None,
                       keys: Sequence[str] | None = None
                       ) -> Iterator[dict[str, Any]]:
  """Moves numeric arrays of each batch to device `size` batches ahead.

  Host-to-device copies are asynchronous in JAX, so issuing them early lets
  the transfer of batch i+1 overlap the computation on batch i. Strings stay
  on the host as numpy arrays.

  Args:
    iterator: yields dicts of numpy arrays.
    size: how many batches to keep in flight (>= 1).
    sharding: where to put the arrays; default: the default device. Use a
      ``NamedSharding`` over a batch axis to split batches across devices.
    keys: the entries to move; default every numeric one. Others stay numpy.

  Yields:
    The same dicts with the moved arrays as ``jax.Array``.
  """
  if size < 1:
    raise ValueError(f'size must be >= 1, got {size}')
  queue = collections.deque()

  def put(batch):
    return {k: (jax.device_put(v, sharding) if (
        _is_numeric(v) if keys is None else k in keys) else v)
            for k, v in batch.items()}

  iterator = iter(iterator)
  for batch in itertools.islice(iterator, size):
    queue.append(put(batch))
  while queue:
    yield queue.popleft()
    for batch in itertools.islice(iterator, 1):
      queue.append(put(batch))


def with_labels(source: Source, keys: Sequence[str],
                labels: Mapping[str, np.ndarray], *,
                name: str | None = None) -> Source:
  """The examples of `source` whose key is in `keys`, with extra labels.

  Joins labels computed elsewhere (e.g. the dlib landmarks stored with the
  descriptors) back onto the images, by key, inside tf.data.

  Args:
    source: the images.
    keys: [M] keys to keep; each must occur in `source` exactly once.
    labels: ``{name: [M, ...] array}`` aligned with `keys`.
    name: the new source's name; default the old one.

  Returns:
    A `Source` of M examples (in `source`'s order) with the extra labels.
  """
  t = tf()
  keys = np.asarray(keys, np.str_)
  if len(set(keys.tolist())) != len(keys):
    raise ValueError('keys must be unique')
  for label, value in labels.items():
    if len(value) != len(keys):
      raise ValueError(f'label {label!r} has {len(value)} rows for '
                       f'{len(keys)} keys')
  columns = {k: t.constant(np.asarray(v)) for k, v in labels.items()}

  def make_dataset(start: int):
    table = t.lookup.StaticHashTable(
        t.lookup.KeyValueTensorInitializer(
            t.constant(keys.tolist(), t.string),
            t.range(len(keys), dtype=t.int64)), default_value=-1)
    ds = source.make_dataset(0).map(
        lambda ex: (ex, table.lookup(ex[KEY])))
    ds = ds.filter(lambda ex, row: row >= 0)
    ds = ds.map(lambda ex, row: {
        **ex, **{k: t.gather(v, row) for k, v in columns.items()}})
    return ds.skip(start)

  return Source(name=name or source.name, num_examples=len(keys),
                make_dataset=make_dataset, info=source.info)


def concat_sources(sources: Sequence[Source]) -> Source:
  """One source over several, in order (e.g. all training splits)."""
  if len(sources) == 1:
    return sources[0]

  def make_dataset(start: int):
    ds = sources[0].make_dataset(0)
    for s in sources[1:]:
      ds = ds.concatenate(s.make_dataset(0))
    return ds.skip(start)

  return Source(name='+'.join(s.name for s in sources),
                num_examples=sum(s.num_examples for s in sources),
                make_dataset=make_dataset, info=sources[0].info)
