"""Descriptor datasets, resumable embedding, dlib labels and the report job."""

import functools
import importlib.util
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_data import write_fake_celeba

from id2image_jax import checkpoints
from id2image_jax import data
from id2image_jax import errors
from id2image_jax import loading
from id2image_jax import losses
from id2image_jax import preprocess
from id2image_jax.data import descriptors as embed
from id2image_jax.data import dlib_landmarks as landmarks
from id2image_jax.jobs import embed as embed_job
from id2image_jax.jobs import leakage as leakage_job
from id2image_jax.reports import leakage as report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = (44, 36)  # tiny CelebA-shaped images


def _config(name, arg=None):
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


_W = np.random.default_rng(0).normal(size=(4 * 4 * 3, 16)).astype(np.float32)


def toy_embed(images):
  """A stand-in encoder: a random projection of a 4x4 thumbnail."""
  x = images.astype(jnp.float32) / 255.0
  x = jax.image.resize(x, (x.shape[0], 4, 4, 3), 'linear', antialias=True)
  return x.reshape(x.shape[0], -1) @ _W


class ToyLandmarker:
  """A stand-in for dlib: a template moved by the image's mean colour."""
  config = {'toy': True}

  def __init__(self, fail_after=None):
    self.calls = 0
    self.fail_after = fail_after
    self.template = np.random.default_rng(1).uniform(
        0.2, 0.8, (68, 2)).astype(np.float32)
    self.template[36] = (0.3, 0.4)
    self.template[45] = (0.7, 0.4)

  def __call__(self, images):
    self.calls += 1
    if self.fail_after is not None and self.calls > self.fail_after:
      raise KeyboardInterrupt('simulated interruption')
    shift = images.mean(axis=(1, 2, 3)) / 255.0 - 0.5
    points = self.template[None] + 0.05 * shift[:, None, None]
    return points.astype(np.float32), np.arange(len(images)) % 5 != 4


@pytest.fixture(scope='module')
def celeba_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('celeba')
  write_fake_celeba(d, num=24, size=SMALL)
  return str(d)


def _source(celeba_dir, split):
  return data.celeb_a(split, manual_dir=celeba_dir,
                      data_dir=os.path.join(celeba_dir, 'no_tfds'))


def test_embed_dataset_contents(celeba_dir, tmp_path):
  src = _source(celeba_dir, 'test')
  out = embed.embed_dataset(toy_embed, src, str(tmp_path / 'd.npz'),
                            batch_size=3, landmarker=ToyLandmarker(),
                            progress=False, meta={'encoder': 'toy'})
  got = embed.load_descriptors(out)
  images = np.concatenate([b['image'][b['valid']]
                           for b in data.batches(src, 8)])
  n = src.num_examples
  assert got['descriptor'].shape == (n, 16)
  np.testing.assert_allclose(got['descriptor'], toy_embed(images),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got['histogram'],
                             losses.image_histogram(images, value_range=(0.0, 255.0)))
  assert got['landmarks68'].shape == (n, 68, 2)
  assert got['landmarks68_detected'].dtype == bool
  assert got['attributes'].shape == (n, 40)
  assert list(got['key']) == sorted(got['key'])
  assert got['meta']['image_size'] == list(SMALL)
  assert got['meta']['encoder'] == 'toy'
  assert 'Smiling' in got['meta']['source_info']['attribute_names']
  assert not os.path.exists(out + '.partial')


