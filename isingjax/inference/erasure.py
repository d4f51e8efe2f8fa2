"""The erasure machine (Jo, Hoang & Periwal; Hoang, Song, Periwal & Jo, PRE 99, 042114, 2019).

With e^mu = sum_{i<j} w_ij s_i s_j + sum_i b_i s_i (= -E(s^mu)), the observed samples are
reweighted by rho_mu ∝ weight_mu exp(-(1 - eps) e^mu), and every parameter theta_k with
operator O_k (s_i for b_i, s_i s_j for w_ij) is updated by

    theta_k <- theta_k + alpha (<O_k>_rho - eps theta_k)

until it stops moving: the fixed point satisfies <O_k>_rho = eps theta_k. The update
contracts at least by (1 - alpha eps) per iteration, so with alpha = 0.1 and eps >= 0.4,
500 iterations bring the distance to the fixed point below 1e-8 of its start
(tests/test_inference.py checks the stationarity condition at the output).
eps is chosen on a grid (vmapped) as the value that maximizes the data-averaged
-mean_mu e^mu under the inferred parameters; the chosen eps is reported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from isingjax.inference import common
from isingjax.models import IsingParams

DEFAULT_EPS_GRID = tuple(float(x) for x in jnp.linspace(0.40, 0.90, 21))


def operator_means(params: IsingParams, spins, log_p, eps):
    """<s_i>_rho [n] and <s_i s_j>_rho [n, n] under rho ∝ p exp(-(1 - eps) e)."""
    e = -_energy(params, spins)
    rho = jax.nn.softmax(log_p - (1.0 - eps) * e)
    return rho @ spins, (spins * rho[:, None]).T @ spins


def _energy(params, spins):
    return -(0.5 * jnp.sum((spins @ params.w) * spins, axis=-1) + spins @ params.b)


def _fit_one_eps(spins, log_p, eps, init: IsingParams, alpha, num_iters):
    off_diagonal = 1.0 - jnp.eye(spins.shape[1], dtype=spins.dtype)

    def step(params, _):
        mean_s, mean_ss = operator_means(params, spins, log_p, eps)
        w = params.w + alpha * (mean_ss - eps * params.w) * off_diagonal
        b = params.b + alpha * (mean_s - eps * params.b)
        return IsingParams(w=w, b=b), None

    params, _ = lax.scan(step, init, length=num_iters)
    return params


def fit(
    spins: jax.Array,
    weights: jax.Array | None = None,
    *,
    eps_grid: tuple[float, ...] = DEFAULT_EPS_GRID,
    alpha: float = 0.1,
    num_iters: int = 500,
    init_scale: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[IsingParams, dict]:
    """Erasure-machine estimate from spins [M, n] with optional weights [M].

    Args:
      eps_grid: candidate eps values (all fitted in one vmapped call).
      alpha: step size of the update.
      num_iters: update iterations per eps.
      init_scale, key: start from Normal(0, init_scale^2) parameters drawn from `key`
        (default: zeros).

    Returns:
      (params at the chosen eps, info with 'eps', 'eps_grid', 'mean_energy' per eps,
       'stationarity' (max |<O>_rho - eps theta|)).
    """
    n = spins.shape[1]
    p, total = common.normalized_weights(spins, weights)
    log_p = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
    log_p = jnp.where(total > 0, log_p, 0.0)  # no data: uniform weights keep the result finite
    init = IsingParams(w=jnp.zeros((n, n), spins.dtype), b=jnp.zeros(n, spins.dtype))
    if init_scale > 0:
        if key is None:
            raise ValueError("erasure: init_scale > 0 needs a key for the random start.")
        w_key, b_key = jax.random.split(key)
        a = init_scale * jax.random.normal(w_key, (n, n), spins.dtype)
        init = common.params_from_matrix(a, init_scale * jax.random.normal(b_key, (n,)))
    grid = jnp.asarray(eps_grid, spins.dtype)
    fits = jax.vmap(lambda e: _fit_one_eps(spins, log_p, e, init, alpha, num_iters))(grid)
    # -mean_mu e^mu = data-averaged energy E under each eps's parameters [num_eps].
    mean_energy = jnp.sum(p * jax.vmap(lambda q: _energy(q, spins))(fits), axis=1)
    best = jnp.argmax(mean_energy)
    params = jax.tree.map(lambda x: x[best], fits)
    mean_s, mean_ss = operator_means(params, spins, log_p, grid[best])
    off = 1.0 - jnp.eye(n, dtype=spins.dtype)
    stationarity = jnp.maximum(
        jnp.max(jnp.abs(mean_s - grid[best] * params.b)),
        jnp.max(jnp.abs((mean_ss - grid[best] * params.w) * off)),
    )
    info = {"eps": grid[best], "mean_energy": mean_energy, "stationarity": stationarity}
    return params, info | common.data_diagnostics(spins, p, total)
