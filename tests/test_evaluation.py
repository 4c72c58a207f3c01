"""Tests of the evaluate job (ablation, attack scores, transfer, report).

End to end on the tiny demo-8 generator with toy encoders (a conv + dense
encoder at 16x16, served through a patched `loading.load_encoder` under
``toy:NAME`` specs) and, for the loading path, a random-weight IResNet
saved as an orbax directory, so the whole file runs in well under a minute.
"""

import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import checkpoints
from id2image_jax import cli
from id2image_jax import evaluation
from id2image_jax import loading
from id2image_jax import metrics
from id2image_jax import preprocess
from id2image_jax import protocols
from id2image_jax.jobs import common
from id2image_jax.jobs import evaluate as evaluate_job
from id2image_jax.models import heads
from id2image_jax.models import iresnet

_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'configs', 'evaluate.py')


class _ToyEncoder(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):  # [B, 16, 16, 3] -> ([B, dim], {})
    h = nn.tanh(nn.Conv(4, (3, 3), strides=(2, 2))(x))
    return nn.Dense(self.dim)(h.reshape(h.shape[0], -1)), {}


def _toy_encoder(seed: int, dim: int = 12) -> protocols.Encoder:
  module = _ToyEncoder(dim)
  variables = module.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))
  return protocols.Encoder(
      kind='toy', config={'dim': dim}, module=module, variables=variables,
      spec=preprocess.InputSpec(size=(16, 16)), dim=dim,
      source=f'toy encoder seed {seed}')


@pytest.fixture
def toy_registry(monkeypatch):
  """``toy:NAME`` specs load toy encoders; everything else goes through."""
  real, cache = loading.load_encoder, {}

  def load(spec='dlib', *, dtype=None, crop=None):
    if spec.startswith('toy:'):
      if spec not in cache:
        cache[spec] = _toy_encoder(seed=len(cache))
      return cache[spec]
    return real(spec, dtype=dtype, crop=crop)
  monkeypatch.setattr(loading, 'load_encoder', load)
  return cache


def _config(tmp_path, **overrides):
  config = cli.load_config(_CONFIG)
  base = {'generator': 'demo:demo-8', 'encoder': 'toy:a', 'num_targets': 3,
          'num_impostor_images': 12, 'steps': 3, 'learning_rate': 0.05,
          'progress': False, 'resume': False, 'history_every': 1,
          'workdir': str(tmp_path / 'eval')}
  for key, value in {**base, **overrides}.items():
    cli.apply_override(config, key, value)
  return config


def _landmark_cnn(path) -> str:
  config = heads.head_config('landmarks_cnn', channels=(4, 4, 4, 4, 4),
                             hidden=8, input_size=(16, 16))
  model = heads.build(config)
  params = model.init(jax.random.key(3), jnp.zeros((1, 16, 16, 3)))['params']
  return loading.save_head(path, params, config)


def _tiny_iresnet(path) -> str:
  """A random-weight IResNet (one block per stage) as an orbax directory.

  Weights are drawn with numpy into the shapes of ``init`` (compiling the
  initialisers would cost seconds); BatchNorm variances are 1.
  """
  config = iresnet.get_config('r18', layers=[1, 1, 1, 1], num_features=16)
  abstract = jax.eval_shape(iresnet.build(config).init, jax.random.key(0),
                            jnp.zeros((1, 112, 112, 3)))
  rng = np.random.default_rng(5)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'batch_stats' in name:
      fill = 1.0 if name.endswith("'var']") else 0.0
      return np.full(leaf.shape, fill, np.float32)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
  variables = jax.tree_util.tree_map_with_path(draw, abstract)
  return checkpoints.save(path, variables, kind='iresnet', config=config,
                          source='random-weight IResNet (test)')


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


# Pure parts.


