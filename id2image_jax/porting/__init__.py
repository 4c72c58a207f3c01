"""Torch-free checkpoint reading and porting to Flax variables."""

from id2image_jax.porting import layout
from id2image_jax.porting.rules import PortingError
from id2image_jax.porting.rules import Rule
from id2image_jax.porting.rules import port
from id2image_jax.porting.rules import port_image_model
from id2image_jax.porting.rules import require_keys
from id2image_jax.porting.safe_load import CheckpointError
from id2image_jax.porting.safe_load import flatten_arrays
from id2image_jax.porting.safe_load import load as load_file

__all__ = [
    'CheckpointError', 'PortingError', 'Rule', 'flatten_arrays', 'layout',
    'load_file', 'port', 'port_image_model', 'require_keys',
]
