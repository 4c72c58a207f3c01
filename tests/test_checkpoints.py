"""orbax round trip and clear errors on mismatched checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import checkpoints


def _variables():
  return {'params': {'dense': {'kernel': np.arange(6, dtype=np.float32
                                                  ).reshape(2, 3)},
                     'bias': np.ones(3, np.float32)}}


def test_round_trip(tmp_path):
  v = _variables()
  checkpoints.save(tmp_path / 'ck', v, kind='toy', config={'width': 3})
  got = checkpoints.restore(tmp_path / 'ck', jax.eval_shape(lambda: v),
                            kind='toy')
  jax.tree.map(np.testing.assert_array_equal, got, v)
  assert checkpoints.read_meta(tmp_path / 'ck')['config'] == {'width': 3}


def test_wrong_shape_names_the_leaf(tmp_path):
  checkpoints.save(tmp_path / 'ck', _variables(), kind='toy')
  abstract = jax.eval_shape(_variables)
  abstract['params']['dense']['kernel'] = jax.ShapeDtypeStruct((2, 4),
                                                               jnp.float32)
  with pytest.raises(checkpoints.CheckpointMismatchError, match='kernel'):
    checkpoints.restore(tmp_path / 'ck', abstract)


def test_wrong_kind_and_missing_dir(tmp_path):
  checkpoints.save(tmp_path / 'ck', _variables(), kind='toy')
  with pytest.raises(checkpoints.CheckpointMismatchError, match="'other'"):
    checkpoints.restore(tmp_path / 'ck', jax.eval_shape(_variables),
                        kind='other')
  with pytest.raises(FileNotFoundError, match='missing meta.json'):
    checkpoints.read_meta(tmp_path / 'absent')
