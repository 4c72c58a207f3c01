"""Draws docs/selfcheck.png (the README picture) from an invert run.

  id2image invert --out runs/invert
  python docs/make_selfcheck_figure.py runs/invert docs/selfcheck.png
  id2image invert --targets photos/ --set steps=60 --out runs/photos
  python docs/make_selfcheck_figure.py runs/photos docs/photos.png \
      --title 'id2image invert --targets photos/: real photos'


Reads the run's grid.png (cells are target | reconstruction) and
summary.json (per-target identity cosine and PSNR).
"""

import argparse
import json
import os

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('run', help='workdir of an `id2image invert` run')
  parser.add_argument('out', help='PNG to write')
  parser.add_argument('--title', default=(
      'id2image invert: targets from known latents, inverted from their '
      'descriptors alone'))
  parser.add_argument('--pad', type=int, default=2,
                      help='border of the run grid (outputs.image_grid)')
  args = parser.parse_args()
  grid = np.asarray(Image.open(os.path.join(args.run, 'grid.png')))
  with open(os.path.join(args.run, 'summary.json')) as f:
    summary = json.load(f)
  quality = summary['quality']
  rows = quality['rows']
  size = summary['config'].get('resolution') or (grid.shape[0] - 2 * args.pad)
  cell_w, pad = 2 * size, args.pad
  fig, axes = plt.subplots(2, len(rows), figsize=(1.5 * len(rows), 3.4),
                           squeeze=False)
  for i, _ in enumerate(rows):
    x = pad + i * (cell_w + pad)
    cell = grid[pad:pad + size, x:x + cell_w]
    axes[0, i].imshow(cell[:, :size])
    axes[1, i].imshow(cell[:, size:])
    label = f'cos {quality["id_cosine"][i]:.3f}'
    if 'psnr' in quality:
      label += f'\n{quality["psnr"][i]:.1f} dB'
    axes[1, i].set_xlabel(label, fontsize=8)
    for ax in axes[:, i]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0, 0].set_ylabel('target')
  axes[1, 0].set_ylabel('reconstruction')
  fig.suptitle(args.title, fontsize=9)
  fig.tight_layout()
  fig.savefig(args.out, dpi=80)


if __name__ == '__main__':
  main()
