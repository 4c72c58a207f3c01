"""The entries of a config or JSON mapping that a dataclass declares.

Settings dataclasses are built from config dicts that carry more keys than
they read (a job's whole config section; a JSON file with provenance), so
each takes only its own fields and converts the few that need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def known_fields(cls: type, mapping: Mapping[str, Any]) -> dict[str, Any]:
  """The items of `mapping` whose keys are fields of dataclass `cls`."""
  names = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in dict(mapping).items() if k in names}
