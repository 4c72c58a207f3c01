"""Non-ID leakage analysis (paper section 3) and the ID -> latent regressor.

* `analysis.train`: fitting heads with optax (one jit step, donated state).
* `analysis.leakage`: Table-1 measurements from descriptors, each head
  chosen on validation between the paper's MLP and a linear probe.
* `analysis.probe`: the linear probes (logistic / ridge regression on
  standardised descriptors, an L2 grid fitted at once).
* `analysis.regressor`: synthetic pairs for the ID -> latent network.
* `analysis.end_to_end`: that network trained through the frozen generator
  and encoder on real descriptors (the learned attack).
"""

from id2image_jax.analysis.train import fit
from id2image_jax.analysis.train import predict
from id2image_jax.analysis.train import train_head
from id2image_jax.analysis.train import train_id_to_latent

__all__ = ['fit', 'predict', 'train_head', 'train_id_to_latent']
