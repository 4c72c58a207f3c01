"""Reads public checkpoint files without executing anything stored in them.

Supported containers (detected from the file's first bytes, not its suffix):

* ``torch.save`` zip archives (``.pt`` / ``.pth``, PyTorch >= 1.6),
* legacy ``torch.save`` streams (PyTorch < 1.6),
* plain pickles: NVIDIA ``stylegan2-ada-pytorch`` network pickles (which embed
  module source code and ``torch`` storages) and pickled dicts of numpy arrays
  (e.g. the VGGFace2 ``*_weight.pkl`` files, often written by Python 2).

Every load goes through `RestrictedUnpickler`: only a short allow-list of
globals resolves to real callables (tensor/array rebuilders that copy bytes
into numpy). Any other global becomes an inert `Opaque` record that keeps its
arguments and state but runs no code: pickled source code in NVIDIA pickles is
kept as a string and never executed. Tensors come back as numpy arrays
(bfloat16 via ``ml_dtypes``). PyTorch is not needed.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from id2image_jax import errors

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype.
_STORAGE_DTYPES = {
    'FloatStorage': np.float32,
    'DoubleStorage': np.float64,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
    'UntypedStorage': np.uint8,
}


class CheckpointError(errors.BadInputError):
  """A checkpoint file is missing, corrupt or not of a supported layout."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for ``torch.FloatStorage`` etc.: only its dtype matters."""
  dtype: Any


class Opaque:
  """An inert stand-in for any global the allow-list does not know.

  Records constructor arguments, pickled state and items, and never runs code.
  `qualname` says which global the file asked for.
  """
  qualname = '?'

  def __init__(self, *args, **kwargs):
    self.args = args
    self.kwargs = kwargs
    self.state = None
    self.items = {}
    self.list_items = []

  def __setstate__(self, state):
    self.state = state

  def __setitem__(self, key, value):  # dict subclasses (pickle SETITEMS)
    self.items[key] = value

  def append(self, value):  # list subclasses (pickle APPENDS)
    self.list_items.append(value)

  def extend(self, values):
    self.list_items.extend(values)

  def __repr__(self):
    return f'Opaque({self.qualname})'


@dataclasses.dataclass
class PersistentObject:
  """An object pickled by NVIDIA's ``torch_utils.persistence``.

  The pickled module source stays a string (``module_src``); it is never run.
  ``state`` is the object's ``__dict__`` (for a torch module: ``_parameters``,
  ``_buffers``, ``_modules``, ``_init_kwargs``, ...).
  """
  class_name: str
  state: dict
  module_src: str = ''

  @property
  def init_kwargs(self) -> dict:
    return dict(self.state.get('_init_kwargs') or {})


class EasyDictRecord(dict):
  """Stands in for ``dnnlib.EasyDict`` (a plain dict subclass)."""


def _opaque_class(module: str, name: str) -> type:
  return type(f'Opaque[{module}.{name}]', (Opaque,),
              {'qualname': f'{module}.{name}'})


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> np.ndarray:
  """``torch._utils._rebuild_tensor_v2`` without torch: a strided numpy copy."""
  if not isinstance(storage, np.ndarray):
    raise CheckpointError(f'tensor storage is {type(storage).__name__}, '
                          'not raw data: the file is corrupt or unsupported')
  size, stride = tuple(size), tuple(stride)
  if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
    raise CheckpointError(f'tensor offset {storage_offset!r}, size {size!r} '
                          f'or stride {stride!r} is not made of integers')
  # Negative offsets or strides would make the strided view below read
  # outside the storage's memory (torch never writes them).
  if storage_offset < 0 or min(size + stride, default=0) < 0 or len(
      size) != len(stride):
    raise CheckpointError(f'tensor with offset {storage_offset}, size {size} '
                          f'and stride {stride}: the file is corrupt')
  if not size:
    if storage_offset >= storage.size:
      raise CheckpointError(f'scalar at {storage_offset} is past its storage '
                            f'of {storage.size} elements: the file is '
                            'truncated or corrupt')
    return storage[storage_offset].copy()
  extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if min(size) > 0 and extent > storage.size:
    raise CheckpointError(
        f'tensor of size {size} reads past its storage of {storage.size} '
        'elements: the file is truncated or corrupt')
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=tuple(s * item for s in stride), writeable=False)
  return np.array(view, copy=True)


