"""The contract every encoder kind keeps, run over tests/encoder_kinds.py.

For each row: the reference in ``ports/`` writes a file in the public
layout; `loading.read` recognises and ports it from one parse; the Flax
module matches the reference in float32 and, within the row's documented
tolerance, in bfloat16; jit, vmap and batching agree and nothing retraces;
bad inputs and mismatched checkpoints fail with messages that name the
problem; and the loaded encoder, like its converted directory, embeds
generator images. What only one model has lives in its own test file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import shutil
from typing import Any

import chex
import encoder_kinds
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax import loading
from id2image_jax import preprocess
from id2image_jax.porting import CheckpointError
from id2image_jax.porting import PortingError
from id2image_jax.porting import safe_load

ROWS = encoder_kinds.ROWS
_MARKS = {'torch': pytest.mark.torch, 'dlib': pytest.mark.dlib}
# jit vs eager, vmap vs batch: the same maths, differently fused.
_SAME = {'rtol': 1e-5, 'atol': 1e-5}


def _params(*, file: bool = True, reference: bool = False,
            cases: bool = False) -> list[Any]:
  """pytest params over the rows (and their cases), marked by their needs."""
  out = []
  for row in ROWS:
    needs = (row.writes_with if file else ()) + (
        row.runs_with if reference else ())
    marks = [_MARKS[n] for n in dict.fromkeys(needs) if n in _MARKS]
    for case in (row.cases if cases else (None,)):
      args = (row, case) if cases else (row,)
      name = f'{row.kind}-{case.name}' if cases else row.kind
      out.append(pytest.param(*args, id=name, marks=marks))
  return out


@dataclasses.dataclass(frozen=True)
class Written:
  """A case written by its reference and read back by `loading.read`.

  Attributes:
    path: the file.
    reference: ``reference(x) -> (descriptor, intermediates)``.
    loaded: what `loading.read` made of the file.
    module: the float32 Flax module of its config.
    apply: ``jax.jit(module.apply)``, shared by the checks of one module so
      that each input shape compiles once.
  """
  path: str
  reference: Any
  loaded: loading.Loaded
  module: Any
  apply: Any

  @property
  def kind(self) -> loading.Kind:
    return self.loaded.kind

  @property
  def config(self) -> Any:
    return self.loaded.config

  @property
  def variables(self) -> Any:
    return self.loaded.variables

  def inputs(self, batch: int, seed: int = 0) -> np.ndarray:
    """Model inputs of random 0..255 pixels, normalised by the spec."""
    spec = self.kind.input_spec(self.config)
    h, w = spec.size
    pixels = np.random.default_rng(seed).integers(
        0, 256, (batch, h, w, 3)).astype(np.float32)
    if spec.channel_order == 'BGR':
      pixels = pixels[..., ::-1]
    x = (pixels - np.float32(spec.mean)) / np.float32(spec.std)
    return x.astype(np.float32)


def _require(needs) -> None:
  for need in needs:
    why = encoder_kinds.missing(need)
    if why:
      pytest.skip(why)


def _write(row, case, directory) -> Written:
  _require(row.writes_with)
  ports = importlib.import_module(row.reference)
  path = os.path.join(directory, row.filename)
  reference = ports.write_reference(path, case.config, seed=1)
  # No KIND: prefix: the kind is recognised from the file.
  loaded = loading.read(path, loading.ENCODER)
  module = _module(row, loaded.config)
  return Written(path, reference, loaded, module, jax.jit(module.apply))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """row -> `Written` of its tiny case, written once per module."""
  cache = {}

  def get(row):
    if row.kind not in cache:
      cache[row.kind] = _write(row, row.tiny,
                               tmp_path_factory.mktemp(row.kind))
    return cache[row.kind]
  return get


@dataclasses.dataclass(frozen=True)
class Run:
  """A case's file read back, inputs, and the reference's outputs."""
  written: Written
  x: np.ndarray
  want: np.ndarray
  want_inter: dict[str, np.ndarray]


@pytest.fixture(scope='module')
def run_case(tiny, tmp_path_factory):
  """(row, case) -> `Run`; kept for the tiny and the bfloat16 cases.

  A full-size file is deleted once read, and a kept run drops its torch
  model: the float32 and bfloat16 checks of a case share one write, read
  and reference pass (when they run in the same worker).
  """
  cache = {}

  def get(row, case):
    key = (row.kind, case.name)
    if key in cache:
      return cache[key]
    if case is row.tiny:
      written = tiny(row)
    else:
      written = _write(row, case, tmp_path_factory.mktemp(key[1]))
      os.remove(written.path)
    _require(row.runs_with)
    x = written.inputs(case.batch)
    run = Run(written, x, *written.reference(x))
    if case is row.tiny or case.name == row.bf16_case:
      if case is not row.tiny:
        run = dataclasses.replace(run, written=dataclasses.replace(
            written, reference=None))
      cache[key] = run
    return run
  return get


def _module(row, config, dtype=None):
  kind = loading.KINDS[row.kind]
  return kind.build(config) if dtype is None else kind.build(
      config, dtype=dtype)


def _assert_close(got, want, tol, *, inter=None, want_inter=None):
  """`got` within `tol` of `want` (encoder_kinds.Tolerance)."""
  got = np.asarray(got, np.float32)
  assert got.shape == want.shape, (got.shape, want.shape)
  if tol.rtol is not None:
    chex.assert_trees_all_close(got, want, rtol=tol.rtol, atol=tol.atol)
    if inter:
      chex.assert_trees_all_close(
          jax.tree.map(lambda v: np.asarray(v, np.float32), inter),
          {k: want_inter[k] for k in inter}, rtol=tol.rtol, atol=tol.atol)
  if tol.min_cosine is not None:
    cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) *
                                       np.linalg.norm(want, axis=-1))
    assert np.all(cosine > tol.min_cosine), cosine
  if tol.max_l2 is not None:
    l2 = np.linalg.norm(got - want, axis=-1)
    assert np.all(l2 <= tol.max_l2), l2


# --- parity with the reference ----------------------------------------------


@pytest.mark.parametrize('row,case', _params(reference=True, cases=True))
def test_float32_parity_with_reference(row, case, run_case):
  run = run_case(row, case)
  written, want = run.written, run.want
  assert written.kind.name == row.kind
  if case.want_config is not None:
    assert written.config == case.want_config
  json.dumps(written.config)  # stored in converted checkpoints' metadata
  got, inter = written.apply(written.variables, run.x)
  assert got.ndim == 2 and got.shape[0] == case.batch
  assert got.dtype == jnp.float32
  assert set(inter) == row.intermediates
  # Guard the tolerance against vacuity: outputs are not ~0 ...
  assert row.nonvacuous(want), np.abs(want).mean()
  if case.batch > 1:  # ... and two inputs do not give the same descriptor
    # (they differ by 4-100% of the mean |descriptor|: 4% VGGFace2; the
    # row's `spread`).
    assert (np.abs(want[0] - want[1]).mean()
            > row.spread * np.abs(want).mean())
  _assert_close(got, want, row.f32, inter=inter if run.want_inter else None,
                want_inter=run.want_inter)


@pytest.mark.parametrize('row', _params(reference=True))
def test_bfloat16_close_to_float32_reference(row, run_case):
  run = run_case(row, row.case(row.bf16_case))
  module = _module(row, run.written.config, jnp.bfloat16)
  got, inter = jax.jit(module.apply)(run.written.variables, run.x)
  assert got.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.bfloat16 for v in inter.values())
  _assert_close(got, run.want, row.bf16,
                inter={k: inter[k] for k in row.bf16_intermediates},
                want_inter=run.want_inter)
  # Parameters stay float32 whatever the compute dtype.
  abstract = jax.eval_shape(module.init, jax.random.key(0), run.x[:1])
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))


# --- transformations ----------------------------------------------------------


@pytest.mark.parametrize('row', _params())
def test_jit_matches_no_jit(row, tiny):
  written = tiny(row)
  x = written.inputs(2, seed=3)
  eager, _ = written.module.apply(written.variables, x)
  jitted, _ = written.apply(written.variables, x)
  chex.assert_trees_all_close(eager, jitted, **_SAME)


@pytest.mark.parametrize('row', _params())
def test_vmap_matches_batch(row, tiny):
  written = tiny(row)
  module, variables = written.module, written.variables
  x = written.inputs(2, seed=1)
  batched, _ = written.apply(variables, x)
  if row.batched:  # [B, H, W, 3] only: a batch of one inside vmap.
    one = lambda im: module.apply(variables, im[None])[0][0]
  else:  # No batch dim inside vmap at all.
    one = lambda im: module.apply(variables, im)[0]
  chex.assert_trees_all_close(jax.jit(jax.vmap(one))(x), batched, **_SAME)
  if not row.batched:  # Two leading batch dims give the same answer.
    nested, inter = written.apply(variables, x[None])
    chex.assert_trees_all_close(nested[0], batched, **_SAME)
    assert all(v.shape[:2] == (1, 2) for v in inter.values())


@pytest.mark.parametrize('row', _params())
def test_no_retrace(row, tiny):
  written = tiny(row)
  module = written.module

  @jax.jit
  @chex.assert_max_traces(n=1)
  def embed(v, images):
    return module.apply(v, images)[0]

  x = written.inputs(2, seed=2)
  a = embed(written.variables, x)
  b = embed(written.variables, x[::-1])  # new values, same shapes
  assert not np.allclose(a, b)
  chex.assert_trees_all_close(b, a[::-1], **_SAME)


@pytest.mark.parametrize('row', _params())
def test_gradients_flow_from_generator_images(row, tiny):
  written = tiny(row)
  module = written.module
  spec = written.kind.input_spec(written.config)
  images = np.random.default_rng(4).uniform(-1, 1, (1, 64, 64, 3)).astype(
      np.float32)

  def loss(im):
    return module.apply(written.variables,
                        preprocess.to_encoder_input(im, spec))[0].sum()
  grad = jax.jit(jax.grad(loss))(images)
  assert grad.shape == images.shape and np.all(np.isfinite(grad))
  assert np.abs(grad).max() > 0


# --- inputs the encoder refuses ---------------------------------------------


def _bad_shapes(row):
  h, w = loading.KINDS[row.kind].input_spec(row.config).size
  shapes = [(1, h // 2, w // 2, 3), (1, h, w, 1), (1, 3, h, w), (h, 3)]
  return shapes + ([(h, w, 3)] if row.batched else [])


@pytest.mark.parametrize('row,shape', [
    pytest.param(row, shape, id=f'{row.kind}-{shape}')
    for row in ROWS for shape in _bad_shapes(row)])
def test_wrong_input_shape_is_a_clear_error(row, shape):
  spec = loading.KINDS[row.kind].input_spec(row.config)
  h, w = spec.size
  batch = 'B' if row.batched else r'\*batch'
  message = (rf'\[{batch}, {h}, {w}, 3\] {spec.channel_order} input.*got '
             rf'shape {re.escape(str(shape))}')
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(_module(row, row.config).init, jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))
  # Preprocessing refuses a wrong channel count before the model sees it.
  with pytest.raises(ValueError, match=r'\[\.\.\., H, W, 3\]'):
    preprocess.to_encoder_input(jnp.zeros((1, 64, 64, 4)), spec)


@pytest.mark.parametrize('row', _params(file=False))
def test_integer_input_is_refused(row):
  h, w = loading.KINDS[row.kind].input_spec(row.config).size
  with pytest.raises(ValueError, match='expects a float input'):
    jax.eval_shape(_module(row, row.config).init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, h, w, 3), jnp.uint8))


@pytest.mark.parametrize('row', _params())
def test_nan_input(row, tiny):
  written = tiny(row)
  x = written.inputs(2, seed=6)
  clean = x.copy()
  x[0, 5, 6, 1] = np.nan
  # Eagerly the module checks values and says so ...
  with pytest.raises(ValueError, match=r'1 non-finite value\(s\)'):
    written.module.apply(written.variables, x)
  # ... under jit it cannot, but the NaN never leaks into other images.
  desc = np.asarray(written.apply(written.variables, x)[0])
  np.testing.assert_array_equal(
      desc[1], np.asarray(written.apply(written.variables, clean)[0])[1])
  if row.nan_spreads:
    assert np.all(np.isnan(desc[0]))


# --- checkpoints --------------------------------------------------------------


@pytest.mark.parametrize('row,edit', [
    pytest.param(*p.values, edit, id=f'{p.id}-{edit}', marks=p.marks)
    for p in _params() for edit in ('extra', 'missing', 'reshape', 'all')])
def test_mismatched_checkpoint_names_the_key(row, edit, tiny):
  source = row.read_source(tiny(row).path)
  row.port_source(dict(source))  # the file itself ports
  extra, missing = row.mismatch.extra, row.mismatch.missing
  key, shape, detail = row.mismatch.reshape
  assert extra not in source and missing in source
  assert np.shape(source[key]) != shape
  messages = []
  if edit in ('extra', 'all'):
    source[extra] = np.zeros((4,), np.float32)
    messages.append(rf'match no rule: {re.escape(extra)}')
  if edit == 'missing':
    del source[missing]
    messages.append(rf'lacks required key.*{re.escape(missing)}')
  if edit in ('reshape', 'all'):
    source[key] = np.ones(shape, np.float32)
    messages.append(
        rf'{re.escape(key)} {re.escape(str(shape))} -> \S+: {detail}')
  result = None
  with pytest.raises(PortingError) as info:
    result = row.port_source(source)
  assert result is None  # nothing half-loaded
  for message in messages:  # every problem is listed
    assert re.search(message, str(info.value)), (message, str(info.value))


def _count_parses(monkeypatch) -> list[str]:
  """Records every parse of a file that `loading.read` may do."""
  calls = []

  def counted(parse):
    def wrapper(path):
      calls.append(os.fspath(path))
      return parse(path)
    return wrapper
  # Kinds that share a parser must keep sharing one wrapper (detection
  # groups kinds by parser identity), the fallback `safe_load.load` and the
  # parsers chosen by suffix (`.json`: the TF.js reader) too.
  wrappers = {safe_load.load: counted(safe_load.load)}
  monkeypatch.setattr(safe_load, 'load', wrappers[safe_load.load])
  for name in loading.ENCODER_KINDS:
    parse = loading.KINDS[name].parse
    wrapped = wrappers.setdefault(parse, counted(parse))
    monkeypatch.setitem(loading.KINDS, name, dataclasses.replace(
        loading.KINDS[name], parse=wrapped))
  by_suffix = loading._PARSERS  # pylint: disable=protected-access
  for suffix, parse in list(by_suffix.items()):
    monkeypatch.setitem(by_suffix, suffix,
                        wrappers.setdefault(parse, counted(parse)))
  return calls


@pytest.mark.parametrize('row', _params())
def test_file_is_recognised_from_one_parse(row, tiny, monkeypatch):
  written = tiny(row)
  calls = _count_parses(monkeypatch)
  loaded = loading.read(written.path, loading.ENCODER)
  assert loaded.kind.name == row.kind and calls == [written.path]
  chex.assert_trees_all_equal(loaded.variables, written.variables)
  del calls[:]
  forced = loading.read(f'{row.kind}:{written.path}', loading.ENCODER)
  assert forced.kind.name == row.kind and calls == [written.path]


@pytest.mark.parametrize('row', _params())
def test_missing_truncated_and_unnamed_files(row, tiny, tmp_path):
  written = tiny(row)
  with open(written.path, 'rb') as f:
    data = f.read()
  bad = tmp_path / f'truncated_{row.filename}'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(CheckpointError, match='truncated'):
    loading.read(str(bad), loading.ENCODER)
  nope = str(tmp_path / f'nope_{row.filename}')
  with pytest.raises(FileNotFoundError, match=re.escape(nope)):
    loading.read(f'{row.kind}:{nope}', loading.ENCODER)
  kind = loading.KINDS[row.kind]
  if kind.default_file is None:  # the message says which file to pass
    with pytest.raises(FileNotFoundError, match=re.escape(row.filename)):
      loading.read(row.kind, loading.ENCODER)
  else:  # the kind alone is its shipped weights (the tiny file's copy)
    shipped = loading.read(row.kind, loading.ENCODER)
    assert shipped.kind.name == row.kind
    chex.assert_trees_all_equal(shipped.variables, written.variables)


@pytest.mark.parametrize('row', _params())
def test_load_encoder_and_its_converted_directory(row, tiny, tmp_path):
  from ports import convert_encoder  # pylint: disable=g-import-not-at-top
  written = tiny(row)
  out = str(tmp_path / 'converted')
  # The converter script: load_encoder(path), then checkpoints.save.
  encoder = convert_encoder.convert(written.path, out)
  spec = written.kind.input_spec(written.config)
  assert encoder.kind == row.kind and encoder.config == written.config
  assert encoder.spec == spec
  chex.assert_trees_all_equal(encoder.variables, written.variables)

  # The converted directory: the same kind, config, spec and variables, so
  # the same descriptors.
  loaded = loading.read(out, loading.ENCODER)
  assert loaded.kind.name == row.kind
  # The config went through meta.json (tuples come back as lists).
  assert loaded.config == json.loads(json.dumps(written.config))
  restored = loading.load_encoder(out)
  assert restored.kind == row.kind and restored.spec == spec
  assert restored.dim == encoder.dim
  chex.assert_trees_all_equal(restored.variables, encoder.variables)
  # Nothing in the directory points at where it was written.
  moved = tmp_path / 'elsewhere'
  shutil.move(out, moved)
  chex.assert_trees_all_equal(
      loading.read(str(moved), loading.ENCODER).variables,
      restored.variables)

  # It embeds generator images (padding the last batch) as the module does.
  images = np.random.default_rng(7).uniform(-1, 1, (4, 64, 64, 3)).astype(
      np.float32)
  got = restored.embed(images, batch_size=3)
  x = preprocess.to_encoder_input(images, spec)
  want = np.concatenate([written.apply(written.variables, x[i:i + 2])[0]
                         for i in (0, 2)])
  assert got.shape == (4, restored.dim) and restored.dim == want.shape[-1]
  chex.assert_trees_all_close(got, want, **_SAME)
  one = jax.jit(restored.descriptor_fn())(restored.variables, images[0])
  chex.assert_trees_all_close(one, want[0], **_SAME)
  images[2, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match=r'images \[2\].*NaN'):
    restored.embed(images)

  # KIND:PATH, with the crop box overridden.
  boxed = loading.load_encoder(f'{row.kind}:{written.path}',
                               crop=(0, 0, 1, 1))
  assert boxed.kind == row.kind
  assert boxed.spec == dataclasses.replace(spec, crop=(0, 0, 1, 1))


def test_every_encoder_kind_has_one_row():
  kinds = [row.kind for row in ROWS]
  assert len(kinds) == len(set(kinds)), kinds
  assert set(kinds) == set(loading.ENCODER_KINDS), (
      'tests/encoder_kinds.py must have one row per encoder kind of '
      f'loading.KINDS: missing {set(loading.ENCODER_KINDS) - set(kinds)}, '
      f'extra {set(kinds) - set(loading.ENCODER_KINDS)}')
