"""Attack-success scores: genuine / impostor cosines and TMR at fixed FMR.

Built on `id2image_jax.metrics` (`verification_scores`, `impostor_threshold`,
`tmr_at_fmr`); this module only decides which pairs count:

* **impostor pairs** set the threshold. They are the pairs of *original*
  images of the evaluation set with different identity labels, each
  unordered pair once, embedded with the encoder being evaluated. This is
  the operating point of a face-verification system on that data, and it
  does not depend on the attack.
* **genuine scores** are reconstruction vs. its own original (the "type-I"
  attack: does the reconstruction verify as the person it came from?).
* **attack impostor scores** (reconstruction vs. the other originals) are
  only drawn in the distribution plot (paper Fig. 9).

A rate of ``fmr`` is only measurable with at least ``1 / fmr`` impostor
pairs (``metrics.impostor_threshold`` refuses otherwise); with fewer than
``10 / fmr`` fewer than 10 impostor scores lie above the threshold, so it is
reported but flagged as noisy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from id2image_jax import batching
from id2image_jax import losses
from id2image_jax import metrics
from id2image_jax import protocols
from id2image_jax.inversion import engine

# Fewer than this many impostor scores above the threshold: noisy.
_STABLE_COUNT = 10

def count_pairs(labels: Any) -> dict[str, int]:
  """Genuine and impostor pairs among images with identity `labels`.

  Each unordered pair of images counts once: ``genuine`` pairs share a
  label, ``impostor`` pairs do not (what `impostor_pair_scores` scores).

  Args:
    labels: [M] identity of each image.

  Returns:
    ``{'images', 'identities', 'genuine', 'impostor',
    'identities_with_2_or_more'}``.
  """
  labels = np.asarray(labels)
  _, counts = np.unique(labels, return_counts=True)
  m = len(labels)
  genuine = int(np.sum(counts * (counts - 1) // 2))
  return {'images': m, 'identities': len(counts), 'genuine': genuine,
          'impostor': m * (m - 1) // 2 - genuine,
          'identities_with_2_or_more': int(np.sum(counts >= 2))}


def impostor_pair_scores(descriptors: Any, labels: Any) -> np.ndarray:
  """Cosines of every unordered pair with different labels, each pair once.

  Args:
    descriptors: [M, D] descriptors of original images.
    labels: [M] identity labels.

  Returns:
    [P] float64 scores in row-major order of the pairs (i < j).
  """
  labels = np.asarray(labels)
  _, impostor = metrics.verification_scores(
      descriptors, descriptors, labels, genuine='same_identity')
  # verification_scores returns both (i, j) and (j, i); keep i < j.
  differ = labels[:, None] != labels[None, :]
  upper = np.triu(np.ones(differ.shape, bool), k=1)[differ]
  return impostor[upper]


def attack_scores(reconstructed: Any, rows: Any, originals: Any,
                  original_labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Genuine and impostor cosines of reconstructions against originals.

  Args:
    reconstructed: [N, D] descriptors of reconstructions.
    rows: [N] identity label of each reconstruction (its original's label).
    originals: [M, D] descriptors of the original images.
    original_labels: [M] their labels; each of `rows` must occur exactly
      once (one original per reconstruction).

  Returns:
    (genuine [N] in the order of `rows`, impostor [N * (M - 1)]).
  """
  rows, original_labels = np.asarray(rows), np.asarray(original_labels)
  counts = (original_labels[None, :] == rows[:, None]).sum(axis=1)
  if not np.all(counts == 1):
    raise ValueError('every reconstruction needs exactly one original with '
                     f'its label; counts {counts.tolist()}')
  return metrics.verification_scores(
      reconstructed, originals, rows, target_labels=original_labels,
      genuine='same_identity')


INTERVAL_METHOD = (
    '95 % Wilson score interval over attempts; attempts of one person '
    'count as fewer independent ones (effective number from the design '
    'effect over people, at least the number of people)')
