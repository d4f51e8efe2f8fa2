"""The erasure machine (Jo, Hoang & Periwal; Hoang, Song, Periwal & Jo, PRE 99, 042114, 2019).

With e^mu = sum_{i<j} w_ij s_i s_j + sum_i b_i s_i (= -E(s^mu)), the observed samples are
reweighted by rho_mu ∝ weight_mu exp(-(1 - eps) e^mu), and every parameter theta_k with
operator O_k (s_i for b_i, s_i s_j for w_ij) is updated by

    theta_k <- theta_k + alpha (<O_k>_rho - eps theta_k)

until it stops moving: the fixed point satisfies <O_k>_rho = eps theta_k. The update
contracts at least by (1 - alpha eps) per iteration, so with alpha = 0.1 and eps >= 0.4,
500 iterations bring the distance to the fixed point below 1e-8 of its start
(tests/test_inference.py checks the stationarity condition at the output).
All eps of the grid iterate together (one matrix product per step for the whole grid);
eps is chosen as the value that maximizes the data-averaged
-mean_mu e^mu under the inferred parameters; the chosen eps is reported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from isingjax.inference import common
from isingjax.models import IsingParams, flatten_params, unflatten_params

DEFAULT_EPS_GRID = tuple(float(x) for x in jnp.linspace(0.40, 0.90, 21))
# Above this many entries the [M, n(n+1)/2] operator matrix is not built (see `_make_ops`).
MAX_OPERATOR_ENTRIES = 2**25


def _make_ops(spins, num_eps):
    """Returns (energy_fn, means_fn) over theta = (b, w_{i<j}) stacked per eps [E, P].

    energy_fn(theta) -> e [E, M]; means_fn(rho [E, M]) -> <O>_rho [E, P]. With the
    operator matrix Phi [M, P] (s_i, then s_i s_j for i<j) both are single matrix
    products over all eps at once, one pass over Phi (~n^2 / 2 per sample) each; from the
    spins directly they cost ~E n per sample and pass. Phi is used when it fits in
    MAX_OPERATOR_ENTRIES and n <= 4 E (measured on CPU: 2x faster at n = 20, E = 5;
    3x slower at n = 100, E = 5).
    """
    m, n = spins.shape
    rows, cols = jnp.triu_indices(n, k=1)
    if m * (n + len(rows)) <= MAX_OPERATOR_ENTRIES and n <= 4 * num_eps:
        phi = jnp.concatenate([spins, spins[:, rows] * spins[:, cols]], axis=1)
        return (lambda theta: theta @ phi.T), (lambda rho: rho @ phi)

    def energy_one(t):
        params = unflatten_params(t, n)
        return 0.5 * jnp.sum((spins @ params.w) * spins, axis=1) + spins @ params.b

    def means_one(r):
        corr = (spins * r[:, None]).T @ spins
        return jnp.concatenate([r @ spins, corr[rows, cols]])

    energy_fn, means_fn = jax.vmap(energy_one), jax.vmap(means_one)
    return energy_fn, means_fn


def _iterate(ops, log_p, eps, theta0, alpha, num_iters):
    """num_iters updates theta <- theta + alpha (<O>_rho - eps theta) for every eps [E]."""
    energy_fn, means_fn = ops

    def step(theta, _):
        rho = jax.nn.softmax(log_p - (1.0 - eps)[:, None] * energy_fn(theta), axis=1)
        return theta + alpha * (means_fn(rho) - eps[:, None] * theta), None

    theta, _ = lax.scan(step, theta0, length=num_iters)
    return theta


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
    ops = _make_ops(spins, len(eps_grid))
    theta0 = jnp.broadcast_to(flatten_params(init), (len(eps_grid), n + n * (n - 1) // 2))
    theta = _iterate(ops, log_p, grid, theta0, alpha, num_iters)
    # -mean_mu e^mu: the data-averaged energy E under each eps's parameters [E].
    mean_energy = -ops[0](theta) @ p
    best = jnp.argmax(mean_energy)
    rho = jax.nn.softmax(log_p - (1.0 - grid[best]) * ops[0](theta[best][None])[0])
    stationarity = jnp.max(jnp.abs(ops[1](rho[None])[0] - grid[best] * theta[best]))
    params = unflatten_params(theta[best], n)
    info = {"eps": grid[best], "mean_energy": mean_energy, "stationarity": stationarity}
    return params, info | common.data_diagnostics(spins, p, total)
