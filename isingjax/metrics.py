"""Errors of inferred parameters and of sample statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax.models import IsingParams, Moments, check_params, energy


def param_mse(estimate: IsingParams, truth: IsingParams) -> dict[str, jax.Array]:
    """Mean squared parameter errors.

    Returns:
      {'w': mean over the n(n-1)/2 pairs i<j, 'b': mean over the n biases,
       'all': mean over all n + n(n-1)/2 parameters}.
    """
    n = check_params(truth, name="truth")
    if check_params(estimate, name="estimate") != n:
        raise ValueError(f"param_mse: estimate has n={estimate.b.shape[0]}, truth has n={n}.")
    rows, cols = jnp.triu_indices(n, k=1)
    sq_w = jnp.sum((estimate.w[rows, cols] - truth.w[rows, cols]) ** 2)
    sq_b = jnp.sum((estimate.b - truth.b) ** 2)
    num_pairs = n * (n - 1) // 2
    return {"w": sq_w / num_pairs, "b": sq_b / n, "all": (sq_w + sq_b) / (num_pairs + n)}


def relative_error(estimate: IsingParams, truth: IsingParams) -> jax.Array:
    """Relative coupling error ||w_hat - w||_F / ||w||_F."""
    return jnp.linalg.norm(estimate.w - truth.w) / jnp.linalg.norm(truth.w)


def sample_moments(spins: jax.Array, weights: jax.Array | None = None) -> Moments:
    """Empirical means <s_i> [n] and correlations <s_i s_j> [n, n] of spins [M, n]."""
    spins = jnp.asarray(spins, jnp.float32)
    w = jnp.ones(spins.shape[0], jnp.float32) if weights is None else jnp.asarray(weights)
    p = w / jnp.sum(w)
    return Moments(means=p @ spins, correlations=(spins * p[:, None]).T @ spins)


def moment_errors(estimate: Moments, reference: Moments) -> dict[str, jax.Array]:
    """Errors of means and correlations (pairs i<j), e.g. samples vs exact moments.

    Returns:
      {'means_rmse', 'means_max', 'corr_rmse', 'corr_max'}: root-mean-square and max
      absolute differences.
    """
    n = reference.means.shape[-1]
    rows, cols = jnp.triu_indices(n, k=1)
    d_mean = estimate.means - reference.means
    d_corr = (estimate.correlations - reference.correlations)[rows, cols]
    return {
        "means_rmse": jnp.sqrt(jnp.mean(d_mean**2)),
        "means_max": jnp.max(jnp.abs(d_mean)),
        "corr_rmse": jnp.sqrt(jnp.mean(d_corr**2)),
        "corr_max": jnp.max(jnp.abs(d_corr)),
    }


def energy_stats(params: IsingParams, spins: jax.Array) -> dict[str, jax.Array]:
    """Mean and variance of E(s) under `params` over a sample set spins [M, n]."""
    e = energy(params, spins)
    return {"energy_mean": jnp.mean(e), "energy_var": jnp.var(e)}
