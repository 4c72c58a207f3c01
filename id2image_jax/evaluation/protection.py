"""What a protection scheme buys: its measures on faces in memory.

For one `protection.Setting` (issue 21), each measure names the threat
model it belongs to (`THREAT_MODELS`):

* `utility`: the protected system verifying its own templates (protected
  vs protected pairs of real photos): ROC AUC and TMR at fixed FMRs, each
  with its number of pairs;
* `template_leakage`: Table 1 heads (`audit.leakage`, i.e.
  `analysis.leakage` with its bootstrap intervals) trained on protected
  templates;
* `reconstruct` / `reconstruction_success`: the ID2image inversion
  *through* the scheme (the identity loss computed on protected
  templates), scored by an independent verifier (type I / II TMR) and by
  the protected system itself; white-box where the scheme is
  differentiable, with a straight-through gradient for sign and rounding
  (`Scheme.gradient` says which), or score-only NES
  (`inversion.blackbox`);
* `linkability`: D<->sys between the templates of two keys
  (`protection.unlinkability`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from id2image_jax import errors
from id2image_jax import protection
from id2image_jax import protocols
from id2image_jax.data import faces as faces_lib
from id2image_jax.data import targets as targets_lib
from id2image_jax.evaluation import audit
from id2image_jax.evaluation import scores
from id2image_jax.inversion import blackbox
from id2image_jax.inversion import engine
from id2image_jax.recipes import inversion as recipe

THREAT_MODELS = {
    'system': 'no attacker: the protected system compares its own '
              'templates (protected vs protected pairs of real photos)',
    'leakage': 'a template thief with labelled data trains heads on '
               'protected templates to predict attributes, landmarks, colour',
    'informed': 'the attacker has the stolen templates, the scheme and its '
                'key (the fully informed attacker of ISO/IEC 24745)',
    'key_unknown': 'the attacker has the stolen templates and knows the '
                   'scheme, but not the key: it guesses one',
    'linkage': 'two systems protect with two keys: can one person\'s '
               'templates be linked across them (ISO/IEC 30136)',
}

# ROC AUC below this: the templates no longer separate people (reported).
MIN_VERIFYING_AUC = 0.6


def roc_auc(genuine: Any, impostor: Any) -> float | None:
  """Area under the ROC curve: P(genuine > impostor), ties count half.

  Returns:
    The Mann-Whitney estimate, or None without both kinds of scores.
  """
  g = np.asarray(genuine, np.float64).ravel()
  i = np.asarray(impostor, np.float64).ravel()
  if not g.size or not i.size:
    return None
  values, inverse, counts = np.unique(np.concatenate([g, i]),
                                      return_inverse=True,
                                      return_counts=True)
  # Average rank (1-based) of each distinct value, ties sharing it.
  ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
  rank_sum = ranks[:g.size].sum()
  return float((rank_sum - g.size * (g.size + 1) / 2) / (g.size * i.size))


def pair_scores(templates: Any, identity: np.ndarray | None,
                kind: str) -> tuple[np.ndarray, np.ndarray]:
  """Genuine and impostor scores of every unordered pair of photos.

  Args:
    templates: [N, T] templates of N photos.
    identity: [N] person of each photo; None: every photo its own person
      (no genuine pairs).
    kind: 'cosine' or 'hamming'.

  Returns:
    (genuine, impostor): float64 scores of pairs i < j of the same /
    different people.
  """
  s = protection.score_matrix(kind, templates, templates)
  n = s.shape[0]
  ids = np.arange(n) if identity is None else np.asarray(identity)
  upper = np.triu(np.ones((n, n), bool), k=1)
  same = ids[:, None] == ids[None, :]
  return s[upper & same], s[upper & ~same]


def utility(genuine: Any, impostor: Any,
            fmrs: Sequence[float]) -> dict[str, Any]:
  """Verification with protected templates on both sides.

  Args:
    genuine: genuine scores (`pair_scores`).
    impostor: impostor scores; they set the thresholds.
    fmrs: false match rates.

  Returns:
    ``{'threat_model', 'auc', 'num_genuine', 'num_impostor', 'tmr'
    (`scores.tmr_report`), 'verifies', 'note'}``; ``verifies`` is False
    when the AUC is below `MIN_VERIFYING_AUC` (near chance), None when it
    cannot be measured.
  """
  genuine = np.asarray(genuine, np.float64)
  impostor = np.asarray(impostor, np.float64)
  auc = roc_auc(genuine, impostor)
  note = ''
  if auc is None:
    note = ('not measurable: no two photos of one person (genuine pairs) '
            'in the data')
  elif auc < MIN_VERIFYING_AUC:
    note = (f'the templates no longer verify: AUC {auc:.3f} is near '
            'chance (0.5)')
  return {'threat_model': 'system', 'auc': auc,
          'num_genuine': int(genuine.size), 'num_impostor': int(impostor.size),
          'tmr': scores.tmr_report(genuine, impostor, fmrs),
          'verifies': None if auc is None else bool(auc >= MIN_VERIFYING_AUC),
          'note': note}


def cross_key_scores(templates_a: Any, templates_b: Any,
                     identity: np.ndarray | None, kind: str
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Mated and non-mated scores between two keys' templates.

  Template i of key A is compared with template j of key B for every
  ordered pair of different photos: mated when they show one person,
  non-mated otherwise (the same photo under both keys is left out: two
  systems rarely store one capture).
  """
  s = protection.score_matrix(kind, templates_a, templates_b)
  n = s.shape[0]
  ids = np.arange(n) if identity is None else np.asarray(identity)
  same = ids[:, None] == ids[None, :]
  other = ~np.eye(n, dtype=bool)
  return s[same & other], s[~same]


