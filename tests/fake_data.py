"""Tiny datasets written by the tests: CelebA's five files, PNG folders."""

import io
import os
import zipfile

import numpy as np
from PIL import Image

from id2image_jax.data import celeba


def _jpeg(rng, size=celeba.IMAGE_SIZE):
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(
      buf, format='JPEG')
  return buf.getvalue()


def write_fake_celeba(directory, *, num=10, as_zip=True, seed=0,
                      size=celeba.IMAGE_SIZE):
  """The five CelebA files, with `num` images; partition 0/1/2 cycling."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  names = [f'{i + 1:06d}.jpg' for i in range(num)]
  images = {n: _jpeg(rng, size) for n in names}
  if as_zip:
    with zipfile.ZipFile(os.path.join(directory, celeba.IMAGES_ZIP), 'w') as z:
      for n, b in images.items():
        z.writestr(f'img_align_celeba/{n}', b)
  else:
    os.makedirs(os.path.join(directory, celeba.IMAGES_DIR))
    for n, b in images.items():
      with open(os.path.join(directory, celeba.IMAGES_DIR, n), 'wb') as f:
        f.write(b)
  attributes = rng.choice([-1, 1], (num, 40))
  landmarks = rng.integers(10, 170, (num, 10))
  identity = rng.integers(1, 5, num)
  with open(os.path.join(directory, celeba.PARTITION_FILE), 'w') as f:
    f.writelines(f'{n} {i % 3}\n' for i, n in enumerate(names))
  with open(os.path.join(directory, celeba.ATTRIBUTE_FILE), 'w') as f:
    f.write(f'{num}\n{" ".join(celeba.ATTRIBUTE_NAMES)}\n')
    f.writelines(n + ' ' + ' '.join(f'{v:2d}' for v in a) + '\n'
                 for n, a in zip(names, attributes))
  with open(os.path.join(directory, celeba.LANDMARK_FILE), 'w') as f:
    f.write(f'{num}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y '
            'leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n')
    f.writelines(n + ' ' + ' '.join(str(v) for v in row) + '\n'
                 for n, row in zip(names, landmarks))
  with open(os.path.join(directory, celeba.IDENTITY_FILE), 'w') as f:
    f.writelines(f'{n} {i}\n' for n, i in zip(names, identity))
  return {'names': names, 'attributes': attributes > 0,
          'landmarks': landmarks.reshape(num, 5, 2), 'identity': identity}


def write_png_folder(directory, num=5, size=(20, 16), seed=0, csv=True):
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(directory, 'sub'), exist_ok=True)
  names = [f'img{i}.png' for i in range(num - 1)] + ['sub/last.png']
  images = {}
  for n in names:
    images[n] = rng.integers(0, 256, size + (3,), np.uint8)
    Image.fromarray(images[n]).save(os.path.join(directory, n))
  csv_path = None
  if csv:
    csv_path = os.path.join(directory, '..', 'labels.csv')
    with open(csv_path, 'w') as f:
      f.write('filename,smiling,score,who\n')
      for i, n in enumerate(reversed(names)):  # order must not matter
        f.write(f'{n.split("/")[-1]},{i % 2},{i / 2},p{i}\n')
  return names, images, csv_path
