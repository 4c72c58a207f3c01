"""Embed a face dataset with a face encoder: descriptors + labels (.npz).

Paper section 3: CelebA's official splits, embedded once per encoder; the
leakage job (configs/leakage.py) then reads ``out``.

  id2image embed --config configs/embed.py \
      --encoder checkpoints/vggface2 --set data.manual_dir=~/data/celeba

  # LFW or any folder of images (+ CSV of labels), no landmarks:
  id2image embed --config configs/embed.py:folder --encoder ckpt/arcface \
      --set data.root=~/data/mofa_test --set landmarks.enabled=False

Runs are resumable: rerun the same command after an interruption.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str = 'celeb_a') -> ml_collections.ConfigDict:
  """``arg``: 'celeb_a' (all three splits), 'lfw' or 'folder'."""
  config = ml_collections.ConfigDict()
  # 'dlib' (embedded), a public checkpoint file, KIND:PATH, or a converted
  # checkpoint directory (see id2image_jax.loading).
  config.encoder = config_dict.placeholder(str)
  # Used in `out`; default: the checkpoint directory's name.
  config.encoder_name = config_dict.placeholder(str)
  # Face box (top, left, bottom, right fractions) of the dataset's images fed
  # to the encoder's input spec; (0, 0, 1, 1): already aligned for it;
  # (): the encoder's own FFHQ box (for a copy made by `id2image align`).
  config.crop = (0.0, 0.0, 1.0, 1.0)
  config.dtype = 'float32'  # encoder compute dtype (or bfloat16)

  config.data = ml_collections.ConfigDict({
      'source': arg,
      # Comma-separated; each split gets its own file.
      'split': 'train,validation,test' if arg == 'celeb_a' else 'test',
      'data_dir': config_dict.placeholder(str),    # TFDS data dir
      'manual_dir': config_dict.placeholder(str),  # original files
      'mode': 'auto',                              # auto | tfds | manual
      'prepare': False,          # build the TFDS dataset from manual files
      'root': config_dict.placeholder(str),        # folder source
      'labels_csv': config_dict.placeholder(str),  # folder source
  })
  config.out = 'descriptors/{encoder}_{split}.npz'

  # Split over all local devices when there are several (a multiple of
  # their number).
  config.batch_size = 128
  # (height, width) to resize images to first; None keeps the stored size
  # (the encoder's input spec resizes for the network anyway).
  config.image_size = config_dict.placeholder(tuple)
  config.histogram_bins = 10
  # 68-point dlib pseudo ground truth (paper 3.3); needs `pip install
  # dlib-bin`. See id2image_jax/data/dlib_landmarks.py for the face box.
  config.landmarks = ml_collections.ConfigDict({
      'enabled': arg == 'celeb_a',
      'face_box': 'detector',  # detector | full
      'upsample': 1,
      'num_workers': 4,        # processes for dlib (it holds the GIL)
  })
  config.save_every = 50       # batches between partial saves
  config.overwrite = False     # False: keep finished files (rerun = resume)
  config.progress = True
  return config.lock()
