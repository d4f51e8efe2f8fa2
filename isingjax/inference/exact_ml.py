"""Exact maximum likelihood for n <= 20: the log-likelihood uses log Z by enumeration.

    -log L / W = -(sum_{i<j} w_ij <s_i s_j>_data + sum_i b_i <m_i>_data) + log Z(w, b)
                 + (l2 / 2) sum_{i != j} w_ij^2 + (l2_bias / 2) sum_i b_i^2,

whose gradient is <O>_model - <O>_data (+ penalty): the data enter only through their
weighted moments. Minimized with optax L-BFGS (or Adam) inside one jit.

Without a penalty (the default: maximum likelihood proper) the estimate diverges when a
moment of the data sits on the boundary of what a model can produce, e.g. an SK model at
beta = 1 with M = 100 samples of n = 20 spins; L-BFGS then runs to max_iter. Setting
`l2_per_sample` (as plm's default does) adds the penalty l2 = l2_per_sample / W, which
keeps the estimate finite and fades as the data grow.
"""

from __future__ import annotations

import jax.numpy as jnp

from isingjax import exact
from isingjax.inference import common, optim
from isingjax.models import IsingParams


def fit(
    spins,
    weights=None,
    *,
    l2: float | None = None,
    l2_per_sample: float = 0.0,
    l2_bias: float = 0.0,
    solver: str = "lbfgs",
    tol: float = 1e-5,
    max_iter: int = 300,
    learning_rate: float = 0.05,
) -> tuple[IsingParams, dict]:
    """Maximum-likelihood estimate from spins [M, n] (n <= 20) with optional weights [M].

    Args:
      l2: coupling penalty; None means l2_per_sample / (total weight).
      l2_bias: bias penalty.
      solver, tol, max_iter, learning_rate: see `optim.minimize`.
    """
    n = spins.shape[1]
    if n > exact.MAX_N:
        raise ValueError(
            f"exact_ml enumerates all 2^n states and needs n <= {exact.MAX_N}; got n = {n}. "
            "Use 'plm' or 'erasure' for larger models."
        )
    p, total = common.normalized_weights(spins, weights)
    l2 = l2_per_sample / jnp.maximum(total, 1e-12) if l2 is None else l2
    data = common.data_moments(spins, p)
    rows, cols = jnp.triu_indices(n, k=1)

    def unpack(x):
        w = jnp.zeros((n, n), x.dtype).at[rows, cols].set(x[n:])
        return IsingParams(w=w + w.T, b=x[:n])

    def objective(x):
        params = unpack(x)
        fit_term = jnp.sum(params.w * data.correlations) / 2 + params.b @ data.means
        penalty = 0.5 * l2 * jnp.sum(params.w**2) + 0.5 * l2_bias * jnp.sum(params.b**2)
        return exact.log_partition(params) - fit_term + penalty

    x0 = jnp.zeros(n + len(rows), spins.dtype)
    x, info = optim.minimize(
        objective, x0, solver=solver, tol=tol, max_iter=max_iter, learning_rate=learning_rate
    )
    info |= common.data_diagnostics(spins, p, total) | {"l2": jnp.asarray(l2)}
    return unpack(x), info
