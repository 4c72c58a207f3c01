"""torch-compatible layers agree with torch.nn on awkward sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from id2image_jax.models import nn as tnn

torch = pytest.importorskip('torch')
F = torch.nn.functional

pytestmark = pytest.mark.torch


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize('size,k,s,p,ceil', [
    (13, 3, 2, 0, True), (13, 3, 2, 0, False), (14, 3, 2, 1, True),
    (112, 3, 2, 1, False), (7, 2, 2, 0, True), (6, 3, 2, 1, True)])
def test_pools_match_torch(size, k, s, p, ceil):
  x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(
      np.float32)
  got = tnn.max_pool2d(jnp.asarray(x), k, stride=s, padding=p, ceil_mode=ceil)
  want = _nhwc(F.max_pool2d(_nchw(x), k, s, p, ceil_mode=ceil))
  np.testing.assert_allclose(got, want, rtol=0, atol=0)
  for include in (True, False):
    got = tnn.avg_pool2d(jnp.asarray(x), k, stride=s, padding=p,
                         ceil_mode=ceil, count_include_pad=include)
    want = _nhwc(F.avg_pool2d(_nchw(x), k, s, p, ceil_mode=ceil,
                              count_include_pad=include))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_strided_conv_pads_like_torch():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 9, 10, 4)).astype(np.float32)
  w = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
  b = rng.normal(size=(6,)).astype(np.float32)
  layer = tnn.Conv2d(6, 3, stride=2, padding=1)
  params = {'params': {'conv': {'kernel': w.transpose(2, 3, 1, 0),
                                'bias': b}}}
  got = layer.apply(params, jnp.asarray(x))
  want = _nhwc(F.conv2d(_nchw(x), torch.from_numpy(w), torch.from_numpy(b),
                        stride=2, padding=1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prelu_and_batchnorm_match_torch():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
  slope = rng.uniform(size=5).astype(np.float32)
  got = tnn.PReLU(5).apply({'params': {'negative_slope': slope}}, x)
  want = _nhwc(F.prelu(_nchw(x), torch.from_numpy(slope)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  mean, var, scale, bias = (rng.uniform(0.5, 2, size=5).astype(np.float32)
                            for _ in range(4))
  variables = {'params': {'bn': {'scale': scale, 'bias': bias}},
               'batch_stats': {'bn': {'mean': mean, 'var': var}}}
  got = tnn.BatchNorm(epsilon=2e-5).apply(variables, x)
  want = _nhwc(F.batch_norm(_nchw(x), *(torch.from_numpy(a) for a in
                                        (mean, var, scale, bias)),
                            training=False, eps=2e-5))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_global_avg_pool_shape():
  assert tnn.global_avg_pool(jnp.ones((2, 7, 7, 8))).shape == (2, 8)
  assert jax.jit(tnn.global_avg_pool)(jnp.ones((1, 3, 3, 2))).shape == (1, 2)
