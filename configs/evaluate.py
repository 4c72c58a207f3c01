"""The ``id2image evaluate`` job: ablation (paper Table 2) and transfer.

Derived from configs/invert.py (same generator, encoder, targets and
optimisation fields) plus the evaluation's own fields below.

Default: the self-check on the embedded default models (MobileStyleGAN,
dlib's real encoder), 4 targets, 30 steps per arm: about 10 minutes on a
2-core CPU. The landmark and histogram targets are measured on the known
originals (an oracle, labelled so; face-api.js's landmark net measures the
landmarks)::

  id2image evaluate --out runs/evaluate

Real faces (CelebA-layout folder aligned by `id2image align`; type I and II
attacks, thresholds from pairs of real photos of different people)::

  id2image align --data ../shared/data/celeba-10k --out data/celeba-10k-ffhq
  id2image leakage --config configs/leakage.py:celeba ...   # the heads
  id2image evaluate --config configs/evaluate.py:celeba \
      --targets data/celeba-10k-ffhq \
      --set heads.landmarks=runs/leakage_celeba/heads/dlib/landmarks \
      --set heads.histogram=runs/leakage_celeba/heads/dlib/histogram \
      --set heads.image_landmarks=runs/leakage_celeba/heads/image/landmarks_cnn

The paper's setting (MoFA-Test images, VGGFace2 attacked, VGGFace for
evaluation, heads from `id2image leakage`, W+, 1000 Adam steps)::

  id2image evaluate --config configs/evaluate.py:paper \
      --generator ffhq.pkl --encoder vggface2:resnet50_ft_weight.pkl \
      --eval-encoder vggface:vgg_face_dag.pth --targets mofa_test/ \
      --set init=runs/regressor/id_to_latent \
      --set heads.landmarks=runs/leakage/heads/resnet50_ft_weight/landmarks \
      --set heads.image_landmarks=runs/leakage/heads/image/landmarks_cnn \
      --set heads.histogram=runs/leakage/heads/resnet50_ft_weight/histogram \
      --set "transfer_encoders=('vggface2:resnet50_ft_weight.pkl', \
             'iresnet:backbone.pth', 'vggface:vgg_face_dag.pth')"
"""

import importlib.util
import os

import ml_collections

from id2image_jax import errors


def _invert_config(variant: str) -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'invert.py')
  spec = importlib.util.spec_from_file_location('_id2image_invert_config',
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  """Returns the config of `variant`: 'default', 'celeba' or 'paper'."""
  if variant not in ('default', 'celeba', 'paper'):
    raise errors.UsageError(f"unknown variant {variant!r}: 'default', "
                            "'celeba' or 'paper'")
  c = _invert_config('paper' if variant == 'paper' else 'default')
  with c.unlocked():
    # Identity is scored under this encoder too. 'auto' (or ''): another
    # network than the attacked one (loading.evaluation_partner: dlib <->
    # FaceRes; FaceRes for any other kind or a user's file); naming the
    # attacked encoder itself is reported as not independent.
    c.eval_encoder = 'auto'
    # Attribute networks that label originals and reconstructions alike
    # (attribute preservation): 'faceapi_age_gender', 'faceapi_expression'
    # (shipped), 'gear' (fetched once, 145 MB).
    c.attribute_nets = ('faceapi_age_gender', 'faceapi_expression')
    # Transfer matrix: invert with each, score with each. () = the attacked
    # and the evaluation encoder.
    c.transfer_encoders = ()
    c.transfer_arm = ''  # '' = the last arm that runs
    # Ablation arms (terms joined with '+': id, lm, hist), paper Table 2;
    # 'nes' adds the score-only attacker (similarity queries, no gradients:
    # 2 * nes_population + 1 queries per target and step).
    c.arms = ('id', 'id+lm', 'id+lm+hist')
    c.nes_population = 4
    c.nes_sigma = 0.05
    # Landmark / histogram targets: 'heads' (predicted from the descriptor,
    # the paper's attack), 'measured' (on the originals: oracle), 'auto'.
    c.aux_targets = 'auto'
    # Self-check: extra originals that are only embedded, never inverted,
    # to get enough impostor pairs for the FMR thresholds.
    c.num_impostor_images = 46  # 50 originals: 1225 pairs, FMR 1e-3 measurable
    # For a CelebA-layout folder of targets (aligned by `id2image align`):
    # the split whose people are used.
    c.split = 'test'
    # A folder whose people are known (CelebA layout or one subfolder per
    # person): people with a single photo are attacked too, type I only
    # ('targets'), or serve only as impostors ('pool').
    c.one_photo_people = 'targets'
    c.fmrs = (1e-2, 1e-3)
    c.grid_rows = 8
    c.workdir = 'runs/evaluate'
    if variant == 'celeba':
      # Real faces: a CelebA-layout folder aligned by `id2image align`
      # (--targets), its test people (identity-disjoint from the leakage
      # heads' training people). Sized for <= 30 min on 2 CPU cores: 6
      # targets x 30 steps x (3 arms + the transfer inversion) at 1024 px.
      # On an accelerator: --set num_targets=0 (every test person with two
      # photos) --set num_impostor_images=1000 --set steps=300.
      c.num_targets = 6
      c.num_impostor_images = 150
      # Every test person with two or more photos (type I and II).
      c.one_photo_people = 'pool'
      c.align_faces = False  # the folder is aligned already
      c.workdir = 'runs/evaluate_celeba'
    if variant == 'paper':
      c.num_impostor_images = 0
      c.workdir = 'runs/evaluate_paper'
  return c.lock()