def linkability(templates_a: Any, templates_b: Any,
                identity: np.ndarray | None, kind: str, *,
                bins: int = 10) -> dict[str, Any]:
  """D<->sys of templates under two keys (`protection.unlinkability`).

  Returns:
    its result plus ``'threat_model'``, or ``{'threat_model', 'd_sys':
    None, 'note'}`` when there are no mated pairs.
  """
  mated, non_mated = cross_key_scores(templates_a, templates_b, identity,
                                      kind)
  if not mated.size or not non_mated.size:
    return {'threat_model': 'linkage', 'd_sys': None,
            'num_mated': int(mated.size),
            'note': 'not measurable: no person has two photos'}
  return {'threat_model': 'linkage',
          **protection.unlinkability(mated, non_mated, bins=bins),
          'note': ''}


def template_leakage(key: jax.Array, faces: faces_lib.Faces,
                     templates: np.ndarray,
                     attributes: dict[str, np.ndarray], *, epochs: int,
                     progress: bool = False) -> dict[str, Any]:
  """Table 1 on protected templates (`audit.leakage`), summarised.

  Returns:
    `audit.leakage`'s result plus ``'threat_model'``, ``'num_leaking'``
    (attributes whose gain interval is above 0), ``'max_attribute_gain'``
    (percentage points).
  """
  out = audit.leakage(key, faces, np.asarray(templates, np.float32),
                      attributes, epochs=epochs, progress=progress)
  gains = [r['accuracy'] - r['baseline'] for r in out['attributes'].values()]
  return {'threat_model': 'leakage', **out,
          'num_leaking': int(sum(r['leaks']
                                 for r in out['attributes'].values())),
          'max_attribute_gain': max(gains, default=None)}


@dataclasses.dataclass(frozen=True, eq=False)
class ProtectedEncoder:
  """An encoder followed by a protection transform, for the inversion.

  Offers what `recipe` and `blackbox` use of an `protocols.Encoder`:
  ``variables``, ``descriptor_fn()``, ``embed(images)``, ``dim``,
  ``kind``.

  Attributes:
    base: the face encoder.
    transform: ``fn(descriptors [..., D]) -> templates [..., T]`` with its
      key bound (`protection.Setting.attack`).
    dim: T.
    kind: a label.
  """
  base: protocols.Encoder
  transform: Callable[[jax.Array], jax.Array]
  dim: int
  kind: str

  @property
  def variables(self) -> Any:
    return self.base.variables

  def descriptor_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    embed, transform = self.base.descriptor_fn(), self.transform
    return lambda variables, image: transform(embed(variables, image))

  def query_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
    """What a score-only attacker queries: the protected template."""
    embed, transform = self.base.query_fn(), self.transform
    return lambda variables, image: transform(embed(variables, image))

  @functools.cached_property
  def _transform_jit(self):
    return jax.jit(self.transform)

  def embed(self, images: Any, *, batch_size: int = 32) -> np.ndarray:
    return np.asarray(self._transform_jit(
        self.base.embed(images, batch_size=batch_size)), np.float32)


