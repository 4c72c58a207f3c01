"""Flax modules, and nothing else: no file reading, no PRNG keys held.

* `stylegan2`: the StyleGAN2 generator (config-f maths).
* `dlib_resnet`, `vggface2`, `iresnet`, `vggface`: face encoders, each
  ``apply(variables, x) -> (descriptor, intermediates)`` with an
  ``input_spec(config)``.
* `nn`: layers that compute exactly what their PyTorch namesakes compute,
  for the ported encoders.
* `heads`: the MLP / CNN heads of the leakage analysis and the ID -> latent
  regressor.

Models are loaded from files by `id2image_jax.loading`.
"""