def test_embed_dataset_resumes(celeba_dir, tmp_path):
  src = _source(celeba_dir, 'train')  # 8 images
  out = str(tmp_path / 'r.npz')
  with pytest.raises(KeyboardInterrupt):
    embed.embed_dataset(toy_embed, src, out, batch_size=2, save_every=1,
                        landmarker=ToyLandmarker(fail_after=2),
                        progress=False)
  parts = sorted(os.listdir(out + '.partial'))
  assert parts == ['manifest.json', 'part-000000000-000000002.npz',
                   'part-000000002-000000004.npz']
  # Other settings must not mix with the saved rows.
  with pytest.raises(ValueError, match='other settings'):
    embed.embed_dataset(toy_embed, src, out, batch_size=4,
                        landmarker=ToyLandmarker(), progress=False)
  second = ToyLandmarker()
  embed.embed_dataset(toy_embed, src, out, batch_size=2, save_every=1,
                      landmarker=second, progress=False)
  assert second.calls == 2  # only the 4 remaining images
  # A finished file is kept, unless asked to overwrite.
  third = ToyLandmarker()
  embed.embed_dataset(toy_embed, src, out, batch_size=2, landmarker=third,
                      progress=False)
  assert third.calls == 0
  embed.embed_dataset(toy_embed, src, out, batch_size=2, landmarker=third,
                      progress=False, overwrite=True)
  assert third.calls == 4
  resumed = embed.load_descriptors(out)
  whole = embed.load_descriptors(embed.embed_dataset(
      toy_embed, src, str(tmp_path / 'w.npz'), batch_size=2,
      landmarker=ToyLandmarker(), progress=False))
  for k in ('descriptor', 'key', 'histogram', 'landmarks68', 'attributes'):
    np.testing.assert_array_equal(resumed[k], whole[k])


def test_embed_and_leakage_jobs_end_to_end(celeba_dir, tmp_path):
  cfg = _config('embed')
  cfg.encoder_name = 'toy'
  cfg.data.manual_dir = celeba_dir
  cfg.data.data_dir = os.path.join(celeba_dir, 'no_tfds')
  cfg.out = str(tmp_path / 'desc' / '{encoder}_{split}.npz')
  cfg.batch_size = 4
  cfg.progress = False
  paths = embed_job.run(cfg, embed_fn=toy_embed, landmarker=ToyLandmarker())
  assert [os.path.basename(p) for p in paths] == [
      'toy_train.npz', 'toy_validation.npz', 'toy_test.npz']

  cfg = _config('leakage', 'quick')
  cfg.workdir = str(tmp_path / 'run')
  cfg.descriptors = str(tmp_path / 'desc' / '{encoder}_{split}.npz')
  cfg.encoders = 'toy'
  cfg.progress = False
  for head in ('attributes', 'histogram', 'landmarks'):
    cfg[head].hidden = (8,)
    cfg[head].batch_size = 4
    cfg[head].num_epochs = 1
  cfg.attributes.names = 'Smiling,Eyeglasses'
  cfg.image_baseline.update(enabled=True, attributes=True,
                            channels=(2, 2, 2, 2, 2), hidden=(4,),
                            input_size=(16, 16), batch_size=4, num_epochs=1)
  cfg.data.manual_dir = celeba_dir
  cfg.data.data_dir = os.path.join(celeba_dir, 'no_tfds')
  cfg.figures.num_examples = 3
  results = leakage_job.run(cfg)

  table = results['table']
  assert table['columns'] == ['Smiling', 'Eyeglasses', 'Landmarks',
                              'Histogram']
  mlp_row, best_row = 'From ID (toy), paper MLP', (
      'From ID (toy), best on validation')
  assert list(table['rows']) == [mlp_row, best_row, 'From image',
                                 'Baseline']
  for label, values in table['rows'].items():
    assert all(v is not None for v in values), (label, values)
  assert table['rows']['From image'][-1] == 0.0
  assert 0 <= table['rows'][best_row][0] <= 100
  # Each head chosen on the validation split's 8 images (never on test);
  # the paper's MLP keeps its own row.
  det = results['details']['toy']
  assert det['num_validation'] == 8
  for r in [*det['attributes'].values(), det['landmarks'],
            det['histogram']]:
    assert r['head'] in ('mlp', 'linear')
    assert r['validation']['num'] <= 8
  smiling = det['attributes']['Smiling']
  assert table['rows'][mlp_row][0] == smiling['mlp']['accuracy']
  assert table['rows'][best_row][0] == smiling[smiling['head']]['accuracy']
  assert table['rows'][best_row][2] == det['landmarks']['nme']
  run = tmp_path / 'run'
  with open(run / 'leakage.json') as f:
    assert json.load(f)['table'] == table
  md = (run / 'leakage.md').read_text()
  assert f'| {best_row} |' in md and 'Paper' in md
  assert '| head | paper MLP |' in md
  for fig in results['figures'].values():
    assert (run / fig).stat().st_size > 1000
  assert len(results['figures']) == 2
  # The trained heads restore and predict.
  model, params, config = loading.load_head(run / 'heads' / 'toy' /
                                              'landmarks')
  assert config['encoder'] == 'toy'
  assert model.apply({'params': params}, jnp.ones((2, 16))).shape == (
      2, 68, 2)
  model, params, _ = loading.load_head(run / 'heads' / 'image' /
                                         'landmarks_cnn')
  assert model.apply({'params': params}, jnp.zeros((1, 30, 20, 3))).shape == (
      1, 68, 2)
  # The heads are never chosen on the test split.
  cfg.probe.validation_split = 'test'
  with pytest.raises(errors.UsageError, match='validation_split'):
    leakage_job.run(cfg)


