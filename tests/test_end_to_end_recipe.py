"""The end-to-end recipe's own parts (recipes/end_to_end.py); the wiring as
a whole runs in tests/test_end_to_end.py through the job."""

import jax
import ml_collections
import numpy as np

from id2image_jax.recipes import end_to_end as recipe


def test_timed_step_passes_through_and_reports_each_call():
  calls = []
  step = recipe.TimedStep(lambda *a: calls.append(a) or len(calls))
  assert step.seconds() == {'first': None, 'median_of_rest': None,
                            'cpu_median_of_rest': None}
  assert [step(1, 2), step(3)] == [1, 2] and calls == [(1, 2), (3,)]
  got = step.seconds()
  assert got['first'] >= 0 and got['median_of_rest'] >= 0
  assert got['cpu_median_of_rest'] >= 0


def test_fingerprint_names_what_changes_the_update_only():
  config = ml_collections.ConfigDict(
      {k: 0 for k in recipe.FINGERPRINT_FIELDS + ('steps', 'micro_batch',
                                                   'remat')})
  a = np.zeros((2, 3), np.float32)
  got = recipe.fingerprint(config, real=a, synth_descriptors=a,
                           synth_latents=a, start_params={'w': a})
  assert not {'steps', 'micro_batch', 'remat'} & set(got)
  assert got['real_descriptors'] == recipe.digest(a)
  # Same bytes, another shape: another digest.
  assert recipe.digest(a) != recipe.digest(a.reshape(3, 2))


def test_start_head_w_plus_from_w_and_w_without_offsets():
  key = jax.random.key(0)
  w_head, fresh = recipe.start_head(key, None, input_dim=4, out_shape=(5,),
                                    hidden=(8,), layer_rank=2)
  assert w_head.config['layer_rank'] == 0 and fresh == []
  plus, fresh = recipe.start_head(key, w_head.params, input_dim=4,
                                  out_shape=(3, 5), hidden=(8,),
                                  layer_rank=2)
  assert plus.config['layer_rank'] == 2 and fresh
  out = plus.model.apply({'params': plus.params}, np.ones((1, 4)))
  assert out.shape == (1, 3, 5)
