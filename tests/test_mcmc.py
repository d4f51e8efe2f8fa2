import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import isingjax as ij
from isingjax import exact, mcmc
from tests.reference import brute_force

RUN_ARGS = ("num_samples", "num_chains", "burn_in", "thin", "block_size", "betas")


@functools.cache
def _jitted(fn):
    return jax.jit(
        fn, static_argnames=[a for a in RUN_ARGS if a != "betas" or fn is not ij.metropolis]
    )


def run_metropolis(key, params, **kwargs):
    return _jitted(ij.metropolis)(key, params, **kwargs)


def run_tempering(key, params, **kwargs):
    return _jitted(ij.parallel_tempering)(key, params, **kwargs)


def chain_mean_z_scores(samples, num_chains, exact_values, stat):
    """|sample mean - exact| / standard error, the error estimated from independent chains."""
    per_chain = stat(samples).reshape(-1, num_chains, *exact_values.shape)  # step-major
    chain_means = per_chain.mean(axis=0)
    se = chain_means.std(axis=0, ddof=1) / np.sqrt(num_chains)
    return np.abs(chain_means.mean(axis=0) - exact_values) / np.maximum(se, 1e-6)


def test_chi_square_state_frequencies_n6():
    params = ij.sk_model(jax.random.key(0), 6, beta=1.0, bias_std=0.3)
    _, probs, states = brute_force(params.w, params.b)
    # One sample from each of 20000 independent chains after 40 sweeps: i.i.d. draws.
    samples, _ = run_metropolis(
        jax.random.key(1), params, num_samples=20_000, num_chains=20_000, burn_in=40
    )
    index = np.asarray(exact.spins_to_index(samples))
    counts = np.bincount(index, minlength=64)
    order = np.argsort(np.asarray(exact.spins_to_index(jnp.asarray(states, jnp.float32))))
    assert stats.chisquare(counts, probs[order] * 20_000).pvalue > 1e-3


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_means_and_correlations_n10_within_5_standard_errors(beta):
    params = ij.sk_model(jax.random.key(2), 10, beta=beta, bias_std=0.3)
    _, probs, states = brute_force(params.w, params.b)
    mean_exact = probs @ states
    corr_exact = (states * probs[:, None]).T @ states
    num_chains = 64
    samples, info = run_metropolis(
        jax.random.key(3), params, num_samples=64 * 300, num_chains=num_chains, burn_in=100, thin=2
    )
    samples = np.asarray(samples, np.float64)
    z_mean = chain_mean_z_scores(samples, num_chains, mean_exact, lambda s: s)
    z_corr = chain_mean_z_scores(
        samples, num_chains, corr_exact, lambda s: s[:, :, None] * s[:, None, :]
    )
    iu = np.triu_indices(10, 1)
    assert z_mean.max() < 5, z_mean
    assert z_corr[iu].max() < 5, z_corr[iu]
    assert 0 < float(info.acceptance_rate) < 1
    assert 0.5 < float(info.autocorr_time) < 20
    chex.assert_shape(info.energy_trace, (300, num_chains))
    np.testing.assert_allclose(
        info.energy_trace[-1], ij.energy(params, samples[-num_chains:]), rtol=1e-4, atol=1e-4
    )


def test_blocked_and_unblocked_updates_give_the_same_chain():
    # Couplings on a 1/64 grid keep every field sum exact in float32, so the blocked
    # and unblocked updates must agree bit for bit; n = 13 also exercises padding.
    n = 13
    params = ij.sk_model(jax.random.key(4), n, beta=1.0, bias_std=0.3)
    params = jax.tree.map(lambda x: jnp.round(x * 64) / 64, params)
    results = [
        run_metropolis(
            jax.random.key(5),
            params,
            num_samples=320,
            num_chains=32,
            burn_in=5,
            thin=3,
            block_size=b,
        )
        for b in (1, 4, 13, 16)
    ]
    for samples, info in results[1:]:
        np.testing.assert_array_equal(samples, results[0][0])
        np.testing.assert_array_equal(info.energy_trace, results[0][1].energy_trace)
        assert info.acceptance_rate == results[0][1].acceptance_rate


