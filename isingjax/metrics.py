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
INT_MAX = jnp.iinfo(jnp.int32).max


def _indices(spins: jax.Array, fn: str) -> jax.Array:
    n = spins.shape[-1]
    if n > MAX_INDEX_N:
        raise ValueError(
            f"{fn}: states are compared as int32 indices, so n <= {MAX_INDEX_N}; got n = {n}."
        )
    return exact.spins_to_index(spins)


def _equal_rows(rows: jax.Array, x: jax.Array) -> jax.Array:
    """Which ±1 rows [K, n] equal x [n]: their dot product is n (exact in float32)."""
    return rows @ x == x.shape[-1]


def unique_fraction(spins: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Number of distinct states in spins [K, n] divided by K (with weights [K]: among
    the samples of positive weight)."""
    present = _weights(spins, weights) > 0
    if spins.shape[-1] > MAX_INDEX_N:  # no int32 index: compare rows (O(K^2 n))
        spins, k = jnp.asarray(spins), spins.shape[0]

        def seen_before(i):
            same = _equal_rows(spins, spins[i]) & present & (jnp.arange(k) < i)
            return jnp.any(same)

        first = present & ~jax.lax.map(seen_before, jnp.arange(k), batch_size=256)
        return jnp.sum(first) / jnp.sum(present)
    key = jnp.sort(jnp.where(present, _indices(spins, "unique_fraction"), INT_MAX))
    first = jnp.concatenate([jnp.ones(1, bool), key[1:] != key[:-1]]) & (key != INT_MAX)
    return jnp.sum(first) / jnp.sum(present)


def copy_fraction(
    generated: jax.Array, train: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """(Weighted) fraction of generated samples [K, n] whose state occurs in the training
    set [M, n]."""
    w = _weights(generated, weights)
    if generated.shape[-1] > MAX_INDEX_N:  # no int32 index: compare rows (O(K M n))
        train = jnp.asarray(train)
        copied = jax.lax.map(lambda x: jnp.any(_equal_rows(train, x)), generated, batch_size=256)
        return jnp.sum(w * copied) / jnp.sum(w)
    train_index = jnp.sort(_indices(train, "copy_fraction"))
    index = _indices(generated, "copy_fraction")
    pos = jnp.clip(jnp.searchsorted(train_index, index), 0, train_index.shape[0] - 1)
    return jnp.sum(w * (train_index[pos] == index)) / jnp.sum(w)


def expected_copy_fraction(params: IsingParams, train: jax.Array) -> jax.Array:
    """The copy fraction expected of exact samples: the true probability mass of the
    distinct training states (n <= 20)."""
    index = jnp.sort(_indices(train, "expected_copy_fraction"))
    first = jnp.concatenate([jnp.ones(1, bool), index[1:] != index[:-1]])
    probs = jnp.exp(exact.log_prob(params, exact.index_to_spins(index, train.shape[1])))
    return jnp.sum(jnp.where(first, probs, 0.0))


def mean_hamming_distance(spins: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean Hamming distance over the pairs of spins [K, n] (K >= 2), each pair (a, b)
    weighted by w_a w_b when weights [K] are given.

    For ±1 vectors d(a, b) = (n - a.b) / 2, and sum_{a != b} w_a w_b a.b = |sum_a w_a a|^2 -
    n sum_a w_a^2, so no K x K matrix is formed.
    """
    n = spins.shape[-1]
    w = _weights(spins, weights)
    total = w @ spins
    pair_dot = 0.5 * (total @ total - n * jnp.sum(w**2))
    pair_weight = 0.5 * (jnp.sum(w) ** 2 - jnp.sum(w**2))
    return (n * pair_weight - pair_dot) / (2 * pair_weight)


def _weights(spins: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.ones(spins.shape[0], jnp.float32)
    return jnp.asarray(weights, jnp.float32)


def weighted_quantiles(values: jax.Array, weights: jax.Array, qs) -> jax.Array:
    """The smallest value v with (weight of values <= v) >= q * total weight, for each q."""
    order = jnp.argsort(values)
    cum = jnp.cumsum(weights[order])
    pos = jnp.searchsorted(cum, jnp.asarray(qs) * cum[-1], side="left")
    return values[order][jnp.clip(pos, 0, values.shape[0] - 1)]


def energy_summary(
    params: IsingParams, spins: jax.Array, weights: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Weighted mean, variance and 5/50/95 % quantiles of E(s) under params."""
    w = _weights(spins, weights)
    e = energy(params, spins)
    p = w / jnp.sum(w)
    mean = p @ e
    q05, q50, q95 = weighted_quantiles(e, w, (0.05, 0.5, 0.95))
    return {
        "energy_mean": mean,
        "energy_var": p @ (e - mean) ** 2,
        "energy_q05": q05,
        "energy_q50": q50,
        "energy_q95": q95,
    }


def tail_log_prob(params: IsingParams, q: float = 0.05) -> jax.Array:
    """The log-probability below which the true model puts mass < q (n <= 20): states with
    log P(s) < tail_log_prob form the model's q-tail."""
    log_p = jnp.sort(exact.all_log_probs(params))
    cum = jnp.cumsum(jnp.exp(log_p))
    return log_p[jnp.clip(jnp.searchsorted(cum, q, side="left"), 0, log_p.shape[0] - 1)]


def tail_stats(
    spins: jax.Array, params: IsingParams, weights: jax.Array | None = None, q: float = 0.05
) -> dict[str, jax.Array]:
    """How far generated spins [K, n] reach into the true model's q-tail (n <= 20).

    Returns:
      {'mean_log_prob': weighted mean of the exact log P(s),
       'tail_fraction': weighted fraction of samples with log P(s) < tail_log_prob(q),
       'tail_mass': total exact probability of the distinct tail states reached}.
    """
    w = _weights(spins, weights)
    log_p = exact.log_prob(params, spins)
    in_tail = (log_p < tail_log_prob(params, q)) & (w > 0)
    index = _indices(spins, "tail_stats")
    # Distinct tail states: sort by (not in tail, index) and keep first occurrences.
    key = jnp.where(in_tail, index, INT_MAX)
    order = jnp.argsort(key)
    sorted_key = key[order]
    first = jnp.concatenate([jnp.ones(1, bool), sorted_key[1:] != sorted_key[:-1]])
    distinct = first & in_tail[order]
    return {
        "mean_log_prob": jnp.sum(w * log_p) / jnp.sum(w),
        "tail_fraction": jnp.sum(w * in_tail) / jnp.sum(w),
        "tail_mass": jnp.sum(jnp.where(distinct, jnp.exp(log_p[order]), 0.0)),
    }


def held_out_nll(estimate: IsingParams, spins: jax.Array) -> jax.Array:
    """Generalization error: mean negative log-likelihood of held-out spins [M, n] under
    the estimate, exact (log Z by enumeration) for n <= 20, else the mean negative
    pseudo-log-likelihood sum_i log(1 + exp(-2 s_i h_i))."""
    n = spins.shape[-1]
    if n <= exact.MAX_N:
        return -jnp.mean(exact.log_prob(estimate, spins))
    fields = spins @ estimate.w.T + estimate.b
    return jnp.mean(jnp.sum(jax.nn.softplus(-2.0 * spins * fields), axis=-1))
