import functools
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from scipy import stats

import isingjax as ij
from isingjax import exact, mcmc, mcmc_kernels
from tests.reference import brute_force


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
    samples, _ = ij.metropolis(
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
    samples, info = ij.metropolis(
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
    # and unblocked updates, with either form of the field-update product, must agree bit
    # for bit; n = 13 also exercises padding.
    n = 13
    params = ij.sk_model(jax.random.key(4), n, beta=1.0, bias_std=0.3)
    params = jax.tree.map(lambda x: jnp.round(x * 64) / 64, params)
    results = [
        ij.metropolis(
            jax.random.key(5),
            params,
            num_samples=320,
            num_chains=32,
            burn_in=5,
            thin=3,
            block_size=b,
            field_product=product,
        )
        for b in (1, 4, 13, 16)
        for product in mcmc_kernels.FIELD_PRODUCTS
    ]
    for samples, info in results[1:]:
        np.testing.assert_array_equal(samples, results[0][0])
        np.testing.assert_array_equal(info.energy_trace, results[0][1].energy_trace)
        assert info.acceptance_rate == results[0][1].acceptance_rate


def numpy_sweep(w, b, spins, thresholds):
    """Reference sweep: sites in order, all n fields updated after every flip (float64)."""
    spins = spins.astype(np.float64).copy()  # [n, C]
    fields = w @ spins + b[:, None]
    for i in range(spins.shape[0]):
        delta = np.where(spins[i] * fields[i] < thresholds[i], -2.0 * spins[i], 0.0)
        spins[i] += delta
        fields += np.outer(w[:, i], delta)
    return spins


@pytest.mark.parametrize("field_product", mcmc_kernels.FIELD_PRODUCTS)
@pytest.mark.parametrize("block_size, sub_block_size", [(1, 1), (5, 2), (16, 8), (16, 3), (40, 8)])
def test_sweep_matches_numpy_rank1_reference(block_size, sub_block_size, field_product):
    # Couplings on a 1/64 grid keep every field sum exact, so any regrouping of the sums
    # (blocks, sub-blocks, products) must give the reference's flips bit for bit.
    n, chains = 37, 24
    params = ij.sk_model(jax.random.key(20), n, beta=1.0, bias_std=0.3)
    params = jax.tree.map(lambda x: jnp.round(x * 64) / 64, params)
    spins = np.asarray(jax.random.rademacher(jax.random.key(21), (chains, n), jnp.float32))
    thresholds = np.asarray(mcmc_kernels.exponential_thresholds(jax.random.key(22), n, chains))
    blocks = mcmc_kernels.make_blocks(params, block_size, field_product)
    n_pad = blocks.b.shape[0]
    t_pad = np.pad(thresholds, ((0, n_pad - n), (0, 0)), constant_values=-np.inf)
    state, flips = jax.jit(mcmc_kernels.sweep, static_argnames="sub_block_size")(
        blocks, mcmc_kernels.init_state(blocks, spins), t_pad, sub_block_size=sub_block_size
    )
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    expected = numpy_sweep(w, b, spins.T, thresholds)
    np.testing.assert_array_equal(state.spins[:n], expected)
    np.testing.assert_array_equal(flips, (expected != spins.T).sum(0))
    assert 0 < int(flips.sum()) < n * chains
    np.testing.assert_array_equal(state.spins[n:], 1.0)  # padding never flips
    np.testing.assert_allclose(state.fields[:n], w @ expected + b[:, None])


@pytest.mark.parametrize("field_product", mcmc_kernels.FIELD_PRODUCTS)
def test_bfloat16_split_is_exact_and_column_product_matches_float64(field_product):
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-30, 30, 4000)
    x = jnp.asarray((magnitudes * rng.choice([-1, 1], 4000)).astype(np.float32))
    parts = mcmc_kernels.split_bfloat16(x)
    assert all(p.dtype == jnp.bfloat16 for p in parts)
    total = sum(np.asarray(p, np.float64) for p in parts)  # float64: no rounding in the sum
    np.testing.assert_array_equal(total, np.asarray(x, np.float64))
    # The product of the parts against flips in {-2, 0, 2}, against float64 w @ delta.
    n, block, chains = 24, 8, 16
    params = ij.sk_model(jax.random.key(40), n, beta=1.0)
    blocks = mcmc_kernels.make_blocks(params, block, field_product)
    delta = 2.0 * jax.random.randint(jax.random.key(41), (block, chains), -1, 2).astype(jnp.float32)
    w = np.asarray(params.w, np.float64)
    for k in range(n // block):
        got = np.asarray(mcmc_kernels.column_product(blocks.cols[k], delta))
        expected = w[:, k * block : (k + 1) * block] @ np.asarray(delta, np.float64)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mcmc_kernels.block_weights(blocks), params.w)


def test_threefry_matches_jax_and_thresholds_are_exponential():
    key_words = jax.random.bits(jax.random.key(23), (2,), jnp.uint32)
    counters = jnp.arange(2 * 1001, dtype=jnp.uint32) * jnp.uint32(2654435761)
    hi, lo = mcmc_kernels.threefry2x32(key_words, counters[:1001], counters[1001:])
    expected = threefry_2x32(key_words, counters)
    np.testing.assert_array_equal(jnp.concatenate([hi, lo]), expected)
    # 2 t ~ Exponential(1): Kolmogorov-Smirnov against the closed-form CDF, and keyed.
    t = np.asarray(mcmc_kernels.exponential_thresholds(jax.random.key(24), 37, 301), np.float64)
    chex.assert_shape(t, (37, 301))
    assert stats.kstest(2 * t.ravel(), "expon").pvalue > 1e-3
    assert stats.kstest(2 * t[:, 0], "expon").pvalue > 1e-3  # columns are not copies
    same = mcmc_kernels.exponential_thresholds(jax.random.key(24), 37, 301)
    other = mcmc_kernels.exponential_thresholds(jax.random.key(25), 37, 301)
    np.testing.assert_array_equal(t, same)
    assert np.mean(np.asarray(other) == t) < 0.01
    with pytest.raises(ValueError, match="at most 2\\^32 random words per sweep"):
        # the uint32 counters would wrap
        mcmc_kernels.exponential_thresholds(jax.random.key(24), 2**16, 2**16 + 1)


def test_uniform_spins_are_fair_independent_and_keyed():
    s = np.asarray(mcmc_kernels.uniform_spins(jax.random.key(42), 37, 301))
    assert s.dtype == np.float32 and set(np.unique(s)) == {-1.0, 1.0}
    # Binomial(11137, 1/2) counts of +1 overall, and of agreeing neighbours along each axis.
    for agree in ((s == 1).mean(), (s[1:] == s[:-1]).mean(), (s[:, 1:] == s[:, :-1]).mean()):
        assert abs(agree - 0.5) < 5 * 0.5 / np.sqrt(s[1:].size), agree
    np.testing.assert_array_equal(s, mcmc_kernels.uniform_spins(jax.random.key(42), 37, 301))
    assert np.mean(np.asarray(mcmc_kernels.uniform_spins(jax.random.key(43), 37, 301)) == s) < 0.6


def test_second_call_with_same_shapes_compiles_nothing():
    n, kwargs = 9, dict(num_samples=48, num_chains=8, burn_in=2, thin=1)
    first = ij.sk_model(jax.random.key(26), n, beta=1.0, bias_std=0.2)
    second = ij.sk_model(jax.random.key(27), n, beta=0.5, bias_std=0.1)  # new arrays
    ij.metropolis(jax.random.key(28), first, **kwargs)
    cached = mcmc._sample._cache_size()
    samples, _ = ij.metropolis(jax.random.key(29), second, **kwargs)
    assert mcmc._sample._cache_size() == cached  # new key and params: no new compilation
    chex.assert_shape(samples, (48, n))
    ij.metropolis(jax.random.key(29), second, **kwargs | dict(num_samples=56))
    assert mcmc._sample._cache_size() == cached + 1  # a new shape compiles once
    betas = (0.5, 1.0)
    ij.parallel_tempering(jax.random.key(30), first, betas=betas, **kwargs)
    cached = mcmc._sample._cache_size()
    ij.parallel_tempering(jax.random.key(31), second, betas=betas, **kwargs)
    assert mcmc._sample._cache_size() == cached


def test_samples_are_pm1_float32_and_keyed():
    params = ij.sk_model(jax.random.key(6), 8, beta=1.0)
    kwargs = dict(num_samples=64, num_chains=8, burn_in=3, thin=2)
    a, _ = ij.metropolis(jax.random.key(7), params, **kwargs)
    b, _ = ij.metropolis(jax.random.key(7), params, **kwargs)
    c, _ = ij.metropolis(jax.random.key(8), params, **kwargs)
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


@pytest.mark.parametrize("betas", [(1.0,), (0.4, 0.7, 1.0)])
def test_chain_groups_run_the_same_chains(betas):
    # Couplings off any grid (float32 rounding everywhere): each chain's samples, energies
    # and counts must not depend on which chains share its program, nor on a transformation.
    params = ij.sk_model(jax.random.key(40), 11, beta=1.0, bias_std=0.3)
    init = jax.random.rademacher(jax.random.key(41), (512, 11), jnp.float32)

    def run(key, groups=None, init_spins=None):
        kwargs = dict(num_samples=1536, num_chains=512, burn_in=4, thin=2)
        kwargs |= dict(chain_groups=groups, init_spins=init_spins)
        if len(betas) == 1:
            return ij.metropolis(key, params, **kwargs)
        return ij.parallel_tempering(key, params, betas=betas, **kwargs)

    key = jax.random.key(42)
    for init_spins in (None, init):
        one = run(key, 1, init_spins)
        for other in (run(key, 2, init_spins), run(key, 8, init_spins), run(key, None, init_spins)):
            chex.assert_trees_all_equal(other, one)
        jitted = jax.jit(lambda k, x: run(k, None, x))  # under jit: one group
        chex.assert_trees_all_equal(jitted(key, init_spins), one)
    assert mcmc.chain_groups(512) == min(2, len(os.sched_getaffinity(0)))
    assert mcmc.chain_groups(256) == 1 == mcmc.chain_groups(7)


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
    stuck, _ = ij.metropolis(jax.random.key(11), params, init_spins=start, **kwargs)
    assert np.asarray(stuck).mean() > 0.99  # every chain stays in the + mode
    betas = mcmc.geometric_betas(8, beta_min=0.1)
    mixed, info = ij.parallel_tempering(
        jax.random.key(12), params, betas=betas, init_spins=start, **kwargs
    )
    z = chain_mean_z_scores(np.asarray(mixed, np.float64), num_chains, exact_means, lambda s: s)
    assert z.max() < 5, z
    assert np.abs(np.asarray(mixed).mean(0) - exact_means).max() < 0.1
    chex.assert_shape(info.swap_rates, (7,))
    assert np.all(info.swap_rates > 0.05), info.swap_rates


def test_parallel_tempering_matches_exact_on_sk():
    params = ij.sk_model(jax.random.key(13), 10, beta=1.5, bias_std=0.2)
    _, probs, states = brute_force(params.w, params.b)
    samples, _ = ij.parallel_tempering(
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
        (dict(block_size=257), "block_size must be <= 256"),
        (dict(block_size=0), "block_size must be an integer >= 1"),
        (dict(field_product="float16"), "field_product must be None or one of"),
        (dict(chain_groups=3), r"chain_groups must divide num_chains \(4\), got 3"),
        (dict(chain_groups=0), "chain_groups must be an integer >= 1"),
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