THRESHOLD_METHOD = (
    '95 % percentile interval of the threshold over a bootstrap of the '
    "pool's people (photos of a drawn person come along)")


def _threshold_uncertainty(genuine, groups, samples, rate_interval):
  """The threshold's own interval and the rates at its two ends."""
  samples = np.asarray(samples, np.float64)
  samples = samples[np.isfinite(samples)]
  if not samples.size:
    return {}
  low, high = np.percentile(samples, [2.5, 97.5])
  # A higher threshold accepts fewer: the rate range runs high -> low.
  at_high = float(np.mean(genuine >= high))
  at_low = float(np.mean(genuine >= low))
  within = rate_interval[0] <= at_high and at_low <= rate_interval[1]
  return {'threshold_interval': [float(low), float(high)],
          'tmr_over_threshold_interval': [at_high, at_low],
          'threshold_replicates': int(samples.size),
          'threshold_effect': ('within the rate interval' if within else
                               'beyond the rate interval: the threshold '
                               'is uncertain too')}


def tmr_report(genuine: Any, impostor: Any,
               fmrs: Sequence[float], *, groups: Any = None,
               threshold_samples: dict[float, Any] | None = None
               ) -> dict[str, dict[str, Any]]:
  """TMR at each FMR, with its interval and the threshold used (or why
  there is none).

  Args:
    genuine: [G] genuine scores.
    impostor: [I] impostor scores (e.g. `impostor_pair_scores`).
    fmrs: false match rates.
    groups: [G] the person of each genuine score (default: each its own),
      for the interval (`metrics.clustered_rate_interval`).
    threshold_samples: ``{fmr: [B] thresholds}`` from
      `metrics.bootstrap_impostor_thresholds`, for the threshold's own
      uncertainty.

  Returns:
    ``{str(fmr): {'tmr', 'interval' [low, high], 'num_genuine',
    'num_people', 'effective_attempts', 'threshold', 'num_impostor',
    'note'}}`` (+ ``threshold_interval``, ``tmr_over_threshold_interval``
    with `threshold_samples`); 'tmr', 'interval' and 'threshold' are None
    when the rate cannot be measured (the note says why).
  """
  genuine = np.asarray(genuine, np.float64)
  impostor = np.asarray(impostor, np.float64)
  groups = (np.arange(genuine.size) if groups is None
            else np.asarray(groups))
  out = {}
  for fmr in fmrs:
    entry = {'tmr': None, 'interval': None, 'threshold': None,
             'num_genuine': int(genuine.size),
             'num_people': int(np.unique(groups).size),
             'num_impostor': int(impostor.size), 'note': ''}
    if not genuine.size:
      entry['note'] = 'no genuine scores (nothing was reconstructed)'
    elif impostor.size * fmr < 1:
      entry['note'] = (f'not measurable: FMR {fmr:g} needs at least '
                       f'{math.ceil(1 / fmr)} impostor pairs, there are '
                       f'{impostor.size}')
    else:
      threshold = metrics.impostor_threshold(impostor, fmr)
      entry['threshold'] = threshold
      entry['tmr'] = metrics.tmr_at_fmr(genuine, impostor, fmrs=(fmr,))[fmr]
      rate = metrics.clustered_rate_interval(genuine >= threshold, groups)
      entry['interval'] = [rate['low'], rate['high']]
      entry['effective_attempts'] = rate['effective_attempts']
      if threshold_samples and fmr in threshold_samples:
        entry.update(_threshold_uncertainty(
            genuine, groups, threshold_samples[fmr], entry['interval']))
      if impostor.size * fmr < _STABLE_COUNT:
        entry['note'] = (f'noisy: only {math.floor(impostor.size * fmr)} '
                         f'impostor score(s) above the threshold; '
                         f'{math.ceil(_STABLE_COUNT / fmr)}+ pairs give a '
                         'stable one')
      if genuine.size < 20:
        coarse = (f'coarse: {genuine.size} genuine score(s), so the TMR '
                  f'moves in steps of {1 / genuine.size:.3g}')
        entry['note'] = '; '.join(filter(None, [entry['note'], coarse]))
    out[f'{fmr:g}'] = entry
  return out


