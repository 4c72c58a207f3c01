"""Time and memory of the soft image histogram (forward and gradient).

Compares `losses.image_soft_histogram` with the literal eq. 3 formulation,
which broadcasts every pixel against every bin ([..., M, bins]) and lets
autodiff keep that intermediate for the backward pass.

  python benchmarks/soft_histogram.py --smoke             # CPU, seconds
  python benchmarks/soft_histogram.py --batch 8 --size 1024 --out hist.json

Compilation is timed separately from steady state (median over --repeats
calls, each ended by block_until_ready; `common.py`); "temp" is XLA's
scratch memory of the compiled program
(`memory_analysis().temp_size_in_bytes`), the part the formulation
controls.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import common
import jax
import jax.numpy as jnp

from id2image_jax import losses


def literal_eq3(images, *, bins=10, sigma=1.85):
  """Paper eq. 3 as written: sigmoid differences for every pixel and bin."""
  pixels = losses.to_pixel_scale(images, value_range=(-1.0, 1.0))
  pixels = jnp.moveaxis(pixels, -1, -3).reshape(*pixels.shape[:-3],
                                                pixels.shape[-1], -1)
  delta = 255.0 / bins
  centres = delta * (jnp.arange(1, bins + 1) - 0.5)
  x = pixels[..., :, None] - centres
  counts = jnp.sum(jax.nn.sigmoid(sigma * (x + delta / 2))
                   - jax.nn.sigmoid(sigma * (x - delta / 2)), axis=-2)
  return counts / jnp.sum(counts, axis=-1, keepdims=True)


def library(images, *, bins=10, sigma=1.85):
  return losses.image_soft_histogram(images, value_range=(-1.0, 1.0),
                                     bins=bins, sigma=sigma)


def measure(fn, images, repeats):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(images).compile()
  compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  jax.block_until_ready(compiled(images))  # Warm-up.
  median, _ = common.median_time(lambda: compiled(images), repeats)
  return {
      'compile_s': round(compile_s, 4),
      'step_ms': round(1e3 * median, 3),
      'temp_mib': (None if stats is None
                   else round(stats.temp_size_in_bytes / 2**20, 2)),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--size', type=int, default=1024)
  parser.add_argument('--bins', type=int, default=10)
  parser.add_argument('--dtype', default='float32',
                      choices=['float32', 'bfloat16'])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--smoke', action='store_true',
                      help='tiny sizes: proves the script runs')
  parser.add_argument('--out', help='write the JSON here too')
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch, args.size, args.repeats = 2, 64, 2

  images = jax.random.uniform(
      jax.random.key(0), (args.batch, args.size, args.size, 3),
      minval=-1.0, maxval=1.0).astype(args.dtype)
  target = jnp.full((args.batch, 3, args.bins), 1.0 / args.bins)
  results = []
  for name, hist in (('library', library), ('literal_eq3', literal_eq3)):
    def forward(images, hist=hist):
      return hist(images, bins=args.bins)

    def grad(images, hist=hist):
      loss = lambda x: jnp.sum(losses.histogram_loss(
          hist(x, bins=args.bins), target))
      return jax.grad(loss)(images)

    for kind, fn in (('forward', forward), ('grad', grad)):
      results.append({'formulation': name, 'pass': kind,
                      **measure(fn, images, args.repeats)})

  report = {
      'device': str(jax.devices()[0].device_kind),
      'platform': jax.default_backend(),
      'dtype': args.dtype,
      'N': args.batch,
      'image': [args.size, args.size, 3],
      'bins': args.bins,
      'jax': jax.__version__,
      'env': common.environment(dtype=args.dtype),
      'results': results,
  }
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