def test_impostor_pairs_are_the_unordered_distinct_label_pairs():
  rng = np.random.default_rng(0)
  d = rng.normal(size=(6, 5))
  labels = np.array([0, 0, 1, 2, 3, 3])
  got = evaluation.impostor_pair_scores(d, labels)
  want = [float(metrics.cosine_similarity(d[i], d[j]))
          for i in range(6) for j in range(i + 1, 6) if labels[i] != labels[j]]
  assert len(got) == 15 - 2  # two same-label pairs left out
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_tmr_report_thresholds_and_unmeasurable_rates():
  rng = np.random.default_rng(1)
  impostor = rng.uniform(-1, 0.5, size=150)
  genuine = np.array([0.2, 0.45, 0.49, 0.6, 0.9])
  report = evaluation.tmr_report(genuine, impostor, (1e-2, 1e-3))
  entry = report['0.01']
  # 150 pairs at FMR 1e-2: one impostor may lie above the threshold.
  assert np.sum(impostor >= entry['threshold']) <= 1
  assert np.sum(impostor >= np.nextafter(entry['threshold'], -np.inf)) >= 2
  assert entry['tmr'] == pytest.approx(np.mean(genuine >= entry['threshold']))
  assert 'noisy' in entry['note'] and 'coarse' in entry['note']
  assert report['0.001']['tmr'] is None
  assert '1000 impostor pairs' in report['0.001']['note']


def test_rates_carry_intervals_over_people_and_the_thresholds_spread():
  # Two attacked people with three other photos each, plus 40 others: the
  # type-II rate rests on 6 pairs of 2 people, and its interval is that
  # of (at least) 2 people, not of 6 independent attempts.
  rng = np.random.default_rng(3)
  people = np.concatenate([[0, 1], [0, 0, 0, 1, 1, 1], np.arange(2, 42)])
  centres = rng.normal(size=(42, 8))
  pool = centres[people] + 0.3 * rng.normal(size=(len(people), 8))
  recon = centres[:2] + 0.05 * rng.normal(size=(2, 8))
  labels = np.arange(len(people))
  pairs = evaluation.impostor_pair_scores(pool, people)
  samples = metrics.bootstrap_impostor_thresholds(pool, people, (1e-2,),
                                                  num=50)
  got = evaluation.identity_metrics(recon, np.array([0, 1]), pool, labels,
                                    pairs, (1e-2,), pool_identity=people,
                                    threshold_samples=samples)
  type1, type2 = got['tmr']['0.01'], got['type2']['tmr']['0.01']
  assert type1['num_genuine'] == 2 and type1['num_people'] == 2
  assert type2['num_genuine'] == 6 and type2['num_people'] == 2
  assert got['type2']['num_people'] == 2
  hits = np.asarray(got['type2']['genuine']) >= type2['threshold']
  want = metrics.clustered_rate_interval(hits, [0, 0, 0, 1, 1, 1])
  assert type2['interval'] == [want['low'], want['high']]
  assert type2['effective_attempts'] <= 6
  assert type2['interval'][0] <= type2['tmr'] <= type2['interval'][1]
  low, high = type1['threshold_interval']
  assert low <= type1['threshold'] <= high
  lo_rate, hi_rate = type1['tmr_over_threshold_interval']
  assert lo_rate <= type1['tmr'] <= hi_rate
  assert type1['threshold_effect']


def test_type_two_has_the_real_photos_ceiling():
  # Photo A itself against the person's other photos, at the same
  # thresholds: what a perfect copy of A would score.
  rng = np.random.default_rng(4)
  people = np.concatenate([[0, 1], [0, 0, 1], np.arange(2, 30)])
  pool = rng.normal(size=(len(people), 6))
  recon = rng.normal(size=(2, 6))  # far from everyone
  labels = np.arange(len(people))
  pairs = evaluation.impostor_pair_scores(pool, people)
  got = evaluation.identity_metrics(recon, np.array([0, 1]), pool, labels,
                                    pairs, (1e-1,), pool_identity=people)
  real = got['type2']['real_photos']
  unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
  want = np.array([unit[0] @ unit[2], unit[0] @ unit[3], unit[1] @ unit[4]])
  assert real['cosine']['mean'] == pytest.approx(want.mean())
  entry = real['tmr']['0.1']
  assert entry['num_genuine'] == 3 and entry['num_people'] == 2
  assert entry['threshold'] == got['type2']['tmr']['0.1']['threshold']
  assert entry['tmr'] == pytest.approx(np.mean(want >= entry['threshold']))