def test_leakage_missing_descriptors_says_how_to_make_them(tmp_path):
  cfg = _config('leakage', 'quick')
  cfg.workdir = str(tmp_path)
  cfg.descriptors = str(tmp_path / '{encoder}_{split}.npz')
  cfg.encoders = 'vggface2'
  cfg.figures.images = False
  with pytest.raises(FileNotFoundError, match='id2image embed'):
    leakage_job.run(cfg)


def test_run_leakage_image_baseline_needs_data(tmp_path):
  cfg = _config('leakage')
  cfg.data.manual_dir = str(tmp_path)
  cfg.data.data_dir = str(tmp_path)
  with pytest.raises(data.DataNotFoundError, match='list_attr_celeba.txt'):
    leakage_job.run(cfg)


@pytest.mark.dlib
def test_dlib_landmarks_on_a_real_face():
  pytest.importorskip('dlib')
  skimage_data = pytest.importorskip('skimage.data')
  face = skimage_data.astronaut()[:256, 96:352]  # Eileen Collins, 256x256
  images = np.stack([face, np.zeros_like(face)])
  with landmarks.Dlib68() as label:
    points, detected = label(images)
  assert points.shape == (2, 68, 2)
  np.testing.assert_array_equal(detected, [True, False])
  p = points[0] * 256
  # The face sits in the middle of the crop; eyes above the mouth.
  assert 40 < p[:, 0].mean() < 216 and 40 < p[:, 1].mean() < 216
  assert p[36:48, 1].mean() < p[48:68, 1].mean()
  assert 20 < np.linalg.norm(p[36] - p[45]) < 150
  # Normalised points do not depend on the image size.
  small = jax.image.resize(face.astype(np.float32), (128, 128, 3),
                           'linear', antialias=True)
  small = np.asarray(small).round().astype(np.uint8)[None]
  with landmarks.Dlib68() as label:
    resized, found = label(small)
  assert found[0]
  assert np.abs(resized[0] - points[0]).mean() < 0.02
  # A fixed box where the detector puts it gives the same points.
  with landmarks.Dlib68(face_box=(76 / 256, 86 / 256, 167 / 256,
                                  176 / 256)) as label:
    boxed, found = label(face[None])
  assert found[0]
  assert np.abs(boxed[0] - points[0]).mean() < 0.01
  # Worker processes label exactly as in-process labelling does.
  with landmarks.Dlib68(num_workers=1) as label:
    pooled, found = label(images)
  np.testing.assert_array_equal(pooled, points)
  np.testing.assert_array_equal(found, detected)


