"""Input pipelines on tiny data the tests write themselves."""

import os

import numpy as np
import pytest
from fake_data import write_fake_celeba
from fake_data import write_png_folder
from PIL import Image

from id2image_jax import data
from id2image_jax.data import celeba
from id2image_jax.data import materialise
from id2image_jax.data import pipeline

tfds = pytest.importorskip('tensorflow_datasets')


@pytest.mark.parametrize('as_zip', [True, False])
def test_celeba_manual_files(tmp_path, as_zip):
  truth = write_fake_celeba(tmp_path, num=10, as_zip=as_zip)
  src = data.celeb_a('train', data_dir=str(tmp_path / 'none'),
                     manual_dir=str(tmp_path))
  want = [i for i in range(10) if i % 3 == 0]  # partition 0
  assert src.num_examples == len(want)
  got = list(data.batches(src, 3))
  assert len(got) == 2
  first, last = got
  assert first['image'].shape == (3, 218, 178, 3)
  assert first['image'].dtype == np.uint8
  assert list(first['key']) == [truth['names'][i] for i in want[:3]]
  np.testing.assert_array_equal(first['attributes'],
                                truth['attributes'][want[:3]])
  np.testing.assert_array_equal(first['identity'], truth['identity'][want[:3]])
  np.testing.assert_allclose(
      first['landmarks5'],
      (truth['landmarks'][want[:3]] + 0.5) / np.array([178, 218]), rtol=1e-6)
  # The last batch is padded to the batch size and masked.
  np.testing.assert_array_equal(last['valid'], [True, False, False])
  assert last['key'][1] == ''
  # Resuming from an index gives the same examples as skipping.
  resumed = next(data.batches(src, 3, start=2))
  assert list(resumed['key'][:2]) == [truth['names'][i] for i in want[2:]]
  np.testing.assert_array_equal(resumed['image'][0], first['image'][2])


def test_celeba_missing_files_error_names_them(tmp_path):
  write_fake_celeba(tmp_path, num=4)
  os.remove(tmp_path / celeba.IDENTITY_FILE)
  os.remove(tmp_path / celeba.IMAGES_ZIP)
  with pytest.raises(data.DataNotFoundError) as e:
    data.celeb_a('test', data_dir=str(tmp_path / 'tfds'),
                 manual_dir=str(tmp_path))
  msg = str(e.value)
  assert f'Missing from {tmp_path}: img_align_celeba.zip, identity_CelebA.txt'\
      in msg
  for name in celeba.MANUAL_FILES:
    assert name in msg
  assert os.path.join(str(tmp_path / 'tfds'), 'celeb_a', '2.1.0') in msg
  # prepare=True needs the zip itself, not the extracted folder.
  os.makedirs(tmp_path / 'm' / celeba.IMAGES_DIR)
  with pytest.raises(data.DataNotFoundError, match='img_align_celeba.zip'):
    data.celeb_a('test', manual_dir=str(tmp_path / 'm'), prepare=True,
                 data_dir=str(tmp_path / 'tfds'))


def test_celeba_tfds_missing_is_clear(tmp_path):
  with pytest.raises(data.DataNotFoundError, match='list_eval_partition.txt'):
    src = data.celeb_a('test', data_dir=str(tmp_path), mode='tfds')
    next(data.batches(src, 2))


def test_celeba_tfds_mock():
  with tfds.testing.mock_data(num_examples=5):
    src = data.celeb_a('validation', mode='tfds', data_dir='/nonexistent')
    assert src.num_examples == 5
    got = list(data.batches(src, 4, image_size=(32, 24)))
  assert [b['valid'].sum() for b in got] == [4, 1]
  batch = got[0]
  assert batch['image'].shape == (4, 32, 24, 3)
  assert batch['attributes'].shape == (4, 40)
  assert batch['attributes'].dtype == bool
  assert batch['landmarks5'].shape == (4, 5, 2)
  assert batch['identity'].dtype == np.int32
  assert batch['key'][0].startswith('celeb_a-validation')