def test_attack_scores_pick_each_reconstructions_own_original():
  rng = np.random.default_rng(2)
  originals = rng.normal(size=(5, 4))
  recon = originals[[3, 1]] + 0.01 * rng.normal(size=(2, 4))
  genuine, impostor = evaluation.attack_scores(recon, [3, 1], originals,
                                               np.arange(5))
  assert genuine.shape == (2,) and impostor.shape == (8,)
  assert np.all(genuine > 0.99)
  with pytest.raises(ValueError, match='exactly one original'):
    evaluation.attack_scores(recon, [3, 7], originals, np.arange(5))


def test_plan_arms_drops_unavailable_terms_and_skips_duplicates():
  weights = {'id': 1.0, 'landmarks': 0.0006, 'histogram': 0.01}
  plans = evaluation.plan_arms(['id', 'id+lm', 'id+lm+hist'], weights,
                               {'landmarks': 'no landmark model'})
  assert [p.runs for p in plans] == [True, False, True]
  assert "same as arm 'id'" in plans[1].skipped
  assert plans[2].name == 'id+hist'
  assert plans[2].weights == {'id': 1.0, 'landmarks': 0.0, 'histogram': 0.01}
  assert plans[2].dropped == {'landmarks': 'no landmark model'}
  full = evaluation.plan_arms(['id', 'id+lm', 'id+lm+hist'], weights, {})
  assert [p.name for p in full] == ['id', 'id+lm', 'id+lm+hist']
  assert len({tuple(p.weights.values()) for p in full}) == 3
  with pytest.raises(ValueError, match='unknown term'):
    evaluation.parse_arm('id+pose')
  with pytest.raises(ValueError, match='no identity term'):
    evaluation.parse_arm('lm+hist')


# The job.


def test_evaluate_end_to_end(tmp_path, toy_registry):
  config = _config(
      tmp_path, eval_encoder='toy:b', transfer_encoders=('toy:a', 'toy:b'),
      **{'heads.image_landmarks': _landmark_cnn(tmp_path / 'lm_cnn')})
  report = evaluate_job.run(config)
  workdir = config.workdir

  # All three arms ran, each with its own weights.
  assert list(report['arms']) == ['id', 'id+lm', 'id+lm+hist']
  weights = [tuple(a['weights'].values()) for a in report['arms'].values()]
  assert weights == [(1.0, 0.0, 0.0), (1.0, 0.0006, 0.0),
                     (1.0, 0.0006, 0.01)]
  assert report['aux_targets']['histogram']['from'] == 'images'
  assert report['aux_targets']['landmarks']['from'] == 'images'
  assert report['eval_encoder']['independent']

  pairs = 15 * 14 // 2  # 3 targets + 12 impostor-only originals
  for name, arm in report['arms'].items():
    assert arm['num_done'] == 3, name
    for key in ('mse', 'psnr', 'ssim', 'histogram_emd', 'landmark_nme'):
      assert _finite(arm['appearance'][key]['mean']), (name, key)
    for role in ('attacked', 'evaluation'):
      ident = arm[role]
      assert ident['num_impostor_pairs'] == pairs
      assert -1 <= ident['cosine']['mean'] <= 1
      ok = ident['tmr']['0.01']
      assert ok['tmr'] == pytest.approx(np.mean(
          np.asarray(ident['genuine']) >= ok['threshold']))
      assert ident['tmr']['0.001']['tmr'] is None
    # Under the attacked encoder the genuine score is the identity cosine
    # between target descriptor and reconstruction (the invert job's).
    assert len(arm['attacked']['genuine']) == 3
  # The terms are really in the objective: the losses differ between arms.
  assert 'landmarks' in report['arms']['id+lm']['final_loss']
  assert 'histogram' in report['arms']['id+lm+hist']['final_loss']
  assert 'landmarks' not in report['arms']['id']['final_loss']

  # Transfer: 2 x 2, A == attacked reuses the last arm.
  transfer = report['transfer']
  assert transfer['arm'] == 'id+lm+hist'
  assert transfer['encoders'] == ['toy:a', 'toy:b']
  assert set(transfer['table']) == {'toy:a', 'toy:b'}
  for row in transfer['table'].values():
    assert set(row) == {'toy:a', 'toy:b'}
    for cell in row.values():
      assert _finite(cell['cosine']['mean'])
  assert (transfer['table']['toy:a']['toy:b']['cosine']['mean'] ==
          pytest.approx(report['arms']['id+lm+hist']['evaluation']['cosine'][
              'mean']))
  assert 'reuses' in transfer['attack']['toy:a']

  for name in ('report.md', 'report.json', 'grid.png', 'similarity.png'):
    assert os.path.isfile(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, 'report.json')) as f:
    assert json.load(f)['arms'].keys() == report['arms'].keys()
  with open(os.path.join(workdir, 'report.md')) as f:
    text = f.read()
  assert '| PSNR [dB] ↑ |' in text and 'A \\ B' in text
  assert f'{pairs} impostor pairs' in text


