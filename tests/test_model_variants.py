"""The variant tables' shared lookup (`models._variants`)."""

import json

import pytest

from id2image_jax.models import _variants
from id2image_jax.models import faceres
from id2image_jax.models import gear
from id2image_jax.models import iresnet

TABLE = {'small': {'widths': (8, 16), 'head': 'fc'},
         'large': {'widths': (32, 64), 'head': 'fc'}}


def test_entry_names_the_model_and_the_known_variants():
  assert _variants.entry(TABLE, 'small', model='Toy') is TABLE['small']
  with pytest.raises(ValueError, match=r"unknown Toy variant 'huge'; known: "
                     r"\['large', 'small'\]"):
    _variants.entry(TABLE, 'huge', model='Toy')


def test_decode_variant_applies_overrides_to_a_copy():
  config = _variants.decode_variant(TABLE, 'small', {'head': 'conv'},
                                    model='Toy')
  assert config == {'widths': (8, 16), 'head': 'conv', 'variant': 'small'}
  assert TABLE['small'] == {'widths': (8, 16), 'head': 'fc'}


def test_decode_variant_refuses_a_field_the_config_lacks():
  with pytest.raises(ValueError, match=r"unknown Toy config field\(s\) "
                     r"\['depth', 'hed'\]"):
    _variants.decode_variant(TABLE, 'small', {'hed': 'x', 'depth': 2},
                             model='Toy')


def test_decode_variant_reads_entries_through_fields():
  config = _variants.decode_variant(
      {'r2': (2, 2)}, 'r2', {'width': 4}, model='Toy',
      fields=lambda blocks: {'blocks': list(blocks), 'width': 8})
  assert config == {'blocks': [2, 2], 'width': 4, 'variant': 'r2'}


def test_as_lists_equals_a_json_round_trip():
  value = {'a': (1, (2, 3)), 'b': [(4,)], 'c': {'d': ('x', 1.5)}, 'e': 'f'}
  assert _variants.as_lists(value) == json.loads(json.dumps(value))
  assert _variants.as_lists(value)['a'] == [1, [2, 3]]


def test_named_only_expands_a_config_that_names_only_its_variant():
  full = gear.get_config()
  assert _variants.named_only(full, gear.get_config, field='convs',
                              default='human') is full
  assert _variants.named_only({'variant': 'human'}, gear.get_config,
                              field='convs', default='x') == full
  assert _variants.named_only({}, gear.get_config, field='convs',
                              default='human') == full


def test_input_spec_reads_the_config():
  spec = _variants.input_spec(faceres.get_config('hse'))
  assert spec.size == (224, 224) and spec.channel_order == 'BGR'
  assert spec.crop == tuple(faceres.FFHQ_CROP)
  # No channel_order field: RGB.
  spec = _variants.input_spec(gear.get_config(), crop=(0, 0, 1, 1))
  assert spec.channel_order == 'RGB' and spec.crop == (0, 0, 1, 1)
  assert spec.std == (255.0, 255.0, 255.0)


def test_every_model_refuses_an_unknown_override():
  with pytest.raises(ValueError, match=r"IResNet config field\(s\) "
                     r"\['layer'\]"):
    iresnet.get_config('r18', layer=[1, 1, 1, 1])