def test_samples_are_pm1_float32_and_keyed():
    params = ij.sk_model(jax.random.key(6), 8, beta=1.0)
    kwargs = dict(num_samples=64, num_chains=8, burn_in=3, thin=2)
    a, _ = run_metropolis(jax.random.key(7), params, **kwargs)
    b, _ = run_metropolis(jax.random.key(7), params, **kwargs)
    c, _ = run_metropolis(jax.random.key(8), params, **kwargs)
    chex.assert_shape(a, (64, 8))
    assert a.dtype == jnp.float32 and set(np.unique(a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_vmap_over_keys_equals_loop():
    params = ij.sk_model(jax.random.key(9), 8, beta=1.0, bias_std=0.2)
    keys = jax.random.split(jax.random.key(10), 3)
    run = functools.partial(
        ij.metropolis, params=params, num_samples=32, num_chains=8, burn_in=2, thin=1
    )
    batched, _ = jax.jit(jax.vmap(lambda k: run(k)))(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jax.jit(lambda k: run(k))(keys[i])[0])


def _two_mode_ferromagnet(n=10, coupling=0.5, bias=0.02):
    w = coupling * (jnp.ones((n, n)) - jnp.eye(n))
    return ij.IsingParams(w=w, b=jnp.full((n,), bias))


def test_parallel_tempering_mixes_where_metropolis_is_stuck():
    # Aligned states have energy -22.7; crossing to the other mode passes through
    # states ~25 higher, so single-flip chains started at all +1 never leave. The
    # small bias tilts the modes so the exact mean is tanh-like, not 0 or 1.
    params = _two_mode_ferromagnet()
    exact_means = np.asarray(exact.moments(params).means)
    assert 0.1 < exact_means[0] < 0.4
    num_chains = 128
    start = jnp.ones((num_chains, 10))
    kwargs = dict(num_samples=num_chains * 200, num_chains=num_chains, burn_in=200, thin=2)
    stuck, _ = run_metropolis(jax.random.key(11), params, init_spins=start, **kwargs)
    assert np.asarray(stuck).mean() > 0.99  # every chain stays in the + mode
    betas = mcmc.geometric_betas(8, beta_min=0.1)
    mixed, info = run_tempering(jax.random.key(12), params, betas=betas, init_spins=start, **kwargs)
    z = chain_mean_z_scores(np.asarray(mixed, np.float64), num_chains, exact_means, lambda s: s)
    assert z.max() < 5, z
    assert np.abs(np.asarray(mixed).mean(0) - exact_means).max() < 0.1
    chex.assert_shape(info.swap_rates, (7,))
    assert np.all(info.swap_rates > 0.05), info.swap_rates


def test_parallel_tempering_matches_exact_on_sk():
    params = ij.sk_model(jax.random.key(13), 10, beta=1.5, bias_std=0.2)
    _, probs, states = brute_force(params.w, params.b)
    samples, _ = run_tempering(
        jax.random.key(14),
        params,
        betas=mcmc.geometric_betas(4, 0.3),
        num_samples=64 * 200,
        num_chains=64,
        burn_in=100,
        thin=2,
    )
    z = chain_mean_z_scores(np.asarray(samples, np.float64), 64, probs @ states, lambda s: s)
    assert z.max() < 5, z


def test_integrated_autocorr_time_of_ar1_matches_closed_form():
    # x_t = phi x_{t-1} + noise has tau = (1 + phi) / (1 - phi).
    phi, steps, chains = 0.8, 20_000, 8
    noise = np.asarray(jax.random.normal(jax.random.key(15), (steps, chains)))
    x = np.zeros_like(noise)
    for t in range(1, steps):
        x[t] = phi * x[t - 1] + noise[t]
    tau = float(mcmc.integrated_autocorr_time(jnp.asarray(x)))
    np.testing.assert_allclose(tau, (1 + phi) / (1 - phi), rtol=0.1)
    white = float(mcmc.integrated_autocorr_time(jnp.asarray(noise)))
    np.testing.assert_allclose(white, 1.0, atol=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=0), "num_samples must be an integer >= 1"),
        (dict(num_samples=10, num_chains=4), r"must be a multiple of num_chains \(4\)"),
        (dict(num_chains=0), "num_chains must be an integer >= 1"),
        (dict(burn_in=-1), "burn_in must be an integer >= 0"),
        (dict(thin=0), "thin must be an integer >= 1"),
        (dict(thin=1.5), "thin must be an integer >= 1"),
        (dict(block_size=129), "block_size must be <= 128"),
        (
            dict(init_spins=jnp.ones((3, 5))),
            r"init_spins must have shape \[num_chains, n\] = \[4, 5\]",
        ),
    ],
)
def test_metropolis_rejects_bad_arguments(kwargs, match):
    params = ij.sk_model(jax.random.key(0), 5)
    args = dict(num_samples=8, num_chains=4, burn_in=1, thin=1) | kwargs
    with pytest.raises(ValueError, match=match):
        ij.metropolis(jax.random.key(0), params, **args)


@pytest.mark.parametrize("betas", [(0.5, 0.9), (1.0, 0.5), (0.5, 0.5, 1.0), (-0.1, 1.0), ()])
def test_parallel_tempering_rejects_bad_betas(betas):
    params = ij.sk_model(jax.random.key(0), 5)
    with pytest.raises(ValueError, match="strictly increasing .* ending at exactly 1.0"):
        ij.parallel_tempering(
            jax.random.key(0), params, betas=betas, num_samples=4, num_chains=4, burn_in=0
        )


def test_bad_params_shape():
    with pytest.raises(ValueError, match=r"params.w must have shape \[n, n\] = \[4, 4\]"):
        ij.metropolis(
            jax.random.key(0),
            ij.IsingParams(jnp.zeros((4, 3)), jnp.zeros(4)),
            num_samples=4,
            num_chains=4,
            burn_in=0,
        )
