"""id2image_jax: invert face descriptors to faces and measure non-ID leakage.

A JAX/Flax reimplementation of ID2image (Li, Smith & Huber, 2023).

Public modules (import them directly; this package stays light so that the
command line starts fast):

* `id2image_jax.losses`: soft histogram (eq. 3), identity / landmark /
  histogram losses and the weighted objective (eqs. 1-4), per example.
* `id2image_jax.metrics`: MSE, PSNR, SSIM, cosine, EMD, NME, TMR@FMR.
* `id2image_jax.inversion`: the batched, sharded, resumable inversion
  engine and the ID2image objective.
* `id2image_jax.models`: StyleGAN2, face encoders, heads; `load_generator`
  and `load_encoder` for public checkpoints.
* `id2image_jax.preprocess`: differentiable generator-to-encoder input.
* `id2image_jax.porting`: restricted checkpoint loading and rule tables.
* `id2image_jax.analysis`, `id2image_jax.evaluation`, `id2image_jax.data`:
  the leakage, regressor and evaluation jobs and their data pipelines.
"""

__version__ = '0.1.0'
