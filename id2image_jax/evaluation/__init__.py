"""Evaluation of descriptor inversion: paper 4.4 / Table 2, transfer attacks.

``id2image evaluate`` (`id2image_jax.jobs.evaluate`) inverts the same targets with each ablation arm
(ID only / ID + landmarks / ID + landmarks + histogram, `arms`), scores the
reconstructions against the originals (MSE, PSNR, SSIM, histogram EMD,
landmark NME) and as a template-inversion attack (identity cosine and TMR
at fixed FMR under the attacked and an evaluation encoder, `scores`), runs
the transfer matrix (invert with encoder A, verify with encoder B), and
writes a JSON + markdown report with an image grid and the paper's Fig. 9
style score distributions (`id2image_jax.reports.evaluation`). Where landmark and histogram targets
come from is described in `targets`.
"""

from id2image_jax.evaluation.arms import ArmPlan
from id2image_jax.evaluation.arms import parse_arm
from id2image_jax.evaluation.arms import plan_arms
from id2image_jax.evaluation.scores import appearance_metrics
from id2image_jax.evaluation.scores import attack_scores
from id2image_jax.evaluation.scores import count_pairs
from id2image_jax.evaluation.scores import identity_metrics
from id2image_jax.evaluation.scores import impostor_pair_scores
from id2image_jax.evaluation.scores import tmr_report

__all__ = [
    'ArmPlan', 'appearance_metrics', 'attack_scores', 'count_pairs',
    'identity_metrics',
    'impostor_pair_scores', 'parse_arm', 'plan_arms', 'tmr_report',
]
