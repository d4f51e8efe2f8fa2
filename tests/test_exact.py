import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import isingjax as ij
from isingjax import exact
from tests.reference import brute_force


def test_two_spins_closed_form():
    # Z = sum over s1,s2 of exp(J s1 s2 + h1 s1 + h2 s2), written out term by term.
    j, h1, h2 = 0.7, 0.3, -0.2
    params = ij.IsingParams(w=jnp.array([[0.0, j], [j, 0.0]]), b=jnp.array([h1, h2]))
    terms = {
        (1, 1): np.exp(j + h1 + h2),
        (1, -1): np.exp(-j + h1 - h2),
        (-1, 1): np.exp(-j - h1 + h2),
        (-1, -1): np.exp(j - h1 - h2),
    }
    z = sum(terms.values())
    np.testing.assert_allclose(exact.log_partition(params), np.log(z), rtol=1e-6)
    mom = exact.moments(params)
    m1 = (terms[1, 1] + terms[1, -1] - terms[-1, 1] - terms[-1, -1]) / z
    c12 = (terms[1, 1] + terms[-1, -1] - terms[1, -1] - terms[-1, 1]) / z
    np.testing.assert_allclose(mom.means[0], m1, atol=1e-6)
    np.testing.assert_allclose(mom.correlations[0, 1], c12, atol=1e-6)
    np.testing.assert_allclose(jnp.diag(mom.correlations), 1.0, atol=1e-6)


def test_three_independent_spins_closed_form():
    b = np.array([0.5, -1.0, 0.2])
    params = ij.IsingParams(w=jnp.zeros((3, 3)), b=jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(
        exact.log_partition(params), np.sum(np.log(2 * np.cosh(b))), rtol=1e-6
    )
    mom = exact.moments(params)
    np.testing.assert_allclose(mom.means, np.tanh(b), atol=1e-6)
    np.testing.assert_allclose(mom.correlations[0, 2], np.tanh(b[0]) * np.tanh(b[2]), atol=1e-6)


def test_three_spin_ferromagnet_closed_form():
    # Uniform coupling J, no field: aligned states have weight e^{3J}, the other six e^{-J}.
    j = 0.4
    w = j * (jnp.ones((3, 3)) - jnp.eye(3))
    params = ij.IsingParams(w=w, b=jnp.zeros(3))
    z = 2 * np.exp(3 * j) + 6 * np.exp(-j)
    np.testing.assert_allclose(exact.log_partition(params), np.log(z), rtol=1e-6)
    np.testing.assert_allclose(
        exact.moments(params).correlations[0, 1],
        (2 * np.exp(3 * j) - 2 * np.exp(-j)) / z,
        atol=1e-6,
    )


@pytest.mark.parametrize("n", [8, 9])
def test_against_numpy_loop(n):
    params = ij.sk_model(jax.random.key(1), n, beta=1.2, bias_std=0.5)
    log_z, probs, states = brute_force(params.w, params.b)
    np.testing.assert_allclose(exact.log_partition(params), log_z, rtol=1e-6)
    mom = exact.moments(params)
    np.testing.assert_allclose(mom.means, probs @ states, atol=2e-6)
    np.testing.assert_allclose(mom.correlations, (states * probs[:, None]).T @ states, atol=2e-6)
    spins = jnp.asarray(states[:10], jnp.float32)
    np.testing.assert_allclose(exact.log_prob(params, spins), np.log(probs[:10]), atol=2e-5)


def test_chunked_enumeration_n16_matches_numpy():
    # n = 16 is enumerated as 2^8 x 2^8 half-states: checks the index bookkeeping.
    params = ij.sk_model(jax.random.key(2), 16, beta=1.0, bias_std=0.3)
    log_z, probs, states = brute_force(params.w, params.b)
    np.testing.assert_allclose(exact.log_partition(params), log_z, rtol=1e-6)
    np.testing.assert_allclose(exact.moments(params).means, probs @ states, atol=1e-5)
    # all_log_probs is in index order (bit i set <=> s_i = +1).
    idx = np.asarray(exact.spins_to_index(jnp.asarray(states, jnp.float32)))
    np.testing.assert_allclose(np.exp(exact.all_log_probs(params))[idx], probs, atol=1e-6)


def test_index_roundtrip():
    idx = jnp.arange(2**6, dtype=jnp.int32)
    np.testing.assert_array_equal(exact.spins_to_index(exact.index_to_spins(idx, 6)), idx)


def test_exact_sample_chi_square():
    params = ij.sk_model(jax.random.key(3), 6, beta=1.0, bias_std=0.3)
    _, probs, states = brute_force(params.w, params.b)
    samples = exact.sample(jax.random.key(4), params, 50_000)
    assert samples.dtype == jnp.float32 and set(np.unique(samples)) == {-1.0, 1.0}
    counts = np.bincount(np.asarray(exact.spins_to_index(samples)), minlength=64)
    expected = probs[np.argsort(np.asarray(exact.spins_to_index(jnp.asarray(states))))] * 50_000
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_exact_sample_deterministic_and_key_dependent():
    params = ij.sk_model(jax.random.key(3), 5, beta=1.0)
    a = exact.sample(jax.random.key(7), params, 100)
    np.testing.assert_array_equal(a, exact.sample(jax.random.key(7), params, 100))
    assert not np.array_equal(a, exact.sample(jax.random.key(8), params, 100))


def test_kl_divergence_against_numpy():
    params = ij.sk_model(jax.random.key(5), 6, beta=1.0, bias_std=0.2)
    _, probs, states = brute_force(params.w, params.b)
    samples = np.asarray(exact.sample(jax.random.key(6), params, 300))
    weights = np.linspace(0.0, 2.0, 300)
    for wts in (None, weights):
        p_emp = {}
        for s, wt in zip(samples, np.ones(300) if wts is None else wts, strict=True):
            p_emp[tuple(s)] = p_emp.get(tuple(s), 0.0) + wt
        total = sum(p_emp.values())
        lookup = {tuple(s): p for s, p in zip(states, probs, strict=True)}
        expected = sum(c / total * np.log(c / total / lookup[k]) for k, c in p_emp.items() if c > 0)
        got = exact.kl_divergence(jnp.asarray(samples), params, None if wts is None else weights)
        np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_kl_of_full_distribution_is_zero():
    params = ij.sk_model(jax.random.key(7), 5, beta=1.0, bias_std=0.2)
    states = exact.index_to_spins(jnp.arange(32), 5)
    probs = jnp.exp(exact.all_log_probs(params))
    np.testing.assert_allclose(exact.kl_divergence(states, params, probs), 0.0, atol=1e-5)


def test_large_n_enumeration_runs_and_refuses_beyond_20():
    params = ij.sk_model(jax.random.key(0), 20, beta=1.0)
    assert np.isfinite(exact.log_partition(params))
    too_big = ij.sk_model(jax.random.key(0), 21, beta=1.0)
    for fn in (exact.log_partition, exact.moments):
        with pytest.raises(ValueError, match=r"n <= 20; got n = 21"):
            fn(too_big)
    with pytest.raises(ValueError, match="n <= 20"):
        exact.sample(jax.random.key(0), too_big, 10)


@pytest.mark.parametrize("num_samples", [0, -3, 2.5])
def test_sample_rejects_bad_num_samples(num_samples):
    params = ij.sk_model(jax.random.key(0), 4)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        exact.sample(jax.random.key(0), params, num_samples)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"params.w must have shape \[n, n\] = \[3, 3\]"):
        exact.log_partition(ij.IsingParams(w=jnp.zeros((3, 4)), b=jnp.zeros(3)))
    params = ij.sk_model(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"shape \[M, 4\]"):
        exact.kl_divergence(jnp.ones((5, 3)), params)


