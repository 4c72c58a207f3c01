"""Descriptor datasets: a face encoder run over a whole dataset, with labels.

`embed_dataset` runs ``embed_fn`` over a `Source` in jit-compiled batches of
one size (the last one padded) and writes one ``.npz``:

  descriptor           float32 [N, D]
  key                  str [N]      the source's example keys, in order
  histogram            float32 [N, 3, bins]  hard RGB histogram (paper 3.2)
  landmarks68          float32 [N, 68, 2]    dlib pseudo ground truth, (x, y)
                                             normalised to [0, 1] (optional)
  landmarks68_detected bool [N]     dlib's detector found the face
  <label>              the source's labels (e.g. attributes [N, 40],
                       identity [N], landmarks5 [N, 5, 2])
  meta                 str []       JSON: source, its info, image size, ...

Labels that need the image (histogram, landmarks) are computed from the very
images the encoder sees. The run is resumable: every ``save_every`` batches
the rows so far go to ``<out>.partial/part-*.npz``; a rerun with the same
settings continues after the last saved row and the parts are merged at the
end.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from id2image_jax import errors
from id2image_jax import losses
from id2image_jax.data import arrays as arrays_lib
from id2image_jax.data import pipeline

EmbedFn = Callable[[jax.Array], jax.Array]
_PARTIAL = '.partial'
_MANIFEST = 'manifest.json'


def _manifest(source: pipeline.Source, batch_size: int, image_size,
              histogram_bins: int, landmarker) -> dict[str, Any]:
  return {
      'source': source.name, 'num_examples': source.num_examples,
      'batch_size': batch_size,
      'image_size': None if image_size is None else list(image_size),
      'histogram_bins': histogram_bins,
      'landmarks68': None if landmarker is None else landmarker.config,
  }


def _load_parts(partial_dir: str, manifest: Mapping[str, Any]
                ) -> tuple[list[str], int]:
  """Validated list of saved parts and the number of rows they hold."""
  path = os.path.join(partial_dir, _MANIFEST)
  with open(path) as f:
    saved = json.load(f)
  if saved != json.loads(json.dumps(manifest)):
    raise ValueError(
        f'{partial_dir} holds a partial run with other settings:\n  saved '
        f'{saved}\n  now   {manifest}\nDelete it or run with the same '
        'settings to resume.')
  parts = sorted(glob.glob(os.path.join(partial_dir, 'part-*.npz')))
  rows = 0
  for part in parts:
    start = int(os.path.basename(part)[5:-4].split('-')[0])
    if start != rows:
      raise ValueError(f'{partial_dir}: parts are not contiguous at {part}')
    with np.load(part) as z:
      rows += len(z['key'])
  return parts, rows


def _save(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _concat(chunks: Sequence[Mapping[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def embed_dataset(embed_fn: EmbedFn, source: pipeline.Source, out_path: str,
                  *, batch_size: int = 64,
                  image_size: Sequence[int] | None = None,
                  histogram_bins: int = 10, landmarker: Any = None,
                  save_every: int = 50, progress: bool = True,
                  sharding: jax.sharding.Sharding | None = None,
                  meta: Mapping[str, Any] | None = None,
                  overwrite: bool = False) -> str:
  """Embeds every image of `source`, with labels, into `out_path` (.npz).

  Args:
    embed_fn: ``embed_fn(images uint8 [B, H, W, 3]) -> [B, D]``, jittable.
    source: the images and their labels.
    out_path: the ``.npz`` to write (see module doc for its arrays).
    batch_size: images per jitted call; every call has this size.
    image_size: (height, width) to resize images to before everything else;
      None keeps the stored size.
    histogram_bins: bins per channel of the hard RGB histogram.
    landmarker: ``landmarker(images uint8 [B, H, W, 3]) -> (points [B, 68,
      2], detected [B])`` run on the host, e.g. `landmarks.Dlib68`; None for
      no 68-point labels. It runs while the device embeds the same batch.
    save_every: batches between partial saves (the resume granularity).
    progress: show a progress bar.
    sharding: optional input sharding (e.g. split the batch over devices).
    meta: extra JSON-able facts stored in the ``meta`` entry (encoder name).
    overwrite: embed again even if `out_path` exists; otherwise a finished
      file is kept and returned at once, so rerunning a multi-split job
      skips the splits already done.

  Returns:
    `out_path`.
  """
  out_path = os.fspath(out_path)
  if not out_path.endswith('.npz'):
    raise ValueError(f'out_path must end in .npz, got {out_path}')
  if os.path.isfile(out_path) and not overwrite:
    return out_path
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  manifest = _manifest(source, batch_size, image_size, histogram_bins,
                       landmarker)
  parts = _Parts(out_path + _PARTIAL, manifest, save_every=save_every)
  fed_size = _embed_rows(embed_fn, source, parts, batch_size=batch_size,
                         image_size=image_size,
                         histogram_bins=histogram_bins,
                         landmarker=landmarker, sharding=sharding,
                         progress=progress)
  arrays = parts.merged(source)
  if fed_size is None:  # everything came from earlier runs
    fed_size = image_size or source.info.get('image_size')
  info = {
      'source': source.name, 'source_info': dict(source.info),
      'num_examples': source.num_examples,
      'image_size': None if fed_size is None else [int(s) for s in fed_size],
      'descriptor_dim': int(arrays['descriptor'].shape[1]),
      'histogram_bins': histogram_bins, 'landmarks68': manifest['landmarks68'],
      'landmark_coordinates': '(x + 0.5, y + 0.5) / (width, height)',
      **dict(meta or {}),
  }
  arrays['meta'] = np.asarray(json.dumps(info, default=str))
  _save(out_path, arrays)
  shutil.rmtree(parts.directory)
  return out_path


class _Parts:
  """The rows embedded so far, saved every `save_every` batches as
  ``<directory>/part-<first row>-<end row>.npz`` (the resume points).

  Attributes:
    directory: the ``<out>.partial`` folder.
    start: rows held by the parts found on disk when opened.
  """

  def __init__(self, directory: str, manifest: Mapping[str, Any], *,
               save_every: int):
    """Opens `directory`: resumes its parts if its manifest matches."""
    self.directory = directory
    self._paths, self.start = [], 0
    if os.path.isdir(directory):
      self._paths, self.start = _load_parts(directory, manifest)
    else:
      os.makedirs(directory)
      with open(os.path.join(directory, _MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=2)
    self._save_every = save_every
    self._pending, self._pending_start = [], self.start

  def add(self, rows: dict[str, np.ndarray]) -> None:
    """Keeps one batch's rows; every `save_every` batches, saves them."""
    self._pending.append(rows)
    if len(self._pending) >= self._save_every:
      self.flush()

  def flush(self) -> None:
    """Saves the rows kept since the last save as one part."""
    if not self._pending:
      return
    rows = _concat(self._pending)
    end = self._pending_start + len(rows['key'])
    path = os.path.join(self.directory,
                        f'part-{self._pending_start:09d}-{end:09d}.npz')
    _save(path, rows)
    self._paths.append(path)
    self._pending, self._pending_start = [], end

  def merged(self, source: pipeline.Source) -> dict[str, np.ndarray]:
    """Every saved part as one set of arrays; checks none is missing."""
    if not self._paths:
      raise ValueError(f'{source.name} has no examples')
    loaded = []
    for part in self._paths:
      with np.load(part) as z:
        loaded.append({k: z[k] for k in z.files})
    arrays = _concat(loaded)
    if len(arrays['key']) != source.num_examples:
      raise RuntimeError(f'embedded {len(arrays["key"])} of '
                         f'{source.num_examples} examples')
    return arrays


