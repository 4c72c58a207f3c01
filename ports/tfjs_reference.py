"""Runs ``ports/tfjs_reference.mjs`` (TF.js under node) from Python.

The parity tests and docs/face_models.md measurements call `faceapi` and
`graph`; inputs and outputs cross as raw float32 files plus JSON in a
temporary directory. node and the pinned packages are needed::

  npm ci --prefix ports

`node_executable` is None when node is not installed (tests skip then);
when node exists but the packages do not, `run` raises with the command.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

PORTS = pathlib.Path(__file__).resolve().parent
SCRIPT = PORTS / 'tfjs_reference.mjs'
INSTALL = 'npm ci --prefix ports'


def node_executable() -> str | None:
  """Path of node, or None."""
  return shutil.which('node')


def _missing() -> list[str]:
  need = [PORTS / 'node_modules' / '@tensorflow' / 'tfjs',
          PORTS / 'node_modules' / '@vladmandic' / 'face-api']
  return [p.name for p in need if not p.is_dir()]


def ensure_installed() -> bool:
  """Installs the pinned packages (``npm ci``, lockfile, no scripts) when
  node is there and they are not; True when they are there."""
  if node_executable() is None:
    return False
  if _missing() and shutil.which('npm'):
    subprocess.run(['npm', 'ci', '--prefix', str(PORTS), '--ignore-scripts',
                    '--no-audit', '--no-fund'], check=False,
                   capture_output=True)
  return not _missing()


def check_installed() -> None:
  """Raises if ports/node_modules lacks the pinned packages."""
  missing = _missing()
  if missing:
    raise RuntimeError(f'TF.js reference packages missing ({missing}): run '
                       f'`{INSTALL}` from the repository root')


def run(request: dict[str, Any], x: np.ndarray, *,
        timeout: float = 900) -> tuple[dict[str, np.ndarray], dict]:
  """Runs one request of the .mjs script on input `x`.

  Args:
    request: the request fields other than input, shape and out_dir (see
      the script's header).
    x: float32 [B, H, W, 3] input.
    timeout: seconds before node is killed.

  Returns:
    ``({output name: float32 array}, result.json as a dict)``.

  Raises:
    RuntimeError: node missing or failing (its stderr tail is quoted).
  """
  node = node_executable()
  if node is None:
    raise RuntimeError('node is not installed')
  check_installed()
  x = np.ascontiguousarray(x, dtype='<f4')
  with tempfile.TemporaryDirectory(prefix='tfjs_ref_') as tmp:
    tmp = pathlib.Path(tmp)
    x.tofile(tmp / 'input.f32')
    full = dict(request, input=str(tmp / 'input.f32'), shape=list(x.shape),
                out_dir=str(tmp / 'out'))
    (tmp / 'request.json').write_text(json.dumps(full))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    done = subprocess.run([node, str(SCRIPT), str(tmp / 'request.json')],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)
    if done.returncode:
      raise RuntimeError(f'{SCRIPT.name} failed ({done.returncode}):\n'
                         f'{done.stderr[-3000:]}')
    result = json.loads((tmp / 'out' / 'result.json').read_text())
    outputs = {}
    for name, info in result['outputs'].items():
      data = np.fromfile(tmp / 'out' / info['file'], '<f4')
      outputs[name] = data.reshape(info['shape']).astype(np.float32)
  return outputs, result


def faceapi(variant: str, manifest: str | os.PathLike, pixels: np.ndarray,
            **options: Any) -> tuple[dict[str, np.ndarray], dict]:
  """face-api.js's own net on [B, 112, 112, 3] pixels (0..255 floats).

  Returns:
    landmark68: ``landmarks`` [B, 136] (x, y interleaved), ``raw``;
    expression: ``probs``, ``logits`` [B, 7]; age_gender: ``age`` [B],
    ``gender_probs``, ``gender_logits`` [B, 2]; and result.json.
  """
  return run(dict(kind='faceapi', variant=variant,
                  manifest=os.fspath(manifest), **options), pixels)


def graph(model_json: str | os.PathLike, x: np.ndarray,
          outputs: Sequence[str], **options: Any
          ) -> tuple[dict[str, np.ndarray], dict]:
  """A graph model's named node outputs for input `x` (fed as is)."""
  return run(dict(kind='graph', model=os.fspath(model_json),
                  outputs=list(outputs), **options), x)
