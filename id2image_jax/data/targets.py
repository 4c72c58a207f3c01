"""What an inversion inverts: descriptor targets, read or generated.

`load_targets` dispatches on a targets spec:

* ``''``: the **self-check**. Descriptors of images generated from known
  latents are inverted, so how well the inversion works is measurable:
  identity similarity reached (cosine between the target descriptor and the
  reconstruction's descriptor) and pixel PSNR/SSIM against the known source
  image.
* a ``.npy`` ([N, D] descriptors) or ``.npz`` (``descriptor`` [N, D] plus
  optional ``names`` [N], ``landmarks`` [N, 68, 2], ``histogram``
  [N, 3, bins]);
* a folder of face photos: each is cut the FFHQ way (`align`; photos
  without a detectable face are skipped and named), embedded with the
  encoder, and kept as the source image for metrics.

`predict_from_descriptors` fills landmark / histogram targets with heads
that predict them from the descriptor (the paper's attack).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tqdm
from PIL import Image

from id2image_jax import errors
from id2image_jax import losses
from id2image_jax import protocols
from id2image_jax.data import align as align_lib
from id2image_jax.data import arrays
from id2image_jax.data import images as images_lib
from id2image_jax.preprocess import uint8_to_unit_range

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


@dataclasses.dataclass
class Targets:
  """What to invert, row-aligned.

  Beside the descriptors, one field per term of `losses.AUX_TERMS` (named
  as the term) holds that term's targets.

  Attributes:
    descriptors: [N, D] float32 (NaN rows are reported and skipped).
    names: [N] row names (file names or row numbers).
    sources: [N, H, W, 3] known source images in [-1, 1], or None.
    landmarks: [N, 68, 2] target landmarks (normalised), or None.
    histogram: [N, 3, bins] target histograms, or None.
    skipped: row -> reason for rows that could not even be read.
    source_latents: [N, num_ws, w_dim] known latents (self-check only).
  """
  descriptors: np.ndarray
  names: list[str]
  sources: np.ndarray | None = None
  landmarks: np.ndarray | None = None
  histogram: np.ndarray | None = None
  skipped: dict[int, str] = dataclasses.field(default_factory=dict)
  source_latents: np.ndarray | None = None


def self_check_targets(generator: protocols.Generator,
                       encoder: protocols.Encoder, *, num_targets: int,
                       seed: int, truncation_psi: float) -> Targets:
  """Targets from images of known latents (see module docstring)."""
  if num_targets < 1:
    raise ValueError(f'num_targets must be >= 1, got {num_targets}')
  z = jax.random.normal(jax.random.key(seed),
                        (num_targets, generator.z_dim))
  ws = np.asarray(jax.jit(functools.partial(
      generator.mapping, truncation_psi=truncation_psi))(
          generator.variables, z))
  sources = generator.render_ws(ws, batch_size=16)
  return Targets(descriptors=encoder.embed(sources),
                 names=[f'selfcheck_{i:04d}' for i in range(num_targets)],
                 sources=sources, source_latents=ws)


def read_descriptor_file(path: str, *, dim: int) -> Targets:
  """Reads a .npy / .npz of descriptors; checks their size against `dim`.

  Raises:
    errors.BadInputError: not a valid .npy/.npz (`arrays.load_arrays`), or
      not descriptors of this encoder; the message names the file.
  """
  data = arrays.load_arrays(path)
  extras = {}
  if isinstance(data, dict):
    key = next((k for k in ('descriptor', 'descriptors') if k in data), None)
    if key is None:
      raise errors.BadInputError(f'{path} has no "descriptor" array (has: '
                                 f'{sorted(data)})')
    descriptors = data[key]
    extras = {k: data[k] for k in ('names', *losses.AUX_TERMS)
              if k in data}
  else:
    descriptors = data
  descriptors = np.asarray(descriptors)
  if descriptors.ndim == 1:
    descriptors = descriptors[None]
  if descriptors.ndim != 2 or descriptors.shape[0] == 0:
    raise errors.BadInputError(
        f'{path}: expected [N, D] descriptors with N >= 1, got shape '
        f'{descriptors.shape}')
  if descriptors.dtype.kind not in 'biuf':
    raise errors.BadInputError(f'{path}: descriptors of dtype '
                               f'{descriptors.dtype}, not numbers')
  if descriptors.shape[1] != dim:
    raise errors.BadInputError(
        f'{path}: descriptors have {descriptors.shape[1]} dimensions but the '
        f'encoder produces {dim}: invert with the encoder that made them')
  n = len(descriptors)
  # name -> (the shape it must have, in words; whether it has it).
  shapes = {
      'names': ('[N]', lambda s: s == (n,)),
      'landmarks': ('[N, 68, 2]', lambda s: s == (n, 68, 2)),
      'histogram': ('[N, 3, bins]', lambda s: len(s) == 3 and s[:2] == (n, 3)),
  }
  for name, (want, fits) in shapes.items():
    if name in extras and not fits(extras[name].shape):
      raise errors.BadInputError(
          f'{path}: {name} has shape {extras[name].shape}, expected {want} '
          f'with N = {n} descriptor rows')
  names = ([str(s) for s in extras['names']] if 'names' in extras else
           [f'row_{i:06d}' for i in range(n)])
  return Targets(descriptors=descriptors.astype(np.float32), names=names,
                 **{k: extras.get(k) for k in losses.AUX_TERMS})


def read_image_folder(path: str, *, resolution: int,
                      encoder: protocols.Encoder,
                      aligner: Any = None) -> Targets:
  """Embeds every usable image of a folder; the others are skipped, named.

  Args:
    path: a folder of face photos.
    resolution: images are brought to the generator's resolution, so that
      the encoder sees the same crop of sources and reconstructions.
    encoder: embeds them.
    aligner: an `align.FaceAligner`: each photo (any size) is cut the FFHQ
      way first, and photos without a detectable face are skipped. None
      takes the images as FFHQ-aligned already and only resizes them.
  """
  files = sorted(f for f in os.listdir(path)
                 if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise errors.BadInputError(
        f'{path} holds no images ({", ".join(IMAGE_SUFFIXES)})')
  images = np.full((len(files), resolution, resolution, 3), np.nan,
                   np.float32)
  skipped = {}
  for i, name in tqdm.tqdm(list(enumerate(files)), desc='images',
                           disable=aligner is None or len(files) < 8):
    try:
      rgb = images_lib.read_rgb(os.path.join(path, name))
    except images_lib.UnreadableImageError as e:
      skipped[i] = f'unreadable image {e}'
      continue
    if aligner is not None:
      rgb = aligner.align(rgb, resolution)
      if rgb is None:
        skipped[i] = f'no face detected in {name}'
        continue
    rgb = np.asarray(Image.fromarray(rgb).resize(
        (resolution, resolution), Image.Resampling.LANCZOS))
    images[i] = np.asarray(uint8_to_unit_range(rgb))
  good = np.flatnonzero(np.isfinite(images).all(axis=(1, 2, 3)))
  if not good.size:
    raise errors.BadInputError(f'no usable image in {path}: '
                     + '; '.join(skipped.values()))
  descriptors = np.full((len(files), encoder.dim), np.nan, np.float32)
  descriptors[good] = encoder.embed(images[good])
  return Targets(descriptors=descriptors, names=files, sources=images,
                 skipped=skipped)


def load_targets(spec: str, generator: protocols.Generator,
                 encoder: protocols.Encoder, *, num_targets: int, seed: int,
                 truncation_psi: float, align: bool = False) -> Targets:
  """Targets that `spec` names (module docstring).

  Args:
    spec: '' (self-check), a descriptor file or an image folder.
    generator: renders the self-check; sets the folder images' size.
    encoder: embeds self-check and folder images.
    num_targets, seed, truncation_psi: of the self-check.
    align: cut folder photos the FFHQ way first (`align.FaceAligner`).
  """
  if not spec:
    return self_check_targets(generator, encoder, num_targets=num_targets,
                              seed=seed, truncation_psi=truncation_psi)
  if not os.path.exists(spec):
    raise errors.MissingInputError(
        f'targets not found: {spec} (a .npy/.npz of '
                            'descriptors or a folder of face images)')
  if os.path.isdir(spec):
    return read_image_folder(
        spec, resolution=generator.resolution, encoder=encoder,
        aligner=align_lib.FaceAligner() if align else None)
  return read_descriptor_file(spec, dim=encoder.dim)


def safe_descriptors(targets: Targets) -> np.ndarray:
  """Descriptors with non-finite rows zeroed (those rows are skipped later,
  but a head's batch must not see NaN)."""
  finite = np.isfinite(targets.descriptors).all(axis=1)
  return np.where(finite[:, None], targets.descriptors, 0.0)


def predict_from_descriptors(targets: Targets,
                             predictors: Mapping[str, Any]) -> None:
  """Fills the targets of `losses.AUX_TERMS` (``targets.landmarks``,
  ``.histogram``) where still None.

  Args:
    targets: modified in place.
    predictors: term ('landmarks' / 'histogram') -> ``fn(descriptors
      [N, D]) -> [N, ...]`` (a loaded head's prediction).
  """
  safe = safe_descriptors(targets)
  for name in losses.AUX_TERMS:
    if predictors.get(name) is not None and getattr(targets, name) is None:
      setattr(targets, name, np.asarray(predictors[name](safe)))