def summarize(values: Any) -> dict[str, float | None]:
  """Mean, std, min and max of the finite values (None when there are none)."""
  x = np.asarray(values, np.float64).ravel()
  x = x[np.isfinite(x)]
  if not x.size:
    return {'mean': None, 'std': None, 'min': None, 'max': None}
  return {'mean': float(x.mean()), 'std': float(x.std()),
          'min': float(x.min()), 'max': float(x.max())}


def identity_metrics(reconstructed: np.ndarray, rows: np.ndarray,
                     pool_descriptors: np.ndarray, pool_labels: np.ndarray,
                     impostor_pairs: np.ndarray, fmrs: Sequence[float], *,
                     pool_identity: np.ndarray | None = None,
                     threshold_samples: dict[float, Any] | None = None
                     ) -> dict[str, Any]:
  """Identity cosine and TMR@FMR of reconstructions under one encoder.

  Type I: the reconstruction against its own original (the image whose
  descriptor was inverted). Type II, when identities are known: against
  the *other* images of the same person (what a verification system holds
  of them).

  Args:
    reconstructed: [N, D] descriptors of the reconstructions of `rows`.
    rows: [N] their target rows (= their originals' labels).
    pool_descriptors: [M, D] the originals' descriptors, same encoder.
    pool_labels: [M] their labels (one image each; target row i has
      label i).
    impostor_pairs: [P] `impostor_pair_scores` of the pool.
    fmrs: false match rates.
    pool_identity: [M] the person in each pool image; adds type II.
    threshold_samples: bootstrap thresholds per FMR (`tmr_report`).

  Returns:
    ``genuine`` (per row), ``cosine`` (summary of genuine), ``attack_impostor``
    (summary of reconstruction vs other people's originals), ``tmr``
    (`tmr_report`), ``num_impostor_pairs``; with `pool_identity` also
    ``type2`` {``genuine``, ``cosine``, ``tmr``, ``num_genuine``,
    ``num_people``, ``real_photos``: the same pairs scored on photo A
    itself (the ceiling of type II)}.
  """
  if not len(rows):
    return {'genuine': [], 'cosine': summarize([]), 'tmr': {},
            'num_impostor_pairs': len(impostor_pairs)}
  genuine, _ = attack_scores(reconstructed, rows, pool_descriptors,
                             pool_labels)
  pool_labels = np.asarray(pool_labels)
  person = (pool_labels if pool_identity is None
            else np.asarray(pool_identity))
  # Each reconstruction's own original, and the person in it.
  first = [int(np.flatnonzero(pool_labels == r)[0]) for r in rows]
  own = person[first]
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True),
                                  1e-12)
  pool = unit(np.asarray(pool_descriptors, np.float64))
  cos = unit(np.asarray(reconstructed, np.float64)) @ pool.T  # [N, M]
  impostor = cos[own[:, None] != person[None, :]]
  out = {'genuine': genuine.tolist(),
         'attack_impostor_scores': impostor.tolist(),
         'cosine': summarize(genuine),
         'attack_impostor': summarize(impostor),
         'tmr': tmr_report(genuine, impostor_pairs, fmrs, groups=own,
                           threshold_samples=threshold_samples),
         'num_impostor_pairs': len(impostor_pairs)}
  if pool_identity is not None:
    same = (own[:, None] == person[None, :]) & (
        np.asarray(rows)[:, None] != pool_labels[None, :])
    second = cos[same]
    # The person of each type-II pair, for the interval over people.
    second_person = np.broadcast_to(own[:, None], same.shape)[same]
    out['type2'] = {'genuine': second.tolist(), 'cosine': summarize(second),
                    'tmr': tmr_report(second, impostor_pairs, fmrs,
                                      groups=second_person,
                                      threshold_samples=threshold_samples),
                    'num_genuine': int(second.size),
                    'num_people': int(np.unique(second_person).size),
                    'real_photos': _real_photo_pairs(
                        (pool[first] @ pool.T)[same], impostor_pairs, fmrs,
                        groups=second_person,
                        threshold_samples=threshold_samples)}
  return out


