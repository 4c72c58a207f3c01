"""Sharding over 8 (fake CPU) devices equals the 1-device run.

XLA fixes the number of host devices when the backend starts, so the check
runs in a fresh interpreter with ``--xla_force_host_platform_device_count=8``.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

_ROOT = pathlib.Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent("""
    import json
    import chex, jax, numpy as np, optax
    jax.config.update('jax_debug_key_reuse', True)
    jax.config.update('jax_default_matmul_precision', 'highest')
    from id2image_jax import inversion
    from id2image_jax.inversion import sharding
    import inversion_toy as toy

    assert jax.device_count() == 8, jax.devices()
    out = {}
    params = toy.make_params()
    targets, _ = toy.make_targets(12, params=params)
    latents = toy.init_latents(12)
    tx = optax.adam(0.05)
    kw = dict(init=latents, steps=6, chunk_size=8, tx=tx, progress=False)
    mesh8 = inversion.make_mesh()
    mesh1 = inversion.make_mesh(devices=jax.devices()[:1])

    # The step keeps the state split over the 8 devices, traced once.
    chex.clear_trace_counter()
    step = inversion.jit_step(chex.assert_max_traces(
        inversion.make_step_fn(toy.objective, tx, mesh=mesh8), n=1))
    rows = slice(0, 8)
    st = inversion.init_state(
        tx, sharding.to_global({'w': latents['w'][rows]}, mesh8),
        active=sharding.to_global(np.ones(8, bool), mesh8), key=None,
        history_names=('loss', 'id', 'prior'), history_len=6)
    st = sharding.to_global(st, mesh8)
    p = sharding.to_global(params, mesh8, replicate=True)
    t = sharding.to_global(jax.tree.map(lambda x: x[rows], targets), mesh8)
    for _ in range(3):
      st, metrics = step(st, p, t)
    shards = st.latents['w'].addressable_shards
    out['latent_shards'] = sorted({tuple(s.data.shape) for s in shards})
    out['latent_devices'] = len(st.latents['w'].sharding.device_set)
    out['opt_devices'] = len(jax.tree.leaves(st.opt_state)[1]
                             .sharding.device_set)
    out['loss_devices'] = len(metrics['loss'].sharding.device_set)

    r8 = toy.invert(toy.objective, params, targets, mesh=mesh8, **kw)
    r1 = toy.invert(toy.objective, params, targets, mesh=mesh1, **kw)
    out['max_diff'] = max(
        float(np.max(np.abs(r8.latents['w'] - r1.latents['w']))),
        float(np.max(np.abs(r8.history['loss'] - r1.history['loss']))))
    out['done'] = int(r8.done.sum())

    # Resume mid-chunk from a sharded orbax checkpoint.
    import tempfile
    workdir = tempfile.mkdtemp()
    class Stop(Exception):
      pass
    def stop(p):
      if p.chunk == 1 and p.step == 4:
        raise Stop
    try:
      toy.invert(toy.objective, params, targets, mesh=mesh8,
                 workdir=workdir, checkpoint_every=3, log_every=1,
                 callback=stop, **kw)
    except Stop:
      pass
    again = toy.invert(toy.objective, params, targets, mesh=mesh8,
                       workdir=workdir, checkpoint_every=3, **kw)
    out['resumed_steps'] = again.stats['steps_run']
    out['resume_diff'] = float(np.max(np.abs(again.latents['w']
                                             - r8.latents['w'])))
    try:
      toy.invert(toy.objective, params, targets, mesh=mesh8,
                 **dict(kw, chunk_size=12))
    except ValueError as e:
      out['chunk_error'] = str(e)
    print('RESULT' + json.dumps(out))
""")


def test_eight_devices_match_one():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=8')
  env['PYTHONPATH'] = os.pathsep.join(
      [str(_ROOT), str(_ROOT / 'tests'), env.get('PYTHONPATH', '')])
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, '-c', _SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  out = json.loads(line[len('RESULT'):])
  # 8 targets over 8 devices: one [1, latent_dim] shard each.
  assert out['latent_shards'] == [[1, 8]]
  assert out['latent_devices'] == out['opt_devices'] == 8
  assert out['loss_devices'] == 8
  assert out['done'] == 12
  # Same per-target maths, different device placement: float32 noise only.
  assert out['max_diff'] < 1e-5
  assert out['resumed_steps'] == (6 - 3)
  assert out['resume_diff'] == 0.0
  assert 'multiple of the number of devices (8)' in out['chunk_error']
  assert 'try 8 or 16' in out['chunk_error']
