"""Non-ID leakage from descriptors: heads, baselines, Table-1 report.

Paper section 3 / Table 1, on descriptors written by configs/embed.py:

  id2image leakage --config configs/leakage.py \
      --set encoders=vggface2,arcface --out runs/leakage

  # a quick check (2 epochs, 2000 training images):
  id2image leakage --config configs/leakage.py:quick --set encoders=dlib

  # Table 1 on a CelebA-layout folder aligned by `id2image align` (every
  # attribute, identity-disjoint splits, the image row trained shorter to
  # fit a 2-core CPU; see README "The paper on real faces"):
  id2image leakage --config configs/leakage.py:celeba \
      --set encoders=dlib,mobilefacenet \
      --set data.manual_dir=data/celeba-10k-ffhq --out runs/leakage_celeba

Hyper-parameters are the paper's (3.1-3.3). The histogram head's Adam
learning rate of 1e-6 is the paper's value, tiny for 20 epochs; raise it with
--set histogram.learning_rate=1e-3 if its loss does not move.
"""

import ml_collections
from ml_collections import config_dict

from id2image_jax import errors


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """``arg``: '' for the paper's settings, 'quick' for a smoke run,
  'celeba' for Table 1 on an aligned CelebA-layout folder on a CPU."""
  if arg not in ('', 'quick', 'celeba'):
    raise errors.UsageError(f"unknown variant {arg!r}: '', 'quick' or 'celeba'")
  quick = arg == 'quick'
  config = ml_collections.ConfigDict()
  config.workdir = 'runs/leakage'
  # Descriptor files: {encoder} and {split} are filled in.
  config.descriptors = 'descriptors/{encoder}_{split}.npz'
  config.encoders = 'vggface2,arcface'  # one Table-1 row each
  # The paper trains on 188k images (train + validation) and tests on the
  # rest.
  config.train_splits = 'train,validation'
  config.test_split = 'test'
  config.seed = 0
  config.max_train_examples = 2000 if quick else 0  # 0: all
  config.progress = True

  # 3.1: MLP 3 x 256, sigmoid, BCE, Adam 1e-3, 20 epochs (batch size not
  # given in the paper).
  config.attributes = ml_collections.ConfigDict({
      'enabled': True,
      'names': 'Smiling,Wearing_Hat,Eyeglasses',  # any CelebA attributes
      'hidden': (256, 256, 256),
      'input_norm': 'l2',
      'optimizer': 'adam', 'learning_rate': 1e-3,
      'batch_size': 256, 'num_epochs': 2 if quick else 20,
  })
  # 3.2: 10 bins per channel, MLP 2 x 8, softmax, MSE, Adam 1e-6, batch 32,
  # 20 epochs.
  config.histogram = ml_collections.ConfigDict({
      'enabled': True,
      'hidden': (8, 8),
      'input_norm': 'l2',
      'optimizer': 'adam', 'learning_rate': 1e-6,
      'batch_size': 32, 'num_epochs': 2 if quick else 20,
  })
  # 3.3: 68 dlib landmarks, MLP (two 256 hidden layers + 136 outputs), MSE,
  # SGD 1e-3, batch 16, 150 epochs.
  config.landmarks = ml_collections.ConfigDict({
      'enabled': True,
      'hidden': (256, 256),
      'input_norm': 'l2',
      'optimizer': 'sgd', 'learning_rate': 1e-3,
      'batch_size': 16, 'num_epochs': 2 if quick else 150,
      # Leave out images where dlib's detector found no face.
      'require_detection': True,
      # Coordinates are normalised to [0, 1]; the paper regressed pixels of
      # 224-px images. The heads' last layer works in, and the MSE is
      # measured in, such pixels so that SGD at 1e-3 behaves as it did there
      # (with [0, 1] units it barely moves; also used by the landmark CNN).
      'pixel_scale': 224.0,
  })
  # Issue 19: the paper's heads can understate what a descriptor gives
  # away. Each head is also fitted as a linear probe (logistic regression
  # for attributes, ridge for landmarks and histograms, on standardised
  # descriptors, its L2 strength chosen from l2_grid); the better of the
  # paper's MLP and the probe on `validation_split` is reported beside the
  # paper's MLP. The choice trains on train_splits without the validation
  # split, then the chosen head on all of train_splits; the test split
  # takes no part in it.
  config.probe = ml_collections.ConfigDict({
      'enabled': True,
      'validation_split': 'validation',
      # Per-example strengths (the losses are means): 1e-5 .. 10.
      'l2_grid': tuple(float(10.0 ** (e / 2)) for e in range(-10, 3)),
      'max_iter': 500,  # L-BFGS iterations (logistic)
  })
  # "From image" row: image -> landmarks CNN (5 conv + 2 FC), trained like
  # the landmark MLP; optionally an image -> attributes CNN of the same form.
  config.image_baseline = ml_collections.ConfigDict({
      'enabled': not quick,
      'landmarks': True,
      'attributes': False,
      'channels': (32, 64, 128, 256, 256),
      'hidden': (256,),  # width of the first FC layer
      'input_size': (128, 128),
      'optimizer': 'sgd', 'learning_rate': 1e-3,
      'batch_size': 16, 'num_epochs': 2 if quick else 150,
      'shuffle_buffer': 10_000,
      # Keep decoded training images in host RAM after the first epoch
      # (CelebA at 128x128: ~9 GB) rather than decoding 150 times.
      'cache_images': True,
  })
  # The images (same fields as configs/embed.py's data; split is set per
  # use). Needed by the image baseline and for the figures' backgrounds.
  config.data = ml_collections.ConfigDict({
      'source': 'celeb_a',
      'data_dir': config_dict.placeholder(str),
      'manual_dir': config_dict.placeholder(str),
      'mode': 'auto',
      'prepare': False,
      'root': config_dict.placeholder(str),
      'labels_csv': config_dict.placeholder(str),
  })
  if arg == 'celeba':
    config.encoders = 'dlib'
    config.workdir = 'runs/leakage_celeba'
    config.attributes.names = 'all'  # all 40 CelebA attributes
    # The image-based landmark CNN is the costly row on a CPU: fewer
    # epochs, stated in the report (the descriptor heads keep the paper's).
    # The paper's SGD 1e-3 diverges on this CNN in the first epoch (loss
    # NaN, measured on these aligned images); Adam 1e-3 trains it.
    config.image_baseline.num_epochs = 15
    config.image_baseline.optimizer = 'adam'
    config.image_baseline.cache_images = True
    # At the paper's 1e-6 the histogram head does not leave its start in
    # 20 epochs (EMD 4.46, worse than the mean histogram's 3.58, measured).
    config.histogram.learning_rate = 1e-3
  config.figures = ml_collections.ConfigDict({
      'num_examples': 6,
      'images': True,  # draw on the test images when they can be read
  })
  return config.lock()