def _real_photo_pairs(real: np.ndarray, impostor_pairs: np.ndarray,
                      fmrs: Sequence[float], *, groups: np.ndarray,
                      threshold_samples) -> dict:
  """The verifier on the real photos of the type-II pairs (`real`: photo A,
  not its reconstruction, against the person's other photos B): what a
  perfect copy of photo A would score, the ceiling of a type-II rate."""
  return {'cosine': summarize(real),
          'tmr': tmr_report(real, impostor_pairs, fmrs, groups=groups,
                            threshold_samples=threshold_samples)}


def appearance_metrics(sources: np.ndarray | None, images: np.ndarray,
                       rows: np.ndarray, *, landmark_model=None
                       ) -> dict[str, Any]:
  """Pixel, histogram and landmark agreement of reconstructions and sources.

  Args:
    sources: [N, H, W, 3] originals in [-1, 1], or None.
    images: [N, H', W', 3] reconstructions in [-1, 1].
    rows: the rows to score.
    landmark_model: optional ``fn(images) -> [K, 68, 2]`` (an
      image->landmark network); then landmark NME (recon vs original, both
      measured by the same network) is added.

  Returns:
    ``{name: summary}`` for mse ([0, 1] scale), psnr (dB), ssim,
    histogram_emd (10-bin, bins, summed over R, G, B) and landmark_nme;
    {} without sources.
  """
  if sources is None or not len(rows):
    return {}

  def measures(src, rec):
    src = metrics.resized_like(src, rec)
    out = metrics.pixel_measures(src, rec)
    out['histogram_emd'] = metrics.histogram_emd(
        losses.image_histogram(rec, value_range=(-1, 1)),
        losses.image_histogram(src, value_range=(-1, 1)),
        channel_reduction='sum')
    if landmark_model is not None:
      out['landmark_nme'] = metrics.landmark_nme(landmark_model(rec),
                                                 landmark_model(src))
    return out
  out = batching.map_row_blocks(measures, (sources, images), rows,
                                batching.IMAGE_ROW_BLOCK)
  return {k: {**summarize(v), 'values': v.tolist()}
          for k, v in out.items()}


def attribute_preservation(nets: Sequence[protocols.AttributeNet],
                           sources: np.ndarray | None, images: np.ndarray,
                           rows: np.ndarray) -> dict[str, Any]:
  """Do reconstructions keep the originals' attributes (paper's claim)?

  Both are labelled by the same attribute networks; per network and
  output: ``male_prob`` -> gender agreement (%), ``age_years`` -> mean
  absolute difference (years), ``*_probs`` -> top-class agreement (%).

  Args:
    nets: loaded attribute networks.
    sources: [N, H, W, 3] originals in [-1, 1], or None (then {}).
    images: [N, H', W', 3] reconstructions.
    rows: rows to compare.

  Returns:
    ``{net kind: {measure: summary + 'values'}}``.
  """
  if sources is None or not len(rows) or not nets:
    return {}
  out = {}
  for net in nets:
    src = batching.map_row_blocks(net.predict, (sources,), rows,
                                  batching.IMAGE_ROW_BLOCK)
    rec = batching.map_row_blocks(net.predict, (images,), rows,
                                  batching.IMAGE_ROW_BLOCK)
    measures = {}
    for name in src:
      a, b = np.asarray(src[name]), np.asarray(rec[name])
      if name == 'male_prob':
        measures['gender_agreement_pct'] = 100.0 * ((a > 0.5) == (b > 0.5))
      elif name == 'age_years':
        measures['age_abs_diff_years'] = np.abs(a - b)
      elif name.endswith('_probs'):
        key = name[:-len('_probs')]
        measures[f'{key}_agreement_pct'] = 100.0 * (
            a.argmax(-1) == b.argmax(-1))
    out[net.kind] = {k: {**summarize(v), 'values': np.asarray(v).tolist()}
                     for k, v in measures.items()}
  return out


