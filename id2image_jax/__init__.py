"""id2image_jax: invert face descriptors to faces and measure non-ID leakage.

A JAX/Flax reimplementation of ID2image (Li, Smith & Huber, 2023).
"""

__version__ = '0.1.0'
