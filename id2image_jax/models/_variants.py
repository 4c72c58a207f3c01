"""Variant tables: a model's variants are data, looked up by name.

Every model module keeps a ``VARIANTS`` table (big_vision ``decode_variant``,
flax ``examples/imagenet/models.py``). `entry` looks a name up, with an error
that names the model and the known variants; `decode_variant` builds a
config dict from the entry and applies overrides, refusing a field the
config does not have (a typo would otherwise build another network).
`named_only` expands a config that names only its variant; `input_spec`
reads the input convention of nets that keep it in their variant data.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from id2image_jax import preprocess


def entry(variants: Mapping[str, Any], variant: str, *, model: str) -> Any:
  """The entry of `variants` named `variant`.

  Args:
    variants: the model's ``VARIANTS`` table.
    variant: a key of it.
    model: names the model in the error.

  Returns:
    The table's entry, as stored (not a copy).

  Raises:
    ValueError: `variant` is not in the table (the message lists the known
      variants).
  """
  if variant not in variants:
    raise ValueError(f'unknown {model} variant {variant!r}; known: '
                     f'{sorted(variants)}')
  return variants[variant]


def decode_variant(variants: Mapping[str, Any], variant: str,
                   overrides: Mapping[str, Any], *, model: str,
                   fields: Callable[[Any], Mapping[str, Any]] = dict
                   ) -> dict[str, Any]:
  """A config dict: the entry's fields, ``variant``, then `overrides`.

  Args:
    variants: the model's ``VARIANTS`` table.
    variant: a key of it.
    overrides: replacements for fields of the config.
    model: names the model in errors.
    fields: the config fields of an entry (default: the entry is a mapping
      of them).

  Returns:
    A new dict (the table is left as it is).

  Raises:
    ValueError: an unknown variant, or an override of a field the config
      does not have (both named).
  """
  config = dict(fields(entry(variants, variant, model=model)),
                variant=variant)
  unknown = set(overrides) - set(config)
  if unknown:
    raise ValueError(f'unknown {model} config field(s) {sorted(unknown)}')
  config.update(overrides)
  return config


def as_lists(value: Any) -> Any:
  """`value` with every tuple, also inside lists and dicts, made a list.

  A config then equals what a JSON round trip of it gives back.
  """
  if isinstance(value, Mapping):
    return {k: as_lists(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [as_lists(v) for v in value]
  return value


def named_only(config: Mapping[str, Any],
               get_config: Callable[[str], Mapping[str, Any]], *,
               field: str, default: str) -> Mapping[str, Any]:
  """`config`, or its variant's full config when it has no `field`.

  A config may be just ``{'variant': name}`` (or empty: the `default`
  variant); `build` then needs the variant's fields.

  Args:
    config: a config dict.
    get_config: the model's ``get_config``.
    field: a field every full config has.
    default: the variant of a config that names none.

  Returns:
    A full config.
  """
  if field in config:
    return config
  return get_config(config.get('variant', default))


def input_spec(config: Mapping[str, Any], *,
               crop: Sequence[float] | None = None) -> preprocess.InputSpec:
  """How to feed FFHQ-aligned images to a net whose config holds its input.

  Args:
    config: ``input_size`` (square side), ``crop`` (top, left, bottom,
      right fractions), ``input_mean`` and ``input_std`` (per channel, on the
      0..255 scale), and ``channel_order`` (RGB when absent).
    crop: fractions overriding the config's crop, e.g. ``(0, 0, 1, 1)`` for
      faces already cropped the net's way.

  Returns:
    The spec; resizing is bilinear.
  """
  size = int(config['input_size'])
  return preprocess.InputSpec(
      size=(size, size), crop=tuple(crop if crop is not None else
                                    config['crop']),
      channel_order=config.get('channel_order', 'RGB'),
      mean=tuple(config['input_mean']), std=tuple(config['input_std']),
      method='linear')
