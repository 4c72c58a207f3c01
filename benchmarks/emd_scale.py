"""Scale of `metrics.histogram_emd` on stand-in images (no CelebA offline).

The paper's Table 1 reports histogram EMDs of 2.45-2.97 for 10-bin RGB
histograms without stating units. This prints the mean-histogram baseline
(every image's histogram against the set's mean histogram, the paper's
"Baseline" row) in bins, per channel, on the images that ship with
scikit-image:

  python benchmarks/emd_scale.py
"""

import json

import numpy as np
from skimage import data
from skimage import transform

from id2image_jax import losses
from id2image_jax import metrics


def baseline_emd(images, value_range):
  hist = np.asarray(losses.image_histogram(images, value_range=value_range))
  mean = np.broadcast_to(hist.mean(0, keepdims=True), hist.shape)
  emd = np.asarray(metrics.histogram_emd(hist, mean))  # Bins, channel mean.
  return {'n': len(images), 'channels': int(images.shape[-1]),
          'mean_bins_per_channel': round(float(emd.mean()), 3),
          'median_bins_per_channel': round(float(np.median(emd)), 3)}


def main():
  # skimage's LFW subset: 100 grey 25x25 face crops, then 100 non-faces.
  faces = data.lfw_subset()[:100, ..., None].astype(np.float32)
  photos = np.stack([
      transform.resize(getattr(data, name)()[..., :3], (224, 224),
                       anti_aliasing=True).astype(np.float32)
      for name in ('astronaut', 'chelsea', 'coffee', 'rocket',
                   'immunohistochemistry', 'cat', 'logo')])
  print(json.dumps({
      'lfw_subset_faces_grey': baseline_emd(faces, (0.0, 1.0)),
      'skimage_colour_photos': baseline_emd(photos, (0.0, 1.0)),
      'paper_table1_baseline': 2.97,
  }, indent=2))


if __name__ == '__main__':
  main()
