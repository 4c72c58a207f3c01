"""Matches patterns of operations in an OpenVINO IR graph, as data.

An exported IR names its constants after the exporter, not after the model's
modules (folded products are numbered). A porter therefore names them by
where they sit: it describes a stage of the network as a pattern (`Op` with
input patterns, `Const` roles, the graph input `Parameter`, a `Tensor`
that the next stage matches, `Shape` arithmetic) and a `Matcher` walks the
graph backwards from a tensor, checking every operation, attribute and
edge. A Const at a given input of a given operation *is* a role. `repeat`
matches a stage as many times as it repeats (blocks counted from the
output), `graph_output` is where a walk starts, and `keyed_constants` gives
every Const a key, refusing layers no pattern reached. Nothing is executed;
`id2image_jax.porting.openvino_ir` reads the files.

A failed match raises `NoMatch` with its depth; of several alternatives
(commutative inputs, a stage or the end) the deepest failure is the one
reported, since it is the one that got furthest into the graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from id2image_jax.porting import openvino_ir
from id2image_jax.porting.rules import PortingError


@dataclasses.dataclass(frozen=True)
class Op:
  """An operation whose i-th input matches ``inputs[i]``.

  Attributes:
    type: IR layer type.
    inputs: patterns of the inputs, in port order.
    port: which output of this layer feeds the consumer.
    attrs: ``<data>`` attributes that must match (spaces ignored).
    commutative: two inputs that may come in either order.
    bind: a name; every occurrence must be the same layer (shared nodes).
  """
  type: str
  inputs: tuple[Any, ...]
  port: int = 0
  attrs: tuple[tuple[str, str], ...] = ()
  commutative: bool = False
  bind: str | None = None


@dataclasses.dataclass(frozen=True)
class Const:
  """A Const layer; its key is `role` (prefixed by the stage)."""
  role: str


@dataclasses.dataclass(frozen=True)
class Parameter:
  """A Parameter layer (the graph input), bound by `name`."""
  name: str


@dataclasses.dataclass(frozen=True)
class Tensor:
  """Any data tensor: bound by `name`, matched later by the next stage."""
  name: str


@dataclasses.dataclass(frozen=True)
class Shape:
  """Shape arithmetic: Const / ShapeOf / Gather / Unsqueeze / Concat /
  Broadcast only (ShapeOf's input is a data tensor and is not followed)."""


_SHAPE_OPS = frozenset({'Gather', 'Unsqueeze', 'Squeeze', 'Concat',
                        'Broadcast'})


class NoMatch(Exception):
  """A pattern does not match; `depth` is how far into the graph it got."""

  def __init__(self, message: str, depth: int):
    super().__init__(message)
    self.message, self.depth = message, depth


@dataclasses.dataclass
class Env:
  """What a (partial) match found: const roles, bound layers, visited."""
  roles: dict[int, str] = dataclasses.field(default_factory=dict)
  binds: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  visited: set[int] = dataclasses.field(default_factory=set)

  def copy(self) -> Env:
    return Env(dict(self.roles), dict(self.binds), set(self.visited))


def _norm_attr(value: str) -> str:
  return value.replace(' ', '')


class Matcher:
  """Matches patterns against `graph`, backwards from a tensor."""

  def __init__(self, graph: openvino_ir.Graph):
    self.graph = graph

  def match(self, pattern: Any, layer: openvino_ir.Layer, out_index: int,
            env: Env, *, depth: int = 0, where: str = 'output') -> Env:
    """Matches `pattern` against output `out_index` of `layer`.

    Args:
      pattern: an `Op`, `Const`, `Parameter`, `Tensor` or `Shape`.
      layer: the layer whose output the pattern describes.
      out_index: which of its outputs (position, not port id).
      env: what the match so far found (not changed).
      depth: how many layers from where the walk started (for errors).
      where: the place in the pattern, for messages.

    Returns:
      `env` extended with this match.

    Raises:
      NoMatch: the graph differs here (names what was expected and found).
    """
    g = self.graph

    def fail(expected):
      raise NoMatch(f'expected {expected} as the {where}, found '
                    f'{layer.describe()}', depth)

    if isinstance(pattern, Tensor):
      return self._bind(env, pattern.name, layer, out_index, fail)
    if isinstance(pattern, Parameter):
      if layer.type != 'Parameter':
        fail(f'the input Parameter ({pattern.name})')
      env = self._bind(env, pattern.name, layer, out_index, fail)
      env.visited.add(layer.id)
      return env
    if isinstance(pattern, Const):
      if layer.type != 'Const':
        fail(f'a Const ({pattern.role})')
      if env.roles.get(layer.id, pattern.role) != pattern.role:
        fail(f'a Const for {pattern.role}, not also for '
             f'{env.roles[layer.id]}')
      env = env.copy()
      env.roles[layer.id] = pattern.role
      env.visited.add(layer.id)
      return env
    if isinstance(pattern, Shape):
      return self._shape(layer, env, depth, where)
    # An operation.
    if layer.type != pattern.type or out_index != pattern.port:
      port = f' (output {pattern.port})' if pattern.port else ''
      fail(f'{pattern.type}{port}')
    for key, value in pattern.attrs:
      got = layer.data.get(key)
      if got is None or _norm_attr(got) != value:
        fail(f'{pattern.type} with {key}="{value}" (got {got!r})')
    if pattern.bind is not None:
      if pattern.bind in env.binds:
        if env.binds[pattern.bind][0] != layer.id:
          fail(f'the same {pattern.type} as elsewhere ({pattern.bind})')
        return env
      env = env.copy()
      env.binds[pattern.bind] = (layer.id, -1)
    if len(layer.inputs) != len(pattern.inputs):
      fail(f'{pattern.type} with {len(pattern.inputs)} inputs')
    orders = [pattern.inputs]
    if pattern.commutative:
      orders.append(pattern.inputs[::-1])
    best = None
    for order in orders:
      try:
        trial = env.copy()
        trial.visited.add(layer.id)
        for i, sub in enumerate(order):
          src, src_port = g.producer(layer, i)
          trial = self.match(sub, src, g.output_index(src, src_port), trial,
                             depth=depth + 1,
                             where=f'input {i} of {layer.describe()}')
        return trial
      except NoMatch as e:
        if best is None or e.depth > best.depth:
          best = e
    raise best

  @staticmethod
  def _bind(env, name, layer, out_index, fail) -> Env:
    if name in env.binds:
      if env.binds[name] != (layer.id, out_index):
        fail(f'the same tensor as {name}')
      return env
    env = env.copy()
    env.binds[name] = (layer.id, out_index)
    return env

  def _shape(self, layer, env, depth, where) -> Env:
    env = env.copy()
    stack = [layer]
    while stack:
      node = stack.pop()
      if node.id in env.visited and node.type != 'Const':
        continue
      env.visited.add(node.id)
      if node.type == 'Const':
        env.roles.setdefault(node.id, f'plumbing.{node.name}#{node.id}')
      elif node.type in _SHAPE_OPS:
        stack.extend(self.graph.producer(node, i)[0]
                     for i in range(len(node.inputs)))
      elif node.type == 'ShapeOf':
        # The shape of a data tensor ends the walk; the shape of a shape
        # (ConstantOfShape in ONNX) is more shape arithmetic.
        src = self.graph.producer(node, 0)[0]
        if src.type in _SHAPE_OPS or src.type in ('Const', 'ShapeOf'):
          stack.append(src)
      else:
        raise NoMatch(f'expected shape arithmetic as the {where}, found '
                      f'{node.describe()}', depth)
    return env


def graph_output(graph: openvino_ir.Graph) -> tuple[openvino_ir.Layer, int]:
  """(layer, output position) feeding the graph's one Result: where a walk
  starts.

  Raises:
    PortingError: not exactly one Result (names them).
  """
  results = graph.of_type('Result')
  if len(results) != 1:
    raise PortingError(f'{graph.what}: expected one Result (output), found '
                       f'{len(results)}: '
                       f'{", ".join(r.describe() for r in results)}')
  src, src_port = graph.producer(results[0], 0)
  return src, graph.output_index(src, src_port)


def repeat(matcher: Matcher, stage: Callable[[int, Tensor], Any], end: Any,
           start: tuple[openvino_ir.Layer, int], env: Env
           ) -> tuple[int, Env]:
  """Matches a repeated stage, then what precedes the repeats.

  Args:
    matcher: over the graph.
    stage: ``stage(k, Tensor(name))``, the k-th repeat counted from the
      output, whose input is the tensor `name`.
    end: the pattern before the first repeat.
    start: (layer, output position) of the last repeat's output.
    env: the match so far.

  Returns:
    (number of repeats, env).

  Raises:
    PortingError: neither another repeat nor `end` matches (the deeper
      failure is named).
  """
  count = 0
  layer, out = start
  while True:
    try:
      env = matcher.match(stage(count, Tensor(f'x{count + 1}')), layer, out,
                          env)
    except NoMatch as stage_error:
      try:
        return count, matcher.match(end, layer, out, env)
      except NoMatch as end_error:
        e = max(stage_error, end_error, key=lambda e: e.depth)
        raise PortingError(f'{matcher.graph.what}: {e.message}') from None
    lid, out = env.binds[f'x{count + 1}']
    layer = matcher.graph.layers[lid]
    count += 1


@dataclasses.dataclass
class Source:
  """Constants of IR graphs by key.

  Attributes:
    arrays: key -> array for every Const (see `keyed_constants`).
    names: key -> ``"<file>: Const '<name>' (layer <id>)"``, for messages.
  """
  arrays: dict[str, np.ndarray]
  names: dict[str, str]


def keyed_constants(graph: openvino_ir.Graph, env: Env,
                    rename: Callable[[str], str], *, model: str) -> Source:
  """Every Const of `graph` under a key, after a match (`env`) of all of it.

  Args:
    graph: the graph.
    env: the finished match.
    rename: role -> key. Shape-arithmetic constants get
      ``plumbing.<graph>.<name>#<id>``; constants no pattern reached get
      ``unreached.<graph>.<name>#<id>`` (a rule table then refuses them by
      name).
    model: what the graph should be, for messages.

  Returns:
    The keyed constants.

  Raises:
    PortingError: an operation no pattern reached (an extra output or
      branch), or two constants with one key.
  """
  arrays, names = {}, {}
  unreached_ops = []
  for layer in graph.layers.values():
    if layer.id in env.visited or layer.type == 'Result':
      if layer.type != 'Const':
        continue
      role = env.roles[layer.id]
      key = (f'plumbing.{graph.name}.{role[len("plumbing."):]}'
             if role.startswith('plumbing.') else rename(role))
    elif layer.type == 'Const':
      key = f'unreached.{graph.name}.{layer.name}#{layer.id}'
    else:
      unreached_ops.append(layer.describe())
      continue
    if key in arrays:
      raise PortingError(f'{graph.what}: two constants for {key}: '
                         f'{names[key]} and {layer.describe()}')
    arrays[key] = graph.constants[layer.id]
    names[key] = f'{graph.what}: {layer.describe()}'
  if unreached_ops:
    raise PortingError(
        f'{graph.what}: {len(unreached_ops)} layer(s) are not part of the '
        f'recognised {model} graph (an extra output or branch?): '
        f'{", ".join(unreached_ops[:12])}')
  return Source(arrays, names)
