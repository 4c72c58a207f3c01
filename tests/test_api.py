"""The public API, all of it: exports resolve, optional arguments are
keyword-only (dm_pix ``api_test.py``).

Every module of the package is imported; every public function and every
public method of a public class defined there is checked, and every name
in an ``__all__`` must resolve. A few primary arguments keep a positional
default by convention (listed in `_POSITIONAL_DEFAULTS`, each with why).
"""

import importlib
import inspect
import pkgutil

import pytest

import id2image_jax

# (function qualname suffix, parameter): the function's main subject, not
# an option.
_POSITIONAL_DEFAULTS = {
    ('get_config', 'variant'),   # get_config(arg): the flax/big_vision form
    ('get_config', 'arg'),
    ('input_spec', 'config'),    # input_spec(config) of an encoder module
    ('load_encoder', 'spec'),    # loading.load_encoder('dlib')
    ('load_generator', 'spec'),  # loading.load_generator('demo')
    ('load_landmark_net', 'spec'),
    ('main', 'argv'),            # cli.main(argv)
    ('entry', 'argv'),           # cli.entry(argv): the program
    ('default_manual_dir', 'data_dir'),
    ('read_layers', 'path'),     # dlib: the file, default the shipped one
    ('read_layers', 'config'),
    ('convert', 'path'),
    ('error', 'at'),             # dlib_format.Reader.error(message, at)
}


def _modules():
  for info in pkgutil.walk_packages(id2image_jax.__path__, 'id2image_jax.'):
    if info.name.endswith('__main__'):
      continue
    yield importlib.import_module(info.name)


def _public_callables(module):
  for name, obj in vars(module).items():
    if name.startswith('_') or getattr(obj, '__module__', None) != (
        module.__name__):
      continue
    if inspect.isfunction(obj):
      yield f'{module.__name__}.{name}', obj
    elif inspect.isclass(obj):
      for attr, fn in vars(obj).items():
        if inspect.isfunction(fn) and (not attr.startswith('_')
                                       or attr == '__call__'):
          yield f'{module.__name__}.{name}.{attr}', fn


_CALLABLES = sorted({n: f for m in _modules()
                     for n, f in _public_callables(m)}.items())


@pytest.mark.parametrize('name,fn', _CALLABLES, ids=[n for n, _ in _CALLABLES])
def test_optional_arguments_are_keyword_only(name, fn):
  short = name.rpartition('.')[2]
  for p in inspect.signature(fn).parameters.values():
    if p.default is p.empty or p.kind != p.POSITIONAL_OR_KEYWORD:
      continue
    assert (short, p.name) in _POSITIONAL_DEFAULTS, (
        f'{name}({p.name}=...) must be keyword-only')


def test_every_all_resolves():
  for module in _modules():
    for name in getattr(module, '__all__', ()):
      assert getattr(module, name, None) is not None, (
          f'{module.__name__}.__all__ names {name!r}, which does not exist')


def test_the_check_sees_a_positional_option():
  def bad(x, scale=1.0):
    return x * scale
  params = inspect.signature(bad).parameters
  assert params['scale'].kind == params['scale'].POSITIONAL_OR_KEYWORD
  assert ('bad', 'scale') not in _POSITIONAL_DEFAULTS
