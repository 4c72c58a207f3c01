"""Evaluation targets: what is inverted, the originals, and the aux targets.

**Originals and the impostor pool.** Targets come from ``config.targets`` as
in the invert job (self-check, descriptor file, or image folder). Identity
metrics under an encoder other than the attacked one need the original
images, so they exist for the self-check and image folders only. The pool
of originals whose pairs set the verification threshold is

* self-check: the inverted targets plus ``num_impostor_images`` more images
  of known latents that are only embedded, never inverted (cheap, and it
  gets the pair count to the >= 1000 that FMR 1e-3 needs);
* image folder: every readable image;
* a folder whose people are known (`people_layout`): CelebA layout (an
  identity file) or one subfolder per person: people with two or more
  images give the targets (image A inverted, images B kept for the type-II
  attack), people with one image give type-I-only targets or only
  impostors (``config.one_photo_people``), plus images of other people.

Without identity annotations every original is taken as its own identity
(labels = pool row), which is exact for the self-check. For a folder with
several images per person this counts same-person pairs as impostors (a
stricter threshold).

**Landmark and histogram targets** (``config.aux_targets``):

* ``'heads'``: predicted from the descriptor by the heads that
  ``id2image leakage`` trains (``heads.landmarks``, ``heads.histogram``):
  the paper's attack, which sees only the descriptor;
* ``'measured'``: measured on the original images: the hard histogram
  (`losses.image_histogram`) and the image->landmark CNN's landmarks. On
  the self-check the originals are known, so this is the *oracle* setting:
  an upper bound on what descriptor heads can give;
* ``'auto'`` (default): heads where given, else measured where originals
  exist.

Arrays stored in a targets ``.npz`` (``landmarks``, ``histogram``) are used
as given. The landmark loss also needs the image->landmark CNN
(``heads.image_landmarks``) on the reconstruction; without it the landmark
term is unavailable, whatever the targets.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np

from id2image_jax import errors
from id2image_jax import losses
from id2image_jax import protocols
from id2image_jax.data import align
from id2image_jax.data import celeba
from id2image_jax.data import faces as faces_lib
from id2image_jax.data import images as images_lib
from id2image_jax.data import targets as targets_lib
from id2image_jax.preprocess import uint8_to_unit_range

AUX_MODES = ('auto', 'heads', 'measured')
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalTargets:
  """Targets plus the pool of originals that sets verification thresholds.

  Attributes:
    targets: the invert job's `Targets` (rows that are inverted).
    pool_images: [M, H, W, 3] original images in [-1, 1], or None.
    pool_labels: [M] a label per image; target row i has label i.
    pool_identity: [M] the person in each image (= pool_labels when each
      image is taken as its own person).
    knows_identities: True when `pool_identity` comes from identity
      annotations (then type-II scores exist).
    pool_descriptors: [M, D] descriptors of the pool under the attacked
      encoder (when there are no images: the target descriptors).
    notes: how the targets were chosen, for the report (layout, people
      with and without a second photo, photos without a detected face).
    unreadable: image -> why, for images of a people folder that could not
      be read and were left out (`images.read_rgb`).
  """
  targets: targets_lib.Targets
  pool_images: np.ndarray | None
  pool_labels: np.ndarray
  pool_descriptors: np.ndarray
  pool_identity: np.ndarray | None = None
  knows_identities: bool = False
  notes: dict[str, Any] = dataclasses.field(default_factory=dict)
  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.pool_identity is None:
      self.pool_identity = self.pool_labels

  def second_photos(self) -> np.ndarray | None:
    """[N, H, W, 3] another photo of each target's person (the type-II
    comparison), or None without identities or images."""
    if not self.knows_identities or self.pool_images is None:
      return None
    n = len(self.targets.descriptors)
    found = []
    for i in range(n):
      same = np.flatnonzero(self.pool_identity == self.pool_identity[i])
      same = same[same != i]
      if not len(same):
        return None
      found.append(same[0])
    return self.pool_images[np.asarray(found)]


def _rows(targets: targets_lib.Targets, n: int) -> targets_lib.Targets:
  cut = lambda x: None if x is None else x[:n]
  return dataclasses.replace(
      targets, descriptors=targets.descriptors[:n], names=targets.names[:n],
      sources=cut(targets.sources), landmarks=cut(targets.landmarks),
      histogram=cut(targets.histogram), source_latents=cut(
          targets.source_latents),
      skipped={r: w for r, w in targets.skipped.items() if r < n})




ONE_PHOTO_MODES = ('targets', 'pool')


def knows_people(folder: str) -> bool:
  """A CelebA-layout folder (identity file) or one subfolder per person."""
  if os.path.isfile(os.path.join(folder, celeba.IDENTITY_FILE)):
    return True
  return os.path.isdir(folder) and any(
      os.path.isdir(os.path.join(folder, e)) and e != celeba.IMAGES_DIR
      for e in os.listdir(folder))


def _people(config: Any, folder: str) -> tuple[np.ndarray, np.ndarray, str]:
  """(image keys, person of each, which people) of an aligned folder."""
  if os.path.isfile(os.path.join(folder, celeba.IDENTITY_FILE)):
    ann = celeba.read_annotations(folder, config.split)
    return (ann['key'], ann['identity'],
            f'CelebA layout, {config.split} split (identity-disjoint)')
  lm_path = os.path.join(folder, align.LANDMARK_FILE)
  if os.path.isfile(lm_path):
    with open(lm_path) as f:
      keys = sorted(r.split()[0] for r in f if r.strip())
  else:
    keys = align.image_names(faces_lib.images_folder(folder))
  if not any('/' in k for k in keys):
    raise errors.BadInputError(f'{folder}: no person subfolders and no '
                               f'{celeba.IDENTITY_FILE}: who is who is '
                               'unknown')
  # A person is named by their folder.
  people = np.asarray([k.split('/')[0] if '/' in k else k for k in keys])
  return (np.asarray(keys), people,
          'one subfolder per person, every person of the folder')


def _skipped_photos(folder: str, people: set[Any]) -> dict[str, str]:
  """Photos of `people` that alignment left out (no face found)."""
  path = os.path.join(folder, align.SKIPPED_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    skipped = dict(line.rstrip('\n').split(' ', 1) for line in f
                   if line.strip())
  id_path = os.path.join(folder, celeba.IDENTITY_FILE)
  if os.path.isfile(id_path):
    with open(id_path) as f:
      owner = {r[0]: int(r[1]) for r in (line.split() for line in f) if r}
  else:
    owner = {k: k.split('/')[0] for k in skipped}
  return {k: v for k, v in sorted(skipped.items())
          if owner.get(k) in people}


def _people_order(config: Any, people: np.ndarray, mode: str, *,
                  where: str) -> tuple[np.ndarray, int, np.ndarray]:
  """(pool rows: the targets' first images, their other images, impostor
  images; the number of targets; the chosen people), as `people_layout`
  says."""
  ids, counts = np.unique(people, return_counts=True)
  rng = np.random.default_rng(config.seed)
  chosen = rng.permutation(ids[counts >= 2])
  if mode == 'targets':
    chosen = np.concatenate([chosen, rng.permutation(ids[counts < 2])])
  if config.num_targets > 0:
    chosen = chosen[:config.num_targets]
  if not len(chosen):
    raise errors.BadInputError(
        f'{config.targets} ({where}) has no person with two or more '
        'readable images'
        + ('' if mode == 'targets' else
           ": set one_photo_people='targets' for a type-I-only attack"))
  rows = [np.flatnonzero(people == p) for p in chosen]
  firsts = [r[0] for r in rows]
  others = [i for r in rows for i in r[1:]]
  rest = np.flatnonzero(~np.isin(people, chosen))
  extra = np.random.default_rng(config.seed + 1).permutation(rest)[
      :config.num_impostor_images]
  return (np.concatenate([firsts, others, extra]).astype(int), len(firsts),
          chosen)


def people_layout(config: Any, encoder: protocols.Encoder, *,
                  folder: str | None = None) -> EvalTargets:
  """Targets and pool from an aligned folder whose people are known.

  The folder is CelebA layout (an identity file; ``config.split`` picks
  the identity-disjoint split) or holds one subfolder per person (every
  person is used). People with two or more images come first, in a fixed
  shuffled order (``config.seed``): their first image A is inverted and
  every image of them is in the pool (type II compares the reconstruction
  with their other images B). People with one image are type-I-only
  targets after them (``config.one_photo_people='targets'``) or only
  impostors ('pool'). ``config.num_targets`` keeps the first of them (0:
  all). Plus ``config.num_impostor_images`` images of people who are not
  targets, so that impostor pairs (different people, each pair once) set
  the thresholds. The folder's images are taken as FFHQ-aligned
  (`id2image align`).
  """
  folder = folder or config.targets
  mode = getattr(config, 'one_photo_people', 'pool')
  if mode not in ONE_PHOTO_MODES:
    raise errors.UsageError(f'one_photo_people must be one of '
                            f'{ONE_PHOTO_MODES}, got {mode!r}')
  keys, people, which = _people(config, folder)
  images_dir = faces_lib.images_folder(folder)
  read, unreadable = {}, {}
  while True:
    # An unreadable image leaves the folder and the choice is made again
    # (the same choice when every image reads).
    order, n, chosen = _people_order(config, people, mode, where=which)
    for k in keys[order]:
      if k not in read and k not in unreadable:
        try:
          read[k] = images_lib.read_rgb(os.path.join(images_dir, k))
        except images_lib.UnreadableImageError as e:
          unreadable[k] = e.why
    if not any(k in unreadable for k in keys[order]):
      break
    keep = ~np.isin(keys, list(unreadable))
    keys, people = keys[keep], people[keep]
  for k, why in unreadable.items():
    _log.warning('skipped %s: unreadable image: %s', k, why)
  images = np.asarray(uint8_to_unit_range(np.stack(
      [read[k] for k in keys[order]])))
  descriptors = encoder.embed(images)
  targets = targets_lib.Targets(
      descriptors=descriptors[:n], names=[str(k) for k in keys[order[:n]]],
      sources=images[:n])
  ids, counts = np.unique(people, return_counts=True)
  two = int(np.sum(np.isin(chosen, ids[counts >= 2])))
  notes = {
      'layout': which,
      'people': n,
      'people_with_a_second_photo': two,
      'people_with_one_photo': n - two,
      'one_photo_people': mode,
      'people_in_folder': int(len(ids)),
      'people_in_folder_with_two_photos': int(np.sum(counts >= 2)),
      'skipped_photos': _skipped_photos(folder, set(chosen.tolist())),
      'unreadable_photos': dict(unreadable),
  }
  return EvalTargets(targets=targets, pool_images=images,
                     pool_labels=np.arange(len(order)),
                     pool_descriptors=descriptors,
                     pool_identity=people[order], knows_identities=True,
                     notes=notes, unreadable=unreadable)


def _aligned(config: Any, folder: str) -> str:
  """`folder` if it is aligned (or taken as aligned), else an aligned copy
  in the work directory (made once; a rerun reuses it)."""
  if (os.path.isfile(os.path.join(folder, align.LANDMARK_FILE))
      or not config.align_faces):
    return folder
  out = os.path.join(config.workdir, 'aligned')
  align.align_folder(folder, out, progress=config.progress)
  return out


def load(config: Any, generator: protocols.Generator,
         encoder: protocols.Encoder) -> EvalTargets:
  """Reads or generates the targets and the pool (module docstring)."""
  if config.targets and knows_people(config.targets):
    return people_layout(config, encoder,
                         folder=_aligned(config, config.targets))
  if not config.targets:
    n, extra = config.num_targets, config.num_impostor_images
    if extra < 0:
      raise errors.UsageError(f'num_impostor_images must be >= 0, got {extra}')
    pool = targets_lib.self_check_targets(
        generator, encoder, num_targets=n + extra, seed=config.seed + 1,
        truncation_psi=config.self_check_truncation)
    return EvalTargets(targets=_rows(pool, n), pool_images=pool.sources,
                       pool_labels=np.arange(n + extra),
                       pool_descriptors=pool.descriptors)
  targets = targets_lib.load_targets(
      config.targets, generator, encoder, num_targets=config.num_targets,
      seed=config.seed + 1, truncation_psi=config.self_check_truncation,
      align=config.align_faces)
  n = len(targets.descriptors)
  usable = np.isfinite(targets.descriptors).all(axis=1)
  usable[list(targets.skipped)] = False
  labels = np.flatnonzero(usable)
  images = None
  if targets.sources is not None:
    images = targets.sources[labels]
  if not labels.size:
    raise errors.BadInputError(
        f'none of the {n} targets in {config.targets} is usable')
  return EvalTargets(targets=targets, pool_images=images, pool_labels=labels,
                     pool_descriptors=targets.descriptors[labels])


def attach_aux(config: Any, targets: targets_lib.Targets, *,
               predictors: dict[str, Any],
               landmark_net: protocols.LandmarkNet | None
               ) -> dict[str, dict]:
  """Fills ``targets.landmarks`` / ``targets.histogram`` per `aux_targets`.

  Args:
    config: the evaluate config (``aux_targets``, ``heads``: the paths, for
      the report).
    targets: modified in place.
    predictors: the loaded descriptor heads, 'landmarks' / 'histogram' ->
      ``fn(descriptors) -> targets`` (absent when not configured).
    landmark_net: the image->landmark network, or None.

  Returns:
    term -> ``{'from': 'heads' | 'images' | 'file', 'source': words}``
    when usable, or ``{'unavailable': why}``.
  """
  mode = config.aux_targets
  if mode not in AUX_MODES:
    raise errors.UsageError(
        f'aux_targets must be one of {AUX_MODES}, got {mode!r}')
  heads = dict(config.heads)
  originals = targets.sources is not None
  use_heads, use_images = mode in ('auto', 'heads'), mode in ('auto',
                                                              'measured')
  out = {}
  if landmark_net is None:
    # The landmark loss compares the reconstruction's landmarks.
    targets.landmarks = None
    out['landmarks'] = {'unavailable': (
        'no image->landmark model (heads.image_landmarks): the landmark '
        'loss compares the landmarks of the reconstruction, which needs '
        'that CNN; train it with `id2image leakage` (saved under '
        '<workdir>/heads/image/landmarks_cnn)')}
  # term -> (how the originals are measured, in words; the measurement;
  #          the head that predicts it from the descriptor).
  measured = {
      'histogram': ('(losses.image_histogram): an oracle, the true '
                    'histogram', lambda x: np.asarray(losses.image_histogram(
                        np.nan_to_num(x, nan=-1.0), value_range=(-1.0, 1.0))),
                    'ID->histogram head (heads.histogram, trained by '
                    '`id2image leakage`)'),
      'landmarks': ('by the image->landmark network '
                    f'{getattr(landmark_net, "source", "")}: an oracle',
                    getattr(landmark_net, 'predict', None),
                    'ID->landmark head (heads.landmarks)'),
  }
  for term, (how, measure, head) in measured.items():
    if term in out:
      continue
    if getattr(targets, term) is not None:
      out[term] = {'from': 'file', 'source': f'given in {config.targets}'}
    elif use_heads and predictors.get(term):
      targets_lib.predict_from_descriptors(targets,
                                           {term: predictors[term]})
      out[term] = {'from': 'heads', 'source': (
          f'predicted from the descriptor by the {head.split(" (")[0]} '
          f"{heads[term]} (the paper's attack)")}
    elif use_images and originals:
      setattr(targets, term, measure(targets.sources))
      out[term] = {'from': 'images', 'source': (
          f'measured on the original images {how}, an upper bound on what '
          f'an {head.split(" (")[0]} can give')}
    else:
      out[term] = {'unavailable': _missing(mode, head, originals)}
  return out


def _missing(mode: str, head: str, originals: bool) -> str:
  if mode == 'heads':
    return f'aux_targets=heads but no {head}'
  if mode == 'measured':
    return ('aux_targets=measured but the targets have no original images '
            'to measure' if not originals else 'not measurable')
  return (f'no {head}, and no original images to measure it on'
          if not originals else f'no {head}')


def transfer_targets(eval_targets: EvalTargets, encoder: protocols.Encoder,
                     aux_sources: dict[str, dict]) -> tuple[
                         targets_lib.Targets, list[str]]:
  """The same targets as seen by another encoder (transfer attack).

  The descriptors are that encoder's descriptors of the originals.
  Landmark / histogram targets measured on the originals carry over; ones
  predicted by descriptor heads (or given with the attacked encoder's
  descriptors) do not: they came from the attacked encoder, so those terms
  are dropped and listed.

  Returns:
    (targets, dropped terms).
  """
  t = eval_targets.targets
  n = len(t.descriptors)
  if t.sources is None:
    raise errors.UsageError(
        'transfer needs the original images (self-check or a '
        'folder of images)')
  descriptors = np.full((n, encoder.dim), np.nan, np.float32)
  ok = np.isfinite(t.sources).all(axis=(1, 2, 3))
  ok[list(t.skipped)] = False
  descriptors[ok] = encoder.embed(t.sources[ok])
  out = dataclasses.replace(t, descriptors=descriptors)
  dropped = []
  for term in losses.AUX_TERMS:
    origin = aux_sources.get(term, {}).get('from')
    if getattr(out, term) is not None and origin in ('heads', 'file'):
      setattr(out, term, None)
      dropped.append(term)
  return out, dropped