def test_snapshots_score_the_attack_after_each_step_count(tmp_path,
                                                          toy_registry,
                                                          capsys):
  # One run, scored after 0 (the start), 1 and 3 steps: the last equals the
  # arm's own final scores.
  config = _config(tmp_path, eval_encoder='toy:b', arms=('id',),
                   transfer_encoders=('toy:a',), snapshot_steps=(0, 1, 3),
                   progress=True)
  report = evaluate_job.run(config)
  # Scoring a test set takes minutes: its stages and snapshots show bars.
  shown = capsys.readouterr().err
  assert 'scoring arm id' in shown and '4/4' in shown
  assert 'scoring snapshots' in shown and '3/3' in shown
  arm = report['arms']['id']
  snaps = arm['snapshots']
  assert list(snaps) == ['0', '1', '3']
  for role in ('attacked', 'evaluation'):
    final = snaps['3'][role]
    assert final['cosine']['mean'] == pytest.approx(
        arm[role]['cosine']['mean'], abs=1e-5)
    assert final['tmr']['0.01']['tmr'] == arm[role]['tmr']['0.01']['tmr']
    assert final['tmr']['0.01']['interval'] is not None
    assert 'genuine' not in final  # rates, not score lists
  # The start is another face than the end.
  assert (snaps['3']['attacked']['cosine']['mean']
          != snaps['0']['attacked']['cosine']['mean'])


def test_the_job_leaves_its_config_as_it_was(tmp_path, toy_registry):
  # 'auto' resolves to w_avg here (toy encoders have no shipped head): the
  # report says so, the caller's config keeps 'auto'.
  config = _config(tmp_path, arms=('id',), steps=1, eval_encoder='toy:a',
                   transfer_encoders=('toy:a',))
  before = config.to_dict()
  report = evaluate_job.run(config)
  assert config.to_dict() == before and config.init == 'auto'
  assert report['config']['init'] == 'w_avg'


def test_the_score_only_attacker_is_an_arm(tmp_path, toy_registry):
  # 'nes' inverts the same targets from similarity queries alone, scored
  # like any arm; the transfer table leaves it out (no terms to transfer).
  config = _config(tmp_path, eval_encoder='toy:b', arms=('id', 'nes'),
                   transfer_encoders=('toy:a', 'toy:b'), nes_population=2,
                   snapshot_steps=(0, 3))
  report = evaluate_job.run(config)
  assert list(report['arms']) == ['id', 'nes']
  nes = report['arms']['nes']
  assert nes['num_done'] == 3
  assert nes['queries_per_target'] == (3 + 1) * (2 * 2 + 1)
  assert 'score' in nes['final_loss'] and 'id' not in nes['final_loss']
  assert nes['evaluation']['tmr']['0.01']['interval'] is not None
  # Same start as the gradient arm: the snapshots at 0 agree.
  start = {a: report['arms'][a]['snapshots']['0']['attacked']['cosine']
           for a in ('id', 'nes')}
  assert start['id']['mean'] == pytest.approx(start['nes']['mean'],
                                              abs=1e-5)
  assert report['transfer']['arm'] == 'id'
  plans = evaluation.plan_arms(['nes', 'id'], {'id': 1.0, 'landmarks': 0.1,
                                               'histogram': 0.1}, {})
  assert [p.name for p in plans] == ['nes', 'id'] and plans[0].scores_only


