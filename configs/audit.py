"""The ``id2image audit`` job: what do stored templates of a face encoder
give away? One self-contained HTML report plus ``audit.json``.

On the shipped models (dlib attacked, MobileStyleGAN generator) and a folder
of faces, the quick budget runs in minutes on a 2-core CPU::

  id2image audit --encoder dlib --data photos/ --out runs/audit

``--data`` is a folder of photos (flat, or one subfolder per person), a
CelebA-layout folder (identities and attributes from its annotation files),
an aligned copy made by ``id2image align``, or ``tfds:lfw`` (a prepared TFDS
dataset). ``--budget`` quick | standard | full scales the work; any field of
the budget can be set on its own (``--set steps=100``). ``--protect
biohash:bits=64 --key-seed N`` adds "What protection buys": the schemes of
``id2image protect`` next to the unprotected templates, on the same faces.
"""

import ml_collections

# images: faces used (0: all); targets: inverted per attack; steps: white-box
# Adam steps; epochs: of the leakage heads; nes_population / nes_steps: the
# black-box attacker; nes_targets: targets it attacks.
BUDGETS = {
    'quick': dict(images=60, targets=3, steps=20, epochs=10,
                  nes_population=4, nes_steps=6, nes_targets=2),
    'standard': dict(images=600, targets=8, steps=60, epochs=20,
                     nes_population=8, nes_steps=40, nes_targets=4),
    'full': dict(images=0, targets=64, steps=300, epochs=40,
                 nes_population=32, nes_steps=300, nes_targets=16),
}


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.encoder = 'dlib'  # the encoder whose templates are audited
  # ONNX encoders: the input convention (guessed from the graph's input
  # shape and printed; README "Auditing your own model"). preset: 'arcface'
  # | 'facenet' | 'sface'; any other field ('' / () = the preset's) beats
  # it: size (h, w), crop (top, left, bottom, right), channel_order,
  # mean / std (3 values on 0..255).
  c.encoder_input = ml_collections.ConfigDict({
      'preset': '', 'size': (), 'crop': (), 'channel_order': '',
      'mean': (), 'std': ()})
  c.eval_encoder = 'auto'  # an independent verifier ('auto': see evaluate)
  c.generator = 'mobilestylegan'
  c.data = ''
  c.budget = 'quick'
  # 0 = the budget's value (BUDGETS above).
  for field in BUDGETS['quick']:
    c[field] = 0
  c.attribute_nets = ('faceapi_age_gender', 'faceapi_expression')
  # The attributes to audit, comma-separated ('Male,Smiling'); '': all
  # (the data set's annotations, or those the attribute nets give).
  c.attributes = ''
  c.fmrs = (1e-2, 1e-3)
  # "What protection buys": schemes as for `id2image protect` ('': none)
  # and the secret their keys derive from (never written).
  c.protect = ''
  c.key_seed = None
  c.seed = 0
  c.workdir = 'runs/audit'
  # Inversions save their running chunk this often (wall seconds; 0 = off):
  # a killed audit resumes from there (configs/invert.py).
  c.checkpoint_seconds = 300.0
  c.progress = True
  return c.lock()
