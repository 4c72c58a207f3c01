"""invert(): chunking, bad rows, initialisation, checkpoint/resume."""

import chex
import inversion_toy as toy
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from id2image_jax import inversion
from id2image_jax.inversion import engine
from id2image_jax.inversion import sharding

N = 10
STEPS = 12
TX = optax.adam(0.05)


class Interrupt(Exception):
  pass


@pytest.fixture(scope='module')
def problem():
  params = toy.make_params()
  targets, _ = toy.make_targets(N, params=params)
  return params, targets, toy.init_latents(N)


def _invert(problem, **kwargs):
  params, targets, latents = problem
  kwargs.setdefault('init', latents)
  kwargs.setdefault('steps', STEPS)
  kwargs.setdefault('chunk_size', 4)
  return toy.invert(toy.objective, params, targets, tx=TX,
                    progress=False, **kwargs)


@pytest.fixture(scope='module')
def reference(problem):
  """All N targets in one chunk, no checkpoints."""
  return _invert(problem, chunk_size=N)


def _assert_same(a, b, rows=slice(None), **tol):
  tol = tol or {'rtol': 1e-5, 'atol': 1e-6}
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[rows], a.latents),
                              jax.tree.map(lambda x: x[rows], b.latents),
                              **tol)
  for name in a.history:
    np.testing.assert_allclose(a.history[name][rows], b.history[name][rows],
                               **tol)
    np.testing.assert_allclose(a.final[name][rows], b.final[name][rows],
                               **tol)


def test_loss_decreases_on_toy_problem(reference):
  assert reference.done.all() and not reference.diverged.any()
  first = reference.history['loss'][:, 0]
  assert np.all(reference.final['loss'] < 0.5 * first)
  assert reference.history['loss'].shape == (N, STEPS)
  assert set(reference.history) == {'loss', 'id', 'prior'}


def test_ragged_chunks_compile_once_and_match_one_chunk(problem, reference,
                                                        monkeypatch):
  fetches = []
  to_host = sharding.to_host
  monkeypatch.setattr(sharding, 'to_host',
                      lambda x: fetches.append(1) or to_host(x))
  chex.clear_trace_counter()
  step = inversion.jit_step(chex.assert_max_traces(
      inversion.make_step_fn(toy.objective, TX, mesh=inversion.make_mesh()),
      n=1))
  seen = []
  got = _invert(problem, chunk_size=4, step_fn=step, log_every=5,
                callback=seen.append)     # chunks of 4, 4, 2 (+2 padding)
  assert got.stats['chunks_run'] == 3 and got.stats['targets_run'] == N
  _assert_same(got, reference)
  done_chunks = [p.rows.tolist() for p in seen if p.chunk_done]
  assert done_chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  assert [p.step for p in seen if p.chunk == 0] == [5, 10, 12, 12]
  # No per-step host sync: per chunk, one fetch per log point + the results.
  assert len(fetches) == 3 * (3 + 1)


def test_bad_rows_are_reported_and_skipped(problem, reference):
  params, targets, latents = problem
  targets = jax.tree.map(np.array, targets)
  targets['descriptor'][3, 1] = np.inf
  valid = np.ones(N, bool)
  valid[6] = False
  got = toy.invert(toy.objective, params, targets, init=latents,
                   steps=STEPS, chunk_size=4, tx=TX, valid=valid,
                   progress=False)
  assert sorted(got.skipped) == [3, 6]
  assert 'non-finite' in got.skipped[3] and "['descriptor']" in got.skipped[3]
  assert 'valid=False' in got.skipped[6]
  assert not got.done[[3, 6]].any() and got.done.sum() == N - 2
  assert np.isnan(got.latents['w'][[3, 6]]).all()
  assert got.stats['chunks_run'] == 2       # 8 good rows, chunks of 4
  good = np.array([r for r in range(N) if r not in (3, 6)])
  _assert_same(got, reference, rows=good)


