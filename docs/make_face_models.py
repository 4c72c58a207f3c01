r"""Measures the npm face models for docs/face_models.md.

Writes docs/face_models.json (every number the page quotes) and
docs/face_models_landmarks.png. Three parts:

1. Parity with TF.js (ports/tfjs_reference.mjs, pure-JS CPU backend) on
   real faces: max |JAX - TF.js| / max |TF.js| per output, float32 and
   bfloat16 compute.
2. CPU forward time, float32, batch 1 and 16: JAX (jit; compile timed apart,
   one warm-up, median of --repeats calls ended by block_until_ready) and
   TF.js under node (one warm-up, median of --repeats calls ended by
   dataSync).
3. Sanity on real faces: CelebA aligned images, upscaled 4x and re-aligned
   the FFHQ way from dlib's 68 landmarks (the ffhq-dataset recipe at 256
   px), then cut with each model's `input_spec` (its FFHQ crop):
   face-api 68 landmarks vs dlib's (NME, inter-ocular), gender vs CelebA's
   ``Male`` (face-api age_gender, GEAR), smiling vs ``happy``, age vs
   ``Young``, and MobileFaceNet genuine vs impostor cosines on CelebA
   identity pairs (dlib's ResNet descriptor alongside, for scale).

Development data only (CelebA, ../shared/data/celeba-10k; never a test
fixture). Needs dlib (dlib-bin), ``npm ci --prefix ports``; GEAR's files are
fetched once.

  PYTHONPATH=. python docs/make_face_models.py \
      --celeba ../shared/data/celeba-10k
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import PIL.ImageDraw

from id2image_jax import preprocess
from id2image_jax.models import dlib_resnet
from id2image_jax.models import faceapi
from id2image_jax.models import gear
from id2image_jax.models import mobilefacenet
from id2image_jax.porting import dlib_resnet as dlib_port
from id2image_jax.porting import faceapi as faceapi_port
from id2image_jax.porting import gear as gear_port
from id2image_jax.porting import mobilefacenet as mfn_port
from ports import tfjs_reference
from ports.derive_dlib_ffhq_crop import Faces
from ports.derive_dlib_ffhq_crop import ffhq_align
from ports.derive_dlib_ffhq_crop import ffhq_quad
from ports.derive_dlib_ffhq_crop import landmarks
from ports.derive_dlib_ffhq_crop import to_ffhq_fraction

HERE = os.path.dirname(os.path.abspath(__file__))
ALIGNED = 256
UPSCALE = 4


def load_models():
  """name -> (module builder(dtype), variables, spec, reference runner)."""
  out = {}
  for variant in faceapi_port.FILES:
    config, variables = faceapi_port.convert(variant=variant)
    path = faceapi_port.default_files()[variant]
    out[variant] = {
        'config': config, 'variables': variables, 'build': faceapi.build,
        'spec': faceapi.input_spec(config),
        # face-api normalises 0..255 pixels itself.
        'ref': lambda px, p=path, v=variant, **kw: tfjs_reference.faceapi(
            v, p, px, **kw)}
  config, variables = mfn_port.convert()
  out['mobilefacenet'] = {
      'config': config, 'variables': variables, 'build': mobilefacenet.build,
      'spec': mobilefacenet.input_spec(config),
      'ref': lambda px, **kw: tfjs_reference.graph(
          mfn_port.default_files()['model'], px / 255.0,
          ['embeddings'], **kw)}
  config, variables = gear_port.convert()
  out['gear'] = {
      'config': config, 'variables': variables, 'build': gear.build,
      'spec': gear.input_spec(config),
      'ref': lambda px, **kw: tfjs_reference.graph(
          gear_port.default_files()['model'], px / 255.0,
          ['Identity', 'Identity_1', 'Identity_2'], **kw)}
  return out


# Our output -> the TF.js output it must equal.
PAIRS = {
    'landmark68': {'landmarks': 'landmarks'},
    'expression': {'probs': 'probs', 'logits': 'logits'},
    'age_gender': {'age': 'age', 'gender_probs': 'gender_probs'},
    'mobilefacenet': {'embedding': 'embeddings'},
    'gear': {'age_probs': 'Identity', 'gender_probs': 'Identity_1',
             'race_probs': 'Identity_2'},
}


def ours(model, pixels, dtype):
  """Our outputs for 0..255 pixels already at the model's input size."""
  spec = dataclass_replace_crop(model['spec'])
  x = preprocess.to_encoder_input(jnp.asarray(pixels) / 127.5 - 1.0, spec)
  net = model['build'](model['config'], dtype=dtype)
  out, _ = jax.jit(net.apply)(model['variables'], x)
  if not isinstance(out, dict):
    out = {'embedding': out}
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def dataclass_replace_crop(spec):
  return preprocess.InputSpec(size=spec.size, crop=(0.0, 0.0, 1.0, 1.0),
                              channel_order=spec.channel_order,
                              mean=spec.mean, std=spec.std,
                              method=spec.method)


