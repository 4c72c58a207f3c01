"""``python -m id2image_jax ...`` is the same as the ``id2image`` command."""

import sys

from id2image_jax.cli import entry

sys.exit(entry())