def probe_key(setting: protection.Setting,
              key: jax.Array | None) -> jax.Array | None:
  """The key for protecting a new capture: the system key, except for
  random schemes (noise), whose every capture gets a fresh draw."""
  if key is not None and setting.scheme.key == 'randomness':
    return jax.random.fold_in(key, 1_000_003)
  return key


def reconstruct(config: Any, generator: protocols.Generator,
                encoder: protocols.Encoder, setting: protection.Setting,
                stored: np.ndarray, attacker_key: jax.Array | None, *,
                attack: str = 'gradient', population: int = 4,
                sigma: float = 0.05) -> dict[str, Any]:
  """Inverts stolen templates through the scheme (ID2image objective).

  The attacker's forward model is ``setting.attack(attacker_key,
  encoder(generator(latent)))``; its identity loss compares that with the
  stored template (`recipe`: squared L2 of unit vectors, i.e. 2 - 2 cos;
  for +-1 templates an affine map of the Hamming distance).

  Args:
    config: an invert config (``identity_loss='cosine'``, ``init``,
      ``steps``, ...).
    generator: the attacker's generator.
    encoder: the face encoder under the scheme.
    setting: the scheme and its parameters.
    stored: [N, T] the stolen templates.
    attacker_key: the key the attacker uses (the system's when fully
      informed, a guess when not).
    attack: 'gradient' (white-box: exact or straight-through, as
      ``setting.scheme.gradient``) or 'nes' (score queries only).
    population: NES antithetic pairs per step.
    sigma: NES perturbation scale.

  Returns:
    ``{'images' [N, R, R, 3], 'attack', 'gradient', 'seconds',
    'queries_per_target' (NES only)}``.
  """
  started = time.perf_counter()
  stored = np.asarray(stored, np.float32)
  forward = ProtectedEncoder(
      encoder, functools.partial(setting.attack, attacker_key),
      dim=int(stored.shape[1]), kind=f'{encoder.kind}+{setting.label}')
  targets = targets_lib.Targets(descriptors=stored,
                                names=[str(i) for i in range(len(stored))])
  out = {'attack': attack}
  if attack == 'gradient':
    inversion = recipe.invert_targets(config, generator, forward, targets)
    out['images'] = inversion.images
    out['gradient'] = setting.scheme.gradient
  elif attack == 'nes':
    out['images'] = recipe.invert_targets_by_scores(
        config, generator, forward, targets, population=population,
        sigma=sigma, run_options=engine.InvertOptions(
            steps=config.steps, chunk_size=len(stored),
            tx=optax.adam(config.learning_rate),
            progress=config.progress)).images
    out['gradient'] = 'none (score queries only)'
    out['queries_per_target'] = int(
        (config.steps + 1) * blackbox.queries_per_step(population))
  else:
    raise errors.UsageError(
        f"attack must be 'gradient' or 'nes', got {attack!r}")
  out['seconds'] = time.perf_counter() - started
  return out


def reconstruction_success(setting: protection.Setting,
                           system_key: jax.Array | None,
                           encoder: protocols.Encoder,
                           evaluator: protocols.Encoder,
                           images: np.ndarray, faces: faces_lib.Faces,
                           attack_set: audit.AttackSet, stored: np.ndarray,
                           system_impostor: np.ndarray,
                           fmrs: Sequence[float], *,
                           evaluator_pool: np.ndarray,
                           threat_model: str) -> dict[str, Any]:
  """How often reconstructions pass as the person.

  Args:
    setting: the scheme.
    system_key: the system's key (its comparisons use it).
    encoder: the face encoder under the scheme.
    evaluator: an independent verifier.
    images: [N, R, R, 3] reconstructions of ``attack_set.rows``.
    faces: the face set.
    attack_set: targets (photo A, photo B) and the threshold pool.
    stored: [N, T] the stolen templates (of photo A).
    system_impostor: impostor scores of the protected system (`utility`),
      its thresholds.
    fmrs: false match rates.
    evaluator_pool: the evaluator's descriptors of ``attack_set.pool``.
    threat_model: 'informed' or 'key_unknown'.

  Returns:
    ``{'threat_model', 'verifier': `audit.score_attack` (type I vs photo A,
    type II vs photo B), 'system': {'genuine', 'tmr'} (the reconstruction
    captured and protected by the system vs the stored template)}``.
  """
  verifier = audit.score_attack(evaluator, images, faces, attack_set, fmrs,
                                pool_descriptors=evaluator_pool)
  probe = setting.protect(probe_key(setting, system_key),
                          encoder.embed(images))
  genuine = np.diagonal(protection.score_matrix(setting.score_kind, probe,
                                                stored)).copy()
  return {'threat_model': threat_model, 'verifier': verifier,
          'system': {'genuine': genuine.tolist(),
                     'tmr': scores.tmr_report(genuine, system_impostor,
                                              fmrs)}}