def parity(models, faces_by_size):
  result = {}
  for name, model in models.items():
    pixels = faces_by_size[model['spec'].size[0]]
    want, _ = model['ref'](pixels)
    row = {}
    for dtype in ('float32', 'bfloat16'):
      got = ours(model, pixels, jnp.dtype(dtype))
      for mine, theirs in PAIRS[name].items():
        ref = want[theirs]
        err = np.abs(got[mine].reshape(ref.shape) - ref)
        row[f'{mine}_{dtype}'] = {
            'max_abs': float(err.max()),
            'max_rel': float(err.max() / np.abs(ref).max()),
            'ref_scale': float(np.abs(ref).max())}
    result[name] = row
    print(name, json.dumps(row))
  return result


def median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def timings(models, faces_by_size, repeats):
  result = {}
  for name, model in models.items():
    size = model['spec'].size[0]
    row = {}
    for batch in (1, 16):
      px = np.resize(faces_by_size[size], (batch, size, size, 3))
      x = jnp.asarray(px / 255.0, jnp.float32)
      net = model['build'](model['config'])
      t0 = time.perf_counter()
      compiled = jax.jit(net.apply).lower(model['variables'], x).compile()
      compile_s = time.perf_counter() - t0
      jax.block_until_ready(compiled(model['variables'], x))  # warm-up
      jax_s = median_time(
          lambda c=compiled, v=model['variables'], x=x: c(v, x), repeats)
      _, meta = model['ref'](px.astype(np.float32), repeat=repeats, warmup=1)
      tfjs_s = statistics.median(meta['times_ms']) / 1000
      row[f'batch{batch}'] = {'jax_ms': 1000 * jax_s,
                              'jax_compile_s': compile_s,
                              'tfjs_ms': 1000 * tfjs_s,
                              'speedup': tfjs_s / jax_s}
      print(name, batch, json.dumps(row[f'batch{batch}']))
    result[name] = row
  return result


def read_celeba(root):
  ids = {}
  with open(os.path.join(root, 'identity_CelebA.txt')) as f:
    for line in f:
      name, ident = line.split()
      ids[name] = ident
  with open(os.path.join(root, 'list_attr_celeba.txt')) as f:
    f.readline()
    names = f.readline().split()
    attrs = {}
    for line in f:
      parts = line.split()
      attrs[parts[0]] = dict(zip(names, (int(v) > 0 for v in parts[1:])))
  return ids, attrs


def align(root, names, faces):
  """FFHQ-aligned 256 px images and dlib's 68 points in frame fractions."""
  images, points, kept = [], [], []
  for name in names:
    img = PIL.Image.open(os.path.join(root, 'img_align_celeba', name))
    img = img.convert('RGB')
    big = np.asarray(img.resize((img.width * UPSCALE, img.height * UPSCALE),
                                PIL.Image.BICUBIC))
    det = faces.best(big)
    if det is None:
      continue
    lm = landmarks(faces.sp68(big, det))
    images.append(ffhq_align(big, lm, ALIGNED))
    points.append(to_ffhq_fraction(ffhq_quad(lm), lm))
    kept.append(name)
  return np.stack(images), np.stack(points), kept


def run_net(model, images, dtype=jnp.float32, batch=32):
  net = model['build'](model['config'], dtype=dtype)
  fn = jax.jit(lambda v, im: net.apply(
      v, preprocess.to_encoder_input(im, model['spec']))[0])
  outs = []
  for i in range(0, len(images), batch):
    chunk = jnp.asarray(images[i:i + batch], jnp.float32) / 127.5 - 1.0
    outs.append(jax.device_get(fn(model['variables'], chunk)))
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def auc(genuine, impostor):
  g = np.asarray(genuine)[:, None]
  i = np.asarray(impostor)[None, :]
  return float((g > i).mean() + 0.5 * (g == i).mean())


