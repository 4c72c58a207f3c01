"""id2image_jax: invert face descriptors to faces and measure non-ID leakage.

A JAX/Flax reimplementation of ID2image (Li, Smith & Huber, 2023).

Public modules (import them directly; this package stays light so that the
command line starts fast):

* `id2image_jax.losses`: soft histogram (eq. 3), identity / landmark /
  histogram losses and the weighted objective (eqs. 1-4), per example.
* `id2image_jax.metrics`: MSE, PSNR, SSIM, cosine, EMD, NME, TMR@FMR.
* `id2image_jax.inversion`: the batched, sharded, resumable inversion
  engine and the ID2image objective.
* `id2image_jax.models`: StyleGAN2, MobileStyleGAN, face encoders,
  landmark / attribute nets, heads (Flax modules only).
* `id2image_jax.loading`: the table of model kinds; `load_generator`,
  `load_encoder`, `load_head` for public checkpoints and shipped weights.
* `id2image_jax.preprocess`: differentiable generator-to-encoder input.
* `id2image_jax.porting`: restricted checkpoint loading and rule tables;
  `id2image_jax.checkpoints`: orbax.
* `id2image_jax.data`, `id2image_jax.analysis`: data pipelines and targets;
  leakage heads and the ID -> latent regressor.
* `id2image_jax.recipes`: the library composed for a job (the inversion of
  a set of targets as an invert config says).
* `id2image_jax.evaluation`: attack success, ablation arms, transfer.
* `id2image_jax.reports`, `id2image_jax.jobs`: what the jobs write, and the
  jobs the command line (`id2image_jax.cli`) runs.
"""

__version__ = '0.1.0'
