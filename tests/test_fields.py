"""fields.known_fields: a dataclass takes only the keys it declares."""

import dataclasses

from id2image_jax import fields


@dataclasses.dataclass(frozen=True)
class _Settings:
  width: int = 1
  name: str = 'a'


def test_keeps_only_declared_fields():
  got = fields.known_fields(_Settings, {'width': 3, 'other': 9, 'name': 'b'})
  assert got == {'width': 3, 'name': 'b'}
  assert _Settings(**got) == _Settings(3, 'b')


def test_missing_fields_are_left_to_defaults():
  assert fields.known_fields(_Settings, {'unrelated': 1}) == {}