class Pools:
  """Descriptors and impostor pairs of the originals, per encoder, and the
  bootstrap of their thresholds (`metrics.bootstrap_impostor_thresholds`)."""

  def __init__(self, data: Any,
               attacked: protocols.Encoder, *, threshold_replicates: int = 200):
    self._data = data
    self._cache = {id(attacked): self._pairs(data.pool_descriptors)}
    self._replicates = threshold_replicates
    self._thresholds = {}

  def threshold_samples(self, encoder: protocols.Encoder,
                        fmrs: Sequence[float]) -> dict[float, np.ndarray]:
    """Bootstrap thresholds of `encoder`'s pool at `fmrs` (cached)."""
    if not self._replicates or not self.available(encoder):
      return {}
    key = (id(encoder), tuple(fmrs))
    if key not in self._thresholds:
      descriptors, _ = self.get(encoder)
      self._thresholds[key] = metrics.bootstrap_impostor_thresholds(
          descriptors, self._data.pool_identity, fmrs,
          num=self._replicates)
    return self._thresholds[key]

  def _pairs(self, descriptors):
    # Pairs of different people (each unordered pair once) set the
    # threshold.
    return descriptors, impostor_pair_scores(descriptors,
                                             self._data.pool_identity)

  def available(self, encoder: protocols.Encoder) -> bool:
    return id(encoder) in self._cache or self._data.pool_images is not None

  def get(self, encoder: protocols.Encoder):
    if id(encoder) not in self._cache:
      self._cache[id(encoder)] = self._pairs(
          encoder.embed(self._data.pool_images))
    return self._cache[id(encoder)]


def score_under(encoder, inversion, rows, pools, data, fmrs, *,
                attacked=None) -> dict[str, Any]:
  """`identity_metrics` of an inversion's reconstructions under `encoder`.

  The attacked encoder's descriptors of the reconstructions are reused;
  any other encoder embeds the images.
  """
  if not pools.available(encoder):
    return {'unavailable': 'no original images to embed with this encoder '
            '(targets are descriptors only)'}
  descriptors, pairs = pools.get(encoder)
  recon = (inversion.descriptors[rows] if encoder is attacked
           else embed_rows(encoder, inversion.images, rows))
  return identity_metrics(
      recon, rows, descriptors, data.pool_labels, pairs, fmrs,
      pool_identity=data.pool_identity if data.knows_identities else None,
      threshold_samples=pools.threshold_samples(encoder, fmrs))


def embed_rows(encoder: protocols.Encoder, images: np.ndarray,
               rows: np.ndarray) -> np.ndarray:
  """[len(rows), D] descriptors of ``images[rows]``, a block at a time (a
  whole test set's renders are not copied at once)."""
  if not len(rows):
    return np.zeros((0, encoder.dim), np.float32)
  return batching.map_row_blocks(encoder.embed, (images,), rows,
                                 batching.EMBED_ROW_BLOCK)