def _rebuild_parameter(data, *unused):
  return data


def _rebuild_persistent(meta) -> PersistentObject:
  meta = dict(meta)
  return PersistentObject(class_name=str(meta.get('class_name', '?')),
                          state=dict(meta.get('state') or {}),
                          module_src=str(meta.get('module_src', '')))


def _numpy_reconstruct(cls, shape, dtype):
  if cls is not np.ndarray:
    raise CheckpointError(f'refusing to build array subclass {cls!r}')
  return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
  if data is None:
    return np.zeros((), dtype)[()]
  if isinstance(data, str):  # Python-2 pickles read with latin1
    data = data.encode('latin1')
  return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_dtype(obj, align=False, copy=False):
  return np.dtype(obj, align=align, copy=copy)


def _codecs_encode(text, encoding='utf-8', errors='strict'):
  """Protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``."""
  if not isinstance(text, str):
    raise CheckpointError('refusing _codecs.encode on a non-string')
  return text.encode(encoding, errors)


def _copyreg_reconstructor(cls, base, state):
  if base is dict or (isinstance(cls, type) and issubclass(cls, dict)):
    return cls()
  obj = cls.__new__(cls) if isinstance(cls, type) and issubclass(
      cls, Opaque) else Opaque()
  return obj


_TENSOR_REBUILDERS = (('torch._utils', '_rebuild_tensor_v2'),
                      ('torch._utils', '_rebuild_tensor'))

