"""Linear probes: the reviewer's first try at what a descriptor gives away.

A logistic regression (binary attributes) or a ridge regression (landmarks,
histograms) on standardised descriptors, one fit per L2 strength of a grid,
so that the strength can be chosen on a validation split. The paper's MLP
heads can understate leakage that a linear read-out finds (issue 19); the
leakage report shows both and reports the better one on validation.

Both are trained with jax, no scikit-learn:

* logistic: mean binary cross-entropy + ``l2 / 2 * |w|^2`` (the intercept
  is not penalised), minimised by Newton's method with a line search, one
  problem per strength in one `jax.vmap`;
* ridge: mean squared error + ``l2 * |w|^2`` per output (intercept not
  penalised), in closed form for every strength from one eigendecomposition
  of the descriptors' covariance.

Strengths are per example (the losses are means), so one grid suits any
number of examples.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from id2image_jax import fields

Kind = Literal['logistic', 'ridge']

# 1e-5 .. 10 in steps of sqrt(10): from nearly unregularised to a probe that
# predicts little more than the mean.
L2_GRID = tuple(float(10.0 ** (e / 2)) for e in range(-10, 3))


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the probes are fitted.

  Attributes:
    l2_grid: the L2 strengths tried (per example, see the module docstring).
    max_iter: Newton steps at most (logistic).
    tol: stop when the objective is predicted to fall by less (logistic).
  """
  l2_grid: tuple[float, ...] = L2_GRID
  max_iter: int = 50
  tol: float = 1e-9

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> Settings:
    kwargs = fields.known_fields(cls, config)
    if 'l2_grid' in kwargs:
      kwargs['l2_grid'] = tuple(float(v) for v in kwargs['l2_grid'])
    settings = cls(**kwargs)
    if not settings.l2_grid or min(settings.l2_grid) <= 0:
      raise ValueError(f'probe l2_grid must be positive strengths, got '
                       f'{settings.l2_grid}')
    return settings


@dataclasses.dataclass(frozen=True)
class Linear:
  """A fitted probe: ``act(((x - mean) / scale) @ weights + bias)``.

  Attributes:
    kind: ``'logistic'`` (act: sigmoid) or ``'ridge'`` (act: identity).
    l2: its L2 strength.
    mean: [D] descriptor mean of the data it was fitted on.
    scale: [D] descriptor standard deviation (1 where constant).
    weights: [D, K] on standardised descriptors.
    bias: [K].
    out_shape: shape of one prediction (K elements).
  """
  kind: Kind
  l2: float
  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  out_shape: tuple[int, ...]

  def predict(self, descriptors: np.ndarray) -> np.ndarray:
    """[N, D] descriptors -> [N, *out_shape] probabilities or values."""
    x = (np.asarray(descriptors, np.float32) - self.mean) / self.scale
    z = x @ self.weights + self.bias
    if self.kind == 'logistic':
      z = np.asarray(jax.nn.sigmoid(z))
    return z.reshape((len(z),) + self.out_shape)


def standardiser(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], scale [D]) of the rows; scale 1 where a column is constant
  (it carries nothing, and must not divide by 0)."""
  x = np.asarray(descriptors, np.float64)
  scale = x.std(0)
  scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(x).max())),
                   scale, 1.0)
  return x.mean(0).astype(np.float32), scale.astype(np.float32)


def fit(kind: Kind, descriptors: np.ndarray, targets: np.ndarray,
        settings: Settings, *, l2_grid: Sequence[float] | None = None
        ) -> list[Linear]:
  """Fits one probe per L2 strength.

  Args:
    kind: ``'logistic'`` (targets 0/1, one column) or ``'ridge'``.
    descriptors: [N, D].
    targets: [N, *out_shape]; logistic: out_shape (1,) or ().
    settings: the grid and the optimiser's limits.
    l2_grid: strengths to fit instead of ``settings.l2_grid`` (a refit at
      the chosen one).

  Returns:
    One `Linear` per strength, in the grid's order.
  """
  x = np.asarray(descriptors, np.float32)
  y = np.asarray(targets, np.float32)
  if len(x) != len(y) or len(x) == 0:
    raise ValueError(f'{len(x)} descriptors but {len(y)} targets')
  grid = tuple(float(v) for v in (l2_grid or settings.l2_grid))
  mean, scale = standardiser(x)
  xs = (x - mean) / scale
  out_shape = y.shape[1:]
  flat = y.reshape(len(y), -1)
  if kind == 'logistic':
    if flat.shape[1] != 1:
      raise ValueError(f'a logistic probe predicts one attribute, got '
                       f'targets of shape {y.shape}')
    w, b = logistic_path(xs, flat[:, 0], grid, max_iter=settings.max_iter,
                         tol=settings.tol)
    w, b = w[..., None], b[..., None]
  elif kind == 'ridge':
    w, b = ridge_path(xs, flat, grid)
  else:
    raise ValueError(f"unknown probe kind {kind!r}: 'logistic' or 'ridge'")
  w, b = np.asarray(w), np.asarray(b)
  return [Linear(kind, l2, mean, scale, w[i], b[i], out_shape)
          for i, l2 in enumerate(grid)]


def _padded_rows(n: int) -> int:
  """Rows the logistic fit runs on: a power of two (at least 64), so
  that fits on slightly different row counts (the choice's, the refit's,
  the next attribute's) share one compiled program."""
  return max(64, 1 << (int(n) - 1).bit_length())


def logistic_path(x: chex.Array, y: chex.Array, l2_grid: Sequence[float],
                  *, max_iter: int = 50, tol: float = 1e-9
                  ) -> tuple[jax.Array, jax.Array]:
  """L2-regularised logistic regression for every strength.

  Minimises ``mean(bce(x @ w + b, y)) + l2 / 2 * |w|^2`` by Newton's
  method with a backtracking line search, from w = 0 and b at the log-odds
  of y, every strength at once (`jax.vmap`). With a few hundred inputs the
  Hessian is small, and Newton needs ~10 steps where L-BFGS needed hundreds
  (measured on 7,688 dlib descriptors: 34 s per grid with optax's L-BFGS).

  Args:
    x: [N, D] (standardised) inputs.
    y: [N] labels in {0, 1}.
    l2_grid: [L] strengths.
    max_iter: Newton steps at most.
    tol: stop once half the squared Newton decrement (the predicted fall
      of the objective) is below this.

  Returns:
    (weights [L, D], biases [L]).
  """
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.float32)
  chex.assert_rank([x, y], [2, 1])
  # Zero rows of weight 0 pad to a shared shape; the mean is over the
  # real rows only.
  pad = _padded_rows(len(x)) - len(x)
  weight = np.concatenate([np.ones(len(x)), np.zeros(pad)]) / len(x)
  x1 = np.pad(np.concatenate([x, np.ones((len(x), 1), np.float32)], 1),
              ((0, pad), (0, 0)))  # the bias is the last weight
  w = _logistic_path(x1, np.pad(y, (0, pad)), weight.astype(np.float32),
                     jnp.asarray(l2_grid, jnp.float32), int(max_iter),
                     float(tol))
  return w[:, :-1], w[:, -1]


