"""Template protection schemes and their measures (issue 21).

Each scheme is a pure, jittable ``protect(key, descriptors, **params) ->
templates`` with its comparison score (`_schemes`, `_scores`); `SCHEMES`
is the table that a command-line string such as
``partial:k=32,biohash:bits=64`` parses into (`parse`, `Setting`);
`unlinkability` is D<->sys of ISO/IEC 30136.

::

  import jax
  from id2image_jax import protection

  key = protection.key_from_seed(1234)
  templates = protection.biohash(key, descriptors, bits=64)   # [N, 64] +-1
  scores = protection.hamming_similarity(templates[:1], templates)
"""

# pylint: disable=g-importing-member
from id2image_jax.protection._keys import key_from_seed
from id2image_jax.protection._keys import system_keys
from id2image_jax.protection._registry import SCHEMES
from id2image_jax.protection._registry import Param
from id2image_jax.protection._registry import Scheme
from id2image_jax.protection._registry import Setting
from id2image_jax.protection._registry import check_all
from id2image_jax.protection._registry import parse
from id2image_jax.protection._schemes import biohash
from id2image_jax.protection._schemes import gaussian_noise
from id2image_jax.protection._schemes import identity
from id2image_jax.protection._schemes import orthonormal_matrix
from id2image_jax.protection._schemes import partial_first
from id2image_jax.protection._schemes import partial_random
from id2image_jax.protection._schemes import polyprotect
from id2image_jax.protection._schemes import polyprotect_key
from id2image_jax.protection._schemes import polyprotect_map
from id2image_jax.protection._schemes import polyprotect_windows
from id2image_jax.protection._schemes import projection
from id2image_jax.protection._schemes import quantise
from id2image_jax.protection._schemes import sign
from id2image_jax.protection._schemes import subset_indices
from id2image_jax.protection._schemes import unit
from id2image_jax.protection._scores import SCORE_KINDS
from id2image_jax.protection._scores import cosine_score
from id2image_jax.protection._scores import hamming_similarity
from id2image_jax.protection._scores import score_fn
from id2image_jax.protection._scores import score_matrix
from id2image_jax.protection._unlinkability import local_linkability
from id2image_jax.protection._unlinkability import unlinkability

__all__ = (
    'SCHEMES',
    'SCORE_KINDS',
    'Param',
    'Scheme',
    'Setting',
    'biohash',
    'check_all',
    'cosine_score',
    'gaussian_noise',
    'hamming_similarity',
    'identity',
    'key_from_seed',
    'local_linkability',
    'orthonormal_matrix',
    'parse',
    'partial_first',
    'partial_random',
    'polyprotect',
    'polyprotect_key',
    'polyprotect_map',
    'polyprotect_windows',
    'projection',
    'quantise',
    'score_fn',
    'score_matrix',
    'sign',
    'subset_indices',
    'system_keys',
    'unit',
    'unlinkability',
)
