"""Recipes: the library composed for a job, one floor above its parts.

::

  evaluation/                 attack success, arms, transfer, the audit
  recipes/                    this floor: glue that composes the library
  data/ inversion/ analysis/  (and protection/): data and targets, the
                              inversion engine, heads and their training
  models/ losses/ metrics/ preprocess/ protocols/ ...

A recipe takes loaded models, targets and trained heads (as callables) and
a config, and returns what a job reports; it reads no file. It may use any
unit below it; `evaluation` (and the jobs) use it, so it sits below them.

* `recipes.inversion`: the ID2image inversion of a set of targets as an
  invert config says (objective, initialisation, engine inputs), its
  renders, and their quality.
* `recipes.end_to_end`: the ID -> latent head's end-to-end training wired
  to a loaded generator and encoders (its step, batches, held-out scorers,
  the run's fingerprint and step timer).
"""
