"""face-api.js nets: live TF.js parity on the real files, transforms, porting.

The reference runs face-api.js's own classes (its node build) on TF.js's
pure-JS CPU backend, fed 0..255 pixels: face-api applies its own mean
subtraction and post-processing, we apply `input_spec` through
`preprocess.to_encoder_input`. Inputs: skimage's astronaut face and noise.

Tolerance table (`tfjs_parity.assert_close`: |err| <= atol_frac * max|ref|
+ rtol * |ref|):

  compute   outputs                               rtol   atol_frac  measured
  float32   landmarks, logits, probs, age         1e-4   1e-5       <= 6e-7
  bfloat16  landmarks (x, y in [0, 1])            -      abs 0.02   0.007
  bfloat16  expression / gender probabilities     -      abs 0.05   0.015
  bfloat16  age (years)                           -      abs 2      0.6

float32 errors are rounding (TF.js sums in another order); a wrong mean,
scale, padding rule or addition order fails the float32 row by orders of
magnitude.
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tfjs_parity

from id2image_jax import preprocess
from id2image_jax.models import faceapi
from id2image_jax.porting import PortingError
from id2image_jax.porting import faceapi as pfaceapi
from id2image_jax.porting import tfjs
from ports import tfjs_reference

VARIANTS = ('landmark68', 'expression', 'age_gender')
F32 = {'rtol': 1e-4, 'atol_frac': 1e-5}
BF16_ABS = {'landmarks': 0.02, 'probs': 0.05, 'gender_probs': 0.05, 'age': 2.0}
# Astronaut rows/cols holding her face (a square about the head).
FACE_BOX = (50, 150, 210, 310)


@pytest.fixture(scope='module')
def ported():
  cache = {}

  def get(variant):
    if variant not in cache:
      cache[variant] = pfaceapi.convert(variant=variant)
    return cache[variant]
  return get


@pytest.fixture(scope='module')
def pixels():
  return tfjs_parity.faces(112, FACE_BOX)


def _ours(config, variables, pixels, dtype=jnp.float32):
  # The whole input path: [-1, 1] images -> input_spec -> the net.
  spec = faceapi.input_spec(config, crop=(0.0, 0.0, 1.0, 1.0))
  x = preprocess.to_encoder_input(pixels / 127.5 - 1.0, spec)
  out, _ = jax.jit(faceapi.build(config, dtype=dtype).apply)(variables, x)
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


@pytest.fixture(scope='module')
def reference(pixels):
  cache = {}

  def get(variant):
    tfjs_parity.require_node()
    if variant not in cache:
      cache[variant], _ = tfjs_reference.faceapi(
          variant, pfaceapi.default_files()[variant], pixels)
    return cache[variant]
  return get


# Our output name -> (TF.js output name, reshape of ours).
_PAIRS = {
    'landmark68': [('landmarks', 'landmarks'), ('landmarks', 'raw')],
    'expression': [('probs', 'probs'), ('logits', 'logits')],
    'age_gender': [('age', 'age'), ('gender_probs', 'gender_probs'),
                   ('gender_logits', 'gender_logits')],
}


@pytest.mark.parametrize('variant', VARIANTS)
def test_float32_parity_with_tfjs(ported, pixels, reference, variant):
  config, variables = ported(variant)
  want = reference(variant)
  got = _ours(config, variables, pixels)
  for ours, theirs in _PAIRS[variant]:
    tfjs_parity.assert_close(got[ours].reshape(want[theirs].shape),
                             want[theirs], what=f'{variant} {ours}', **F32)
  if variant == 'landmark68':
    # Guard against vacuity: a face's landmarks spread over the crop, and
    # the astronaut's differ from the noise image's.
    points = got['landmarks'][0]
    assert points.shape == (68, 2)
    assert np.all((points > 0.05) & (points < 0.95))
    assert np.ptp(points[:, 0]) > 0.4 and np.ptp(points[:, 1]) > 0.4
    assert np.abs(got['landmarks'][0] - got['landmarks'][1]).max() > 0.05


@pytest.mark.parametrize('variant', VARIANTS)
def test_bfloat16_close_to_tfjs_float32(ported, pixels, reference, variant):
  config, variables = ported(variant)
  want = reference(variant)
  got = _ours(config, variables, pixels, dtype=jnp.bfloat16)
  for ours, theirs in _PAIRS[variant]:
    if ours in BF16_ABS:
      err = np.abs(got[ours].reshape(want[theirs].shape) - want[theirs])
      assert err.max() <= BF16_ABS[ours], (ours, err.max())
  model = faceapi.build(config, dtype=jnp.bfloat16)
  abstract = jax.eval_shape(model.init, jax.random.key(0), pixels[:1])
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))


@pytest.mark.parametrize('variant', ['landmark68', 'age_gender'])
def test_jit_vmap_and_no_retrace(ported, pixels, variant):
  config, variables = ported(variant)
  model = faceapi.build(config)
  x = (pixels - np.asarray(faceapi.MEAN_RGB, np.float32)) / 255.0

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(v, images):
    return model.apply(v, images)[0]

  batched = run(variables, x)
  run(variables, x[::-1])  # new values, same shapes: no retrace
  per_image = jax.jit(jax.vmap(lambda im: model.apply(variables, im)[0]))(x)
  looped = [model.apply(variables, x[i:i + 1])[0] for i in range(len(x))]
  looped = jax.tree.map(lambda *a: jnp.concatenate(a), *looped)
  chex.assert_trees_all_close(per_image, batched, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(looped, batched, rtol=1e-5, atol=1e-5)
  nested = jax.jit(model.apply)(variables, x.reshape((1, 2) + x.shape[1:]))[0]
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], nested), batched,
                              rtol=1e-5, atol=1e-5)


def test_no_jit_matches_jit(ported, pixels):
  config, variables = ported('expression')
  model = faceapi.build(config)
  x = (pixels[:1] - np.asarray(faceapi.MEAN_RGB, np.float32)) / 255.0
  eager, _ = model.apply(variables, x)
  jitted, _ = jax.jit(model.apply)(variables, x)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('variant,output', [('landmark68', 'landmarks'),
                                            ('age_gender', 'age')])
def test_gradients_flow_to_the_pixels(ported, pixels, variant, output):
  config, variables = ported(variant)
  model = faceapi.build(config)
  spec = faceapi.input_spec(config)

  def loss(images):
    x = preprocess.to_encoder_input(images, spec)
    return jnp.sum(model.apply(variables, x)[0][output])

  images = tfjs_parity.faces(256, (0, 100, 300, 400))[:1] / 127.5 - 1.0
  grad = jax.jit(jax.grad(loss))(images)
  assert grad.shape == images.shape and np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0


@pytest.mark.parametrize('shape', [(1, 128, 128, 3), (1, 112, 112, 1),
                                   (1, 3, 112, 112), (112, 3)])
def test_wrong_input_shape_is_a_clear_error(shape):
  model = faceapi.build(faceapi.get_config('landmark68'))
  with pytest.raises(ValueError, match=r'112, 112, 3\] RGB.*got shape'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))
  with pytest.raises(ValueError, match='float'):
    jax.eval_shape(model.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.uint8))


def test_variant_table_build_and_keyword_only_options():
  assert set(faceapi.VARIANTS) == set(VARIANTS)
  config = faceapi.get_config('age_gender')
  assert config['extractor'] == 'xception' and config['widths'][-1] == 512
  with pytest.raises(ValueError, match='unknown face-api variant'):
    faceapi.get_config('landmark5')
  with pytest.raises(ValueError, match='unknown face-api config'):
    faceapi.get_config('landmark68', depth=3)
  with pytest.raises(ValueError, match='needs 4 widths'):
    faceapi.build(faceapi.get_config('landmark68', widths=[8, 8, 8]))
  for fn, names in ((faceapi.build, ('dtype',)),
                    (faceapi.input_spec, ('crop',)),
                    (faceapi.landmarks_in_image, ('image_size',)),
                    (pfaceapi.convert, ('variant',))):
    params = inspect.signature(fn).parameters
    for name in names:
      assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_input_spec_normalises_as_face_api():
  for variant in VARIANTS:
    spec = faceapi.input_spec(faceapi.get_config(variant))
    assert spec.size == (112, 112) and spec.channel_order == 'RGB'
    crop = faceapi.FFHQ_CROPS[faceapi.VARIANTS[variant]['crop']]
    assert spec.crop == crop
    # Square in the frame: face-api pads its crop to a square.
    assert abs((crop[2] - crop[0]) - (crop[3] - crop[1])) < 0.01
  # White becomes (255 - mean) / 255 per channel.
  out = preprocess.to_encoder_input(jnp.ones((1, 256, 256, 3)), spec)
  np.testing.assert_allclose(
      out[0, 50, 50], (255.0 - np.asarray(faceapi.MEAN_RGB)) / 255.0,
      atol=1e-5)


def test_landmarks_map_between_crop_and_image():
  spec = faceapi.input_spec(faceapi.get_config('landmark68'))
  top, left, bottom, right = spec.crop
  corners = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
  image = faceapi.landmarks_in_image(corners, spec)
  np.testing.assert_allclose(image[0], [left, top], atol=1e-6)
  np.testing.assert_allclose(image[1], [right, bottom], atol=1e-6)
  np.testing.assert_allclose(image[2], [(left + right) / 2,
                                        (top + bottom) / 2], atol=1e-6)
  # With the source size, the crop is the whole-pixel box that
  # to_encoder_input cut.
  _, _, b, r = preprocess.crop_pixels(spec, 256, 256)
  pixel = faceapi.landmarks_in_image(corners, spec, image_size=(256, 256))
  np.testing.assert_allclose(pixel[1], [r / 256, b / 256], atol=1e-6)
  points = jax.random.uniform(jax.random.key(0), (4, 68, 2))
  back = faceapi.landmarks_in_crop(
      faceapi.landmarks_in_image(points, spec, image_size=(1024, 1024)),
      spec, image_size=(1024, 1024))
  np.testing.assert_allclose(back, points, atol=1e-6)


# --- porting ---------------------------------------------------------------


@pytest.fixture(scope='module')
def landmark_weights():
  return tfjs.read_weights_manifest(pfaceapi.default_files()['landmark68'])


def test_default_files_ship_with_provenance():
  files = pfaceapi.default_files()
  assert set(files) == set(VARIANTS)
  for path in files.values():
    assert path.is_file() and path.with_name(
        path.name.replace('-weights_manifest.json', '.bin')).is_file()
  folder = pfaceapi.weights_dir()
  assert (folder / 'LICENSE').read_text().startswith('MIT License')
  provenance = (folder / 'PROVENANCE.md').read_text()
  for path in files.values():
    assert path.name in provenance


def test_infer_config_tells_the_nets_apart(landmark_weights):
  assert pfaceapi.infer_config(landmark_weights)['variant'] == 'landmark68'
  expression = dict(landmark_weights, **{
      'fc/weights': np.zeros((256, 7), np.float32)})
  assert pfaceapi.infer_config(expression)['variant'] == 'expression'
  assert pfaceapi.infer_config({'fc/age/weights': 0})['variant'] == (
      'age_gender')
  tiny = {k: v for k, v in landmark_weights.items() if 'conv3' not in k}
  with pytest.raises(PortingError, match='tiny landmark net'):
    pfaceapi.infer_config(tiny)
  with pytest.raises(PortingError, match='not a face-api.js'):
    pfaceapi.infer_config({'conv1/weight': 0})
  with pytest.raises(PortingError, match=r'fc/weights has shape \(256, 5\)'):
    pfaceapi.infer_config(dict(landmark_weights, **{
        'fc/weights': np.zeros((256, 5), np.float32)}))


@pytest.mark.parametrize('edit,message', [
    ('missing', (r'not found in the weights: '
                 r'params/extractor/dense2/conv1/bias')),
    ('extra', r'match no rule: dense1/scale/weights'),
    ('target', (r'not model parameters: dense0/conv7/bias -> '
                r'params/extractor/dense0/conv7/bias')),
    ('shape', (r'dense3/conv2/pointwise_filter \(1, 1, 256, 128\) -> '
               r'params/extractor/dense3/conv2/pointwise/conv/kernel')),
    ('depthwise', (r'dense1/conv1/depthwise_filter: depthwise filter must '
                   r'be \[kh, kw, C, 1\]')),
])
def test_mismatched_weights_name_the_tensor(landmark_weights, edit, message):
  source = dict(landmark_weights)
  if edit == 'missing':
    del source['dense2/conv1/bias']
  elif edit == 'extra':
    source['dense1/scale/weights'] = np.zeros((64,), np.float32)
  elif edit == 'target':
    source['dense0/conv7/bias'] = np.zeros((32,), np.float32)
  elif edit == 'shape':
    source['dense3/conv2/pointwise_filter'] = np.zeros((1, 1, 256, 128),
                                                        np.float32)
  elif edit == 'depthwise':
    source['dense1/conv1/depthwise_filter'] = np.zeros((3, 3, 64, 2),
                                                        np.float32)
  with pytest.raises(PortingError, match=message):
    pfaceapi.convert_weights(source)


def test_convert_refuses_the_wrong_variant_and_unknown_names():
  path = pfaceapi.default_files()['expression']
  with pytest.raises(PortingError, match='holds the expression net, not '
                     'landmark68'):
    pfaceapi.convert(path, variant='landmark68')
  with pytest.raises(ValueError, match='unknown face-api variant'):
    pfaceapi.convert(variant='gear')
  with pytest.raises(ValueError, match='give a path or a variant'):
    pfaceapi.convert()
