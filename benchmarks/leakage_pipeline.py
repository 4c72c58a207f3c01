"""Throughput of the leakage pipeline: decoding, embedding, head training.

Writes synthetic CelebA-shaped JPEGs (218x178) to a temporary folder and
measures, on the default JAX device:

* host pipeline: decoded images/s of `data.batches` (tf.data, all cores);
* embed_dataset: images/s end to end with a stand-in encoder (or a real
  converted encoder with --encoder), including hard histograms;
* head training: steps/s of the attribute MLP (2048-d, batch 256), the
  landmark MLP (batch 16) and the landmark CNN (128x128, batch 16), compile
  time separately, to estimate a full Table-1 run (188k training images).

  # CPU, tiny (proves it runs):
  python benchmarks/leakage_pipeline.py --num-images 256 --steps 50
  # GPU, full size:
  python benchmarks/leakage_pipeline.py --num-images 4096 --steps 500 \
      --encoder checkpoints/vggface2 --out benchmarks/leakage_gpu.json
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from id2image_jax import data
from id2image_jax import loading
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import descriptors as embed
from id2image_jax.models import heads

CELEBA_TRAIN = 182_637  # train + validation images, the paper's ~188k


def write_images(directory: str, n: int, size=(218, 178)) -> None:
  rng = np.random.default_rng(0)
  # A few smooth random images re-encoded: realistic JPEG sizes, quick.
  base = [np.asarray(Image.fromarray(
      rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), np.uint8)
  ).resize(size[::-1], Image.BILINEAR)) for _ in range(8)]
  for i in range(n):
    buf = io.BytesIO()
    Image.fromarray(base[i % 8]).save(buf, format='JPEG', quality=90)
    with open(os.path.join(directory, f'{i:06d}.jpg'), 'wb') as f:
      f.write(buf.getvalue())


def time_pipeline(source, batch_size: int) -> float:
  t0, n = time.perf_counter(), 0
  for b in data.batches(source, batch_size):
    n += int(b['valid'].sum())
  return n / (time.perf_counter() - t0)


def stand_in_embed(images):
  # Roughly a small encoder's cost is not the point here: this measures the
  # pipeline around the encoder.
  x = images.astype(jnp.float32) / 255.0
  x = jax.image.resize(x, (x.shape[0], 32, 32, 3), 'linear', antialias=True)
  return x.reshape(x.shape[0], -1)[:, :512]


def time_steps(config, batch_shape, steps: int, tx) -> dict[str, float]:
  model = heads.build(config)
  state = train_lib.init_state(jax.random.key(0), model,
                               jax.ShapeDtypeStruct(batch_shape, jnp.float32),
                               tx)
  step = train_lib.make_train_step(model, tx, train_lib.LOSSES[config['kind']])
  x = np.random.default_rng(0).normal(size=batch_shape).astype(np.float32)
  y = np.zeros((batch_shape[0], *config['out_shape']), np.float32)
  t0 = time.perf_counter()
  state, loss = step(state, x, y)
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, loss = step(state, x, y)
  loss.block_until_ready()
  per_s = steps / (time.perf_counter() - t0)
  return {'compile_s': compile_s, 'steps_per_s': per_s}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num-images', type=int, default=256)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--encoder', default=None,
                      help='converted encoder checkpoint dir (optional)')
  parser.add_argument('--out', default=None, help='JSON file to write')
  args = parser.parse_args()

  result = {'device': str(jax.devices()[0]),
            'device_kind': jax.devices()[0].device_kind,
            'backend': jax.default_backend(),
            'host_cpus': os.cpu_count(), 'python': platform.python_version(),
            # Other jobs on the host skew CPU numbers; recorded, not fixed.
            'host_load_avg_1min_at_start': os.getloadavg()[0],
            'num_images': args.num_images, 'batch_size': args.batch_size,
            'dtype': 'float32'}
  with tempfile.TemporaryDirectory() as tmp:
    half, full = os.path.join(tmp, 'half'), os.path.join(tmp, 'full')
    os.makedirs(half)
    os.makedirs(full)
    write_images(half, args.num_images // 2)
    write_images(full, args.num_images)
    source = data.image_folder(full)
    time_pipeline(source, args.batch_size)  # warm caches
    result['decode_img_per_s'] = time_pipeline(source, args.batch_size)
    embed_fn = stand_in_embed
    if args.encoder:
      encoder = loading.load_encoder(args.encoder, crop=(0, 0, 1, 1))
      embed_fn = functools.partial(encoder.batch_fn(), encoder.variables)
    result['encoder'] = args.encoder or 'stand-in (resize + slice)'

    def run(folder):
      t0 = time.perf_counter()
      embed.embed_dataset(embed_fn, data.image_folder(folder),
                          os.path.join(folder, 'd.npz'),
                          batch_size=args.batch_size, progress=False)
      return time.perf_counter() - t0

    t_half, t_full = run(half), run(full)  # each includes one compile
    result['embed_s_incl_compile'] = t_full
    # Steady state: the extra images of the full run over its extra time.
    result['embed_img_per_s'] = (
        (args.num_images - args.num_images // 2) / (t_full - t_half))

  runs = {
      'attribute_mlp': (heads.head_config('attribute', out_shape=(1,),
                                          input_dim=2048), (256, 2048),
                        optax.adam(1e-3), 20, 256),
      'landmark_mlp': (heads.head_config('landmarks', input_dim=2048),
                       (16, 2048), optax.sgd(1e-3), 150, 16),
      'landmark_cnn': (heads.head_config('landmarks_cnn'),
                       (16, 128, 128, 3), optax.sgd(1e-3), 150, 16),
  }
  result['heads'] = {}
  for name, (config, shape, tx, epochs, batch) in runs.items():
    r = time_steps(config, shape, args.steps, tx)
    steps = epochs * (CELEBA_TRAIN // batch)
    r['paper_schedule_steps'] = steps
    r['paper_schedule_hours_at_this_rate'] = steps / r['steps_per_s'] / 3600
    result['heads'][name] = r
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
