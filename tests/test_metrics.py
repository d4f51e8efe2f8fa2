"""Sample-set metrics of generated spins against brute-force NumPy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import isingjax as ij
from tests.reference import brute_force


def random_spins(rng, num, n, p=0.6):
    return np.where(rng.random((num, n)) < p, 1.0, -1.0).astype(np.float32)


def test_weighted_diversity_metrics_against_python_loops():
    rng = np.random.default_rng(0)
    spins, train = random_spins(rng, 30, 5), random_spins(rng, 20, 5)
    weights = np.where(rng.random(30) < 0.6, rng.random(30) + 0.5, 0.0).astype(np.float32)
    kept = [tuple(s) for s, w in zip(spins, weights, strict=True) if w > 0]
    np.testing.assert_allclose(
        ij.metrics.unique_fraction(spins, weights), len(set(kept)) / len(kept), rtol=1e-6
    )
    train_set = {tuple(s) for s in train}
    copies = sum(w for s, w in zip(spins, weights, strict=True) if tuple(s) in train_set)
    np.testing.assert_allclose(
        ij.metrics.copy_fraction(spins, train, weights), copies / weights.sum(), rtol=1e-6
    )
    num = den = 0.0
    for i in range(30):
        for j in range(i + 1, 30):
            num += weights[i] * weights[j] * np.sum(spins[i] != spins[j])
            den += weights[i] * weights[j]
    np.testing.assert_allclose(
        ij.metrics.mean_hamming_distance(spins, weights), num / den, rtol=1e-5
    )


def test_tail_stats_against_brute_force():
    params = ij.sk_model(jax.random.key(2), 6, beta=1.0, bias_std=0.3)
    log_z, probs, states = brute_force(params.w, params.b)
    order = np.argsort(probs)
    cum = np.cumsum(probs[order])
    threshold = np.log(probs[order][np.searchsorted(cum, 0.05)])
    in_tail = np.log(probs) < threshold
    assert probs[in_tail].sum() < 0.05 <= probs[np.log(probs) <= threshold].sum() + 1e-12
    np.testing.assert_allclose(ij.metrics.tail_log_prob(params, 0.05), threshold, rtol=1e-5)

    rng = np.random.default_rng(3)
    picks = rng.integers(0, len(states), 40)
    spins = states[picks].astype(np.float32)
    weights = rng.random(40).astype(np.float32)
    stats = ij.metrics.tail_stats(jnp.asarray(spins), params, jnp.asarray(weights), 0.05)
    lp = np.log(probs[picks])
    np.testing.assert_allclose(
        stats["mean_log_prob"], np.sum(weights * lp) / weights.sum(), rtol=1e-5
    )
    tail = in_tail[picks]
    np.testing.assert_allclose(
        stats["tail_fraction"], np.sum(weights * tail) / weights.sum(), rtol=1e-5
    )
    np.testing.assert_allclose(stats["tail_mass"], probs[np.unique(picks[tail])].sum(), rtol=1e-4)


def test_energy_summary_weighted_quantiles_and_held_out_nll():
    params = ij.sk_model(jax.random.key(4), 6, beta=1.0, bias_std=0.3)
    rng = np.random.default_rng(5)
    spins = random_spins(rng, 200, 6)
    weights = rng.integers(0, 3, 200).astype(np.float32)
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    e = np.array([-(0.5 * s @ w @ s + b @ s) for s in spins])
    repeated = np.repeat(e, weights.astype(int))  # integer weights = multiplicities
    stats = ij.metrics.energy_summary(params, jnp.asarray(spins), jnp.asarray(weights))
    np.testing.assert_allclose(stats["energy_mean"], repeated.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["energy_var"], repeated.var(), rtol=1e-4)
    for q in (5, 50, 95):
        expected = np.percentile(repeated, q, method="inverted_cdf")
        np.testing.assert_allclose(stats[f"energy_q{q:02d}"], expected, rtol=1e-5)

    log_z, _, _ = brute_force(params.w, params.b)
    nll = np.mean(e) + log_z  # -log P = E + log Z
    np.testing.assert_allclose(ij.metrics.held_out_nll(params, jnp.asarray(spins)), nll, rtol=1e-5)


def test_unique_and_copy_fraction_beyond_int32_indices_match_numpy():
    # n = 40 > MAX_INDEX_N: rows are compared directly; NumPy's row uniqueness is the
    # reference, and padding n = 20 data with constant columns must not change anything.
    rng = np.random.default_rng(3)
    base = np.where(rng.random((12, 20)) < 0.5, 1.0, -1.0).astype(np.float32)
    gen20 = base[rng.integers(0, 12, 60)]
    train20 = base[:5]
    pad = np.ones((1, 20), np.float32)
    gen40 = np.concatenate([gen20, np.repeat(pad, 60, 0)], axis=1)
    train40 = np.concatenate([train20, np.repeat(pad, 5, 0)], axis=1)
    weights = (rng.random(60) < 0.7).astype(np.float32)
    ref_unique = len(np.unique(gen20[weights > 0], axis=0)) / np.sum(weights > 0)
    in_train = np.array([any((row == t).all() for t in train20) for row in gen20])
    ref_copy = np.sum(weights * in_train) / np.sum(weights)
    cases = [(gen20, train20), (gen40, train40)]
    for (gen, train), array in itertools.product(cases, (np.asarray, jnp.asarray)):
        got_unique = ij.metrics.unique_fraction(array(gen), jnp.asarray(weights))
        np.testing.assert_allclose(got_unique, ref_unique, rtol=1e-6)
        got_copy = ij.metrics.copy_fraction(array(gen), array(train), jnp.asarray(weights))
        np.testing.assert_allclose(got_copy, ref_copy, rtol=1e-6)
