"""The jobs the command line runs: config in, files out.

`invert`, `embed`, `leakage`, `regressor`, `evaluate`, `align` and
`audit`, each a module with ``run(config)``, composed from the library and
`id2image_jax.loading`.
Jobs never import each other; what they share is in `jobs.common`.
"""
