"""Declarative checkpoint porting: a table of regex -> (Flax path, transform).

Coverage is strict in both directions (stylegan2-ada ``legacy.py``; big_vision
``merge_params``): every Flax leaf of the abstract tree must be filled exactly
once, every checkpoint key must match a rule or an explicit ignore pattern,
and every shape must agree. Any problem raises `PortingError` that names the
offending keys; nothing is returned half-filled.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax.porting import layout
from id2image_jax.porting.safe_load import CheckpointError

Transform = Callable[[np.ndarray], np.ndarray]

# How many offending keys an error message lists before summarising.
_MAX_LISTED = 12


class PortingError(CheckpointError):
  """The checkpoint does not match the model: names the offending keys."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """Maps checkpoint keys that fully match `pattern` to a Flax leaf.

  Attributes:
    pattern: regex, full-matched against the checkpoint key.
    target: '/'-separated path in the variables tree (collections included,
      e.g. ``params/conv1/kernel``); may use ``\\1`` / ``\\g<name>`` groups.
    transform: numpy layout conversion applied before the shape check.
  """
  pattern: str
  target: str
  transform: Transform = layout.identity


def _listed(items: Sequence[str]) -> str:
  items = list(items)
  shown = ', '.join(items[:_MAX_LISTED])
  more = len(items) - _MAX_LISTED
  return shown + (f' ... and {more} more' if more > 0 else '')


def port(source: Mapping[str, np.ndarray], rules: Sequence[Rule],
         abstract: Any, *, ignore: Sequence[str] = (),
         what: str = 'checkpoint') -> dict:
  """Fills the abstract variables tree from `source` by `rules`.

  Args:
    source: flat ``{key: array}`` from the checkpoint.
    rules: first matching rule wins.
    abstract: nested mapping of leaves with ``.shape``/``.dtype`` (the output
      of ``jax.eval_shape(model.init, ...)``).
    ignore: regexes of checkpoint keys deliberately left unused.
    what: names the checkpoint in error messages.

  Returns:
    A nested dict with the structure of `abstract`, numpy leaves cast to the
    abstract dtypes.

  Raises:
    PortingError: unmatched or mis-shaped keys, targets filled twice or not
      at all. The message names every offending key (up to a limit).
  """
  compiled = [(re.compile(r.pattern), r) for r in rules]
  ignored = [re.compile(p) for p in ignore]
  targets = flax.traverse_util.flatten_dict(dict(abstract), sep='/')
  filled: dict[str, np.ndarray] = {}
  filled_by: dict[str, str] = {}
  unmatched, unknown_target, mismatched, twice = [], [], [], []

  for key in sorted(source):
    match = next(((m, r) for c, r in compiled if (m := c.fullmatch(key))),
                 None)
    if match is None:
      if not any(p.fullmatch(key) for p in ignored):
        unmatched.append(key)
      continue
    m, rule = match
    path = m.expand(rule.target)
    if path not in targets:
      unknown_target.append(f'{key} -> {path}')
      continue
    if path in filled:
      twice.append(f'{key} and {filled_by[path]} -> {path}')
      continue
    try:
      value = np.asarray(rule.transform(np.asarray(source[key])))
    except ValueError as e:
      mismatched.append(f'{key}: {e}')
      continue
    want = tuple(targets[path].shape)
    if value.shape != want:
      mismatched.append(f'{key} {tuple(np.shape(source[key]))} -> {path}: '
                        f'got {value.shape}, model expects {want}')
      continue
    filled[path] = value.astype(targets[path].dtype)
    filled_by[path] = key

  missing = sorted(set(targets) - set(filled))
  problems = []
  if unmatched:
    problems.append(f'{len(unmatched)} {what} key(s) match no rule: '
                    f'{_listed(unmatched)}')
  if unknown_target:
    problems.append(f'{len(unknown_target)} rule target(s) are not model '
                    f'parameters: {_listed(unknown_target)}')
  if mismatched:
    problems.append(f'{len(mismatched)} shape mismatch(es): '
                    f'{_listed(mismatched)}')
  if twice:
    problems.append(f'{len(twice)} parameter(s) filled twice: '
                    f'{_listed(twice)}')
  if missing:
    problems.append(f'{len(missing)} model parameter(s) not found in the '
                    f'{what}: {_listed(missing)}')
  if problems:
    raise PortingError(f'{what} does not match the model:\n  ' +
                       '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(filled, sep='/')


def port_image_model(source: Mapping[str, np.ndarray], rules: Sequence[Rule],
                     model: nn.Module, image_size: Sequence[int], *,
                     ignore: Sequence[str] = (),
                     what: str = 'checkpoint') -> dict:
  """`port` onto the variables of an image model, as jax arrays.

  Args:
    source: flat ``{key: array}`` from the checkpoint.
    rules: first matching rule wins.
    model: the Flax module; its variables are those ``model.init`` makes
      for one float32 image [1, H, W, 3] (shapes only, nothing computed).
    image_size: (H, W) of that image.
    ignore: regexes of checkpoint keys deliberately left unused.
    what: names the checkpoint in error messages.

  Returns:
    The variables tree of jax arrays in the model's dtypes.

  Raises:
    PortingError: as `port`.
  """
  image = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), image)
  variables = port(source, rules, abstract, ignore=ignore, what=what)
  return jax.tree.map(jnp.asarray, variables)


def require_keys(source: Mapping[str, Any], keys: Sequence[str], *,
                 what: str = 'checkpoint') -> None:
  """Raises `PortingError` naming every key in `keys` absent from `source`."""
  absent = [k for k in keys if k not in source]
  if absent:
    raise PortingError(f'{what} lacks required key(s): {_listed(absent)}')


def batch_norm(torch_path: str, flax_path: str) -> list[Rule]:
  """torch BatchNorm{1,2}d weight, bias, running stats -> `nn.BatchNorm`.

  `flax_path` names the module holding a submodule ``bn`` (the layout of
  `id2image_jax.models.nn` blocks): ``params/<flax_path>/bn/{scale,bias}``
  and ``batch_stats/<flax_path>/bn/{mean,var}``.
  """
  return [
      Rule(rf'{torch_path}\.weight', f'params/{flax_path}/bn/scale'),
      Rule(rf'{torch_path}\.bias', f'params/{flax_path}/bn/bias'),
      Rule(rf'{torch_path}\.running_mean', f'batch_stats/{flax_path}/bn/mean'),
      Rule(rf'{torch_path}\.running_var', f'batch_stats/{flax_path}/bn/var'),
  ]


def conv2d(torch_path: str, flax_path: str, *,
           bias: bool = False) -> list[Rule]:
  """torch Conv2d [O, I, kh, kw] (+ bias [O]) -> `models.nn.Conv2d`."""
  rules = [Rule(rf'{torch_path}\.weight', f'params/{flax_path}/conv/kernel',
                layout.conv_oihw_to_hwio)]
  if bias:
    rules.append(Rule(rf'{torch_path}\.bias', f'params/{flax_path}/conv/bias'))
  return rules


def resnet_stage_blocks(source: Mapping[str, Any], *, what: str,
                        model: str, stages: int = 4) -> list[int]:
  """Blocks in each of ``layer1.*`` .. ``layer<stages>.*`` (torchvision-style
  ResNets: IResNet, VGGFace2 ResNet-50/SENet-50).

  Raises:
    PortingError: a stage is absent (the file is not `model`) or its block
      numbers have a gap.
  """
  blocks = []
  for i in range(1, stages + 1):
    n = count_numbered(source, rf'layer{i}\.(\d+)\.', what=what,
                       label=f'layer{i}')
    if not n:
      raise PortingError(f'{what} has no layer{i}.* blocks: not {model}')
    blocks.append(n)
  return blocks


def count_numbered(source: Mapping[str, Any], pattern: str, *, first: int = 0,
                   what: str = 'checkpoint', label: str = '') -> int:
  """How many numbered blocks a state dict holds, e.g. ``layer2.<i>.*``.

  Args:
    source: flat ``{key: array}``.
    pattern: regex whose first group is the block number, matched at the
      start of each key (e.g. ``r'layer2\\.(\\d+)\\.'``).
    first: the number of the first block (0 for nn.Sequential, 1 for
      Caffe-style ``conv2_1``).
    what: names the checkpoint in errors.
    label: names the blocks in errors (default: the pattern).

  Returns:
    The number of blocks; 0 when there are none.

  Raises:
    PortingError: the numbers are not contiguous from `first` (a block is
      missing, so the architecture cannot be inferred).
  """
  indices = {int(m.group(1)) for k in source if (m := re.match(pattern, k))}
  if not indices:
    return 0
  want = set(range(first, first + len(indices)))
  if indices != want:
    gaps = sorted(set(range(first, max(indices) + 1)) - indices)
    raise PortingError(f'{what}: {label or pattern} block numbers are not '
                       f'contiguous (missing block(s) {gaps})')
  return len(indices)
