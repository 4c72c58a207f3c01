"""Non-ID leakage analysis (paper section 3): descriptor datasets, trained
heads and the Table-1 report."""

from id2image_jax.analysis.embed import embed_dataset
from id2image_jax.analysis.embed import encoder_embed_fn
from id2image_jax.analysis.embed import load_descriptors
from id2image_jax.analysis.embed import load_encoder
from id2image_jax.analysis.jobs import run_embed
from id2image_jax.analysis.jobs import run_leakage
from id2image_jax.analysis.train import fit
from id2image_jax.analysis.train import load_head
from id2image_jax.analysis.train import predict
from id2image_jax.analysis.train import save_head
from id2image_jax.analysis.train import train_head
from id2image_jax.analysis.train import train_id_to_latent

__all__ = [
    'embed_dataset', 'encoder_embed_fn', 'fit', 'load_descriptors',
    'load_encoder',
    'load_head', 'predict', 'run_embed', 'run_leakage', 'save_head',
    'train_head', 'train_id_to_latent',
]
