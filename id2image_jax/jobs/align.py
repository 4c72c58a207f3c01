"""``id2image align``: an FFHQ-aligned copy of a folder of faces
(`data.align.align_folder`). Config: configs/align.py."""

from __future__ import annotations

from typing import Any

from id2image_jax import errors
from id2image_jax.data import align
from id2image_jax.jobs import common


def run(config: Any) -> dict[str, int]:
  """Aligns ``config.source`` into ``config.out``; returns the counts."""
  if not config.source or not config.out:
    raise errors.UsageError(
        'set --data (a folder of photos or a CelebA-layout folder) and '
        '--out (where the aligned copy goes)')
  counts = align.align_folder(config.source, config.out, size=config.size,
                              upsample=config.upsample,
                              progress=config.progress)
  common.say(f'aligned {counts["aligned"]} image(s), kept '
             f'{counts["reused"]} from an earlier run, skipped '
             f'{counts["skipped"]} without a detectable face or unreadable '
             f'({align.SKIPPED_FILE} says which and why); landmarks in '
             f'{align.LANDMARK_FILE}; '
             f'-> {config.out}')
  return counts
