"""The README stays true: its Python example runs, its commands are CI's."""

import os
import re

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  with open(os.path.join(_ROOT, 'README.md')) as f:
    return f.read()


def test_python_examples_run():
  blocks = re.findall(r'```python\n(.*?)```', _readme(), re.DOTALL)
  assert blocks, 'README has no Python example'
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), {})  # pylint: disable=exec-used


def test_ci_runs_the_readme_test_command():
  commands = re.findall(r'```bash\n(.*?)\n```', _readme(), re.DOTALL)
  setup = [c for c in commands if '\n' not in c][:2]
  assert setup[0].endswith('id2image invert'), setup
  with open(os.path.join(_ROOT, '.ci', 'run')) as f:
    assert setup[1] in f.read()


def test_local_links_exist():
  for target in re.findall(r'\]\(([^)#:]+)\)', _readme()):
    assert os.path.exists(os.path.join(_ROOT, target)), target
