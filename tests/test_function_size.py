"""Orchestrators read as named phases (DESIGN.md: thin compositions).

No function in jobs/, reports/ or inversion/ runs over `MAX_LINES` lines,
counted from its ``def`` to its last line (docstring included): a longer
one is split into phases, each a small function with a docstring.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'id2image_jax'
FOLDERS = ('jobs', 'reports', 'inversion')
MAX_LINES = 80


def _long_functions(path: pathlib.Path, limit: int):
  """(name, first line, lines) of each function of `path` over `limit`."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      lines = node.end_lineno - node.lineno + 1
      if lines > limit:
        out.append((node.name, node.lineno, lines))
  return out


def test_no_long_function_in_jobs_reports_and_inversion():
  found = [f'{path.relative_to(ROOT)}:{line} {name} ({lines} lines)'
           for folder in FOLDERS
           for path in sorted((ROOT / folder).rglob('*.py'))
           for name, line, lines in _long_functions(path, MAX_LINES)]
  assert not found, (f'split into phases (at most {MAX_LINES} lines each):'
                     '\n' + '\n'.join(found))


def test_the_check_sees_a_long_function(tmp_path):
  # The test above must be able to fail, nested functions included.
  bad = tmp_path / 'bad.py'
  bad.write_text('def short():\n  def inner():\n' + '    x = 1\n' * 85
                 + '  return inner\n')
  assert _long_functions(bad, MAX_LINES) == [('short', 1, 88),
                                             ('inner', 2, 86)]