def snapshot_descriptors(render, generator: protocols.Generator,
                         encoders: Sequence[protocols.Encoder], latents: Any,
                         rows: np.ndarray, *,
                         block: int = batching.IMAGE_ROW_BLOCK
                         ) -> list[np.ndarray]:
  """Descriptors of the faces that `latents` render, under each encoder.

  Renders `block` faces at a time and keeps only their descriptors, so a
  whole test set at 1024 px never sits in memory as images.

  Args:
    render: ``render(generator_variables, latent) -> image`` for one row.
    generator: the generator whose variables `render` takes.
    encoders: the encoders to embed with.
    latents: pytree of [N, ...] latents.
    rows: the rows to render.
    block: faces rendered per call.

  Returns:
    One [N, D_e] array per encoder, NaN outside `rows`.
  """
  n = len(jax.tree.leaves(latents)[0])
  out = [np.full((n, e.dim), np.nan, np.float32) for e in encoders]
  rows = np.asarray(rows)
  for start in range(0, len(rows), block):
    part = rows[start:start + block]
    images = engine.map_targets(
        render, generator.variables,
        jax.tree.map(lambda x, part=part: np.asarray(x)[part], latents),
        chunk_size=len(part))
    for array, encoder in zip(out, encoders):
      array[part] = encoder.embed(images)
  return out


# What a snapshot keeps of `identity_metrics`: the rates, their intervals
# and the cosine summaries, not the per-pair score lists.
_SNAPSHOT_FIELDS = ('cosine', 'tmr', 'num_impostor_pairs')


def _rates_only(scored: dict[str, Any]) -> dict[str, Any]:
  out = {k: scored[k] for k in _SNAPSHOT_FIELDS if k in scored}
  if 'type2' in scored:
    # The real photos' ceiling does not depend on the steps.
    out['type2'] = {k: v for k, v in scored['type2'].items()
                    if k not in ('genuine', 'real_photos')}
  return out


def score_snapshots(snapshots: dict[int, Any], render,
                    generator: protocols.Generator,
                    encoders: dict[str, protocols.Encoder],
                    rows: np.ndarray, pools: Pools, data: Any,
                    fmrs: Sequence[float], *,
                    final: tuple[int, dict[str, Any]] | None = None,
                    progress: bool = False
                    ) -> dict[str, dict[str, Any]]:
  """Identity rates of the attack after each snapshot's number of steps.

  How much compute an attacker needs: the same targets scored after 0
  (the initialisation alone), 5, 10, ... steps of one run, under each
  encoder (e.g. the attacked one and an independent verifier), with the
  thresholds and intervals of `identity_metrics`.

  Args:
    snapshots: step -> [N, ...] latents (`InversionResult.snapshots`).
    render: per-row render function of the inversion.
    generator: the generator.
    encoders: role -> encoder, e.g. ``{'attacked': ..., 'evaluation': ...}``.
    rows: the rows that were inverted.
    pools: the originals' descriptors and impostor pairs per encoder.
    data: the evaluation targets (`evaluation.targets.EvalTargets`).
    fmrs: false match rates.
    final: ``(steps, {role: identity_metrics})`` of the run's final latents
      when already scored: that snapshot is not rendered again.
    progress: show a progress bar over the snapshots (each renders every
      row again: minutes for a test set at 1024 px on a CPU).

  Returns:
    ``{str(step): {role: {'cosine', 'tmr', 'num_impostor_pairs',
    'type2'}}}``.
  """
  roles = [r for r, e in encoders.items() if pools.available(e)]
  out = {}
  for step in tqdm.tqdm(sorted(snapshots), desc='scoring snapshots',
                        unit='snapshot', disable=not progress):
    if final is not None and step == final[0] and all(
        r in final[1] for r in roles):
      out[str(step)] = {r: _rates_only(final[1][r]) for r in roles}
      continue
    descriptors = snapshot_descriptors(
        render, generator, [encoders[r] for r in roles], snapshots[step],
        rows)
    out[str(step)] = {}
    for role, recon in zip(roles, descriptors):
      pool, pairs = pools.get(encoders[role])
      scored = identity_metrics(
          recon[rows], rows, pool, data.pool_labels, pairs, fmrs,
          pool_identity=(data.pool_identity if data.knows_identities
                         else None),
          threshold_samples=pools.threshold_samples(encoders[role], fmrs))
      out[str(step)][role] = _rates_only(scored)
  return out
