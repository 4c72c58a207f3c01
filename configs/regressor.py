"""ID -> latent regressor (paper 4.1), trained on synthetic pairs.

Embedded default (demo generator + dlib; about a minute on 2 CPU cores)::

  id2image regressor

Paper setting (StyleGAN2-FFHQ + VGGFace2 ResNet-50), then use the head to
initialise the inversion::

  id2image regressor --config configs/regressor.py:paper \\
      --generator ffhq.pkl --encoder resnet50_ft_weight.pkl \\
      --out runs/regressor
  id2image invert --config configs/invert.py:paper ... \\
      --set init=runs/regressor/id_to_latent

End to end (the learned attack of NbNet / Vec2Face / Otroshi Shahreza &
Marcel): from the shipped head, trained through the frozen MobileStyleGAN
and dlib on the identity of real CelebA train descriptors plus the latent
MSE on synthetic pairs (`id2image_jax.analysis.end_to_end`); resumable
(rerun the same command), evaluated on held-out validation descriptors
under dlib and FaceRes::

  for e in dlib faceres; do
    id2image embed --encoder $e --set data.manual_dir=data/celeba-10k-ffhq \\
        --set "crop=()" --set landmarks.enabled=False \\
        --out 'descriptors/{encoder}_{split}.npz'
  done
  id2image regressor --config configs/regressor.py:end_to_end \\
      --out runs/regressor_end_to_end
  id2image evaluate --config configs/evaluate.py:celeba \\
      --targets data/celeba-10k-ffhq --set steps=0 \\
      --set init=runs/regressor_end_to_end/id_to_latent
"""

import ml_collections

from id2image_jax import errors


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  """Returns the config of `variant`: 'default', 'mobilestylegan', 'paper',
  'end_to_end'."""
  c = ml_collections.ConfigDict()
  # 'pairs': latent MSE on synthetic pairs (paper 4.1). 'end_to_end': from
  # `init_head`, identity loss of the rendered prediction on real
  # descriptors + `latent_weight` x the latent MSE on synthetic pairs.
  c.train = 'pairs'
  c.generator = 'demo'  # see configs/invert.py
  c.generator_seed = 0
  c.encoder = 'dlib'
  c.encoder_crop = ()
  # What the head predicts: 'w' (one w, broadcast for W+ inversion), 'w+'
  # or 'z'. Inverting in W or W+ wants 'w'.
  c.latent_space = 'w'
  # Sampled faces: psi 0.7 matches the invert self-check's targets; the
  # paper does not say (use 1.0 to cover the whole latent distribution).
  c.truncation_psi = 0.7
  c.hidden = (2048, 2048, 2048)  # paper: 3 hidden layers x 2048, ReLU
  # 0: a fresh batch of pairs every step (`steps` steps). > 0: draw this
  # many pairs once (cached in workdir/pairs.npz) and train `epochs` over
  # them: for generators whose images cost seconds on a CPU.
  c.pairs = 0
  c.epochs = 0
  c.steps = 150
  c.batch_size = 16
  c.learning_rate = 1e-3
  c.eval_pairs = 32  # held-out synthetic pairs for the report
  c.sample_batch = 8  # images rendered per jitted call when sampling pairs
  c.log_every = 10
  c.seed = 0
  c.workdir = 'runs/regressor'
  c.progress = True
  # --- train='end_to_end' only (see analysis/end_to_end.py).
  # The head to start from: 'auto' (the shipped one of this generator and
  # encoder), a head directory or .npz, or '' (fresh, `hidden` wide).
  c.init_head = 'auto'
  # W+ heads ('w+'): rank of the per-layer offsets on the shared w
  # (models/heads.py MLP.layer_rank); 0 = a full per-layer output layer.
  c.layer_rank = 32
  # Descriptors (id2image embed .npz) of real photos under `encoder`: the
  # identity term trains on `real_descriptors`; the held-out report reads
  # `eval_descriptors` and, for the independent `eval_encoder`,
  # `eval_reference` (the same photos under it, matched by key).
  c.real_descriptors = 'descriptors/dlib_train.npz'
  c.eval_descriptors = 'descriptors/dlib_validation.npz'
  c.eval_encoder = 'faceres'
  c.eval_reference = 'descriptors/faceres_validation.npz'
  c.eval_size = 128  # held-out photos (0: all)
  # 'cosine' (1 - cos) or 'l2' (squared L2 on raw descriptors).
  c.identity_loss = 'cosine'
  c.latent_weight = 1.0  # of the synthetic-pair latent MSE (0: off)
  c.real_batch = 8  # real descriptors rendered per step
  # Faces rendered at once (divides real_batch; the gradients are summed).
  # On 2 CPU cores one at a time is cheapest: 1.0 s CPU per face forward +
  # backward at 1024 px and 0.7 GB, vs 1.2 s and 2.7 GB four at a time;
  # raise it on an accelerator.
  c.micro_batch = 1
  # Generator and encoder compute dtype. On CPU bfloat16 costs more (1.35 s
  # CPU per face, four at a time), so float32.
  c.compute_dtype = 'float32'
  # 'none' | 'dots' | 'full' (inversion/objective.py). Within a micro
  # batch the faces are vmapped, so remat saves no memory there ('full':
  # same 2.7 GB, +33 % CPU); a smaller micro_batch is the memory knob.
  c.remat = 'none'
  c.checkpoint_every = 10  # steps between resumable checkpoints
  if variant == 'mobilestylegan':
    # The head shipped for the default models (MobileStyleGAN + dlib).
    c.generator = 'mobilestylegan'
    c.hidden = (512, 512, 512)  # small enough to ship (3.4 MB)
    c.pairs = 4000
    c.epochs = 60
    c.batch_size = 64
    c.eval_pairs = 64
    c.sample_batch = 4
    c.workdir = 'runs/regressor_mobilestylegan'
  elif variant == 'paper':
    c.generator = ''
    c.encoder = ''
    c.truncation_psi = 1.0
    c.steps = 50_000
    c.batch_size = 64
    c.learning_rate = 1e-4
    c.eval_pairs = 1024
    c.log_every = 500
  elif variant == 'end_to_end':
    # Sized for <= 2 h on 2 CPU cores: 600 steps x 8 faces at 1024 px
    # (about 8 s of CPU per step), 1024 pairs drawn once (~10 min) and two
    # held-out scorings of 128 photos. The same command runs on an
    # accelerator (raise real_batch and micro_batch).
    c.train = 'end_to_end'
    # W and W+ (rank-32 offsets, from the same W head) tied after 20 steps
    # of 8 faces on 48 validation photos (W+ - W: dlib +0.0003 +- 0.0006,
    # FaceRes -0.0002 +- 0.0021); W is smaller and is what the default
    # inversion (latent_space='w') uses as is.
    c.latent_space = 'w'
    c.generator = 'mobilestylegan'
    c.hidden = (512, 512, 512)  # used only when init_head=''
    c.pairs = 1024  # synthetic pairs, drawn once (workdir/pairs.npz)
    c.batch_size = 64  # synthetic pairs per step (latent term; cheap)
    c.steps = 600
    c.learning_rate = 1e-4
    c.eval_pairs = 0
    c.sample_batch = 4
    c.workdir = 'runs/regressor_end_to_end'
  elif variant != 'default':
    raise errors.UsageError(f"unknown variant {variant!r}: 'default', "
                            "'mobilestylegan', 'paper' or 'end_to_end'")
  return c.lock()
