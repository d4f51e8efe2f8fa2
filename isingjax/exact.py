"""Exact enumeration of all 2^n states of an Ising model (n <= 20).

The oracle of the project: log Z, moments, exact log-probabilities, exact i.i.d.
samples and KL divergences, computed by summing over every state. States are
visited in chunks of `CHUNK` so memory stays bounded (2^20 states need a few MB),
with a log-sum-exp per chunk followed by a second level across chunks, which
keeps float32 sums accurate to ~1e-6 relative. Pass float64 parameters under
`jax.enable_x64(True)` for float64 results.

State index convention: state k has s_i = +1 where bit i of k is set, else -1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from isingjax.models import IsingParams, Moments, check_params, energy

MAX_N = 20
CHUNK = 4096  # states per chunk


def _check_n(params: IsingParams, fn: str) -> int:
    n = check_params(params)
    if n > MAX_N:
        raise ValueError(
            f"exact.{fn}: exact enumeration visits all 2^n states and is limited to "
            f"n <= {MAX_N}; got n = {n}. Use ij.metropolis for larger models."
        )
    return n


def index_to_spins(index: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
    """State indices [...] (int) -> spins [..., n] (±1); bit i set <=> s_i = +1."""
    bits = (index[..., None] >> jnp.arange(n, dtype=index.dtype)) & 1
    return (2 * bits - 1).astype(dtype)


def spins_to_index(spins: jax.Array) -> jax.Array:
    """Spins [..., n] (±1, n <= 30) -> state indices [...] int32 (inverse of index_to_spins)."""
    n = spins.shape[-1]
    bits = (spins > 0).astype(jnp.int32)
    return jnp.sum(bits << jnp.arange(n, dtype=jnp.int32), axis=-1)


def _chunks(n: int) -> tuple[int, int]:
    size = min(CHUNK, 2**n)
    return 2**n // size, size


def _chunk_states(c: jax.Array, n: int, size: int, dtype) -> jax.Array:
    return index_to_spins(c * size + jnp.arange(size, dtype=jnp.int32), n, dtype)


def all_log_probs(params: IsingParams) -> jax.Array:
    """log P(s) for every state, in index order: [2^n]."""
    n = _check_n(params, "all_log_probs")
    num_chunks, size = _chunks(n)

    def chunk_logits(c):
        return -energy(params, _chunk_states(c, n, size, params.w.dtype))

    logits = lax.map(chunk_logits, jnp.arange(num_chunks)).reshape(-1)
    return logits - jax.nn.logsumexp(jax.nn.logsumexp(logits.reshape(num_chunks, size), axis=1))


def log_partition(params: IsingParams) -> jax.Array:
    """log Z = log sum_s exp(-E(s)) by enumeration (n <= 20). Returns a scalar."""
    n = _check_n(params, "log_partition")
    num_chunks, size = _chunks(n)

    def chunk_lse(c):
        return jax.nn.logsumexp(-energy(params, _chunk_states(c, n, size, params.w.dtype)))

    return jax.nn.logsumexp(lax.map(chunk_lse, jnp.arange(num_chunks)))


def moments(params: IsingParams) -> Moments:
    """Exact means <s_i> [n] and correlations <s_i s_j> [n, n] (n <= 20)."""
    n = _check_n(params, "moments")
    num_chunks, size = _chunks(n)
    log_z = log_partition(params)

    def chunk_moments(c):
        states = _chunk_states(c, n, size, params.w.dtype)
        p = jnp.exp(-energy(params, states) - log_z)
        return p @ states, (states * p[:, None]).T @ states

    means, corr = lax.map(chunk_moments, jnp.arange(num_chunks))
    return Moments(means=means.sum(0), correlations=corr.sum(0))


def log_prob(params: IsingParams, spins: jax.Array) -> jax.Array:
    """Exact log P(s) = -E(s) - log Z for spins [..., n] (n <= 20); returns [...]."""
    _check_n(params, "log_prob")
    return -energy(params, spins) - log_partition(params)


def sample(key: jax.Array, params: IsingParams, num_samples: int) -> jax.Array:
    """Exact i.i.d. samples by inverse-CDF over all states (n <= 20).

    The CDF is two-level (over chunks, then within the chosen chunk), so states with
    probability far below float32 resolution of the total are still drawn correctly.

    Returns:
      [num_samples, n] float32 spins (±1).
    """
    n = _check_n(params, "sample")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise ValueError(
            f"exact.sample: num_samples must be a positive integer, got {num_samples!r}."
        )
    num_chunks, size = _chunks(n)
    log_p = all_log_probs(params).reshape(num_chunks, size)
    chunk_log_mass = jax.nn.logsumexp(log_p, axis=1)  # [num_chunks]
    chunk_cdf = jnp.cumsum(jnp.exp(chunk_log_mass - chunk_log_mass.max()))
    within_cdf = jnp.cumsum(jnp.exp(log_p - chunk_log_mass[:, None]), axis=1)  # [chunks, size]
    chunk_key, state_key = jax.random.split(key)
    u_chunk = jax.random.uniform(chunk_key, (num_samples,)) * chunk_cdf[-1]
    zeros = jnp.zeros(num_samples, jnp.int32)
    chunk = _search_rows(chunk_cdf[None, :], zeros, u_chunk)
    u_state = jax.random.uniform(state_key, (num_samples,)) * within_cdf[chunk, -1]
    index = chunk * size + _search_rows(within_cdf, chunk, u_state)
    return index_to_spins(index.astype(jnp.int32), n)


def _search_rows(cdf: jax.Array, rows: jax.Array, u: jax.Array) -> jax.Array:
    """For each k, the first j with cdf[rows[k], j] > u[k] (clipped to the last column).

    A vectorized binary search; unlike indexing `cdf[rows]` it never materializes a
    [num_samples, size] array. cdf: [R, size] non-decreasing rows; rows, u: [S].
    """
    size = cdf.shape[1]

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        right = cdf[rows, jnp.minimum(mid, size - 1)] <= u
        return jnp.where(right, mid + 1, lo), jnp.where(right, hi, mid)

    steps = max(1, size.bit_length())
    lo, _ = lax.fori_loop(0, steps, halve, (jnp.zeros_like(rows), jnp.full_like(rows, size)))
    return jnp.minimum(lo, size - 1)


def empirical_log_probs(spins: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """log of the empirical probability of each sample's state: [M] for spins [M, n].

    With weights [M] the empirical distribution is p(x) = sum_{mu: x_mu = x} w_mu / sum w.
    """
    index = spins_to_index(spins)
    w = jnp.ones(index.shape, jnp.float32) if weights is None else jnp.asarray(weights)
    order = jnp.argsort(index)
    sorted_index = index[order]
    cum = jnp.concatenate([jnp.zeros(1, w.dtype), jnp.cumsum(w[order])])
    lo = jnp.searchsorted(sorted_index, index, side="left")
    hi = jnp.searchsorted(sorted_index, index, side="right")
    return jnp.log(cum[hi] - cum[lo]) - jnp.log(cum[-1])


def kl_divergence(
    empirical_spins: jax.Array, params: IsingParams, weights: jax.Array | None = None
) -> jax.Array:
    """KL(p_emp || P) = sum_x p_emp(x) log(p_emp(x) / P(x)) of a sample set from the model.

    Args:
      empirical_spins: [M, n] spins (±1), n <= 20.
      params: the model.
      weights: optional [M] non-negative sample weights (zero weight = absent).

    Returns:
      Scalar KL divergence in nats.
    """
    n = _check_n(params, "kl_divergence")
    if empirical_spins.ndim != 2 or empirical_spins.shape[1] != n:
        raise ValueError(
            f"exact.kl_divergence: empirical_spins must have shape [M, {n}], "
            f"got {empirical_spins.shape}."
        )
    w = jnp.ones(empirical_spins.shape[0]) if weights is None else jnp.asarray(weights)
    log_emp = empirical_log_probs(empirical_spins, w)
    log_model = log_prob(params, empirical_spins)
    terms = jnp.where(w > 0, w * (log_emp - log_model), 0.0)
    return jnp.sum(terms) / jnp.sum(w)