def test_initialisers(problem):
  _, targets, _ = problem
  w0 = np.full((toy.LATENT_DIM,), 0.2, np.float32)
  got = _invert(problem, init=inversion.broadcast_init({'w': w0}), steps=1)
  np.testing.assert_array_equal(got.history['prior'][:, 0],
                                np.full(N, 1e-3 * np.sum(w0 ** 2), np.float32))

  like = {'w': jax.ShapeDtypeStruct((toy.LATENT_DIM,), jnp.float32)}
  a = _invert(problem, init=inversion.random_init(like), steps=1,
              key=jax.random.key(7))
  b = _invert(problem, init=inversion.random_init(like), steps=1,
              key=jax.random.key(7), chunk_size=2)
  # A target's random start depends on its row, not on the chunking.
  np.testing.assert_array_equal(a.history['prior'], b.history['prior'])
  assert len(np.unique(a.history['prior'])) == N

  # A "regressor": descriptor -> latent with its own variables, passed as a
  # Partial so they are inputs of the compiled program.
  proj = np.random.default_rng(0).normal(
      size=(toy.DESCRIPTOR_DIM, toy.LATENT_DIM)).astype(np.float32)
  regress = jax.tree_util.Partial(
      lambda m, key, t: {'w': t['descriptor'] @ m}, proj)
  got = _invert(problem, init=regress, steps=1)
  want = 1e-3 * np.sum((targets['descriptor'] @ proj) ** 2, axis=1)
  np.testing.assert_allclose(got.history['prior'][:, 0], want, rtol=1e-5)


def test_stochastic_results_do_not_depend_on_chunking(problem):
  params, targets, latents = problem
  runs = [toy.invert(toy.noisy_objective, params, targets,
                     init=latents, steps=4, chunk_size=c, tx=TX,
                     stochastic=True, key=jax.random.key(1),
                     progress=False) for c in (2, 4)]
  _assert_same(*runs)
  with pytest.raises(TypeError, match='targets'):  # the key comes first
    inversion.invert(toy.noisy_objective, params, targets, init=latents,
                     options=inversion.InvertOptions(steps=1, chunk_size=2))


def test_resume_after_finished_chunk(problem, reference, tmp_path):
  def stop_after_first_chunk(p):
    if p.chunk_done and p.chunk == 0:
      raise Interrupt
  with pytest.raises(Interrupt):
    _invert(problem, workdir=tmp_path, callback=stop_after_first_chunk)
  seen = []
  got = _invert(problem, workdir=tmp_path, callback=seen.append)
  # Chunk 0 came from disk, only chunks 1 and 2 were computed.
  assert got.stats['chunks_restored'] == 1 and got.stats['chunks_run'] == 2
  assert got.stats['steps_run'] == 2 * STEPS
  assert {p.chunk for p in seen} == {1, 2}
  _assert_same(got, reference)


def test_max_chunks_then_resume_mid_chunk(problem, reference, tmp_path):
  part = _invert(problem, workdir=tmp_path, max_chunks=1)
  assert part.done.tolist() == [True] * 4 + [False] * 6
  assert np.isnan(part.latents['w'][4:]).all()

  def kill_in_chunk_1(p):
    if p.chunk == 1 and p.step == 8:
      raise Interrupt
  with pytest.raises(Interrupt):
    _invert(problem, workdir=tmp_path, checkpoint_every=5, log_every=1,
            callback=kill_in_chunk_1)
  got = _invert(problem, workdir=tmp_path, checkpoint_every=5)
  # Chunk 1 restarts from its step-5 checkpoint, chunk 2 runs whole.
  assert got.stats['chunks_restored'] == 1
  assert got.stats['steps_run'] == (STEPS - 5) + STEPS
  _assert_same(got, reference)


