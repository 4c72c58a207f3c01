"""The table of protection schemes, and settings parsed from a string.

``SCHEMES`` maps a name to its `Scheme`: the pure function, its parameters
(with types, defaults and checks), its comparison score, how an attacker
differentiates through it, whether it needs a key, and its source. A
`Setting` is one scheme with its parameters, parsed from the command
line::

  parse('partial:k=32,biohash:bits=64,polyprotect:m=5,overlap=2,none')

Tokens are comma-separated; a token with ``:``, or without ``=``, starts a
scheme; a bare ``name=value`` adds a parameter to the scheme before it.
Every error (unknown scheme or parameter, a bad value, k > D, bits < 1, a
missing key) is raised by `parse`, `Setting.check` or `require_keys`,
before any work.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

import jax
import jax.numpy as jnp

from id2image_jax.protection import _keys
from id2image_jax.protection import _schemes
from id2image_jax.protection import _scores

Gradient = Literal['exact', 'straight-through']
KeyUse = Literal['none', 'secret', 'randomness']


@dataclasses.dataclass(frozen=True)
class Param:
  """One parameter of a scheme.

  Attributes:
    name: as written on the command line and passed to the function.
    kind: int or float.
    default: None when the parameter must be given.
    low: smallest allowed value.
    high: largest allowed value, a number, 'D' (the descriptor size) or
      None (no bound); checked by `Setting.check`.
    doc: what it is, in words.
  """
  name: str
  kind: type
  default: Any = None
  low: float = 0
  high: Any = None
  doc: str = ''


@dataclasses.dataclass(frozen=True)
class Scheme:
  """A row of the table (module docstring).

  Attributes:
    name: its name on the command line.
    family: the group it belongs to in reports.
    protect: ``fn(key, descriptors [..., D], **params) -> [..., T]``.
    params: its parameters.
    score: ``fn(params) -> 'cosine' | 'hamming'``: how templates compare.
    gradient: 'exact' (differentiable) or 'straight-through' (the rounding
      or sign passes the input's gradient).
    key: 'secret' (a system key), 'randomness' (a random draw, not a
      secret) or 'none'.
    source: where the definition comes from.
    attack: the forward model a fully informed attacker inverts through,
      ``fn(key, descriptors, **params)`` (default: `protect`); noise cannot
      be replayed, so its attacker compares unit descriptors instead.
  """
  name: str
  family: str
  protect: Callable[..., jax.Array]
  params: tuple[Param, ...]
  score: Callable[[Mapping[str, Any]], str]
  gradient: Gradient
  key: KeyUse
  source: str
  attack: Callable[..., jax.Array] | None = None


def _cosine(params):
  del params
  return 'cosine'


def _noise_attack(key, descriptors, *, scale):
  del key, scale
  return _schemes.unit(descriptors)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme('none', 'unprotected', _schemes.identity, (), _cosine, 'exact',
           'none', 'the descriptor itself (reference)'),
    Scheme('partial', 'partial template', _schemes.partial_first,
           (Param('k', int, None, 1, 'D', 'dimensions kept (the first k)'),),
           _cosine, 'exact', 'none',
           'partial embeddings: the first k of D dimensions'),
    Scheme('partial_random', 'partial template', _schemes.partial_random,
           (Param('k', int, None, 1, 'D',
                  'dimensions kept (a keyed random subset)'),),
           _cosine, 'exact', 'secret',
           'partial embeddings: a keyed random subset of k dimensions'),
    Scheme('quantise', 'quantisation', _schemes.quantise,
           (Param('bits', int, None, 1, 16,
                  'bits per value: 8 = int8, 4, 1 = sign'),),
           lambda p: 'hamming' if p['bits'] == 1 else 'cosine',
           'straight-through', 'none',
           'symmetric uniform quantisation per template (1 bit: sign)'),
    Scheme('projection', 'random projection', _schemes.projection,
           (Param('dim', int, 0, 0, 'D', 'output size (0: D)'),),
           _cosine, 'exact', 'secret',
           'keyed random orthonormal projection (cancelable biometrics)'),
    Scheme('biohash', 'BioHashing', _schemes.biohash,
           (Param('bits', int, None, 1, 'D', 'bits of the BioCode'),),
           lambda p: 'hamming', 'straight-through', 'secret',
           'BioHashing, Teoh, Ngo & Goh 2004 (Pattern Recognition 37)'),
    Scheme('polyprotect', 'PolyProtect', _schemes.polyprotect,
           (Param('m', int, 5, 2, 'D', 'window size and polynomial terms'),
            Param('overlap', int, 2, 0, None,
                  'elements shared by consecutive windows (< m)'),
            Param('coefficient_range', int, 50, 1, 10 ** 6,
                  'coefficients are non-zero integers in [-R, R]')),
           _cosine, 'exact', 'secret',
           'PolyProtect, Hahn & Marcel 2022 (IEEE T-BIOM), from its '
           'definition'),
    Scheme('noise', 'additive noise', _schemes.gaussian_noise,
           (Param('scale', float, None, 0.0, None,
                  'expected noise norm on a unit template'),),
           _cosine, 'exact', 'randomness',
           'additive isotropic Gaussian noise on the unit template',
           attack=_noise_attack),
)}


@dataclasses.dataclass(frozen=True)
class Setting:
  """One scheme with its parameters (all filled in).

  Attributes:
    name: the scheme's name in `SCHEMES`.
    params: parameter name -> value.
  """
  name: str
  params: Mapping[str, Any]

  @property
  def scheme(self) -> Scheme:
    return SCHEMES[self.name]

  @property
  def label(self) -> str:
    """``'biohash:bits=64'``: what `parse` reads back."""
    if not self.params:
      return self.name
    return self.name + ':' + ','.join(f'{k}={v:g}' if isinstance(v, float)
                                      else f'{k}={v}'
                                      for k, v in self.params.items())

  @property
  def short_label(self) -> str:
    """The label without parameters left at their defaults."""
    defaults = {p.name: p.default for p in self.scheme.params}
    shown = {k: v for k, v in self.params.items() if v != defaults.get(k)}
    return Setting(self.name, shown).label if shown else self.name

  @property
  def score_kind(self) -> str:
    return self.scheme.score(self.params)

  @property
  def needs_key(self) -> bool:
    return self.scheme.key != 'none'

  def protect(self, key: jax.Array | None, descriptors: jax.Array
              ) -> jax.Array:
    """The templates of `descriptors` ([..., D] -> [..., T])."""
    self._require(key)
    return self.scheme.protect(key, descriptors, **self.params)

  def attack(self, key: jax.Array | None, descriptors: jax.Array
             ) -> jax.Array:
    """What an attacker who holds `key` inverts through (`Scheme.attack`)."""
    self._require(key)
    fn = self.scheme.attack or self.scheme.protect
    return fn(key, descriptors, **self.params)

  def score(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """The system's comparison score of two sets of templates."""
    return _scores.score_fn(self.score_kind)(a, b)

  def template_size(self, dim: int) -> int:
    """T, the template size for D = `dim` descriptors."""
    self.check(dim)
    key = jax.random.key(0) if self.needs_key else None
    shape = jax.eval_shape(functools.partial(self.protect, key),
                           jax.ShapeDtypeStruct((1, dim), jnp.float32))
    return int(shape.shape[-1])

  def check(self, dim: int) -> None:
    """Raises ValueError when a parameter does not fit D = `dim`."""
    for p in self.scheme.params:
      high = dim if p.high == 'D' else p.high
      value = self.params[p.name]
      if high is not None and value > high:
        what = 'D, the descriptor size,' if p.high == 'D' else ''
        raise ValueError(f'{self.label}: {p.name}={value} exceeds '
                         f'{what or "its maximum"} ({high})')
    if self.name == 'polyprotect' and not (
        self.params['overlap'] < self.params['m']):
      raise ValueError(f'{self.label}: overlap must be smaller than m')

  def _require(self, key):
    if self.needs_key and key is None:
      raise ValueError(f'{self.label} needs a key: give a key seed '
                       '(--key-seed)')


def _value(token: str, param: Param, text: str) -> Any:
  try:
    value = float(text) if param.kind is float else int(text)
  except ValueError:
    raise ValueError(f'--schemes {token!r}: {param.name} must be '
                     f'{"a number" if param.kind is float else "an integer"}'
                     f', got {text!r}') from None
  if value < param.low:
    raise ValueError(f'--schemes {token!r}: {param.name} must be >= '
                     f'{param.low:g}, got {text}')
  return value


def _make(name: str, given: dict[str, tuple[str, str]], text: str
          ) -> Setting:
  if name not in SCHEMES:
    raise ValueError(f'--schemes {text!r}: unknown scheme {name!r} (known: '
                     f'{", ".join(SCHEMES)})')
  scheme = SCHEMES[name]
  known = {p.name: p for p in scheme.params}
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ValueError(f'--schemes {text!r}: {name} has no parameter '
                     f'{unknown[0]!r} (its parameters: '
                     f'{", ".join(known) or "none"})')
  params = {}
  for p in scheme.params:
    if p.name in given:
      token, value = given[p.name]
      params[p.name] = _value(token, p, value)
    elif p.default is None:
      raise ValueError(f'--schemes {text!r}: {name} needs {p.name}=... '
                       f'({p.doc})')
    else:
      params[p.name] = p.default
  return Setting(name, params)


def parse(text: str) -> list[Setting]:
  """Settings of a ``--schemes`` string (module docstring).

  Raises:
    ValueError: naming the offending token, for an unknown scheme or
      parameter, a value of the wrong type or below its minimum, a repeated
      parameter, or an empty list.
  """
  settings, current = [], None
  for raw in str(text).split(','):
    token = raw.strip()
    if not token:
      continue
    if ':' in token or '=' not in token:
      if current is not None:
        settings.append(_make(*current))
      name, _, first = token.partition(':')
      current = (name.strip(), {}, token)
      token = first.strip()
      if not token:
        continue
    if current is None:
      raise ValueError(f'--schemes {text!r}: {token!r} comes before any '
                       'scheme name')
    key, sep, value = token.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'--schemes {raw.strip()!r}: expected NAME=VALUE')
    if key.strip() in current[1]:
      raise ValueError(f'--schemes {raw.strip()!r}: {key.strip()} given '
                       'twice')
    current[1][key.strip()] = (raw.strip(), value.strip())
  if current is not None:
    settings.append(_make(*current))
  if not settings:
    raise ValueError('--schemes is empty: name at least one scheme, e.g. '
                     'partial:k=32,biohash:bits=64')
  return settings


def check_all(settings: Sequence[Setting], dim: int, *,
              key_seed: int | None) -> None:
  """Every setting fits D = `dim`, and a valid key seed exists where a
  scheme needs a key.

  Raises:
    ValueError: the first problem, naming the setting.
  """
  for s in settings:
    s.check(dim)
  keyed = [s.label for s in settings if s.needs_key]
  if keyed and key_seed is None:
    raise ValueError(f'{", ".join(keyed)} need(s) a key: give a key seed '
                     '(--key-seed N; it is never written to the report)')
  if key_seed is not None:
    _keys.key_from_seed(key_seed)  # a malformed seed fails here
