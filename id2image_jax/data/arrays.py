"""Reading the ``.npy`` / ``.npz`` files that users hand in (descriptors,
heads), with errors that say what is wrong.

`numpy.load` takes any file that is neither ``.npy`` nor ``.npz`` for a
pickle, so a corrupt or random file answers with a hint to load it
unsafely. Here the first bytes are checked first (a ``.npy`` header or a
zip archive), pickled objects are never loaded (``allow_pickle=False``),
and every failure is an `errors.BadInputError` that names the file and
says "not a valid .npy/.npz file", never numpy's hint.
"""

from __future__ import annotations

import os

import numpy as np

from id2image_jax import errors

NPY_MAGIC = b'\x93NUMPY'
ZIP_MAGICS = (b'PK\x03\x04', b'PK\x05\x06')  # an archive, an empty one
# Array kinds a file may hold: numbers and text (e.g. row names).
_KINDS = 'biufcUS'


def _invalid(path: str, why: str) -> errors.BadInputError:
  return errors.BadInputError(f'{path}: not a valid .npy/.npz file: {why}')


def _why(error: Exception) -> str:
  text = str(error)
  if 'pickle' in text.lower():
    # numpy's words would suggest loading it unsafely: never do that.
    return ('it holds Python objects (pickled data), which are never '
            'loaded; only numeric and text arrays are')
  return f'{type(error).__name__}: {text}'


def _checked(path: str, name: str, array: object) -> np.ndarray:
  if not isinstance(array, np.ndarray):
    # A zip archive's member that is not a .npy (e.g. a torch .pt file).
    raise _invalid(path, f'member {name!r} is not a .npy array')
  if array.dtype.kind not in _KINDS:
    raise _invalid(path, f'array {name!r} has dtype {array.dtype}; only '
                   'numeric and text arrays are read')
  return array


def load_arrays(path: str | os.PathLike
                ) -> np.ndarray | dict[str, np.ndarray]:
  """Reads every array of a ``.npy`` (an array) or ``.npz`` (a dict).

  Args:
    path: the file; its first bytes, not its suffix, decide the format.

  Returns:
    The array of a ``.npy``, or ``{name: array}`` of a ``.npz``.

  Raises:
    errors.MissingInputError: there is no such file.
    errors.BadInputError: anything else; the message names the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingInputError(f'no such file: {path}')
  with open(path, 'rb') as f:
    head = f.read(len(NPY_MAGIC))
  if not head:
    raise _invalid(path, 'the file is empty')
  if not head.startswith(NPY_MAGIC) and not head.startswith(ZIP_MAGICS):
    raise _invalid(path, 'it has neither the .npy header nor the zip '
                   'header of a .npz')
  try:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
      return _checked(path, 'the array', data)
    with data:
      return {k: _checked(path, k, data[k]) for k in data.files}
  except errors.BadInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # numpy and zipfile parsing bytes from anywhere raise many types
    # (ValueError, OSError, EOFError, BadZipFile, zlib.error, MemoryError
    # for a huge declared shape...): all of them mean a broken file.
    raise _invalid(path, _why(e)) from None
