"""Static checks that catch real bugs: undefined names, unused imports."""

import os
import shutil
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_no_pyflakes_errors():
  ruff = shutil.which('ruff') or os.path.join(os.path.dirname(sys.executable),
                                              'ruff')
  if not os.path.exists(ruff):
    pytest.skip('ruff is not installed (it comes with the test extra)')
  # F: pyflakes (undefined names, unused imports/variables); E9: syntax.
  result = subprocess.run([ruff, 'check', '--select', 'F,E9',
                           '--output-format', 'concise', '.'],
                          cwd=_ROOT, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stdout + result.stderr
