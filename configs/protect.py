"""``id2image protect``: what protecting or shrinking stored templates buys.

For each scheme setting (and the unprotected templates as the reference):
utility (protected vs protected verification of real pairs), attribute /
landmark / colour leakage of heads trained on the protected templates,
reconstruction success of the ID2image inversion through the scheme (fully
informed attacker, and one who guesses the key), and unlinkability between
two keys. One self-contained ``protect.html``, ``protect.json`` and a chart
of utility against reconstruction success::

  id2image protect --encoder dlib --data photos/ --key-seed 271828182845 \\
      --schemes partial:k=32,biohash:bits=64 --out runs/protect

``--schemes`` takes ``name:param=value,...`` (see
``id2image_jax.protection.SCHEMES``): partial:k=K, partial_random:k=K,
quantise:bits=8|4|1, projection[:dim=M], biohash:bits=B,
polyprotect:m=5,overlap=2[,coefficient_range=50], noise:scale=S, none.
Keys come from ``--key-seed`` (required when a scheme has a key) and are
never written to the report. Cost: each setting inverts ``targets`` people
for ``steps`` steps (twice for keyed schemes: with the key and with a
guessed one); on 2 CPU cores a 1024 px MobileStyleGAN step costs about 1.8 s
per target. ``--set targets=0`` skips reconstruction.
"""

import ml_collections

# Every scheme of issue 21 at two or more settings (the README run).
ALL_SCHEMES = ','.join((
    'partial:k=32', 'partial:k=64', 'partial_random:k=32',
    'partial_random:k=64', 'quantise:bits=8', 'quantise:bits=4',
    'quantise:bits=1', 'projection', 'projection:dim=64', 'biohash:bits=64',
    'biohash:bits=128', 'polyprotect:m=5,overlap=2',
    'polyprotect:m=5,overlap=4', 'noise:scale=0.5', 'noise:scale=1.0'))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.encoder = 'dlib'  # whose templates are protected
  c.eval_encoder = 'auto'  # the independent verifier ('auto': dlib->faceres, else faceres)
  c.generator = 'mobilestylegan'
  c.data = ''
  c.schemes = ALL_SCHEMES
  # The secret the keys derive from; None: only keyless schemes can run.
  # Never written to protect.html / protect.json.
  c.key_seed = None
  c.images = 200  # faces used (0: all), people with two photos first
  c.targets = 3  # people attacked per setting (0: no reconstruction)
  c.steps = 20  # attack steps (Adam, from w_avg)
  c.attack = 'gradient'  # 'gradient' (white-box) or 'nes' (scores only)
  c.nes_population = 4
  c.key_unknown = True  # also attack keyed schemes with a guessed key
  c.epochs = 10  # of the leakage heads (at least 400 steps, see audit)
  c.attributes = ()  # attribute names to measure (): all the data has
  c.attribute_nets = ('faceapi_age_gender', 'faceapi_expression')
  c.fmrs = (1e-2, 1e-3)
  c.linkability_bins = 10
  c.seed = 0  # of the run (face choice, heads, attacker's key guess)
  c.workdir = 'runs/protect'
  c.progress = True
  return c.lock()
