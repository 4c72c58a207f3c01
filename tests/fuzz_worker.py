"""Runs the package's file readers on mutated files, for tests/test_fuzz.py.

Usage::

  python tests/fuzz_worker.py CASES.json LOG

CASES.json is a list of ``{"name", "reader", "path", "mutated"}``: the
reader reads `path`, whose file set has `mutated` changed. For each case a
line ``start NAME`` is written to LOG (and flushed) before the reader runs
and ``done JSON`` after it, so that the parent can name the case that hung
or killed the process. Outcomes: ``ok`` (read), ``clear`` (a user error,
`errors.UserError`, whose message names the file), ``unnamed`` (a user
error that does not name the file), ``unexpected`` (any other exception,
with its traceback), ``timeout`` (over `CASE_SECONDS`).
"""

import json
import os
import signal
import sys
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from id2image_jax import errors
from id2image_jax.data import images
from id2image_jax.data import targets
from id2image_jax.porting import dlib_format
from id2image_jax.porting import openvino_ir
from id2image_jax.porting import safe_load
from id2image_jax.porting import tfjs
from id2image_jax.porting.dlib_format import Expect

CASE_SECONDS = 10
DESCRIPTOR_DIM = 8
# The layout of ports/dlib_writer.tiny_network.
TINY_DLIB = [
    Expect('fc', 'fc', {'num_outputs': 4, 'bias_mode': 1}),
    Expect('avg_pool', attrs={'nr': 0, 'nc': 0}),
    Expect('relu'),
    Expect('add_prev'),
    Expect('affine', 'affine'),
    Expect('con', 'conv2', {'num_filters': 2, 'stride_y': 1,
                            'padding_y': 1}),
    Expect('tag'),
    Expect('con', 'conv1', {'num_filters': 2, 'stride_y': 2}),
    Expect('input_rgb_image_sized', 'input', {'nr': 9, 'nc': 9}),
]

READERS = {
    'image': images.read_rgb,
    'descriptors': lambda p: targets.read_descriptor_file(
        p, dim=DESCRIPTOR_DIM),
    'checkpoint': safe_load.read_state_dict,
    'dlib': lambda p: dlib_format.read_file(p, TINY_DLIB),
    'tfjs_manifest': tfjs.read_weights_manifest,
    'tfjs_graph': tfjs.read_graph_model,
    'openvino': openvino_ir.read,
}


class _Timeout(BaseException):
  """Raised by the alarm; a BaseException so no reader's handler eats it."""


def _alarm(signum, frame):
  del signum, frame
  raise _Timeout()


def run_case(case: dict) -> dict:
  out = {'name': case['name']}
  signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
  try:
    READERS[case['reader']](case['path'])
    out['outcome'] = 'ok'
  except _Timeout:
    out['outcome'] = 'timeout'
  except errors.UserError as e:
    # The file a user would recognise: the mutated one, or the set's main
    # file (a .bin is read through its .json/.xml).
    names = {os.path.basename(case['path']),
             os.path.basename(case['mutated'])}
    named = any(n in str(e) for n in names)
    out['outcome'] = 'clear' if named else 'unnamed'
    out['message'] = str(e)[:500]
  except Exception as e:  # pylint: disable=broad-except
    out['outcome'] = 'unexpected'
    out['message'] = f'{type(e).__name__}: {str(e)[:300]}'
    out['traceback'] = traceback.format_exc()[-3000:]
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
  return out


def main(cases_path: str, log_path: str) -> int:
  signal.signal(signal.SIGALRM, _alarm)
  np.seterr(all='ignore')
  with open(cases_path) as f:
    cases = json.load(f)
  with open(log_path, 'w') as log:
    for case in cases:
      log.write(f'start {case["name"]}\n')
      log.flush()
      log.write('done ' + json.dumps(run_case(case)) + '\n')
      log.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main(*sys.argv[1:]))