_ALLOWED: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('__builtin__', 'set'): set,
    ('__builtin__', 'frozenset'): frozenset,
    ('copy_reg', '_reconstructor'): _copyreg_reconstructor,
    ('copyreg', '_reconstructor'): _copyreg_reconstructor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch_utils.persistence', '_reconstruct_persistent_obj'):
        _rebuild_persistent,
    ('dnnlib.util', 'EasyDict'): EasyDictRecord,
    ('dnnlib', 'EasyDict'): EasyDictRecord,
    ('_codecs', 'encode'): _codecs_encode,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): _numpy_dtype,
    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only allow-listed globals (see module doc).

  Args:
    file: binary stream.
    persistent_load: resolves torch storage ids; None for plain pickles.
    encoding: for Python-2 pickles of numpy arrays ('latin1').
  """

  def __init__(self, file, *, persistent_load: Callable | None = None,
               rebuild_tensor: Callable = _rebuild_tensor,
               encoding: str = 'latin1'):
    super().__init__(file, encoding=encoding)
    self._persistent = persistent_load
    self._rebuild_tensor = rebuild_tensor

  def find_class(self, module: str, name: str):
    if (module, name) in _TENSOR_REBUILDERS:
      return self._rebuild_tensor
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == 'torch.storage' and name == '_load_from_bytes':
      return load_torch_bytes
    return _opaque_class(module, name)

  def persistent_load(self, pid):
    if self._persistent is None:
      raise pickle.UnpicklingError(
          f'unexpected persistent id {pid!r} in a plain pickle')
    return self._persistent(pid)


def _storage_dtype(storage_type) -> Any:
  if isinstance(storage_type, _StorageType):
    return storage_type.dtype
  raise CheckpointError(f'unknown torch storage type {storage_type!r}')


def _load_zip(archive: zipfile.ZipFile) -> Any:
  names = archive.namelist()
  pkl = [n for n in names if n.endswith('data.pkl')]
  if len(pkl) != 1:
    raise CheckpointError('zip archive without exactly one data.pkl: '
                          'not a torch.save file')
  root = pkl[0][:-len('data.pkl')]
  byteorder = 'little'
  if root + 'byteorder' in names:
    byteorder = archive.read(root + 'byteorder').decode().strip()
  cache: dict[str, np.ndarray] = {}

  def load_storage(pid):
    kind, storage_type, key, _location, numel = pid[:5]
    if kind != 'storage':
      raise CheckpointError(f'unsupported persistent id kind {kind!r}')
    dtype = np.dtype(_storage_dtype(storage_type))
    if key not in cache:
      try:
        raw = archive.read(f'{root}data/{key}')
      except KeyError:
        raise CheckpointError(f'storage {key!r} missing from archive') from None
      if byteorder == 'big':
        dtype = dtype.newbyteorder('>')
      if len(raw) < numel * dtype.itemsize:
        raise CheckpointError(f'storage {key!r} is truncated')
      cache[key] = np.frombuffer(raw, dtype=dtype, count=numel).astype(
          dtype.newbyteorder('='))
    return cache[key]

  with archive.open(pkl[0]) as f:
    return RestrictedUnpickler(f, persistent_load=load_storage).load()


def _remaining(f: io.BufferedIOBase) -> int:
  """Bytes from the position of `f` to its end."""
  here = f.tell()
  end = f.seek(0, io.SEEK_END)
  f.seek(here)
  return end - here


def _load_legacy(f: io.BufferedIOBase) -> Any:
  """Reads the pre-1.6 torch.save stream: header pickles, object, storages."""
  plain = lambda: RestrictedUnpickler(f).load()
  if plain() != _LEGACY_MAGIC:
    raise CheckpointError('bad magic number: not a torch.save file')
  if plain() != _LEGACY_PROTOCOL:
    raise CheckpointError('unsupported legacy torch protocol version')
  plain()  # sys_info
  pending: dict[str, tuple[np.dtype, int]] = {}
  views: list[tuple[str, str, int, int]] = []

  def load_storage(pid):
    kind, storage_type, key, _location, numel, view = pid[:6]
    if kind != 'storage':
      raise CheckpointError(f'unsupported persistent id kind {kind!r}')
    pending.setdefault(key, (np.dtype(_storage_dtype(storage_type)), numel))
    placeholder = _LegacyStorage(key)
    if view is not None:
      view_key, offset, view_size = view
      views.append((view_key, key, offset, view_size))
      return _LegacyStorage(view_key)
    return placeholder

  obj = RestrictedUnpickler(f, persistent_load=load_storage,
                            rebuild_tensor=_defer_tensor).load()
  keys = plain()
  data = {}
  for key in keys:
    dtype, _ = pending[key]
    (numel,) = struct.unpack('<q', f.read(8))
    if not 0 <= numel * dtype.itemsize <= _remaining(f):
      # A corrupt count would otherwise allocate (or read) anything.
      raise CheckpointError(f'storage {key!r} of {numel} elements is longer '
                            'than the rest of the file: truncated or corrupt')
    raw = f.read(numel * dtype.itemsize)
    if len(raw) != numel * dtype.itemsize:
      raise CheckpointError(f'storage {key!r} is truncated')
    data[key] = np.frombuffer(raw, dtype=dtype).copy()
  for view_key, key, offset, view_size in views:
    data[view_key] = data[key][offset:offset + view_size]
  return _resolve_legacy(obj, data)


@dataclasses.dataclass(frozen=True)
class _LegacyStorage:
  key: str


def _resolve_legacy(obj, data):
  """Legacy streams put storages after the object: fill tensors in now."""
  if isinstance(obj, _LegacyTensor):
    return _rebuild_tensor(data[obj.storage.key], *obj.args)
  if isinstance(obj, _LegacyStorage):
    return data[obj.key]
  if isinstance(obj, dict):
    out = type(obj)() if type(obj) in (dict, collections.OrderedDict,
                                       EasyDictRecord) else {}
    for k, v in obj.items():
      out[k] = _resolve_legacy(v, data)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve_legacy(v, data) for v in obj)
  return obj


@dataclasses.dataclass(frozen=True)
class _LegacyTensor:
  storage: _LegacyStorage
  args: tuple


def load_torch_bytes(data: bytes) -> Any:
  """Loads a torch.save payload (zip or legacy) from bytes, restricted."""
  return _load_stream(io.BytesIO(data))


def _load_stream(f) -> Any:
  head = f.read(4)
  f.seek(0)
  if head.startswith(b'PK'):
    with zipfile.ZipFile(f) as archive:
      return _load_zip(archive)
  if _is_legacy_torch(f):
    return _load_legacy(f)
  return RestrictedUnpickler(f).load()


def _is_legacy_torch(f) -> bool:
  pos = f.tell()
  try:
    return RestrictedUnpickler(f).load() == _LEGACY_MAGIC
  except Exception:  # pylint: disable=broad-except
    return False
  finally:
    f.seek(pos)


def _defer_tensor(storage, *args):
  """Legacy streams rebuild tensors before their storages are read."""
  if isinstance(storage, _LegacyStorage):
    return _LegacyTensor(storage, args)
  return _rebuild_tensor(storage, *args)


def load(path: str | os.PathLike) -> Any:
  """Loads a checkpoint file safely (see module doc) and returns its object.

  Raises:
    FileNotFoundError: the file does not exist (the message names it).
    CheckpointError: the file is corrupt, truncated or of an unknown layout.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingInputError(f'checkpoint file not found: {path}')
  try:
    with open(path, 'rb') as f:
      return _load_stream(f)
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from None
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError,
          struct.error, KeyError, IndexError, TypeError, OverflowError,
          zlib.error, RecursionError, MemoryError,
          NotImplementedError) as e:
    # Bytes from anywhere: a zip of an unsupported version or method
    # (NotImplementedError), a count too large (MemoryError), nesting too
    # deep (RecursionError) mean a corrupt file like the rest.
    raise CheckpointError(
        f'{path}: cannot read checkpoint ({type(e).__name__}: {e}); '
        'the file is corrupt, truncated or not a supported format') from None


