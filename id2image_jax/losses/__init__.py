"""Functional, per-example losses of ID2image (eqs. 1-4).

Every loss reduces only its feature axes and returns one value per example
(`[..., D] -> [...]`); reduction and weighting stay with the caller, as in
`optax.losses`. `objective` forms the paper's weighted sum; `TERMS` is the
one table of its terms (name, weight, loss, target, arm label).

Typical inversion step (generator images in [-1, 1], NHWC)::

  hist = losses.image_soft_histogram(images, value_range=(-1.0, 1.0))
  terms = {
      'id': losses.identity_loss(descriptor, target_descriptor),
      'landmarks': losses.landmark_loss(landmarks, target_landmarks),
      'histogram': losses.histogram_loss(hist, target_hist),
  }
  total, terms = losses.objective(terms, weights=losses.DEFAULT_WEIGHTS)
"""

# pylint: disable=g-importing-member
from id2image_jax.losses._distances import cosine_distance
from id2image_jax.losses._distances import cosine_similarity
from id2image_jax.losses._distances import histogram_loss
from id2image_jax.losses._distances import identity_loss
from id2image_jax.losses._distances import landmark_loss
from id2image_jax.losses._histogram import image_histogram
from id2image_jax.losses._histogram import image_soft_histogram
from id2image_jax.losses._histogram import soft_histogram
from id2image_jax.losses._histogram import to_pixel_scale
from id2image_jax.losses._objective import objective
from id2image_jax.losses._terms import AUX_TERMS
from id2image_jax.losses._terms import DEFAULT_WEIGHTS
from id2image_jax.losses._terms import TERMS
from id2image_jax.losses._terms import Term
from id2image_jax.losses._terms import generator_image_histogram

__all__ = (
    'AUX_TERMS',
    'DEFAULT_WEIGHTS',
    'TERMS',
    'Term',
    'cosine_distance',
    'cosine_similarity',
    'generator_image_histogram',
    'histogram_loss',
    'identity_loss',
    'image_histogram',
    'image_soft_histogram',
    'landmark_loss',
    'objective',
    'soft_histogram',
    'to_pixel_scale',
)
