"""Loads a script of the repository (docs/, ports/) as a module by path:
they are not in a package, and tests import them the same way."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(relative_path: str):
  """The module at ROOT / `relative_path`, freshly executed."""
  path = ROOT / relative_path
  spec = importlib.util.spec_from_file_location(
      '_script_' + path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
