"""Result files: PNGs, npz, grid, JSON summary with skipped rows."""

import json

import inversion_toy as toy
import jax
import numpy as np
import optax
from PIL import Image

from id2image_jax import inversion
from id2image_jax.reports import inversion as outputs
from id2image_jax.reports import outputs as shared


def test_to_uint8():
  np.testing.assert_array_equal(
      shared.to_uint8(np.array([-1.0, 0.0, 1.0, 2.0, np.nan])),
      [0, 128, 255, 255, 0])


def test_json_safe_is_strict_json():
  got = shared.json_safe({'a': np.float32(np.nan), 1: np.arange(2),
                          'b': (np.bool_(True), np.inf, 0.5)})
  assert got == {'a': None, '1': [0, 1], 'b': [True, None, 0.5]}
  json.dumps(got, allow_nan=False)


def test_write_outputs(tmp_path):
  params = toy.make_params()
  targets, _ = toy.make_targets(5, params=params)
  targets['descriptor'][2, 0] = np.nan
  result = toy.invert(toy.objective, params, targets,
                      init=toy.init_latents(5), steps=3, chunk_size=2,
                      tx=optax.adam(0.05), progress=False)
  images = inversion.map_targets(toy.render, params['g'],
                                 jax.tree.map(np.nan_to_num, result.latents),
                                 chunk_size=2)
  sources = np.random.default_rng(0).uniform(-1, 1, (5, 16, 16, 3))
  descriptors = inversion.map_targets(toy.embed, params['e'], images,
                                      chunk_size=2)
  paths = outputs.write_outputs(tmp_path, result, images=images,
                                sources=sources, descriptors=descriptors,
                                extra={'device': 'cpu'})

  names = sorted(p.name for p in (tmp_path / 'images').iterdir())
  assert names == ['000000.png', '000001.png', '000003.png', '000004.png']
  png = np.asarray(Image.open(tmp_path / 'images' / '000003.png'))
  np.testing.assert_array_equal(png, outputs.to_uint8(images[3]))
  # 4 done rows in one grid row: (source | recon) cells of 8x16, pad 2.
  assert np.asarray(Image.open(paths['grid'])).shape == (12, 4 * 18 + 2, 3)

  lat = np.load(tmp_path / 'latents.npz')
  assert lat['latents/w'].shape == (5, toy.LATENT_DIM)
  assert np.isnan(lat['latents/w'][2]).all()
  assert lat['done'].tolist() == [True, True, False, True, True]
  assert lat['descriptors'].shape == (5, toy.DESCRIPTOR_DIM)
  hist = np.load(tmp_path / 'history.npz')
  assert hist['loss/id'].shape == (5, 3) and hist['steps'].tolist() == [0, 1,
                                                                        2]

  def no_nan(token):
    raise AssertionError(f'{token} in JSON')
  summary = json.loads((tmp_path / 'summary.json').read_text(),
                       parse_constant=no_nan)
  assert summary['num_done'] == 4 and summary['device'] == 'cpu'
  assert summary['skipped'] == [
      {'row': 2, 'reason': "non-finite target values in ['descriptor']"}]
  assert summary['final']['loss']['max'] == float(
      np.nanmax(result.final['loss']))
  assert len(summary['mean_history']['loss']) == 3
  assert summary['stats']['chunks_run'] == 2