def test_missing_eval_encoder_names_the_file(tmp_path, toy_registry):
  missing = str(tmp_path / 'nowhere' / 'backbone.pth')
  config = _config(tmp_path, eval_encoder=f'iresnet:{missing}')
  with pytest.raises(FileNotFoundError, match='eval_encoder') as info:
    evaluate_job.run(config)
  assert missing in str(info.value)
  assert not os.path.exists(config.workdir)  # failed before any work


def test_cli_evaluate_with_an_iresnet_eval_encoder(tmp_path, toy_registry,
                                                   capsys):
  eval_dir = _tiny_iresnet(tmp_path / 'iresnet')
  out = str(tmp_path / 'cli')
  assert cli.main([
      'evaluate', '--generator', 'demo:demo-8', '--encoder', 'toy:a',
      '--eval-encoder', f'iresnet:{eval_dir}', '--out', out,
      '--set', 'num_targets=2', '--set', 'num_impostor_images=3',
      '--set', 'steps=2', '--set', 'progress=False', '--set', 'resume=False',
      '--set', "arms=('id', 'id+lm')", '--set', 'heads.image_landmarks=',
      ]) == 0
  printed = capsys.readouterr().out
  assert 'arm id+lm: SKIPPED' in printed
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert list(report['arms']) == ['id']
  assert report['plans'][1]['skipped']
  assert report['eval_encoder']['kind'] == 'iresnet'
  assert report['arms']['id']['evaluation']['num_impostor_pairs'] == 10
  # Transfer defaults to the attacked and the evaluation encoder: 2 x 2,
  # the IResNet row inverted through the IResNet loaded by the loading.
  table = report['transfer']['table']
  assert list(table) == ['toy:a', 'iresnet:iresnet']
  for row in table.values():
    assert list(row) == ['toy:a', 'iresnet:iresnet']
    for cell in row.values():
      assert _finite(cell['cosine']['mean'])
  assert table['toy:a']['toy:a']['cosine']['mean'] == pytest.approx(
      report['arms']['id']['attacked']['cosine']['mean'])
  assert 'inverted with arm id' in report['transfer']['attack'][
      'iresnet:iresnet']
  with open(os.path.join(out, 'report.md')) as f:
    assert 'skipped' in f.read()


def test_encoder_labels_are_short_and_unique():
  assert common.encoder_labels(['dlib', 'iresnet:/a/b/backbone.pth',
                                  '/x/enc', '/y/enc']) == {
                                      'dlib': 'dlib',
                                      'iresnet:/a/b/backbone.pth':
                                          'iresnet:backbone.pth',
                                      '/x/enc': 'enc', '/y/enc': 'enc#2'}


def test_descriptor_targets_without_images(tmp_path, toy_registry):
  # Descriptors only: nothing to compare pixels with or to embed with the
  # evaluation encoder; a NaN row is skipped, the others are inverted.
  d = np.random.default_rng(0).normal(size=(4, 12)).astype(np.float32)
  d[2] = np.nan
  np.savez(tmp_path / 'targets.npz', descriptor=d)
  config = _config(tmp_path, targets=str(tmp_path / 'targets.npz'),
                   eval_encoder='toy:b', steps=2)
  report = evaluate_job.run(config)
  assert [p['skipped'] != '' for p in report['plans']] == [False, True, True]
  arm = report['arms']['id']
  assert arm['num_done'] == 3 and list(arm['skipped_rows']) == ['2']
  assert arm['appearance'] == {}
  assert 'no original images' in arm['evaluation']['unavailable']
  assert arm['attacked']['num_impostor_pairs'] == 3
  assert 'original images' in report['aux_targets']['histogram'][
      'unavailable']
  assert 'not run' in report['transfer']['attack']['toy:b']
  # No statistics of real faces exist for a toy encoder: said, not guessed.
  check = report['descriptor_check']
  assert not check['checked'] and 'toy encoder' in check['why_not']
  with open(os.path.join(config.workdir, 'report.md')) as f:
    text = f.read()
  assert 'descriptors only' in text and 'similarity.png' not in text


