"""Exact enumeration of all 2^n states of an Ising model (n <= 20).

The oracle of the project: log Z, moments, exact log-probabilities, exact i.i.d.
samples and KL divergences, computed by summing over every state.

The spins are split into a low half A (n_a = n // 2 spins) and a high half B, so the
log-weight of state (a, b) is

    L[b, a] = u[a] + v[b] + (S_B w_BA S_A^T)[b, a],

with u, v the within-half terms: the 2^n log-weights come from one [2^n_b, n_b] x
[n_b, n_a] x [n_a, 2^n_a] product instead of 2^n quadratic forms, and memory stays at
one [2^n_b, 2^n_a] matrix (4 MB at n = 20). Sums run per row and then across rows
(a two-level log-sum-exp), which keeps float32 results accurate to ~1e-6 relative.
Pass float64 parameters under `jax.enable_x64(True)` for float64 results.

State index convention: state k has s_i = +1 where bit i of k is set, else -1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from isingjax.models import IsingParams, Moments, check_params, energy

MAX_N = 20


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


def _halves(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2


def _log_weights(params: IsingParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """L [2^n_b, 2^n_a] = -E of state index b * 2^n_a + a, and the half-states S_A, S_B."""
    n_a, n_b = _halves(params.b.shape[0])
    dtype = params.w.dtype
    s_a = index_to_spins(jnp.arange(2**n_a, dtype=jnp.int32), n_a, dtype)
    s_b = index_to_spins(jnp.arange(2**n_b, dtype=jnp.int32), n_b, dtype)
    w_aa, w_bb, w_ba = params.w[:n_a, :n_a], params.w[n_a:, n_a:], params.w[n_a:, :n_a]
    u = 0.5 * jnp.sum((s_a @ w_aa) * s_a, axis=1) + s_a @ params.b[:n_a]
    v = 0.5 * jnp.sum((s_b @ w_bb) * s_b, axis=1) + s_b @ params.b[n_a:]
    return v[:, None] + u[None, :] + (s_b @ w_ba) @ s_a.T, s_a, s_b


# Every public function below checks its arguments in Python, then calls a jitted core:
# a second call with arguments of the same shapes runs compiled code.


@jax.jit
def _all_log_probs(params: IsingParams) -> jax.Array:
    log_w, _, _ = _log_weights(params)
    return (log_w - jax.nn.logsumexp(jax.nn.logsumexp(log_w, axis=1))).reshape(-1)


def all_log_probs(params: IsingParams) -> jax.Array:
    """log P(s) for every state, in index order: [2^n]."""
    _check_n(params, "all_log_probs")
    return _all_log_probs(params)


@jax.jit
def _log_partition(params: IsingParams) -> jax.Array:
    return jax.nn.logsumexp(jax.nn.logsumexp(_log_weights(params)[0], axis=1))


def log_partition(params: IsingParams) -> jax.Array:
    """log Z = log sum_s exp(-E(s)) by enumeration (n <= 20). Returns a scalar."""
    _check_n(params, "log_partition")
    return _log_partition(params)


def moments(params: IsingParams) -> Moments:
    """Exact means <s_i> [n] and correlations <s_i s_j> [n, n] (n <= 20)."""
    _check_n(params, "moments")
    return _moments(params)


@jax.jit
def _moments(params: IsingParams) -> Moments:
    log_w, s_a, s_b = _log_weights(params)
    p = jnp.exp(log_w - jax.nn.logsumexp(jax.nn.logsumexp(log_w, axis=1)))  # [2^n_b, 2^n_a]
    p_a, p_b = p.sum(axis=0), p.sum(axis=1)
    c_aa = (s_a * p_a[:, None]).T @ s_a
    c_bb = (s_b * p_b[:, None]).T @ s_b
    c_ba = s_b.T @ (p @ s_a)
    corr = jnp.block([[c_aa, c_ba.T], [c_ba, c_bb]])
    return Moments(means=jnp.concatenate([p_a @ s_a, p_b @ s_b]), correlations=corr)


def log_prob(params: IsingParams, spins: jax.Array) -> jax.Array:
    """Exact log P(s) = -E(s) - log Z for spins [..., n] (n <= 20); returns [...]."""
    _check_n(params, "log_prob")
    return _log_prob(params, spins)


@jax.jit
def _log_prob(params: IsingParams, spins: jax.Array) -> jax.Array:
    return -energy(params, spins) - _log_partition(params)


def sample(key: jax.Array, params: IsingParams, num_samples: int) -> jax.Array:
    """Exact i.i.d. samples by inverse-CDF over all states (n <= 20).

    The CDF is two-level (over rows of L, then within the chosen row), so states with
    probability far below float32 resolution of the total are still drawn correctly.

    Returns:
      [num_samples, n] float32 spins (±1).
    """
    _check_n(params, "sample")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise ValueError(
            f"exact.sample: num_samples must be a positive integer, got {num_samples!r}."
        )
    return _sample(key, params, num_samples=num_samples)


@functools.partial(jax.jit, static_argnames="num_samples")
def _sample(key: jax.Array, params: IsingParams, *, num_samples: int) -> jax.Array:
    n = params.b.shape[0]
    log_p = _all_log_probs(params).reshape(2 ** _halves(n)[1], -1)  # rows: chunks of states
    num_chunks, size = log_p.shape
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


@jax.jit
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
    return _kl_divergence(empirical_spins, params, weights)


@jax.jit
def _kl_divergence(empirical_spins, params, weights):
    w = jnp.ones(empirical_spins.shape[0]) if weights is None else jnp.asarray(weights)
    log_emp = empirical_log_probs(empirical_spins, w)
    log_model = _log_prob(params, empirical_spins)
    terms = jnp.where(w > 0, w * (log_emp - log_model), 0.0)
    return jnp.sum(terms) / jnp.sum(w)
