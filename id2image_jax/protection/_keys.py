"""System keys from a user's seed.

`jax.random.key` keeps only the low 32 bits of a seed when 64-bit types are
off (``key(2**32 + 5) == key(5)``), which would make long secret seeds
collide. `key_from_seed` folds every 32-bit word of the seed in instead.
"""

from __future__ import annotations

import jax


def key_from_seed(seed: int) -> jax.Array:
  """A typed key that depends on every bit of a non-negative int `seed`."""
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f'a key seed must be a non-negative integer, got '
                     f'{seed!r}')
  words = []
  while True:
    words.append(seed & 0xFFFFFFFF)
    seed >>= 32
    if not seed:
      break
  key = jax.random.key(words[0])
  # The number of words goes in too, so 5 and 5 + 0 * 2**32 stay one key
  # while 5 and 5 + 2**32 differ.
  for word in words[1:]:
    key = jax.random.fold_in(key, word)
  return jax.random.fold_in(key, len(words))


def system_keys(seed: int) -> dict[str, jax.Array]:
  """The keys a protection run uses, all from the user's seed.

  Returns:
    ``{'system': the key the stored templates are protected with,
    'second': another system's key (for unlinkability)}``.
  """
  base = key_from_seed(seed)
  return {'system': jax.random.fold_in(base, 0),
          'second': jax.random.fold_in(base, 1)}