@dataclasses.dataclass
class Context:
  """What every setting is measured on (the same for all of them).

  Attributes:
    faces: the face set.
    descriptors: [N, D] the encoder's descriptors of every face.
    attributes: name -> bool [N] labels for the leakage heads.
    attack_set: who is attacked (`audit.attack_targets`); no rows: no
      reconstruction.
    encoder: the face encoder under the schemes.
    evaluator: the independent verifier.
    evaluator_pool: its descriptors of ``attack_set.pool``.
    generator: the attacker's generator (None: no reconstruction).
    inversion: the invert config of the attack (`reconstruct`).
    fmrs: false match rates.
    epochs: of the leakage heads.
    seed: of the heads.
    attack: 'gradient' or 'nes'.
    nes_population: NES antithetic pairs.
    key_unknown: also attack secret-keyed schemes with a guessed key.
    linkability_bins: score bins of D<->sys.
    progress: progress bars.
  """
  faces: faces_lib.Faces
  descriptors: np.ndarray
  attributes: dict[str, np.ndarray]
  attack_set: audit.AttackSet
  encoder: protocols.Encoder
  evaluator: protocols.Encoder
  evaluator_pool: np.ndarray
  generator: protocols.Generator | None
  inversion: Any
  fmrs: Sequence[float]
  epochs: int
  seed: int = 0
  attack: str = 'gradient'
  nes_population: int = 4
  key_unknown: bool = True
  linkability_bins: int = 10
  progress: bool = False


def _drop_pair_lists(value: Any) -> Any:
  """A measure without its long per-pair score lists (JSON size)."""
  if isinstance(value, dict):
    return {k: _drop_pair_lists(v) for k, v in value.items()
            if k != 'attack_impostor_scores'}
  return value


def describe(setting: protection.Setting, template_size: int
             ) -> dict[str, Any]:
  """What a report says about a setting besides its measures."""
  scheme = setting.scheme
  return {'setting': setting.label, 'short_label': setting.short_label,
          'scheme': setting.name, 'family': scheme.family,
          'params': dict(setting.params), 'source': scheme.source,
          'score': setting.score_kind, 'template_size': int(template_size),
          'gradient': scheme.gradient, 'key': scheme.key}


