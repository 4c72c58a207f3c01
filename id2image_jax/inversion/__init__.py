"""Batched, sharded, resumable inversion of per-target objectives.

The engine is generic: give it ``loss_fn(params, latent, target) -> (loss,
aux)`` for ONE target and it optimises N targets at once (``jax.vmap``, one
optimiser state per target), in chunks, sharded over all devices, with orbax
checkpoints. `objective.make_id2image_objective` builds the ID2image loss.
"""

from id2image_jax.inversion.engine import InversionResult
from id2image_jax.inversion.engine import InvertOptions
from id2image_jax.inversion.engine import Progress
from id2image_jax.inversion.engine import broadcast_init
from id2image_jax.inversion.engine import initial_latents
from id2image_jax.inversion.engine import invert
from id2image_jax.inversion.engine import map_targets
from id2image_jax.inversion.engine import prepare_chunk
from id2image_jax.inversion.engine import random_init
from id2image_jax.inversion.sharding import initialize_distributed
from id2image_jax.inversion.sharding import make_mesh
from id2image_jax.inversion.state import InversionState
from id2image_jax.inversion.state import init_state
from id2image_jax.inversion.step import default_optimizer
from id2image_jax.inversion.step import history_names
from id2image_jax.inversion.step import jit_step
from id2image_jax.inversion.step import make_eval_fn
from id2image_jax.inversion.step import make_step
from id2image_jax.inversion.step import make_step_fn
from id2image_jax.inversion.store import ResumeMismatchError

__all__ = [
    'InversionResult', 'InversionState', 'InvertOptions', 'Progress',
    'ResumeMismatchError',
    'broadcast_init', 'default_optimizer', 'history_names', 'init_state',
    'initial_latents', 'initialize_distributed', 'invert', 'jit_step', 'make_eval_fn',
    'make_mesh', 'make_step', 'make_step_fn', 'map_targets', 'prepare_chunk',
    'random_init',
]