def test_lfw_tfds_mock_and_missing(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    src = data.lfw(mode='tfds', data_dir='/nonexistent')
    batch = next(data.batches(src, 3))
  assert batch['image'].shape == (3, 250, 250, 3)
  assert batch['name'].dtype.kind == 'U'
  with pytest.raises(data.DataNotFoundError, match='lfw.tgz'):
    data.lfw(data_dir=str(tmp_path), manual_dir=str(tmp_path))


def test_lfw_extracted_folder(tmp_path):
  root = tmp_path / 'lfw'
  for person in ('Ann_A', 'Bob_B'):
    os.makedirs(root / person)
    for i in range(2):
      Image.new('RGB', (250, 250), (i, 0, 0)).save(
          root / person / f'{person}_{i + 1:04d}.jpg')
  src = data.lfw(manual_dir=str(tmp_path), data_dir=str(tmp_path / 'x'))
  batch = next(data.batches(src, 4))
  assert list(batch['name']) == ['Ann_A', 'Ann_A', 'Bob_B', 'Bob_B']
  assert batch['key'][0] == 'Ann_A/Ann_A_0001.jpg'


def test_tfds_face_set_is_written_once_as_a_folder_per_person(
    tmp_path, monkeypatch):
  # LFW as TFDS finds it by default: extracted under the default manual
  # dir of $TFDS_DATA_DIR.
  manual = tmp_path / 'tfds' / 'downloads' / 'manual' / 'lfw'
  for person, shade in (('Ann_A', 10), ('Bob_B', 200)):
    os.makedirs(manual / person)
    Image.new('RGB', (250, 250), (shade, 0, 0)).save(
        manual / person / f'{person}_0001.jpg')
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  out = materialise.tfds_folder('lfw', str(tmp_path / 'work'))
  assert out == str(tmp_path / 'work' / 'lfw')
  assert sorted(os.listdir(out)) == ['Ann_A', 'Bob_B']
  image = np.asarray(Image.open(os.path.join(out, 'Bob_B',
                                             'Bob_B_0001.jpg.png')))
  assert image.shape == (250, 250, 3) and image[0, 0, 0] == 200
  assert not os.path.exists(out + '.tmp')
  # Written once: a second call keeps the folder as it is.
  os.remove(os.path.join(out, 'Ann_A', 'Ann_A_0001.jpg.png'))
  assert materialise.tfds_folder('lfw', str(tmp_path / 'work')) == out
  assert os.listdir(os.path.join(out, 'Ann_A')) == []


def test_image_folder_with_csv(tmp_path):
  names, images, csv_path = write_png_folder(tmp_path / 'imgs')
  src = data.image_folder(str(tmp_path / 'imgs'), labels_csv=csv_path)
  keys = sorted(names)
  batch = next(data.batches(src, 8))
  assert list(batch['key'][:5]) == keys
  np.testing.assert_array_equal(batch['image'][0], images[keys[0]])
  # CSV rows were written in reverse order of `names`.
  rank = {n: len(names) - 1 - i for i, n in enumerate(names)}
  np.testing.assert_array_equal(batch['smiling'][:5],
                                [rank[k] % 2 for k in keys])
  assert batch['score'].dtype == np.float32
  assert batch['who'][0] == f'p{rank[keys[0]]}'
  assert batch['valid'].sum() == 5


def test_image_folder_errors(tmp_path):
  with pytest.raises(data.DataNotFoundError, match='does not exist'):
    data.image_folder(str(tmp_path / 'nope'))
  names, _, csv_path = write_png_folder(tmp_path / 'imgs')
  Image.new('RGB', (20, 16)).save(tmp_path / 'imgs' / 'extra.png')
  with pytest.raises(ValueError, match=r"no row for 1 image.*extra\.png"):
    data.image_folder(str(tmp_path / 'imgs'), labels_csv=csv_path)


def test_image_folder_mixed_sizes_resized(tmp_path):
  os.makedirs(tmp_path / 'f')
  Image.new('RGB', (30, 20), (255, 0, 0)).save(tmp_path / 'f' / 'a.png')
  Image.new('RGB', (10, 40), (0, 0, 255)).save(tmp_path / 'f' / 'b.png')
  src = data.image_folder(str(tmp_path / 'f'))
  batch = next(data.batches(src, 2, image_size=(16, 16)))
  assert batch['image'].shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(batch['image'][0, 5, 5], [255, 0, 0])
  np.testing.assert_array_equal(batch['image'][1, 5, 5], [0, 0, 255])


def test_shuffle_is_a_seeded_permutation(tmp_path):
  write_png_folder(tmp_path / 'imgs', num=6, csv=False)
  src = data.image_folder(str(tmp_path / 'imgs'))

  def keys(**kw):
    return [k for b in data.batches(src, 4, **kw)
            for k, v in zip(b['key'], b['valid']) if v]

  plain = keys()
  a, b = keys(shuffle_buffer=10, seed=1), keys(shuffle_buffer=10, seed=1)
  assert a == b and sorted(a) == plain and a != plain


def test_pad_batch_and_prefetch_to_device():
  batch = {'image': np.ones((2, 4, 4, 3), np.uint8),
           'key': np.asarray(['a', 'b'])}
  padded = pipeline.pad_batch(batch, 3)
  assert padded['image'].shape == (3, 4, 4, 3)
  assert padded['image'][2].sum() == 0
  np.testing.assert_array_equal(padded['valid'], [True, True, False])
  out = list(data.prefetch_to_device(iter([padded] * 3), size=2))
  assert len(out) == 3
  assert hasattr(out[0]['image'], 'devices')  # a jax.Array
  assert isinstance(out[0]['key'], np.ndarray)
  with pytest.raises(ValueError, match='larger than'):
    pipeline.pad_batch(batch, 1)


def test_from_config(tmp_path):
  write_png_folder(tmp_path / 'imgs', csv=False)
  src = data.from_config({'source': 'folder', 'root': str(tmp_path / 'imgs'),
                          'labels_csv': None, 'split': 'test'})
  assert src.num_examples == 5
  assert data.from_config({'source': str(tmp_path / 'imgs')}).num_examples == 5
  with pytest.raises(ValueError, match='unknown dataset'):
    data.from_config({'source': 'imagenet'})
  write_fake_celeba(tmp_path / 'celeba', num=6)
  src = data.from_config({'source': 'celeb_a', 'split': 'validation',
                          'manual_dir': str(tmp_path / 'celeba'),
                          'data_dir': str(tmp_path / 'none'), 'root': None})
  assert src.name == 'celeb_a/validation' and src.num_examples == 2


def test_with_labels_joins_by_key(tmp_path):
  names, _, _ = write_png_folder(tmp_path / 'imgs', num=5, csv=False)
  src = data.image_folder(str(tmp_path / 'imgs'))
  keys = np.asarray(['sub/last.png', 'img1.png', 'img3.png'])
  labelled = pipeline.with_labels(src, keys, {'y': np.asarray([7, 1, 3])})
  assert labelled.num_examples == 3
  batch = next(data.batches(labelled, 4))
  # The source's order (sorted keys), each with its own label.
  assert list(batch['key'][:3]) == ['img1.png', 'img3.png', 'sub/last.png']
  np.testing.assert_array_equal(batch['y'][:3], [1, 3, 7])
  resumed = next(data.batches(labelled, 4, start=1))
  assert list(resumed['key'][:2]) == ['img3.png', 'sub/last.png']
  with pytest.raises(ValueError, match='unique'):
    pipeline.with_labels(src, ['a', 'a'], {})


def test_training_epochs_reshuffle_and_cache(tmp_path):
  write_png_folder(tmp_path / 'imgs', num=6, csv=False)
  src = data.image_folder(str(tmp_path / 'imgs'))
  new_epoch = pipeline.training_epochs(src, 4, image_size=(8, 8),
                                       shuffle_buffer=6, seed=0, cache=True)
  epochs = [[list(b['key']) for b in new_epoch()] for _ in range(3)]
  assert all(len(e) == 1 and len(e[0]) == 4 for e in epochs)  # drop rest
  assert len({tuple(e[0]) for e in epochs}) > 1  # a new order each epoch


def test_celeba_layout_without_partition_or_landmarks(tmp_path):
  # A CelebA-layout folder as users (and ../shared/data) have it: smaller
  # images, no partition or landmark file, annotation rows for images that
  # are not there.
  truth = write_fake_celeba(tmp_path, num=24, as_zip=False, size=(21, 17),
                            seed=3)
  os.remove(tmp_path / celeba.PARTITION_FILE)
  os.remove(tmp_path / celeba.LANDMARK_FILE)
  os.remove(tmp_path / celeba.IMAGES_DIR / truth['names'][5])
  identity = [i // 2 + 1 for i in range(24)]  # 12 people, 2 images each
  with open(tmp_path / celeba.IDENTITY_FILE, 'w') as f:
    f.writelines(f'{n} {i}\n' for n, i in zip(truth['names'], identity))
  splits = {s: celeba.read_annotations(str(tmp_path), s)
            for s in celeba.SPLITS}
  keys = [k for s in splits.values() for k in s['key']]
  assert sorted(keys) == sorted(set(truth['names']) - {truth['names'][5]})
  people = [set(s['identity'].tolist()) for s in splits.values()]
  for i in range(3):
    for j in range(i + 1, 3):
      assert not people[i] & people[j], 'an identity is in two splits'
  assert all('landmarks5' not in s for s in splits.values())
  assert all(len(s['key']) for s in splits.values())
  by_name = dict(zip(truth['names'], identity))
  for s in splits.values():
    assert [by_name[k] for k in s['key']] == s['identity'].tolist()
  src = data.celeb_a('test', manual_dir=str(tmp_path),
                     data_dir=str(tmp_path / 'no_tfds'))
  assert 'identity-disjoint' in src.info['split']
  batch = next(data.batches(src, 2))
  assert batch['image'].shape[1:] == (21, 17, 3)
  assert set(batch) >= {'key', 'attributes', 'identity'}


def test_identity_split_is_disjoint_deterministic_and_complete():
  ids = np.repeat(np.arange(50), 3)
  parts = [celeba.identity_split(ids, s) for s in celeba.SPLITS]
  assert sorted(np.concatenate(parts).tolist()) == list(range(150))
  assert [len(np.unique(ids[p])) for p in parts] == [40, 5, 5]
  np.testing.assert_array_equal(parts[2], celeba.identity_split(ids, 'test'))
  other = celeba.identity_split(ids, 'test', seed=1)
  assert not np.array_equal(parts[2], other)
  with pytest.raises(ValueError, match='summing to 1'):
    celeba.identity_split(ids, 'test', fractions=(0.5, 0.5, 0.5))


def test_pair_counts_each_unordered_pair_once():
  from id2image_jax import evaluation  # pylint: disable=g-import-not-at-top
  labels = np.array([7, 7, 7, 3, 3, 9])
  got = evaluation.count_pairs(labels)
  # Brute force over unordered pairs.
  pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
  genuine = sum(labels[i] == labels[j] for i, j in pairs)
  assert got == {'images': 6, 'identities': 3, 'genuine': genuine,
                 'impostor': len(pairs) - genuine,
                 'identities_with_2_or_more': 2}
  scores = evaluation.impostor_pair_scores(
      np.random.default_rng(0).normal(size=(6, 4)), labels)
  assert len(scores) == got['impostor']
