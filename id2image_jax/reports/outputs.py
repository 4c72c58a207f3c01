"""Output helpers every report shares: images as uint8, strict JSON, plots.

`reports.inversion`, `reports.leakage`, `reports.evaluation` and
`reports.audit` write through these (they were in `reports.inversion`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[..., H, W, 3] floats in [-1, 1] -> uint8 [0, 255] (NaN -> 0)."""
  x = np.nan_to_num(np.asarray(images, np.float32), nan=-1.0)
  return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def json_safe(obj: Any) -> Any:
  """NaN/inf -> None, numpy -> Python, recursively (strict JSON)."""
  if isinstance(obj, Mapping):
    return {str(k): json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return json_safe(obj.tolist())
  if isinstance(obj, (np.integer, np.bool_)):
    return obj.item()
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  return obj


def pyplot():
  """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