def sanity(models, root, count, pairs, faces):
  ids, attrs = read_celeba(root)
  names = sorted(attrs)[:count]
  images, dlib_points, kept = align(root, names, faces)
  print(f'aligned {len(kept)}/{len(names)} CelebA images')
  result = {'images': len(kept), 'detected_by_dlib': len(kept),
            'requested': len(names)}

  spec = models['landmark68']['spec']
  pts = run_net(models['landmark68'], images)['landmarks']
  ours_frame = np.asarray(faceapi.landmarks_in_image(
      pts, spec, image_size=(ALIGNED, ALIGNED)))
  iod = np.linalg.norm(dlib_points[:, 36] - dlib_points[:, 45], axis=-1)
  nme = np.linalg.norm(ours_frame - dlib_points, axis=-1).mean(-1) / iod
  result['landmark68_nme_vs_dlib'] = {
      'mean': float(nme.mean()), 'median': float(np.median(nme)),
      'p90': float(np.percentile(nme, 90))}
  # The same net fed face-api's alignedRect crop instead of its detection
  # box (what the expression and age/gender nets get).
  alt = dict(models['landmark68'], spec=faceapi.input_spec(
      models['landmark68']['config'], crop=faceapi.FFHQ_CROPS['aligned']))
  alt_pts = np.asarray(faceapi.landmarks_in_image(
      run_net(alt, images)['landmarks'], alt['spec'],
      image_size=(ALIGNED, ALIGNED)))
  alt_nme = np.linalg.norm(alt_pts - dlib_points, axis=-1).mean(-1) / iod
  result['landmark68_nme_vs_dlib_aligned_crop'] = {
      'mean': float(alt_nme.mean()), 'median': float(np.median(alt_nme))}
  offset = (ours_frame - dlib_points).mean(axis=(0, 1))
  result['landmark68_mean_offset_xy'] = [float(v) for v in offset]

  male = np.array([attrs[n]['Male'] for n in kept])
  smiling = np.array([attrs[n]['Smiling'] for n in kept])
  young = np.array([attrs[n]['Young'] for n in kept])
  ag = run_net(models['age_gender'], images)
  fa_male = ag['gender_probs'][:, 0] > 0.5
  ge = run_net(models['gear'], images)
  ge_male = ge['gender_probs'][:, 0] > 0.5
  ex = run_net(models['expression'], images)
  happy = ex['probs'][:, faceapi.EXPRESSION_LABELS.index('happy')] > 0.5
  gear_age = np.asarray(gear.human_age(ge['age_probs']))
  # GEAR fed face-api's tighter alignedRect crop instead of Human's.
  tight = dict(models['gear'], spec=gear.input_spec(
      models['gear']['config'], crop=faceapi.FFHQ_CROPS['aligned']))
  ge_tight = run_net(tight, images)['gender_probs'][:, 0] > 0.5
  result['gender_vs_celeba_male'] = {
      'faceapi_accuracy': float((fa_male == male).mean()),
      'gear_accuracy': float((ge_male == male).mean()),
      'gear_accuracy_faceapi_aligned_crop': float((ge_tight == male).mean()),
      'male_fraction': float(male.mean())}
  result['happy_vs_celeba_smiling'] = {
      'accuracy': float((happy == smiling).mean()),
      'smiling_fraction': float(smiling.mean())}
  result['age_vs_celeba_young'] = {
      'faceapi_mean_age_young': float(ag['age'][young].mean()),
      'faceapi_mean_age_not_young': float(ag['age'][~young].mean()),
      'gear_mean_age_young': float(gear_age[young].mean()),
      'gear_mean_age_not_young': float(gear_age[~young].mean())}
  race = collections.Counter(
      gear.RACE_LABELS[i] for i in ge['race_probs'].argmax(-1))
  result['gear_race_argmax_counts'] = dict(race)
  print(json.dumps(result))

  # Identity pairs: the first two images of identities with >= 2 images.
  by_id = collections.defaultdict(list)
  for name in sorted(ids):
    by_id[ids[name]].append(name)
  multi = [v[:2] for v in by_id.values() if len(v) >= 2][:pairs]
  first, first_pts, keep_a = align(root, [a for a, _ in multi], faces)
  second, _, keep_b = align(root, [b for _, b in multi], faces)
  both = [(a, b) for a, b in multi if a in keep_a and b in keep_b]
  ia = np.array([keep_a.index(a) for a, _ in both])
  ib = np.array([keep_b.index(b) for _, b in both])
  first, second = first[ia], second[ib]
  del first_pts
  encoders = {}
  for name, trained in (('mobilefacenet', False),
                        ('mobilefacenet_as_trained', True)):
    config, variables = mfn_port.convert(as_trained=trained)
    encoders[name] = {'config': config, 'variables': variables,
                          'build': mobilefacenet.build,
                          'spec': mobilefacenet.input_spec(config)}
  config, variables = dlib_port.convert()
  encoders['dlib_resnet'] = {'config': config, 'variables': variables,
                                 'build': dlib_resnet.build,
                                 'spec': dlib_resnet.input_spec(config)}
  idents = {}
  for name, enc in encoders.items():
    ea = run_net(enc, first)
    eb = run_net(enc, second)
    ea = ea / np.linalg.norm(ea, axis=-1, keepdims=True)
    eb = eb / np.linalg.norm(eb, axis=-1, keepdims=True)
    genuine = (ea * eb).sum(-1)
    impostor = (ea * np.roll(eb, 1, axis=0)).sum(-1)
    idents[name] = {
        'pairs': len(genuine),
        'genuine_mean': float(genuine.mean()),
        'genuine_std': float(genuine.std()),
        'impostor_mean': float(impostor.mean()),
        'impostor_std': float(impostor.std()), 'auc': auc(genuine, impostor)}
    print(name, json.dumps(idents[name]))
  result['identity_cosine'] = idents
  overlay(images[:8], ours_frame[:8], dlib_points[:8],
          os.path.join(HERE, 'face_models_landmarks.png'))
  return result