def test_time_spent_adds_up_across_resumed_runs(problem, tmp_path,
                                                 monkeypatch):
  # A fake clock that advances one second per optimisation step (at each
  # step's log point). Chunk 0 runs in one call; chunk 1 is killed at step
  # 8 after a checkpoint at step 5; a third call finishes chunks 1 and 2.
  now = [0.0]
  monkeypatch.setattr(engine._ChunkClock, '_now', staticmethod(lambda: now[0]))

  def tick(p, kill=False):
    if not p.chunk_done:
      now[0] += 1
    if kill:
      _kill_in_chunk_1_at_step_8(p)
  first = _invert(problem, workdir=tmp_path, max_chunks=1, log_every=1,
                  callback=tick)
  assert first.stats['seconds_all_runs'] == STEPS
  with pytest.raises(Interrupt):
    _invert(problem, workdir=tmp_path, checkpoint_every=5, log_every=1,
            callback=lambda p: tick(p, kill=True))
  got = _invert(problem, workdir=tmp_path, log_every=1, callback=tick)
  assert got.stats['steps_run'] == (STEPS - 5) + STEPS
  # Chunk 1: 4 s before its step-5 checkpoint (written before step 5's log
  # point) in the killed call + 7 s now; chunks 0 and 2: 12 s each.
  assert got.stats['seconds_all_runs'] == STEPS + (4 + STEPS - 5) + STEPS
  assert got.stats['seconds'] > 0  # this call's own wall time, real clock


def test_time_spent_is_unknown_when_a_stored_chunk_lacks_it(
    problem, tmp_path, monkeypatch):
  # A store written before chunks recorded their time: no total, rather
  # than one that silently leaves those chunks out.
  with monkeypatch.context() as m:
    m.setattr(engine._ChunkClock, 'total', lambda self: None)
    _invert(problem, workdir=tmp_path, max_chunks=1)
  got = _invert(problem, workdir=tmp_path)
  assert got.stats['chunks_restored'] == 1
  assert got.stats['seconds_all_runs'] is None
  assert got.stats['seconds'] > 0


def _kill_in_chunk_1_at_step_8(p):
  if p.chunk == 1 and p.step == 8:
    raise Interrupt


@pytest.mark.parametrize('seconds,resumed_at', [(0.0, 8), (1e9, 0)])
def test_time_based_checkpoints_resume_bit_identical(problem, tmp_path,
                                                     seconds, resumed_at):
  # 0 s: the running chunk is saved after every step, so the kill at step
  # 8 loses nothing; 1e9 s: never within a chunk, it restarts at step 0.
  whole = _invert(problem)
  with pytest.raises(Interrupt):
    _invert(problem, workdir=tmp_path, checkpoint_seconds=seconds,
            log_every=1, callback=_kill_in_chunk_1_at_step_8)
  # Resumed under another setting: not part of what the run is.
  got = _invert(problem, workdir=tmp_path)
  assert got.stats['chunks_restored'] == 1
  assert got.stats['steps_run'] == (STEPS - resumed_at) + STEPS
  chex.assert_trees_all_equal(got.latents, whole.latents)
  chex.assert_trees_all_equal(got.history, whole.history)
  chex.assert_trees_all_equal(got.final, whole.final)


def test_resume_refuses_a_different_run(problem, tmp_path):
  _invert(problem, workdir=tmp_path, max_chunks=1, steps=2)
  with pytest.raises(inversion.ResumeMismatchError, match='chunk_size'):
    _invert(problem, workdir=tmp_path, steps=2, chunk_size=2)


def test_argument_errors(problem):
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    _invert(problem, chunk_size=0)
  with pytest.raises(ValueError, match='checkpoint_every needs a workdir'):
    _invert(problem, checkpoint_every=2)
  with pytest.raises(ValueError, match='checkpoint_seconds needs a workdir'):
    _invert(problem, checkpoint_seconds=60)
  with pytest.raises(ValueError, match='same leading row axis'):
    _invert(problem, init={'w': np.zeros((N, 8)), 'v': np.zeros((3, 1))})


