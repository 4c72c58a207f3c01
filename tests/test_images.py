"""Photos and descriptor files from users: every reader refuses a bad file
by name (decompression bombs, truncated, empty, not an image), converts
the odd ones right (16-bit gray, CMYK, palette, transparency, EXIF
orientation), and the folder readers skip and name what they refuse."""

import io
import struct
import time
import types
import zlib

import numpy as np
import pytest
from fake_data import write_fake_celeba
from PIL import Image

from id2image_jax import errors
from id2image_jax.data import align
from id2image_jax.data import arrays
from id2image_jax.data import faces
from id2image_jax.data import images
from id2image_jax.data import targets
from id2image_jax.evaluation import targets as eval_targets


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + kind + data
          + struct.pack('>I', zlib.crc32(kind + data)))


def bomb_png(width: int, height: int) -> bytes:
  """A valid 1-bit black PNG of width x height: a few kB of zlib that
  decodes to width * height pixels."""
  row = b'\0' * (1 + (width + 7) // 8)
  compressor = zlib.compressobj(9)
  data = b''.join(compressor.compress(row) for _ in range(height))
  data += compressor.flush()
  header = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header)
          + _chunk(b'IDAT', data) + _chunk(b'IEND', b''))


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buf = io.BytesIO()
  image.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _random_rgb(seed=0, size=(24, 32)):
  return np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)


# --------------------------------------------------------------------------
# The reader.


@pytest.mark.parametrize('width,height', [(11_000, 10_000),  # over ours
                                          (20_000, 20_000)])  # over PIL's
def test_decompression_bombs_are_refused_before_decoding(tmp_path, width,
                                                         height):
  path = tmp_path / 'bomb.png'
  path.write_bytes(bomb_png(width, height))
  assert path.stat().st_size < 400_000
  started = time.perf_counter()
  with pytest.raises(images.UnreadableImageError,
                     match=r'bomb\.png: .*100 megapixels'):
    images.read_rgb(path)
  assert time.perf_counter() - started < 2.0  # nothing was decoded


def test_the_pixel_limit_is_a_parameter(tmp_path):
  path = tmp_path / 'a.png'
  path.write_bytes(_saved(Image.fromarray(_random_rgb()), 'PNG'))
  assert images.read_rgb(path).shape == (24, 32, 3)
  with pytest.raises(images.UnreadableImageError, match='24 pixels'):
    images.read_rgb(path, max_pixels=100)


@pytest.mark.parametrize('name,content,why', [
    ('empty.png', b'', 'empty file'),
    ('text.jpg', b'hello, not a picture', 'not a PNG/JPEG/BMP/WEBP'),
    ('cut.png', _saved(Image.fromarray(_random_rgb()), 'PNG')[:200],
     'truncated'),
    ('cut.jpg', _saved(Image.fromarray(_random_rgb()), 'JPEG')[:400],
     'truncated'),
    ('tiff.png', _saved(Image.fromarray(_random_rgb()), 'TIFF'),
     'not a PNG'),
])
def test_bad_files_are_refused_by_name(tmp_path, name, content, why):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(images.UnreadableImageError) as info:
    images.read_rgb(path)
  assert str(info.value).startswith(str(path)), info.value
  assert why.lower() in info.value.why.lower()
  assert isinstance(info.value, errors.BadInputError)


def test_sixteen_bit_gray_is_scaled_not_clipped_to_white(tmp_path):
  gray = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
  path = tmp_path / 'g16.png'
  Image.fromarray(gray).save(path)
  with Image.open(path) as im:
    assert im.mode.startswith('I;16')
  rgb = images.read_rgb(path)
  want = np.round(gray / 257.0).astype(np.uint8)
  np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, -1))


def test_cmyk_jpeg_is_converted(tmp_path):
  path = tmp_path / 'cmyk.jpg'
  Image.new('CMYK', (16, 16), (0, 255, 255, 0)).save(path, quality=95)
  rgb = images.read_rgb(path).astype(int)
  np.testing.assert_allclose(rgb.mean((0, 1)), [255, 0, 0], atol=4)