def _numpy_n20_reference(w, b):
    """log Z, means and correlations by a float64 NumPy loop over all 2^20 states."""
    from scipy.special import logsumexp

    n, chunk = 20, 2**16
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)

    def states(start):
        idx = np.arange(start, start + chunk)
        return (((idx[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(np.float64)

    neg_energy = np.concatenate(
        [
            0.5 * np.einsum("mi,ij,mj->m", s, w, s) + s @ b
            for s in map(states, range(0, 2**n, chunk))
        ]
    )
    log_z = logsumexp(neg_energy)
    means, corr = np.zeros(n), np.zeros((n, n))
    for start in range(0, 2**n, chunk):
        s, p = states(start), np.exp(neg_energy[start : start + chunk] - log_z)
        means += p @ s
        corr += (s * p[:, None]).T @ s
    return log_z, means, corr


@pytest.mark.slow
def test_n20_log_partition_and_moments_match_float64_enumeration():
    params = ij.sk_model(jax.random.key(3), 20, beta=1.0, bias_std=0.3)
    log_z, means, corr = _numpy_n20_reference(params.w, params.b)
    # log Z ~ 20, where float32 values are 1.9e-6 apart: agreement to that spacing.
    np.testing.assert_allclose(float(exact.log_partition(params)), log_z, rtol=0, atol=2e-6)
    mom = exact.moments(params)
    np.testing.assert_allclose(mom.means, means, rtol=0, atol=3e-6)
    np.testing.assert_allclose(mom.correlations, corr, rtol=0, atol=3e-6)
