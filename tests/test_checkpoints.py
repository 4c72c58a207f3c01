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


def test_step_checkpoints_round_trip_and_keep(tmp_path):
  trees = checkpoints.StepCheckpoints(tmp_path / 'chunks')
  trees.save(0, {'a': np.arange(3.0)})
  trees.save(4, {'a': np.arange(5.0)})
  trees.wait()
  assert trees.steps() == {0, 4} and trees.latest_step() == 4
  np.testing.assert_array_equal(trees.restore(4)['a'], np.arange(5.0))
  trees.close()
  items = checkpoints.StepCheckpoints(tmp_path / 'state', max_to_keep=1)
  for step in (1, 2):
    items.save_items(step, arrays={'state': {'x': np.full(2, step)}},
                     documents={'meta': {'step': step}})
  items.wait()
  assert items.steps() == {2}  # only the newest is kept
  got = items.restore_items(2, arrays={'state': jax.eval_shape(
      lambda: {'x': np.zeros(2, np.int64)})}, documents=('meta',))
  assert got['meta'] == {'step': 2}
  np.testing.assert_array_equal(got['state']['x'], [2, 2])
  with pytest.raises(ValueError, match='item names'):
    items.save_items(3, arrays={'meta': {}}, documents={'meta': {}})
  items.close()


def test_step_checkpoints_read_what_plain_orbax_wrote(tmp_path):
  # The inversion store's files from before `StepCheckpoints` existed were
  # written by these orbax calls; a long run must resume from them.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  chunk = {'latents': np.arange(4.0).reshape(2, 2)}
  with ocp.CheckpointManager(
      tmp_path / 'chunks',
      options=ocp.CheckpointManagerOptions(create=True)) as manager:
    manager.save(0, args=ocp.args.StandardSave(chunk))
  with ocp.CheckpointManager(
      tmp_path / 'state', options=ocp.CheckpointManagerOptions(
          max_to_keep=1, create=True)) as manager:
    manager.save(7, args=ocp.args.Composite(
        state=ocp.args.StandardSave({'x': np.ones(3)}),
        meta=ocp.args.JsonSave({'chunk': 1, 'step': 2})))
  chunks = checkpoints.StepCheckpoints(tmp_path / 'chunks')
  np.testing.assert_array_equal(chunks.restore(0)['latents'],
                                chunk['latents'])
  state = checkpoints.StepCheckpoints(tmp_path / 'state', max_to_keep=1)
  got = state.restore_items(
      state.latest_step(), documents=('meta',),
      arrays={'state': jax.eval_shape(lambda: {'x': np.ones(3)})})
  assert got['meta'] == {'chunk': 1, 'step': 2}
  np.testing.assert_array_equal(got['state']['x'], np.ones(3))
  chunks.close()
  state.close()
