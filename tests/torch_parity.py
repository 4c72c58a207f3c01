"""Shared helper of the encoder parity tests: run a torch reference on NHWC."""

import numpy as np


def torch_outputs(model, x):
  """(descriptor, intermediates) of a ports/ reference on NHWC numpy `x`.

  The reference takes NCHW tensors; 4-D intermediates come back as NHWC so
  they compare directly with the Flax module's.
  """
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    desc, inter = model.forward_with_intermediates(
        torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  out = {k: v.numpy() for k, v in inter.items()}
  out = {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v
         for k, v in out.items()}
  return desc.numpy(), out