def _embed_rows(embed_fn: EmbedFn, source: pipeline.Source, parts: _Parts,
                *, batch_size: int, image_size, histogram_bins: int,
                landmarker, sharding, progress: bool):
  """Embeds the rows after ``parts.start`` into `parts` (saved at the end).

  Returns:
    The (height, width) the encoder was fed, or None when no batch ran.
  """

  @jax.jit
  def step(images):
    return embed_fn(images), losses.image_histogram(
        images, value_range=(0.0, 255.0), bins=histogram_bins)

  bar = tqdm.tqdm(total=source.num_examples, initial=parts.start,
                  disable=not progress, unit='img', desc=source.name,
                  smoothing=0.1)
  t0, done = time.perf_counter(), 0

  def collect(rows, n, descriptors, histograms):
    nonlocal done
    rows['descriptor'] = np.asarray(descriptors, np.float32)[:n]
    rows['histogram'] = np.asarray(histograms)[:n]
    parts.add(rows)
    done += n
    bar.update(n)
    bar.set_postfix(img_per_s=f'{done / (time.perf_counter() - t0):.0f}')

  # The host keeps its copy of the images (for dlib); a second entry goes to
  # the device one batch ahead.
  stream = ({**b, '_device_image': b[pipeline.IMAGE]} for b in
            pipeline.batches(source, batch_size, start=parts.start,
                             image_size=image_size))
  pending, fed_size = None, None  # the previous batch, results on device
  for batch in pipeline.prefetch_to_device(stream, size=2, sharding=sharding,
                                           keys=('_device_image',)):
    images = batch.pop(pipeline.IMAGE)
    # Dispatch batch i, then collect batch i - 1: reading results waits for
    # the device, so the device always has the next batch queued.
    outputs = step(batch.pop('_device_image'))
    if pending is not None:
      collect(*pending)
    n = int(batch.pop(pipeline.VALID).sum())  # padding sits at the end
    rows = {k: v[:n] for k, v in batch.items()}
    if landmarker is not None:  # runs while the device embeds
      rows['landmarks68'], rows['landmarks68_detected'] = landmarker(
          images[:n])
    fed_size = images.shape[1:3]
    pending = (rows, n, *outputs)
  if pending is not None:
    collect(*pending)
  parts.flush()
  bar.close()
  return fed_size


def load_descriptors(paths: str | Sequence[str]) -> dict[str, Any]:
  """Loads (and concatenates) descriptor files written by `embed_dataset`.

  Args:
    paths: one ``.npz`` or several with the same arrays (e.g. CelebA train
      and validation, the paper's 188k training images).

  Returns:
    ``{array name: np.ndarray}`` plus ``'meta'``: the first file's metadata
    dict (with ``'files'`` listing all paths).
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  loaded, meta = [], None
  for path in paths:
    arrays = arrays_lib.load_arrays(path)
    if not isinstance(arrays, dict) or 'meta' not in arrays:
      raise errors.BadInputError(
          f'{path} is not a descriptor file of `id2image embed` (no "meta" '
          'array)')
    try:
      info = json.loads(str(arrays.pop('meta')))
    except ValueError:
      raise errors.BadInputError(f'{path}: its "meta" array is not JSON'
                                 ) from None
    meta = meta or info
    loaded.append(arrays)
  names = set(loaded[0])
  for path, arrays in zip(paths, loaded):
    if set(arrays) != names:
      raise errors.BadInputError(f'{path} has arrays {sorted(arrays)}, '
                                 f'expected {sorted(names)}')
  out = _concat(loaded)
  out['meta'] = dict(meta, files=[os.fspath(p) for p in paths])
  return out
