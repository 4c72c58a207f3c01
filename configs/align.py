"""The ``id2image align`` job: an FFHQ-aligned copy of a folder of faces.

Cuts every photo the way FFHQ (and so StyleGAN2 / MobileStyleGAN) frames
faces, with dlib's detector and 68 landmarks, and stores the 68 points in
the aligned images (the landmark pseudo-labels of the leakage analysis). A
CelebA-layout folder keeps its layout (annotation files copied), so the
copy feeds `id2image embed` / `leakage` / `evaluate` directly::

  id2image align --data ../shared/data/celeba-10k --out data/celeba-10k-ffhq
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.source = ''  # folder of photos, or a CelebA-layout folder
  c.out = ''
  c.size = 256  # side of the aligned squares, in pixels
  c.upsample = 1  # dlib detector upsampling (2 finds smaller faces)
  c.progress = True
  return c.lock()
