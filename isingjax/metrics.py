"""Errors of inferred parameters and of sample statistics, and checks of generated samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax import exact
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


MAX_INDEX_N = 30  # states are compared through int32 indices


def _indices(spins: jax.Array, fn: str) -> jax.Array:
    n = spins.shape[-1]
    if n > MAX_INDEX_N:
        raise ValueError(
            f"{fn}: states are compared as int32 indices, so n <= {MAX_INDEX_N}; got n = {n}."
        )
    return exact.spins_to_index(spins)


def unique_fraction(spins: jax.Array) -> jax.Array:
    """Number of distinct states in spins [K, n] divided by K."""
    index = jnp.sort(_indices(spins, "unique_fraction"))
    return (1 + jnp.sum(index[1:] != index[:-1])) / index.shape[0]


def copy_fraction(generated: jax.Array, train: jax.Array) -> jax.Array:
    """Fraction of generated samples [K, n] whose state occurs in the training set [M, n]."""
    train_index = jnp.sort(_indices(train, "copy_fraction"))
    index = _indices(generated, "copy_fraction")
    pos = jnp.clip(jnp.searchsorted(train_index, index), 0, train_index.shape[0] - 1)
    return jnp.mean(train_index[pos] == index)


def expected_copy_fraction(params: IsingParams, train: jax.Array) -> jax.Array:
    """The copy fraction expected of exact samples: the true probability mass of the
    distinct training states (n <= 20)."""
    index = jnp.sort(_indices(train, "expected_copy_fraction"))
    first = jnp.concatenate([jnp.ones(1, bool), index[1:] != index[:-1]])
    probs = jnp.exp(exact.log_prob(params, exact.index_to_spins(index, train.shape[1])))
    return jnp.sum(jnp.where(first, probs, 0.0))


def mean_hamming_distance(spins: jax.Array) -> jax.Array:
    """Mean Hamming distance over the K(K-1)/2 pairs of spins [K, n] (K >= 2).

    For ±1 vectors d(a, b) = (n - a.b) / 2 and sum_{i<j} a_i.a_j = (|sum_i a_i|^2 - K n) / 2.
    """
    k, n = spins.shape
    total = jnp.sum(spins, axis=0)
    pair_dot = 0.5 * (total @ total - k * n)
    num_pairs = k * (k - 1) / 2
    return (n * num_pairs - pair_dot) / (2 * num_pairs)
