"""FFHQ alignment of photos (dlib detector + 68 landmarks, the ffhq-dataset
recipe)."""

import numpy as np
import pytest

from id2image_jax.data import align

skimage_data = pytest.importorskip('skimage.data')


@pytest.fixture(scope='module')
def aligner():
  return align.FaceAligner()


def test_quad_of_a_level_face_is_an_upright_square():
  lm = np.zeros((68, 2))
  lm[36:42] = [40, 50]   # left eye
  lm[42:48] = [60, 50]   # right eye
  lm[48], lm[54] = [42, 80], [58, 80]  # mouth corners
  quad = align.ffhq_quad(lm)  # TL, BL, BR, TR
  side = quad[3] - quad[0]
  np.testing.assert_allclose(side[1], 0, atol=1e-9)       # level
  np.testing.assert_allclose(quad[1] - quad[0], [0, side[0]], atol=1e-9)
  # Centred between the eyes, a tenth of the way down to the mouth.
  np.testing.assert_allclose(quad.mean(0), [50, 53], atol=1e-9)


def test_aligned_photo_puts_the_eyes_level_and_centred(aligner):
  photo = skimage_data.astronaut()
  out = aligner.align(photo, 256)
  assert out.shape == (256, 256, 3) and out.dtype == np.uint8
  lm = aligner.landmarks(out)
  assert lm is not None, 'the aligned face must still be a face'
  left, right = lm[36:42].mean(0), lm[42:48].mean(0)
  tilt = np.degrees(np.arctan2(*(right - left)[::-1]))
  assert abs(tilt) < 3, tilt
  # FFHQ frames put the eye midpoint near the horizontal centre, a bit
  # above the middle.
  mid = (left + right) / 2 / 256
  assert abs(mid[0] - 0.5) < 0.05 and 0.35 < mid[1] < 0.5, mid


def test_no_face_gives_none(aligner):
  assert aligner.align(np.full((80, 80, 3), 200, np.uint8), 64) is None


def test_align_folder_keeps_the_layout_and_maps_the_landmarks(tmp_path,
                                                              aligner):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax.data import celeba  # pylint: disable=g-import-not-at-top
  src, dst = tmp_path / 'src', tmp_path / 'dst'
  (src / celeba.IMAGES_DIR).mkdir(parents=True)
  Image.fromarray(skimage_data.astronaut()).save(
      src / celeba.IMAGES_DIR / '000001.jpg')
  Image.fromarray(np.full((60, 50, 3), 90, np.uint8)).save(
      src / celeba.IMAGES_DIR / '000002.jpg')
  for name, text in ((celeba.IDENTITY_FILE, '000001.jpg 7\n000002.jpg 8\n'),
                     (celeba.ATTRIBUTE_FILE, '2\n' + ' '.join(
                         celeba.ATTRIBUTE_NAMES) + '\n' + ''.join(
                             f'{n} ' + ' '.join(['1'] * 40) + '\n'
                             for n in ('000001.jpg', '000002.jpg')))):
    (src / name).write_text(text)
  counts = align.align_folder(str(src), str(dst), size=128, progress=False)
  assert counts == {'aligned': 1, 'skipped': 1, 'unreadable': 0,
                    'reused': 0}
  assert (dst / celeba.IDENTITY_FILE).exists()
  assert '000002.jpg no face' in (dst / align.SKIPPED_FILE).read_text()
  # The stored points are where the predictor finds them in the aligned
  # image (within a few pixels of 128).
  stored = np.array((dst / align.LANDMARK_FILE).read_text().split()[1:],
                    np.float64).reshape(68, 2)
  image = np.asarray(Image.open(dst / celeba.IMAGES_DIR / '000001.jpg'))
  found = aligner.landmarks(image)
  err = np.abs(stored * 128 - (found + 0.5)).mean()
  assert err < 2.0, err
  # The CelebA reader serves them as labels; a rerun redoes nothing.
  labels = {k: v for s in celeba.SPLITS
            for k, v in celeba.read_annotations(str(dst), s).items()
            if k == 'landmarks68' and len(v)}
  np.testing.assert_allclose(labels['landmarks68'][0], stored, atol=1e-5)
  again = align.align_folder(str(src), str(dst), size=128, progress=False)
  assert again == {'aligned': 0, 'skipped': 0, 'unreadable': 0, 'reused': 2}


def test_cli_align(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax import cli  # pylint: disable=g-import-not-at-top
  (tmp_path / 'in').mkdir()
  Image.fromarray(np.full((40, 40, 3), 10, np.uint8)).save(
      tmp_path / 'in' / 'wall.png')
  assert cli.main(['align', '--data', str(tmp_path / 'in'), '--out',
                   str(tmp_path / 'out'), '--set', 'progress=False']) == 0
  assert 'wall.png' in (tmp_path / 'out' / align.SKIPPED_FILE).read_text()


def test_budgeted_choice_aligns_only_chosen_people_with_two_photos_first(
    tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax.data import celeba  # pylint: disable=g-import-not-at-top
  from id2image_jax.data import faces  # pylint: disable=g-import-not-at-top
  src = tmp_path / 'src'
  (src / celeba.IMAGES_DIR).mkdir(parents=True)
  # People 1..6 have one photo, people 7 and 8 two each.
  people = {f'{i:06d}.jpg': p for i, p in
            enumerate([1, 2, 3, 7, 4, 5, 8, 6, 7, 8], start=1)}
  for name in people:
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(
        src / celeba.IMAGES_DIR / name)
  (src / celeba.IDENTITY_FILE).write_text(
      ''.join(f'{k} {p}\n' for k, p in people.items()))
  chosen = faces.choose(str(src), 4, seed=3)
  assert sorted(people[k] for k in chosen) == [7, 7, 8, 8]
  assert faces.choose(str(src), 4, seed=3) == chosen
  counts = align.align_folder(str(src), str(tmp_path / 'dst'),
                              names=chosen[:3], progress=False)
  # Grey squares hold no face: all three tried and skipped, no others.
  assert counts == {'aligned': 0, 'skipped': 3, 'unreadable': 0,
                    'reused': 0}
  skipped = (tmp_path / 'dst' / align.SKIPPED_FILE).read_text().split('\n')
  assert sorted(s.split()[0] for s in skipped if s) == sorted(chosen[:3])


def test_budgeted_choice_on_a_flat_folder_of_photos(tmp_path):
  # No identity file, no person subfolders: who is who is unknown, and the
  # choice is a seeded sample of the photos (it used to be empty).
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from id2image_jax.data import faces  # pylint: disable=g-import-not-at-top
  names = [f'photo_{i}.png' for i in range(7)]
  for name in names:
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / name)
  chosen = faces.choose(str(tmp_path), 4, seed=3)
  assert len(chosen) == 4 and set(chosen) <= set(names)
  assert faces.choose(str(tmp_path), 4, seed=3) == chosen
  assert sorted(faces.choose(str(tmp_path), 100)) == names