def test_a_new_encoder_kind_is_one_row_in_the_kinds_table(tmp_path,
                                                         monkeypatch):
  class Toy(nn.Module):
    dim: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
      d = nn.Dense(self.dim, dtype=self.dtype)(x.reshape(x.shape[0], -1))
      return d, {'input': x}

  def input_spec(config):
    del config
    return preprocess.InputSpec(size=(8, 8))

  build = lambda config, *, dtype=None: Toy(config['dim'], dtype)
  monkeypatch.setitem(loading.KINDS, 'toyenc', loading.Kind(
      name='toyenc', role=loading.ENCODER, files='toy.file', build=build,
      abstract=loading.encoder_abstract(build, input_spec), parse=str,
      convert=None, input_spec=input_spec))
  net = Toy(5)
  variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  checkpoints.save(tmp_path / 'enc', variables, kind='toyenc',
                   config={'dim': 5})
  encoder = loading.load_encoder(str(tmp_path / 'enc'),
                                 crop=(0.0, 0.0, 0.5, 1.0))
  assert (encoder.kind, encoder.dim) == ('toyenc', 5)
  embed_fn = functools.partial(encoder.batch_fn(), encoder.variables)
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 8, 3),
                                             np.uint8)
  spec = preprocess.InputSpec(size=(8, 8), crop=(0.0, 0.0, 0.5, 1.0))
  want, _ = net.apply(variables, preprocess.to_encoder_input(
      preprocess.uint8_to_unit_range(images), spec))
  np.testing.assert_allclose(jax.jit(embed_fn)(images), want, rtol=1e-5,
                             atol=1e-5)
  checkpoints.save(tmp_path / 'bad', variables, kind='nothing')
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match="'nothing' checkpoint"):
    loading.load_encoder(str(tmp_path / 'bad'))


def _measures(head, *, chosen=True):
  """Results of `analysis.leakage` for one attribute and the landmarks."""
  mlp = {'accuracy': 70.0, 'accuracy_ci': [65.0, 75.0], 'gain_ci': [-1, 4],
         'leaks': False}
  linear = {'accuracy': 80.0, 'accuracy_ci': [76.0, 84.0],
            'gain_ci': [5, 14], 'leaks': True}
  attr = {**(linear if head == 'linear' else mlp), 'head': head,
          'mlp': mlp, 'baseline': 69.0, 'positive_rate': 31.0}
  lm = {'nme': 7.0, 'ci': [6.8, 7.2], 'gain_ci': [0.5, 1.5], 'leaks': True,
        'head': 'mlp', 'mlp': {'nme': 7.0, 'ci': [6.8, 7.2]},
        'baseline': 8.0}
  if chosen:
    attr['linear'] = linear
    attr['validation'] = {'head': head, 'l2': 0.01, 'mlp': 71.0,
                          'linear': 79.0 if head == 'linear' else 60.0,
                          'num': 50}
    lm['validation'] = {'head': 'mlp', 'l2': 1.0, 'mlp': 7.1,
                        'linear': 7.4, 'num': 40}
  return {'attributes': {'Male': attr}, 'landmarks': lm}


def test_report_shows_the_paper_mlp_and_the_head_that_won():
  rows = report.descriptor_rows('dlib', _measures('linear'))
  assert rows == {
      'From ID (dlib), paper MLP': {'attributes': {'Male': 70.0},
                                    'landmarks': 7.0},
      'From ID (dlib), best on validation': {'attributes': {'Male': 80.0},
                                             'landmarks': 7.0}}
  md = report.to_markdown({
      'table': report.table(['Male'], rows, None, {}),
      'details': {'dlib': _measures('linear')}})
  male = next(line for line in md.splitlines()
              if line.startswith('| Male (% accuracy)'))
  # Reported: the probe's 80 % and its leak; the paper's MLP beside it.
  assert ('80.0 [76.0, 84.0] | linear (L2 0.01) | 70.0 [65.0, 75.0] | '
          '71.0 / 79.0 |') in male and male.endswith('**yes** |')
  lm = next(line for line in md.splitlines()
            if line.startswith('| landmarks'))
  assert '| MLP |' in lm and '7.1 / 7.4' in lm
  # Without a validation split: the paper's MLP alone, one row as before.
  assert list(report.descriptor_rows('dlib', _measures(
      'mlp', chosen=False))) == ['From ID (dlib)']
