import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import isingjax as ij
from tests.reference import brute_force


def test_energy_matches_loop():
    params = ij.sk_model(jax.random.key(0), 7, beta=1.3, bias_std=0.4)
    spins = jax.random.rademacher(jax.random.key(1), (3, 5, 7), jnp.float32)
    w, b, s = (np.asarray(x, np.float64) for x in (params.w, params.b, spins))
    expected = np.zeros((3, 5))
    for a in range(3):
        for c in range(5):
            pair = sum(w[i, j] * s[a, c, i] * s[a, c, j] for i in range(7) for j in range(i + 1, 7))
            expected[a, c] = -(pair + b @ s[a, c])
    np.testing.assert_allclose(ij.energy(params, spins), expected, rtol=1e-5, atol=1e-5)


def test_sk_model_statistics_and_structure():
    n, beta, bias_std = 200, 1.5, 0.3
    params = ij.sk_model(jax.random.key(3), n, beta=beta, bias_std=bias_std)
    chex.assert_shape(params.w, (n, n))
    chex.assert_shape(params.b, (n,))
    np.testing.assert_array_equal(params.w, params.w.T)
    np.testing.assert_array_equal(jnp.diag(params.w), 0.0)
    upper = np.asarray(params.w)[np.triu_indices(n, 1)]
    # 19900 couplings: the sample variance is within 5% of beta^2/n (std error ~1%).
    np.testing.assert_allclose(upper.var(), beta**2 / n, rtol=0.05)
    assert abs(upper.mean()) < 5 * beta / np.sqrt(n) / np.sqrt(upper.size)
    np.testing.assert_allclose(np.asarray(params.b).std(), bias_std, rtol=0.2)


def test_sk_model_same_key_same_params_and_vmap():
    keys = jax.random.split(jax.random.key(4), 3)
    batched = jax.vmap(lambda k: ij.sk_model(k, 6, 1.0, 0.1))(keys)
    for i in range(3):
        single = ij.sk_model(keys[i], 6, 1.0, 0.1)
        np.testing.assert_array_equal(batched.w[i], single.w)
    assert not np.array_equal(batched.w[0], batched.w[1])


def test_flatten_roundtrip_and_symmetrize():
    params = ij.sk_model(jax.random.key(5), 5, 1.0, 0.5)
    theta = ij.flatten_params(params)
    chex.assert_shape(theta, (5 + 10,))
    np.testing.assert_array_equal(theta[:5], params.b)
    np.testing.assert_array_equal(theta[5], params.w[0, 1])
    back = ij.unflatten_params(theta, 5)
    np.testing.assert_array_equal(back.w, params.w)
    np.testing.assert_array_equal(back.b, params.b)
    a = jnp.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(ij.symmetrize(a), [[0, 2, 4], [2, 0, 6], [4, 6, 0]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=1), "n must be an integer >= 2"),
        (dict(n=4.0), "n must be an integer >= 2"),
        (dict(n=4, beta=-1.0), "beta must be finite and >= 0"),
        (dict(n=4, bias_std=float("nan")), "bias_std must be finite"),
    ],
)
def test_sk_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ij.sk_model(jax.random.key(0), **kwargs)


def test_unflatten_rejects_wrong_length():
    with pytest.raises(ValueError, match="n=4 spins has 10 parameters"):
        ij.unflatten_params(jnp.zeros(9), 4)


def test_generator_metrics_against_python_sets():
    rng = np.random.default_rng(0)
    train = np.where(rng.random((40, 5)) < 0.7, 1.0, -1.0)
    generated = np.concatenate([train[:10], np.where(rng.random((30, 5)) < 0.5, 1.0, -1.0)])
    train_set = {tuple(s) for s in train}
    expected_copies = np.mean([tuple(s) in train_set for s in generated])
    np.testing.assert_allclose(ij.metrics.copy_fraction(generated, train), expected_copies)
    np.testing.assert_allclose(
        ij.metrics.unique_fraction(generated), len({tuple(s) for s in generated}) / 40
    )
    pairs = [np.sum(a != b) for i, a in enumerate(generated) for b in generated[i + 1 :]]
    np.testing.assert_allclose(
        ij.metrics.mean_hamming_distance(generated), np.mean(pairs), rtol=1e-6
    )
    params = ij.sk_model(jax.random.key(0), 5, beta=1.0, bias_std=0.3)
    _, probs, states = brute_force(params.w, params.b)
    mass = sum(p for s, p in zip(states, probs, strict=True) if tuple(s) in train_set)
    np.testing.assert_allclose(ij.metrics.expected_copy_fraction(params, train), mass, rtol=1e-5)


def test_energy_stats_against_numpy():
    params = ij.sk_model(jax.random.key(1), 6, beta=1.0, bias_std=0.3)
    spins = np.where(np.random.default_rng(1).random((50, 6)) < 0.5, 1.0, -1.0)
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    e = np.array([-(0.5 * s @ w @ s + b @ s) for s in spins])
    stats = ij.metrics.energy_stats(params, jnp.asarray(spins, jnp.float32))
    np.testing.assert_allclose(stats["energy_mean"], e.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["energy_var"], e.var(), rtol=1e-4)