def test_palette_and_transparency_over_white(tmp_path):
  palette = [0, 0, 0, 200, 30, 10] + [0] * 762
  p = Image.new('P', (4, 4), 1)
  p.putpalette(palette)
  p.save(tmp_path / 'p.png')
  assert images.read_rgb(tmp_path / 'p.png')[0, 0].tolist() == [200, 30, 10]
  p.info['transparency'] = 1
  p.save(tmp_path / 'p_transparent.png', transparency=1)
  assert images.read_rgb(tmp_path / 'p_transparent.png')[0, 0].tolist() == [
      255, 255, 255]
  Image.new('RGBA', (4, 4), (10, 20, 30, 0)).save(tmp_path / 'rgba.png')
  assert images.read_rgb(tmp_path / 'rgba.png')[0, 0].tolist() == [
      255, 255, 255]
  Image.new('LA', (4, 4), (100, 128)).save(tmp_path / 'la.png')
  # 100 * 128/255 + 255 * 127/255
  assert images.read_rgb(tmp_path / 'la.png')[0, 0].tolist() == [177] * 3
  Image.new('1', (4, 4), 1).save(tmp_path / 'bw.bmp')
  assert images.read_rgb(tmp_path / 'bw.bmp')[0, 0].tolist() == [255] * 3


@pytest.mark.parametrize('orientation,corner', [(1, (0, 0)), (3, (-1, -1)),
                                                 (6, (0, -1)), (8, (-1, 0))])
def test_exif_orientation_is_honoured(tmp_path, orientation, corner):
  # A 40 x 24 (w x h) picture with a red top-left block, stored as a
  # camera does with the orientation tag.
  rgb = np.full((24, 40, 3), (0, 0, 255), np.uint8)
  rgb[:8, :8] = (255, 0, 0)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / 'photo.jpg'
  Image.fromarray(rgb).save(path, exif=exif, quality=95)
  out = images.read_rgb(path)
  assert out.shape == ((24, 40, 3) if orientation in (1, 3) else (40, 24, 3))
  y, x = (0 if c == 0 else out.shape[i] - 1 for i, c in enumerate(corner))
  assert out[y, x, 0] > 200 and out[y, x, 2] < 60, out[y, x]


# --------------------------------------------------------------------------
# Descriptor files.


@pytest.mark.parametrize('suffix', ['.npz', '.npy'])
def test_random_bytes_are_not_a_valid_npy_and_no_unpickling_hint(tmp_path,
                                                                  suffix):
  path = tmp_path / f'random{suffix}'
  path.write_bytes(np.random.default_rng(0).bytes(500))
  with pytest.raises(errors.BadInputError) as info:
    targets.read_descriptor_file(str(path), dim=128)
  assert 'not a valid .npy/.npz file' in str(info.value)
  assert 'pickle' not in str(info.value)


def test_object_arrays_are_never_loaded(tmp_path):
  path = tmp_path / 'objects.npy'
  np.save(path, np.array([{'a': 1}, None], dtype=object))
  with pytest.raises(errors.BadInputError,
                     match='Python objects.*never loaded') as info:
    arrays.load_arrays(path)
  assert 'allow_pickle' not in str(info.value)