@pytest.mark.parametrize('variant', ['default', 'paper'])
def test_config_variants(variant):
  config = cli.load_config(f'{_CONFIG}:{variant}')
  assert config.arms == ('id', 'id+lm', 'id+lm+hist')
  assert config.aux_targets in ('auto', 'heads', 'measured')
  for arm in config.arms:
    evaluation.parse_arm(arm)
  with pytest.raises(AttributeError):
    config.not_a_field = 1  # locked
  if variant == 'paper':
    assert config.latent_space == 'w+' and config.steps == 1000


@pytest.mark.parametrize('num_targets', [2, 0])  # 0: every such person
def test_celeba_layout_targets_type_two_and_other_photo_column(
    tmp_path, toy_registry, num_targets):
  # 3 people with two photos, 4 with one, all in the test partition.
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax.data import celeba  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'aligned'
  (folder / celeba.IMAGES_DIR).mkdir(parents=True)
  people = [1, 1, 2, 2, 3, 3, 4, 5, 6, 7]
  rng = np.random.default_rng(0)
  names = [f'{i + 1:06d}.jpg' for i in range(len(people))]
  for name in names:
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
        folder / celeba.IMAGES_DIR / name)
  (folder / celeba.IDENTITY_FILE).write_text(
      ''.join(f'{n} {p}\n' for n, p in zip(names, people)))
  (folder / celeba.PARTITION_FILE).write_text(
      ''.join(f'{n} 2\n' for n in names))  # all test
  (folder / celeba.ATTRIBUTE_FILE).write_text(
      f'{len(names)}\n' + ' '.join(celeba.ATTRIBUTE_NAMES) + '\n' + ''.join(
          n + ' -1' * 40 + '\n' for n in names))
  config = _config(tmp_path, targets=str(folder), num_targets=num_targets,
                   num_impostor_images=3, eval_encoder='toy:b',
                   arms=('id',), align_faces=False, one_photo_people='pool')
  report = evaluate_job.run(config)
  arm = report['arms']['id']
  n = num_targets or 3
  assert arm['num_done'] == n
  for role in ('attacked', 'evaluation'):
    type2 = arm[role]['type2']
    # Each target's person has exactly one other photo in the pool.
    assert type2['num_genuine'] == n
    assert all(-1 <= g <= 1 for g in type2['genuine'])
  # n targets + their n second photos + 3 others, n people twice.
  pool = 2 * n + 3
  assert report['pool']['num_originals'] == pool
  assert report['pool']['num_impostor_pairs'] == pool * (pool - 1) // 2 - n
  assert report['pool']['has_second_photos']
  grid = np.asarray(Image.open(os.path.join(config.workdir, 'grid.png')))
  # original | id | other photo: three 96-px cells with 2-px gaps.
  assert grid.shape[1] == 3 * (96 + 2) + 2
  with open(os.path.join(config.workdir, 'report.md')) as f:
    assert 'other photo of the person' in f.read()


