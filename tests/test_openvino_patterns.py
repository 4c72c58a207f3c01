"""Pattern matching over OpenVINO IR graphs (porting.openvino_patterns).

Graphs are built here layer by layer; the MobileStyleGAN IR is covered by
tests/test_mobilestylegan.py.
"""

import numpy as np
import pytest

from id2image_jax.porting import openvino_ir
from id2image_jax.porting import openvino_patterns as ovp
from id2image_jax.porting.rules import PortingError


def _chain(*ops, extra=False):
  """Parameter x -> op(previous, Const c<k>) for each op -> Result.

  With `extra`, a second Multiply of x that nothing reads (a dangling
  branch).
  """
  port = openvino_ir.Port
  layers = {0: openvino_ir.Layer(0, 'x', 'Parameter', 'opset1', {}, (),
                                 (port(0, 'FP32', (1, 4)),))}
  edges, constants, prev = [], {}, 0
  for k, op in enumerate(ops):
    const, node = 2 * k + 1, 2 * k + 2
    layers[const] = openvino_ir.Layer(const, f'c{k}', 'Const', 'opset1', {},
                                      (), (port(0, 'FP32', (4,)),))
    constants[const] = np.full((4,), k + 2.0, np.float32)
    layers[node] = openvino_ir.Layer(
        node, f'{op.lower()}{k}', op, 'opset1', {},
        (port(0, 'FP32', (1, 4)), port(1, 'FP32', (4,))),
        (port(2, 'FP32', (1, 4)),))
    src_port = 0 if prev == 0 else 2
    edges += [openvino_ir.Edge(prev, src_port, node, 0),
              openvino_ir.Edge(const, 0, node, 1)]
    prev = node
  result = len(layers)
  layers[result] = openvino_ir.Layer(result, 'out', 'Result', 'opset1', {},
                                     (port(0, 'FP32', (1, 4)),), ())
  edges.append(openvino_ir.Edge(prev, 2, result, 0))
  if extra:
    lid = len(layers)
    layers[lid] = openvino_ir.Layer(lid, 'dangling', 'Multiply', 'opset1',
                                    {}, (port(0, 'FP32', (1, 4)),
                                         port(1, 'FP32', (1, 4))),
                                    (port(2, 'FP32', (1, 4)),))
    edges += [openvino_ir.Edge(0, 0, lid, 0), openvino_ir.Edge(0, 0, lid, 1)]
  return openvino_ir.Graph(name='toy', version='11', layers=layers,
                           edges=edges, constants=constants, what='toy.xml')


def test_a_const_at_an_input_of_an_operation_is_a_role():
  graph = _chain('Multiply')
  matcher = ovp.Matcher(graph)
  # Inputs in the other order: commutative patterns try both.
  pattern = ovp.Op('Multiply', (ovp.Const('scale'), ovp.Parameter('x')),
                   commutative=True)
  env = matcher.match(pattern, *ovp.graph_output(graph), ovp.Env())
  assert env.roles == {1: 'scale'}
  source = ovp.keyed_constants(graph, env, lambda r: f'toy.{r}', model='Toy')
  assert list(source.arrays) == ['toy.scale']
  np.testing.assert_array_equal(source.arrays['toy.scale'], 2.0)
  assert source.names['toy.scale'] == "toy.xml: Const 'c0' (layer 1)"
  with pytest.raises(ovp.NoMatch, match="expected Add as the output, found "
                     "Multiply 'multiply0'"):
    matcher.match(ovp.Op('Add', (ovp.Parameter('x'), ovp.Const('b'))),
                  *ovp.graph_output(graph), ovp.Env())


def test_repeat_counts_stages_from_the_output():
  graph = _chain('Multiply', 'Multiply', 'Multiply')
  count, env = ovp.repeat(
      ovp.Matcher(graph),
      lambda k, x: ovp.Op('Multiply', (x, ovp.Const(f'S{k}.scale'))),
      ovp.Parameter('x'), ovp.graph_output(graph), ovp.Env())
  assert count == 3
  # The last layer is stage 0.
  assert env.roles == {5: 'S0.scale', 3: 'S1.scale', 1: 'S2.scale'}


def test_repeat_names_the_deepest_failure():
  graph = _chain('Multiply', 'Add')
  with pytest.raises(PortingError, match=r"toy\.xml: expected Multiply as "
                     "the output, found Add 'add1'"):
    ovp.repeat(ovp.Matcher(graph),
               lambda k, x: ovp.Op('Multiply', (x, ovp.Const(f'S{k}'))),
               ovp.Parameter('x'), ovp.graph_output(graph), ovp.Env())


def test_layers_no_pattern_reached_are_refused_by_name():
  graph = _chain('Multiply', extra=True)
  pattern = ovp.Op('Multiply', (ovp.Parameter('x'), ovp.Const('scale')))
  env = ovp.Matcher(graph).match(pattern, *ovp.graph_output(graph),
                                 ovp.Env())
  with pytest.raises(PortingError, match=r"1 layer\(s\) are not part of the "
                     r"recognised Toy graph .*Multiply 'dangling'"):
    ovp.keyed_constants(graph, env, str, model='Toy')
