"""Test settings shared by the whole suite (CPU, small models)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# torch's OpenMP threads spin after each op by default, which starves the
# other pytest-xdist worker (and XLA) on a 2-core CI machine.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
# One persistent XLA compilation cache for the whole run, shared by the
# pytest-xdist workers and the job processes tests start: the suite
# compiles the same small jobs' functions in many tests, and compiling is
# most of a tiny job's time. Results do not change (the cache holds the
# same executables); a fresh folder per run, removed at the end.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix='id2image-tests-xla-')
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _XLA_CACHE
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.05')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import jax  # pylint: disable=g-import-not-at-top

# Catch PRNG key reuse anywhere in the library (STYLE.md: keys).
jax.config.update('jax_debug_key_reuse', True)
# Parity tests compare float32 maths; keep matmuls/convs at full precision.
jax.config.update('jax_default_matmul_precision', 'highest')

import chex  # pylint: disable=g-import-not-at-top,g-bad-import-order
import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order


@pytest.fixture(autouse=True)
def _fresh_trace_counters():
  # chex.assert_max_traces counts per function name across the session;
  # two test files that both jit a local `embed` would otherwise collide.
  chex.clear_trace_counter()
  yield


def pytest_sessionstart(session):
  # The TF.js parity references run under node with pinned npm packages;
  # install them once, before the workers start, so the README's test
  # command is all a fresh clone needs.
  if hasattr(session.config, 'workerinput'):
    return
  from ports import tfjs_reference  # pylint: disable=g-import-not-at-top
  tfjs_reference.ensure_installed()