def flatten_arrays(tree: Any, *, prefix: str = '', sep: str = '.') -> dict[
    str, np.ndarray]:
  """Flattens nested dicts of arrays to ``{'a.b.c': array}``.

  `PersistentObject` / module states are walked through ``_parameters``,
  ``_buffers`` and ``_modules`` exactly as ``torch.nn.Module.state_dict``
  names them.
  """
  out: dict[str, np.ndarray] = {}

  def walk(node, path):
    if isinstance(node, PersistentObject):
      walk_module(node.state, path)
    elif isinstance(node, np.ndarray) or np.isscalar(node) and isinstance(
        node, np.generic):
      out[path] = np.asarray(node)
    elif isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, f'{path}{sep}{k}' if path else str(k))

  def walk_module(state, path):
    for group in ('_parameters', '_buffers'):
      for k, v in (state.get(group) or {}).items():
        if v is not None:
          out[f'{path}{sep}{k}' if path else k] = np.asarray(v)
    for k, child in (state.get('_modules') or {}).items():
      if child is not None:
        walk(child, f'{path}{sep}{k}' if path else k)

  walk(tree, prefix)
  return out


# Dicts that checkpoints wrap their weights in (arcface_torch training
# checkpoints, common training scripts).
STATE_DICT_WRAPPERS = ('state_dict_backbone', 'model_state_dict', 'state_dict')


def state_dict(obj: Any, *, what: str = 'checkpoint'
               ) -> dict[str, np.ndarray]:
  """A loaded checkpoint object as a flat ``{torch key: array}``.

  Unwraps `STATE_DICT_WRAPPERS` and a ``module.`` prefix on every key
  (``nn.DataParallel``).

  Raises:
    CheckpointError: not a dict of arrays.
  """
  if isinstance(obj, Mapping):
    for wrapper in STATE_DICT_WRAPPERS:
      if isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
        break
  if not isinstance(obj, Mapping):
    raise CheckpointError(f'{what}: expected a state dict, found '
                          f'{type(obj).__name__}')
  source = flatten_arrays(obj)
  if not source:
    raise CheckpointError(f'{what}: holds no arrays')
  if all(k.startswith('module.') for k in source):
    source = {k[len('module.'):]: v for k, v in source.items()}
  return source


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """`state_dict` of the file at `path` (read by the restricted `load`)."""
  return state_dict(load(path), what=os.fspath(path))
