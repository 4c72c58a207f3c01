"""What `pip install .` (not only `-e`) installs: every package and the
shipped configs, so the CLI's defaults exist in a plain install."""

import importlib.util
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _pyproject():
  return tomllib.loads((REPO / 'pyproject.toml').read_text())


def test_every_package_is_listed():
  listed = set(_pyproject()['tool']['setuptools']['packages'])
  on_disk = {'.'.join(p.parent.relative_to(REPO).parts)
             for p in (REPO / 'id2image_jax').rglob('__init__.py')}
  assert on_disk - listed == set(), 'add them to [tool.setuptools] packages'
  assert 'id2image_jax.configs' in listed


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  out = tmp_path_factory.mktemp('wheel')
  cmd = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q',
         '--wheel-dir', str(out), str(REPO)]
  # Build with the installed setuptools when it is recent enough (no
  # download); otherwise let pip fetch one into an isolated build env.
  spec = importlib.util.find_spec('setuptools')
  if spec is not None:
    import setuptools  # pylint: disable=g-import-not-at-top
    if int(setuptools.__version__.split('.')[0]) >= 77:
      cmd.insert(4, '--no-build-isolation')
  subprocess.run(cmd, check=True, capture_output=True, cwd=out)
  (path,) = out.glob('id2image_jax-*.whl')
  with zipfile.ZipFile(path) as zf:
    return set(zf.namelist())


def test_wheel_ships_the_configs_and_every_module(wheel):
  for name in ('invert', 'embed', 'leakage', 'evaluate', 'regressor'):
    assert f'id2image_jax/configs/{name}.py' in wheel
  modules = {str(p.relative_to(REPO)) for p in
             (REPO / 'id2image_jax').rglob('*.py')}
  assert modules <= wheel, sorted(modules - wheel)
  assert not any(n.startswith(('tests/', 'ports/', 'benchmarks/'))
                 for n in wheel)
