"""Shared by the TF.js parity tests (face-api.js, MobileFaceNet, GEAR).

The reference is TF.js itself (ports/tfjs_reference.mjs under node). The
tests skip only when node is missing; with node but without the packages
(`npm ci --prefix ports`) they fail with that command.
"""

import numpy as np
import PIL.Image
import pytest
import skimage.data

from ports import tfjs_reference


def require_node() -> None:
  if tfjs_reference.node_executable() is None:
    pytest.skip('node is not installed: the TF.js parity tests need node '
                f'and `{tfjs_reference.INSTALL}`')


def astronaut(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
  """A real face: skimage's astronaut, rows/cols `box`, resized, uint8."""
  top, left, bottom, right = box
  face = skimage.data.astronaut()[top:bottom, left:right]
  return np.asarray(PIL.Image.fromarray(face).resize((size, size),
                                                      PIL.Image.BILINEAR))


def faces(size: int, box: tuple[int, int, int, int], seed: int = 0
          ) -> np.ndarray:
  """float32 [2, size, size, 3] on 0..255: the astronaut and noise."""
  noise = np.random.default_rng(seed).uniform(0, 255, (size, size, 3))
  return np.stack([astronaut(size, box), noise]).astype(np.float32)


def assert_close(got, want, *, rtol: float, atol_frac: float,
                 what: str = '') -> float:
  """|got - want| <= atol_frac * max|want| + rtol * |want|, elementwise.

  The absolute part scales with the tensor's own magnitude, so one table
  serves probabilities, landmark fractions and logits in the tens.

  Returns:
    max |got - want| / max |want| (for the docs' error table).
  """
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  scale = float(np.abs(want).max())
  err = np.abs(got - want)
  bound = atol_frac * scale + rtol * np.abs(want)
  worst = float((err - bound).max())
  assert worst <= 0, (f'{what}: max |err| {err.max():.3g} exceeds the bound '
                      f'by {worst:.3g} (scale {scale:.3g})')
  return float(err.max() / scale)