def _attacks(ctx: Context, setting, stored, impostor, keys, guess
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The reconstruction measures of one setting, per threat model."""
  rows = ctx.attack_set.rows
  threats = [('informed', keys['system'])]
  if ctx.key_unknown and setting.scheme.key == 'secret':
    threats.append(('key_unknown', guess))
  entry, images = {}, {}
  for threat, attacker_key in threats:
    cpu0 = time.process_time()
    out = reconstruct(ctx.inversion, ctx.generator, ctx.encoder, setting,
                      stored[rows], attacker_key, attack=ctx.attack,
                      population=ctx.nes_population)
    success = reconstruction_success(
        setting, keys['system'], ctx.encoder, ctx.evaluator, out['images'],
        ctx.faces, ctx.attack_set, stored[rows], impostor, ctx.fmrs,
        evaluator_pool=ctx.evaluator_pool, threat_model=threat)
    entry[f'reconstruction_{threat}'] = _drop_pair_lists({
        **success, 'attack': out['attack'], 'gradient': out['gradient'],
        'seconds': out['seconds'],
        'cpu_seconds': time.process_time() - cpu0,
        'steps': ctx.inversion.steps,
        'queries_per_target': out.get('queries_per_target'),
        'num_targets': int(len(rows))})
    images[threat] = out['images']
  return entry, images


def measure_setting(ctx: Context, setting: protection.Setting, index: int,
                    keys: dict[str, jax.Array | None],
                    guess: jax.Array) -> tuple[dict[str, Any],
                                               dict[str, np.ndarray]]:
  """Every measure of one setting, each under its threat model.

  Args:
    ctx: the faces, models and options (`Context`).
    setting: the scheme and its parameters.
    index: the setting's number (its leakage heads' key).
    keys: ``{'system', 'second'}`` (`protection.system_keys`; None when the
      schemes need none).
    guess: the key-unknown attacker's key.

  Returns:
    (entry: `describe` + ``utility``, ``linkability``, ``leakage``, and
    ``reconstruction_informed`` / ``reconstruction_key_unknown`` when
    attacked; images: threat -> [T, R, R, 3] reconstructions).
  """
  kind = setting.score_kind
  stored = np.asarray(setting.protect(keys['system'], ctx.descriptors))
  second = np.asarray(setting.protect(keys['second'], ctx.descriptors))
  genuine, impostor = pair_scores(stored, ctx.faces.identity, kind)
  entry = {**describe(setting, stored.shape[1]),
           'utility': utility(genuine, impostor, ctx.fmrs),
           'linkability': linkability(stored, second, ctx.faces.identity,
                                      kind, bins=ctx.linkability_bins)}
  t0, cpu0 = time.perf_counter(), time.process_time()
  entry['leakage'] = template_leakage(
      jax.random.fold_in(jax.random.key(ctx.seed), index), ctx.faces,
      stored, ctx.attributes, epochs=ctx.epochs, progress=ctx.progress)
  # CPU seconds too: on a shared machine wall time says little.
  entry['leakage'].update(seconds=time.perf_counter() - t0,
                          cpu_seconds=time.process_time() - cpu0)
  images = {}
  if ctx.generator is not None and len(ctx.attack_set.rows):
    attacks, images = _attacks(ctx, setting, stored, impostor, keys, guess)
    entry.update(attacks)
  return entry, images


def attack_config(invert_config: Any, *, steps: int, seed: int,
                  workdir: str, progress: bool = False) -> Any:
  """The invert config of the attack through a scheme (`reconstruct`).

  Args:
    invert_config: a default invert config (``configs/invert.py``).
    steps: Adam steps.
    seed: of the run.
    workdir: where the inversion may write (nothing is resumed: no state
      that depends on a key is kept).
    progress: progress bars.
  """
  c = invert_config.copy_and_resolve_references()
  with c.unlocked():
    c.steps = steps
    # The ID2image identity loss on protected templates, on unit vectors:
    # templates of different schemes have different scales.
    c.identity_loss = 'cosine'
    # Every setting starts from the mean face: the shipped ID -> latent
    # regressor reads unprotected descriptors only.
    c.init = 'w_avg'
    c.resume = False
    c.workdir = workdir
    c.progress = progress
    c.seed = seed
  return c


def compare(ctx: Context, settings: Sequence[protection.Setting], *,
            key_seed: int | None, seed: int) -> dict[str, Any]:
  """The unprotected reference and each setting, measured (`Context`).

  Args:
    ctx: faces, models and options.
    settings: the schemes ('none' is added first if missing).
    key_seed: the user's secret seed (None: only keyless schemes).
    seed: the run seed (the key-unknown attacker's guess derives from it).

  Returns:
    ``{'config': {'fmrs'}, 'threat_models', 'settings': [entries]}``; no
    key and no key seed.
  """
  protection.check_all(settings, ctx.descriptors.shape[1],
                       key_seed=key_seed)
  keys = (protection.system_keys(key_seed) if key_seed is not None
          else {'system': None, 'second': None})
  guess = jax.random.fold_in(protection.key_from_seed(seed), 2)
  ordered = protection.parse('none') + [s for s in settings
                                        if s.name != 'none']
  entries = [measure_setting(ctx, s, i, keys, guess)[0]
             for i, s in enumerate(ordered)]
  return {'config': {'fmrs': list(ctx.fmrs)},
          'threat_models': THREAT_MODELS, 'settings': entries}