def test_a_zip_that_is_not_an_npz(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'model.npz'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', b'not an array')
  with pytest.raises(errors.BadInputError,
                     match="member 'archive/data.pkl' is not a .npy"):
    targets.read_descriptor_file(str(path), dim=4)


def test_extras_of_the_wrong_shape_are_named(tmp_path):
  path = tmp_path / 'd.npz'
  np.savez(path, descriptor=np.zeros((3, 4), np.float32),
           landmarks=np.zeros((3, 5, 2)))
  with pytest.raises(errors.BadInputError,
                     match=r'landmarks has shape \(3, 5, 2\), expected '
                     r'\[N, 68, 2\]'):
    targets.read_descriptor_file(str(path), dim=4)
  np.savez(path, descriptor=np.zeros((3, 4), np.float32), names=np.array(7))
  with pytest.raises(errors.BadInputError, match=r'names has shape \(\)'):
    targets.read_descriptor_file(str(path), dim=4)


# --------------------------------------------------------------------------
# The folder readers skip and name what they refuse.


def _bad_files(folder):
  """Writes a bomb, an empty, a truncated and a TIFF-named-PNG file; their
  names."""
  (folder / 'bomb.png').write_bytes(bomb_png(20_000, 20_000))
  (folder / 'empty.jpg').write_bytes(b'')
  good = _saved(Image.fromarray(_random_rgb()), 'PNG')
  (folder / 'cut.png').write_bytes(good[:len(good) // 2])
  return ['bomb.png', 'cut.png', 'empty.jpg']


class _StubEncoder:
  dim = 4

  def embed(self, x):
    return np.asarray(x).reshape(len(x), -1)[:, :4].astype(np.float32)


def test_invert_folder_reader_skips_bombs_truncated_and_empty(tmp_path):
  bad = _bad_files(tmp_path)
  Image.fromarray(_random_rgb()).save(tmp_path / 'good.png')
  Image.fromarray(np.linspace(0, 65535, 256).reshape(16, 16).astype(
      np.uint16)).save(tmp_path / 'gray16.png')
  out = targets.read_image_folder(str(tmp_path), resolution=8,
                                  encoder=_StubEncoder())
  names = dict(enumerate(out.names))
  assert sorted(names[r] for r in out.skipped) == bad
  for row, why in out.skipped.items():
    assert names[row] in why
  assert np.isfinite(out.descriptors[out.names.index('good.png')]).all()
  gray = out.sources[out.names.index('gray16.png')]
  assert gray.min() < -0.5 and gray.max() > 0.5  # a ramp, not white


def test_align_names_unreadable_photos_with_why(tmp_path):
  pytest.importorskip('dlib')
  (tmp_path / 'in').mkdir()
  bad = _bad_files(tmp_path / 'in')
  counts = align.align_folder(str(tmp_path / 'in'), str(tmp_path / 'out'),
                              progress=False)
  assert counts['unreadable'] == counts['skipped'] == len(bad)
  lines = (tmp_path / 'out' / align.SKIPPED_FILE).read_text().splitlines()
  reasons = dict(line.split(' ', 1) for line in lines)
  assert sorted(reasons) == bad
  assert 'megapixels' in reasons['bomb.png']
  assert 'empty file' in reasons['empty.jpg']
  assert all(r.startswith('unreadable image: ') for r in reasons.values())


def test_aligned_folder_reader_leaves_out_and_names_broken_images(tmp_path):
  rng = np.random.default_rng(0)
  names = [f'{i}.png' for i in range(4)]
  for n in names:
    Image.fromarray(_random_rgb(int(n[0]), (16, 16))).save(tmp_path / n)
  (tmp_path / '2.png').write_bytes(b'\x89PNG\r\n\x1a\n')
  (tmp_path / align.LANDMARK_FILE).write_text(''.join(
      n + ' ' + ' '.join(f'{v:.3f}' for v in rng.uniform(0, 1, 136)) + '\n'
      for n in names))
  got = faces.read_aligned(str(tmp_path))
  assert got.keys == ['0.png', '1.png', '3.png']
  assert len(got.images) == len(got.landmarks) == 3
  assert 'unreadable image' in got.skipped['2.png']


def test_celeba_evaluation_targets_skip_an_unreadable_photo(tmp_path):
  write_fake_celeba(tmp_path, num=30, as_zip=False, seed=1, size=(16, 16))
  config = types.SimpleNamespace(targets=str(tmp_path), split='train',
                                 seed=0, num_targets=3,
                                 num_impostor_images=2)
  whole = eval_targets.people_layout(config, _StubEncoder())
  assert whole.unreadable == {}
  first = whole.targets.names[0]
  (tmp_path / 'img_align_celeba' / first).write_bytes(b'\xff\xd8\xff')
  cut = eval_targets.people_layout(config, _StubEncoder())
  assert list(cut.unreadable) == [first]
  assert first not in cut.targets.names
  assert len(cut.pool_images) == len(cut.pool_identity) == len(
      cut.pool_descriptors)
