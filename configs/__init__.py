"""The jobs' ``get_config()`` files, shipped as package data
(``id2image_jax.configs``): the CLI's defaults."""