def test_person_folders_work_like_celeba_and_one_photo_people_are_type_one(
    tmp_path, toy_registry):
  # What `id2image align` writes for person subfolders (no CelebA files):
  # 3 people with two photos, 2 with one, and one photo without a face.
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax.data import align  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'people'
  photos = {'ann': 2, 'bob': 2, 'cy': 2, 'dee': 1, 'eve': 1}
  rng = np.random.default_rng(0)
  lines = []
  for person, count in photos.items():
    (folder / person).mkdir(parents=True)
    for i in range(count):
      name = f'{person}/{i}.png'
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          folder / name)
      lines.append(name + ' 0.5' * 136 + '\n')
  (folder / align.LANDMARK_FILE).write_text(''.join(lines))
  (folder / align.SKIPPED_FILE).write_text('eve/1.png no face found\n')
  config = _config(tmp_path, targets=str(folder), num_targets=0,
                   num_impostor_images=0, eval_encoder='toy:b',
                   arms=('id',), transfer_encoders=('toy:a',))
  report = evaluate_job.run(config)
  detail = report['targets_detail']
  assert detail['people'] == 5 and detail['people_with_a_second_photo'] == 3
  assert detail['people_with_one_photo'] == 2
  assert 'subfolder per person' in detail['layout']
  # The photo without a face is named, not silently missing.
  assert detail['skipped_photos'] == {'eve/1.png': 'no face found'}
  arm = report['arms']['id']
  assert arm['num_done'] == 5
  # Type I for everyone, type II only for the three with a second photo.
  assert arm['evaluation']['tmr']['0.01']['num_people'] == 5
  type2 = arm['evaluation']['type2']
  assert type2['num_genuine'] == 3 and type2['num_people'] == 3
  # People with one photo can also be left to the pool.
  only_two = evaluate_job.run(_config(
      tmp_path / 'b', targets=str(folder), num_targets=0,
      num_impostor_images=0, eval_encoder='toy:b', arms=('id',),
      transfer_encoders=('toy:a',), one_photo_people='pool'))
  assert only_two['arms']['id']['num_done'] == 3
  # Without anyone's second photo, 'pool' leaves nobody to attack: said.
  lonely = tmp_path / 'lonely'
  for person in ('dee', 'eve'):
    (lonely / person).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
        lonely / person / '0.png')
  (lonely / align.LANDMARK_FILE).write_text(
      'dee/0.png' + ' 0.5' * 136 + '\neve/0.png' + ' 0.5' * 136 + '\n')
  with pytest.raises(ValueError, match="one_photo_people='targets'"):
    evaluate_job.run(_config(tmp_path / 'c', targets=str(lonely),
                             num_targets=0, one_photo_people='pool',
                             arms=('id',)))


def test_transfer_gives_each_encoder_its_own_init(tmp_path, toy_registry):
  # The configured ID->latent head reads the attacked encoder's 12-d
  # descriptors; a transfer encoder of another size starts from w_avg
  # instead of feeding its descriptors to that head.
  toy_registry['toy:wide'] = _toy_encoder(seed=7, dim=20)
  w_dim = loading.load_generator('demo:demo-8').w_dim
  config = heads.head_config('id_to_latent', hidden=(8,), input_dim=12,
                             out_shape=(w_dim,))
  variables = heads.build(config).init(
      jax.random.key(0), np.zeros((1, 12), np.float32))
  head = loading.save_head(str(tmp_path / 'id_to_latent'),
                           variables['params'], config)
  report = evaluate_job.run(_config(
      tmp_path, init=str(head), arms=('id',), eval_encoder='toy:wide',
      steps=1))
  table = report['transfer']['table']
  assert set(table) == {'toy:a', 'toy:wide'}
  assert _finite(table['toy:wide']['toy:wide']['cosine']['mean'])
  assert 'init w_avg' in report['transfer']['attack']['toy:wide']


def test_a_resumed_run_reports_the_inversion_time_of_every_run(
    tmp_path, toy_registry):
  # The rerun restores every chunk: its own seconds are only scoring; the
  # arm's `seconds_all_runs` is what inverting took, and report.md says so.
  config = _config(tmp_path, arms=('id',), eval_encoder='toy:a',
                   transfer_encoders=('toy:a',), resume=True, chunk_size=2)
  first = evaluate_job.run(config)['arms']['id']['inversion']
  assert first['chunks_run'] == 2 and first['chunks_restored'] == 0
  assert first['seconds_all_runs'] > 0
  again = evaluate_job.run(config)['arms']['id']['inversion']
  assert again['chunks_run'] == 0 and again['chunks_restored'] == 2
  assert again['seconds_all_runs'] == pytest.approx(
      first['seconds_all_runs'])
  with open(os.path.join(config.workdir, 'report.md')) as f:
    text = f.read()
  assert 'inverting across resumed runs: id: ' in text
  assert '2 of them from earlier runs' in text