def test_map_targets_equals_vmap(problem):
  params, _, latents = problem
  images = inversion.map_targets(toy.render, params['g'], latents,
                                 chunk_size=4)
  want = jax.vmap(toy.render, in_axes=(None, 0))(params['g'], latents)
  assert images.shape == (N, 8, 8, 3)
  np.testing.assert_allclose(images, want, rtol=1e-5, atol=1e-6)


def test_prepare_chunk_runs_what_invert_runs(problem):
  params, targets, latents = problem
  rows = slice(0, 4)
  step, st, p, t = inversion.prepare_chunk(
      jax.random.key(5), toy.noisy_objective, params,
      jax.tree.map(lambda x: x[rows], targets),
      jax.tree.map(lambda x: x[rows], latents),
      options=inversion.InvertOptions(steps=STEPS, chunk_size=4, tx=TX,
                                      stochastic=True))
  compiled = step.lower(st, p, t).compile()
  for _ in range(STEPS):
    st, _ = compiled(st, p, t)
  want = toy.invert(toy.noisy_objective, params, targets, init=latents,
                    steps=STEPS, chunk_size=4, tx=TX, stochastic=True,
                    key=jax.random.key(5), progress=False)
  np.testing.assert_allclose(st.latents['w'], want.latents['w'][rows],
                             rtol=1e-6, atol=1e-7)


def test_snapshots_are_the_latents_of_shorter_runs(problem, reference):
  # One run with snapshots gives, at each snapshot step t, the latents a run
  # of t steps ends with (constant learning rate: the trajectories agree).
  got = _invert(problem, snapshot_steps=(0, 3, STEPS))
  assert sorted(got.snapshots) == [0, 3, STEPS]
  _, _, latents = problem
  chex.assert_trees_all_close(got.snapshots[0], latents)
  chex.assert_trees_all_close(got.snapshots[STEPS], reference.latents,
                              rtol=1e-5, atol=1e-6)
  short = _invert(problem, steps=3)
  chex.assert_trees_all_close(got.snapshots[3], short.latents, rtol=1e-5,
                              atol=1e-6)
  # Snapshots change nothing else.
  _assert_same(got, reference)


def test_snapshots_survive_a_resume_mid_chunk(problem, tmp_path):
  whole = _invert(problem, snapshot_steps=(0, 2, 7))

  def kill(p):
    if p.chunk == 1 and p.step == 8:
      raise Interrupt
  with pytest.raises(Interrupt):
    _invert(problem, workdir=tmp_path, checkpoint_every=5, log_every=1,
            snapshot_steps=(0, 2, 7), callback=kill)
  got = _invert(problem, workdir=tmp_path, checkpoint_every=5,
                snapshot_steps=(0, 2, 7))
  assert got.stats['chunks_restored'] == 1  # and chunk 1 from step 5
  for t in (0, 2, 7):
    chex.assert_trees_all_close(got.snapshots[t], whole.snapshots[t],
                                rtol=1e-5, atol=1e-6)
  # Other snapshot steps are another run: resuming it is refused.
  with pytest.raises(inversion.ResumeMismatchError, match='snapshot_steps'):
    _invert(problem, workdir=tmp_path, snapshot_steps=(0, 3))
  with pytest.raises(ValueError, match='must lie in'):
    _invert(problem, snapshot_steps=(0, STEPS + 1))
  with pytest.raises(ValueError, match='increasing'):
    _invert(problem, snapshot_steps=(3, 2))


def test_zero_steps_return_the_initialisation(problem):
  # The learned attack's use: the start alone, scored like any run.
  _, _, latents = problem
  got = _invert(problem, steps=0, snapshot_steps=(0,))
  assert got.done.all() and got.history['loss'].shape == (N, 0)
  chex.assert_trees_all_close(got.latents, latents)
  chex.assert_trees_all_close(got.snapshots[0], latents)
  assert np.isfinite(got.final['loss']).all()
