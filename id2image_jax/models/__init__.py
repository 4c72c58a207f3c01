"""Models: StyleGAN2 generator, face encoders and heads.

`load_generator` / `load_encoder` turn what a user types (``demo``,
``dlib``, a public checkpoint file, a converted directory) into a loaded
model; see `id2image_jax.models.registry`.
"""

# pylint: disable=g-importing-member
from id2image_jax.models.registry import ENCODER_KINDS
from id2image_jax.models.registry import Encoder
from id2image_jax.models.registry import Generator
from id2image_jax.models.registry import load_encoder
from id2image_jax.models.registry import load_generator

__all__ = (
    'ENCODER_KINDS',
    'Encoder',
    'Generator',
    'load_encoder',
    'load_generator',
)
