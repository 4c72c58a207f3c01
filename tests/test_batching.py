"""batching: padded batches written into one result, and row blocks."""

import numpy as np
import pytest

from id2image_jax import batching
from id2image_jax.evaluation import scores


def test_batched_apply_matches_one_call_for_every_size():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(11, 3)).astype(np.float32)
  fn = lambda a: {'sum': a.sum(axis=1), 'twice': 2 * a}  # noqa: E731
  for batch in (1, 4, 11, 16):
    got = batching.batched_apply(fn, x, batch)
    np.testing.assert_array_equal(got['sum'], x.sum(axis=1))
    np.testing.assert_array_equal(got['twice'], 2 * x)
    assert got['twice'].flags.writeable


def test_map_row_blocks_equals_the_rows_at_once():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
  rows = np.array([8, 0, 3, 4, 7])
  fn = lambda x, y: {'dot': (x * y).sum(1), 'x': x}  # noqa: E731
  for block in (1, 2, 5, 100):
    got = batching.map_row_blocks(fn, (a, b), rows, block)
    np.testing.assert_allclose(got['dot'], (a[rows] * b[rows]).sum(1))
    np.testing.assert_array_equal(got['x'], a[rows])
  with pytest.raises(ValueError, match='0 rows'):
    batching.map_row_blocks(fn, (a, b), np.array([], int), 2)
  with pytest.raises(ValueError, match='block'):
    batching.map_row_blocks(fn, (a, b), rows, 0)


def test_appearance_metrics_do_not_depend_on_the_row_block(monkeypatch):
  # A whole test set is scored a block at a time; each row's measures
  # must be what scoring all rows at once gives.
  rng = np.random.default_rng(2)
  src = rng.uniform(-1, 1, size=(7, 12, 12, 3)).astype(np.float32)
  rec = np.clip(src + rng.normal(0, 0.2, src.shape), -1, 1).astype(
      np.float32)
  rows = np.array([6, 1, 2, 5])
  at_once = scores.appearance_metrics(src, rec, rows)
  monkeypatch.setattr(batching, 'IMAGE_ROW_BLOCK', 3)
  in_blocks = scores.appearance_metrics(src, rec, rows)
  assert set(at_once) == {'mse', 'psnr', 'ssim', 'histogram_emd'}
  for name in at_once:
    np.testing.assert_allclose(in_blocks[name]['values'],
                               at_once[name]['values'], rtol=1e-5,
                               atol=1e-6, err_msg=name)
