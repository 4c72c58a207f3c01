"""The floors of the package: imports only point down (DESIGN.md).

::

  cli                 parse, dispatch
  jobs                config in, files out; never import each other
  loading             the table of kinds
  porting, package_files, reports       files in / files out
  evaluation          attack success, arms, transfer, the audit's measures
  recipes             the library composed for a job (inversion recipe)
  data, inversion, analysis, protection     pipelines and targets; the
                      engine; heads and their training; template protection
  base                models (with nn), losses, metrics, preprocess, protocols,
                      batching, errors, checkpoints (the only module on
                      orbax)

Every module of the package must be on a floor (a new module has to be
placed), and every import statement, including imports inside functions,
is checked, so a lazy import cannot hide an upward arrow or a cycle. Units
on one floor may import each other in one direction only (no two-way tie
between any two top-level units, whatever their floors): a trained head
reaches the engine as a callable, not as an import.
"""

import ast
import collections
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'id2image_jax'
PACKAGE = 'id2image_jax'

# Longest prefix wins.
FLOORS = {
    'cli': 8, '__main__': 8,
    'jobs': 7,
    'loading': 6,
    'porting': 5, 'package_files': 5, 'reports': 5,
    'evaluation': 4,
    'recipes': 3,
    'data': 2, 'inversion': 2, 'analysis': 2, 'protection': 2,
    '': 0,  # the package docstring module
    'models': 0, 'losses': 0, 'metrics': 0, 'preprocess': 0,
    'protocols': 0, 'batching': 0, 'checkpoints': 0, 'configs': 0,
    'errors': 0,  # the user-error classes: everyone may raise them
    'fields': 0,  # config mapping -> dataclass fields
}
# Units announced by open issues, placed before they land (none now).
PLANNED = {}
FLOORS.update(PLANNED)
# The only module that may import orbax.
ORBAX_OWNER = 'checkpoints'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in ROOT.rglob('*.py')}


def _floor(module: str) -> int | None:
  for prefix in sorted(FLOORS, key=len, reverse=True):
    if module == prefix or module.startswith(prefix + '.') or (
        prefix == '' and module == ''):
      return FLOORS[prefix]
  return None


def _unit(module: str) -> str:
  """The top-level unit of a module: its package, or itself."""
  return module.partition('.')[0]


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
  """Package modules `path` imports (anywhere in the file)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import mod` imports pkg.mod when that is a module (the
      # longest known prefix is taken below).
      names = [f'{node.module}.{a.name}' for a in node.names]
    for name in names:
      if not name.startswith(PACKAGE):
        continue
      name = name[len(PACKAGE):].lstrip('.')
      while name and name not in known:
        name = name.rpartition('.')[0]
      if name in known and name:
        out.add(name)
  return out


@pytest.fixture(scope='module')
def graph():
  modules = _modules()
  known = set(modules)
  return {m: _imports(p, known) - {m} for m, p in modules.items()}


def test_every_module_is_on_a_floor():
  unplaced = sorted(m for m in _modules() if _floor(m) is None)
  assert not unplaced, f'place these modules on a floor: {unplaced}'


def test_no_import_points_up(graph):
  upward = sorted(f'{a} (floor {_floor(a)}) -> {b} (floor {_floor(b)})'
                  for a, deps in graph.items() for b in deps
                  if _floor(b) > _floor(a))
  assert not upward, 'upward imports:\n' + '\n'.join(upward)


def _is_parent(a: str, b: str) -> bool:
  return b.startswith(a + '.') if a else True


def test_no_import_cycle(graph):
  # A package's __init__ re-exporting its submodules is not a cycle.
  edges = {a: {b for b in deps if not _is_parent(a, b)}
           for a, deps in graph.items()}
  state, stack, cycles = collections.defaultdict(int), [], []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state[nxt] == 1:
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif state[nxt] == 0:
        visit(nxt)
    stack.pop()
    state[node] = 2

  for node in sorted(edges):
    if state[node] == 0:
      visit(node)
  assert not cycles, 'import cycles: ' + '; '.join(
      ' -> '.join(c) for c in cycles)


def _two_way_ties(graph) -> list[str]:
  """Pairs of top-level units that import each other, with one import
  each way."""
  arrows = collections.defaultdict(list)
  for a, deps in graph.items():
    for b in deps:
      if a and _unit(a) != _unit(b):
        arrows[_unit(a), _unit(b)].append(f'{a} -> {b}')
  return sorted(f'{a} <-> {b}: {arrows[a, b][0]}; {arrows[b, a][0]}'
                for a, b in arrows if a < b and (b, a) in arrows)


def test_no_two_units_import_each_other(graph):
  ties = _two_way_ties(graph)
  assert not ties, 'two-way ties:\n' + '\n'.join(ties)


def test_the_checker_sees_a_two_way_tie():
  graph = {'analysis.regressor': {'inversion.objective'},
           'inversion.recipe': {'analysis.train'}, 'data': set()}
  assert _two_way_ties(graph) == [
      'analysis <-> inversion: analysis.regressor -> inversion.objective; '
      'inversion.recipe -> analysis.train']


def test_library_floors_are_ordered():
  # The order DESIGN.md states, so that a careless edit of FLOORS shows.
  base = ('models', 'errors', 'losses', 'metrics', 'preprocess', 'protocols',
          'batching', 'checkpoints')
  middle = ('data', 'inversion', 'analysis', 'protection')
  for low in base:
    for mid in middle:
      assert FLOORS[low] < FLOORS[mid] < FLOORS['recipes'], (low, mid)
  assert FLOORS['recipes'] < FLOORS['evaluation'] < FLOORS['porting']


def test_every_floor_entry_names_a_unit():
  units = {_unit(m) for m in _modules()} | {''}
  stale = sorted(set(FLOORS) - units - set(PLANNED) - {'configs'})
  assert not stale, f'FLOORS names units that do not exist: {stale}'


def test_only_checkpoints_imports_orbax():
  users = sorted(
      m for m, p in _modules().items() if m != ORBAX_OWNER and any(
          (isinstance(n, ast.Import) and any(
              a.name.split('.')[0] == 'orbax' for a in n.names))
          or (isinstance(n, ast.ImportFrom) and n.module
              and n.module.split('.')[0] == 'orbax')
          for n in ast.walk(ast.parse(p.read_text()))))
  assert not users, f'only {ORBAX_OWNER}.py may import orbax: {users}'


def test_jobs_never_import_each_other(graph):
  shared = {'jobs', 'jobs.common'}
  sideways = sorted(f'{a} -> {b}' for a, deps in graph.items()
                    if a.startswith('jobs.') and a not in shared
                    for b in deps if b.startswith('jobs.') and b not in shared)
  assert not sideways, sideways


def test_the_checker_sees_an_upward_import(tmp_path):
  # The test above must be able to fail: a library module importing a job.
  bad = tmp_path / 'bad.py'
  bad.write_text('def f():\n  from id2image_jax.jobs import invert\n')
  deps = _imports(bad, set(_modules()))
  assert deps == {'jobs.invert'}
  assert _floor('jobs.invert') > _floor('inversion.engine')