@functools.partial(jax.jit, static_argnums=(4, 5))
def _logistic_path(x1, y, weight, l2s, max_iter, tol):
  dim = x1.shape[1]
  penalised = jnp.ones(dim).at[-1].set(0.0)  # not the bias
  rate = jnp.clip(jnp.sum(weight * y), 1e-6, 1 - 1e-6)
  start = jnp.zeros(dim).at[-1].set(jnp.log(rate) - jnp.log1p(-rate))

  def solve(l2):
    def loss(w):
      return (jnp.sum(weight * optax.sigmoid_binary_cross_entropy(
          x1 @ w, y)) + 0.5 * l2 * jnp.sum(penalised * w * w))

    def newton(carry):
      w, count, _ = carry
      p = jax.nn.sigmoid(x1 @ w)
      grad = x1.T @ (weight * (p - y)) + l2 * penalised * w
      # A little on the diagonal keeps the bias's curvature above 0 when
      # the data are separable (p -> 0 or 1).
      hess = ((x1.T * (weight * p * (1 - p))) @ x1
              + jnp.diag(l2 * penalised + 1e-7))
      step = jax.scipy.linalg.solve(hess, grad, assume_a='pos')
      decrement = grad @ step
      value = loss(w)
      size = jax.lax.while_loop(
          lambda t: (loss(w - t * step) > value - 0.25 * t * decrement)
          & (t > 1e-4), lambda t: 0.5 * t, 1.0)
      return w - size * step, count + 1, decrement

    def going(carry):
      _, count, decrement = carry
      return (count < max_iter) & (0.5 * decrement > tol)

    w, _, _ = jax.lax.while_loop(going, newton, (start, 0, jnp.inf))
    return w

  return jax.vmap(solve)(l2s)


def ridge_path(x: chex.Array, y: chex.Array, l2_grid: Sequence[float]
               ) -> tuple[jax.Array, jax.Array]:
  """Ridge regression for every strength, in closed form.

  Minimises ``mean(|y - x @ w - b|^2) + l2 * |w|^2`` per output column:
  with x centred, ``w = (x^T x / N + l2 I)^-1 x^T (y - mean y) / N`` and
  ``b = mean y - mean x @ w``; one eigendecomposition of ``x^T x / N``
  serves every strength.

  Args:
    x: [N, D] (standardised) inputs.
    y: [N, K] targets.
    l2_grid: [L] strengths.

  Returns:
    (weights [L, D, K], biases [L, K]).
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  chex.assert_rank([x, y], 2)
  return _ridge_path(x, y, jnp.asarray(l2_grid, jnp.float32))


@jax.jit
def _ridge_path(x, y, l2s):
  x_mean, y_mean = x.mean(0), y.mean(0)
  xc, yc = x - x_mean, y - y_mean
  n = x.shape[0]
  eigval, eigvec = jnp.linalg.eigh(xc.T @ xc / n)
  # Rounding can leave tiny negative eigenvalues of a singular covariance.
  eigval = jnp.maximum(eigval, 0.0)
  projected = eigvec.T @ (xc.T @ yc / n)  # [D, K]
  # Per strength: w_l = V diag(1 / (s + l2_l)) V^T x^T y / N.
  w = jnp.einsum('de,lek->ldk', eigvec,
                 projected[None] / (eigval[None, :, None]
                                    + l2s[:, None, None]))
  b = y_mean[None] - jnp.einsum('d,ldk->lk', x_mean, w)
  return w, b
