"""Test settings shared by the whole suite (CPU, small models)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import jax  # pylint: disable=g-import-not-at-top

# Catch PRNG key reuse anywhere in the library (STYLE.md: keys).
jax.config.update('jax_debug_key_reuse', True)
# Parity tests compare float32 maths; keep matmuls/convs at full precision.
jax.config.update('jax_default_matmul_precision', 'highest')
