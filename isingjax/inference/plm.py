"""Pseudo-likelihood maximization (Besag 1975; Aurell & Ekeberg, PRL 108, 090201, 2012).

Minimizes the weighted mean of the negative log conditional likelihoods

    L = (1/W) sum_mu weight_mu sum_i log(1 + exp(-2 s_i^mu h_i^mu)),  h_i = b_i + sum_j w_ij s_j,

plus the penalty (l2 / 2) sum_{i != j} w_ij^2 + (l2_bias / 2) sum_i b_i^2.

Either w is symmetric throughout (default), or each node i has its own row of couplings
(`symmetric=False`: n independent logistic regressions, the standard asymmetric PLM) and
w is their average (w + w^T) / 2 at the end.

Without a penalty the estimate diverges when the data are (nearly) separable, which for
SK models at beta = 1 happens already around M = 10 n. The default penalty is therefore
l2 = l2_per_sample / W (W = total weight = number of samples): a Gaussian prior on each
coupling whose weight does not grow with the data, so it fades as M grows. `l2=0` gives
plain PLM.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax.inference import common, optim
from isingjax.models import IsingParams

DEFAULT_L2_PER_SAMPLE = 1.0


def _neg_log_conditionals(params: IsingParams, spins) -> jax.Array:
    """-log P(s_i | s_rest) of every spin of spins [M, n] -> [M, n]; w may be asymmetric."""
    fields = spins @ params.w.T + params.b  # h_i^mu = b_i + sum_j w_ij s_j^mu
    return jax.nn.softplus(-2.0 * spins * fields)


def log_pseudo_likelihood(params: IsingParams, spins) -> jax.Array:
    """sum_i log P(s_i | s_rest) of every row of spins [M, n] -> [M]."""
    return -jnp.sum(_neg_log_conditionals(params, spins), axis=1)


def loss(params: IsingParams, spins, p, *, l2, l2_bias) -> jax.Array:
    """Penalized weighted pseudo-likelihood loss; p [M] sums to 1; w may be asymmetric.

    The weighted terms are summed elementwise (XLA's tree reduction), not as the float32
    product p @ terms: with the product the loss of a few thousand samples is too coarse
    for the line search, and L-BFGS stalls far from the optimum (n = 12, beta = 1,
    M = 6800: 170 iterations, 3.6 s, gradient norm 1e-3; summed, 31 iterations, 48 ms,
    gradient norm below tol).
    """
    data = jnp.sum(p[:, None] * _neg_log_conditionals(params, spins))
    return data + 0.5 * l2 * jnp.sum(params.w**2) + 0.5 * l2_bias * jnp.sum(params.b**2)


def fit(
    spins: jax.Array,
    weights: jax.Array | None = None,
    *,
    symmetric: bool = True,
    l2: float | None = None,
    l2_per_sample: float = DEFAULT_L2_PER_SAMPLE,
    l2_bias: float = 0.0,
    solver: str = "lbfgs",
    tol: float = 1e-5,
    max_iter: int = 500,
    learning_rate: float = 0.05,
) -> tuple[IsingParams, dict]:
    """Pseudo-likelihood estimate from spins [M, n] with optional weights [M].

    Args:
      symmetric: optimize a symmetric w (True) or n per-node rows averaged at the end.
      l2: coupling penalty; None means l2_per_sample / (total weight).
      l2_bias: bias penalty.
      solver, tol, max_iter, learning_rate: see `optim.minimize`.
    """
    n = spins.shape[1]
    p, total = common.normalized_weights(spins, weights)
    l2 = l2_per_sample / jnp.maximum(total, 1e-12) if l2 is None else l2
    mask = 1.0 - jnp.eye(n, dtype=spins.dtype)

    def unpack(x):
        a = x[: n * n].reshape(n, n) * mask
        return IsingParams(w=0.5 * (a + a.T) if symmetric else a, b=x[n * n :])

    def objective(x):
        return loss(unpack(x), spins, p, l2=l2, l2_bias=l2_bias)

    x0 = jnp.zeros(n * n + n, spins.dtype)
    x, info = optim.minimize(
        objective, x0, solver=solver, tol=tol, max_iter=max_iter, learning_rate=learning_rate
    )
    params = unpack(x)
    info |= common.data_diagnostics(spins, p, total) | {"l2": jnp.asarray(l2)}
    return common.params_from_matrix(params.w, params.b), info