def overlay(images, ours_pts, dlib_pts, path, size=288, columns=4):
  """A grid of aligned faces: face-api points red, dlib's green."""
  rows = -(-len(images) // columns)
  canvas = PIL.Image.new('RGB', (size * columns, size * rows))
  for k, (img, a, b) in enumerate(zip(images, ours_pts, dlib_pts)):
    tile = PIL.Image.fromarray(img).resize((size, size), PIL.Image.BICUBIC)
    draw = PIL.ImageDraw.Draw(tile)
    for pts, colour in ((b, (40, 220, 40)), (a, (255, 40, 40))):
      for x, y in pts * size:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    canvas.paste(tile, (k % columns * size, k // columns * size))
  # A 256-colour palette keeps the PNG small enough to commit.
  canvas.quantize(256, dither=PIL.Image.Dither.NONE).save(path, optimize=True)
  print(f'wrote {path} ({os.path.getsize(path) // 1024} KB)')


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--celeba', required=True)
  parser.add_argument('--count', type=int, default=200)
  parser.add_argument('--pairs', type=int, default=150)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--skip', nargs='*', default=(),
                      choices=('parity', 'timing', 'sanity'))
  args = parser.parse_args()
  jax.config.update('jax_default_matmul_precision', 'highest')
  models = load_models()
  faces = Faces()
  # Real faces at each input size for parity and timing: CelebA images
  # aligned and cut by each model's own crop would differ per model; the
  # parity only needs realistic pixels, so the aligned images are resized.
  ids_attrs = read_celeba(args.celeba)
  names = sorted(ids_attrs[1])[:16]
  aligned, _, _ = align(args.celeba, names, faces)
  faces_by_size = {
      s: np.stack([np.asarray(PIL.Image.fromarray(im).resize(
          (s, s), PIL.Image.BILINEAR)) for im in aligned]).astype(np.float32)
      for s in (112, 198)}
  report = {'env': {'jax': jax.__version__, 'platform': platform.platform(),
                    'cpus': os.cpu_count(), 'device': str(jax.devices()[0]),
                    'tfjs': '4.22.0 (tfjs-backend-cpu, node '
                            f'{os.popen("node --version").read().strip()})',
                    # No local paths in a committed file.
                    'argv': [os.path.basename(sys.argv[0])] + [
                        a for a in sys.argv[1:] if a != args.celeba]}}
  path = os.path.join(HERE, 'face_models.json')
  if os.path.exists(path):
    with open(path) as f:
      report = dict(json.load(f), env=report['env'])
  if 'parity' not in args.skip:
    report['parity'] = parity(models, faces_by_size)
  if 'timing' not in args.skip:
    report['timing'] = timings(models, faces_by_size, args.repeats)
  if 'sanity' not in args.skip:
    report['celeba'] = sanity(models, args.celeba, args.count, args.pairs,
                              faces)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
