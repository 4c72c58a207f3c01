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
