"""Plumbing every job shares: printing, config helpers, loading models once.

Jobs never import each other; what two of them need lives here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax

from id2image_jax import errors
from id2image_jax import loading
from id2image_jax import protocols
from id2image_jax.analysis import train as train_lib
from id2image_jax.data import off_distribution
from id2image_jax.data import targets as targets_lib


def say(text: str) -> None:
  """Prints on process 0 only (multi-host runs print once)."""
  if jax.process_index() == 0:
    print(text, flush=True)


def check_descriptors(spec: str, targets: targets_lib.Targets,
                      encoder: protocols.Encoder) -> dict[str, Any] | None:
  """Warns about target descriptors unlike the encoder's own (issue 23).

  Only descriptor files are checked: photos and the self-check are embedded
  by the encoder itself. Nothing is refused or changed (the user may know
  better): offending rows are named (first few + count).

  Args:
    spec: the targets spec ('' self-check, a folder, or a file).
    targets: what it read.
    encoder: the inverting encoder.

  Returns:
    The reports' ``descriptor_check`` entry (`off_distribution.report`), or
    None when the targets are not a descriptor file.
  """
  if not spec or os.path.isdir(spec):
    return None
  reference = loading.descriptor_reference(encoder.kind)
  total = len(targets.descriptors)
  if reference is None or len(reference.mean_descriptor) != encoder.dim:
    why = (f'no statistics of real faces were measured for the '
           f'{encoder.kind} encoder')
    say(f'descriptor check: not possible ({why})')
    return off_distribution.report(None, total, reference=None, why_not=why)
  findings = off_distribution.check(targets.descriptors, reference,
                                    names=targets.names)
  if findings:
    say('WARNING: ' + off_distribution.describe(findings, total,
                                                 kind=encoder.kind))
  return off_distribution.report(findings, total, reference=reference)


def plain(config: Any) -> dict[str, Any]:
  """A ConfigDict (or mapping) as a plain dict."""
  return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def with_fields(config: Any, **fields: Any) -> Any:
  """A copy of the ConfigDict `config` with `fields` set to new values.

  Jobs read their config and never change it: a value they derive (e.g.
  the init that 'auto' resolves to) goes into a copy like this one.
  """
  out = config.copy_and_resolve_references()
  for name, value in fields.items():
    out[name] = value
  return out


def names(value: str | Sequence[str]) -> list[str]:
  """'a,b' or ('a', 'b') -> ['a', 'b']."""
  if isinstance(value, str):
    return [v.strip() for v in value.split(',') if v.strip()]
  return [str(v) for v in value]


def slug(name: str) -> str:
  """A file-name-safe version of `name`."""
  return re.sub(r'[^A-Za-z0-9_.+-]+', '_', name)


LOCK_FILE = '.id2image.lock'


@contextlib.contextmanager
def output_lock(folder: str) -> Iterator[None]:
  """Holds an exclusive lock on `folder` (created) while the job runs.

  An advisory ``flock`` on ``folder/.id2image.lock``: the kernel drops it
  when the process ends, however it ends (a SIGKILLed job leaves nothing
  that blocks the next). The file stays; it holds the last holder's pid.
  A folder made here that holds nothing else when the job ends (it failed
  before writing) is removed again, as if no job had run.

  Raises:
    errors.OutputBusyError: another process holds the lock.
  """
  made = not os.path.isdir(folder)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 32, 0).decode(errors='replace').strip()
      raise errors.OutputBusyError(
          f'{folder} is in use by another id2image job'
          f'{f" (process {holder})" if holder else ""}: wait for it to '
          'finish or choose another --out') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    try:
      yield
    finally:
      if made and os.path.isdir(folder) and os.listdir(folder) == [LOCK_FILE]:
        os.remove(path)  # still holding the lock: nobody else is inside
        os.rmdir(folder)
  finally:
    os.close(fd)  # releases the lock


def start_distributed(config: Any) -> None:
  """``jax.distributed.initialize()`` when ``config.distributed``."""
  if config.distributed:
    # pylint: disable-next=g-import-not-at-top
    from id2image_jax.inversion import sharding
    sharding.initialize_distributed()


def encoder_label(spec: str) -> str:
  """A short name for an encoder spec: 'dlib', 'iresnet:backbone.pth'."""
  kind, sep, path = spec.partition(':')
  if not sep:
    kind, path = '', spec
  name = os.path.basename(os.path.normpath(path)) if path else ''
  return f'{kind}:{name}' if kind and name else kind or name or spec


def encoder_labels(specs: Sequence[str]) -> dict[str, str]:
  """`encoder_label` of each spec, made unique with '#2', '#3', ..."""
  out, used = {}, {}
  for spec in specs:
    label = encoder_label(spec)
    used[label] = used.get(label, 0) + 1
    out[spec] = label if used[label] == 1 else f'{label}#{used[label]}'
  return out


def encoder_file_stem(spec: str) -> str:
  """'vggface2:/w/resnet50_ft_weight.pkl' -> 'resnet50_ft_weight'.

  A converted directory keeps its name; 'dlib' stays 'dlib'.
  """
  path = str(spec).rpartition(':')[2]
  return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def evaluation_partner(eval_encoder: str, attacked: str) -> str:
  """``eval_encoder`` if set; for 'auto' (or '') the attacked kind's
  ``evaluation_partner`` in `loading.KINDS`, else the attacked encoder
  itself (the report then says the measure is not independent)."""
  if eval_encoder and eval_encoder != 'auto':
    return eval_encoder
  return loading.evaluation_partner(attacked)


def encoder_input(config: Any) -> dict[str, Any]:
  """The ``encoder_input`` overrides of a config (ONNX encoders), {} when
  none is set or the config has no such field."""
  fields = config.get('encoder_input')
  fields = fields.to_dict() if hasattr(fields, 'to_dict') else dict(
      fields or {})
  return {k: v for k, v in fields.items() if v not in ('', (), None, [])}


class Encoders:
  """Loads each encoder spec once; errors name the config field."""

  def __init__(self, crop: Sequence[float] = ()):
    self._crop = tuple(crop) or None
    self._loaded: dict[str, protocols.Encoder] = {}

  def get(self, spec: str, field: str, *, attacked: bool = False
          ) -> protocols.Encoder:
    """The encoder of `spec`; `field` names where it was configured.

    `attacked` applies the configured crop (``encoder_crop``), which is
    the attacked encoder's setting.
    """
    if spec not in self._loaded:
      try:
        self._loaded[spec] = loading.load_encoder(
            spec, crop=self._crop if attacked else None)
      except errors.UserError as e:
        # The same class, so that the command line gives its exit code.
        raise type(e)(f'{field}={spec!r}: {e}') from None
      except FileNotFoundError as e:
        raise FileNotFoundError(f'{field}={spec!r}: {e}') from None
      except ValueError as e:
        raise ValueError(f'{field}={spec!r}: {e}') from None
    return self._loaded[spec]


@dataclasses.dataclass
class Heads:
  """The heads a config names, each loaded once.

  Attributes:
    predictors: 'landmarks' / 'histogram' -> ``fn(descriptors [N, D]) ->
      [N, ...]`` from the descriptor heads of `id2image leakage`.
    landmark_net: the image -> landmark network, or None.
    regressor: the ID -> latent head's ``fn(descriptors [N, D]) ->
      latents [N, ...]``, or None.
  """
  predictors: dict[str, Any]
  landmark_net: protocols.LandmarkNet | None
  regressor: Any


def _predictor(path: str, what: str):
  model, params, _ = loading.load_head(path, what=what)
  return lambda x: train_lib.predict(model, params, x)


def resolve_init(init: str, generator: protocols.Generator,
                 encoder: protocols.Encoder) -> str:
  """``init='auto'``: the shipped ID -> latent head of this generator and
  encoder when there is one, else 'w_avg'."""
  if init != 'auto':
    return init
  return loading.shipped_regressor(generator.kind, encoder.kind) or 'w_avg'


def load_heads(heads: Mapping[str, str], *, init: str = '') -> Heads:
  """Loads ``heads.{landmarks, histogram, image_landmarks}`` and the
  regressor of ``init`` (a path; not 'w_avg' / 'random', see
  `resolve_init`)."""
  predictors = {name: _predictor(heads[name], name)
                for name in ('landmarks', 'histogram') if heads.get(name)}
  landmark_net = None
  if heads.get('image_landmarks'):
    landmark_net = loading.load_landmark_net(heads['image_landmarks'])
  regressor = None
  if init and init not in ('w_avg', 'random'):
    regressor = _predictor(init, 'ID->latent')
  return Heads(predictors, landmark_net, regressor)
