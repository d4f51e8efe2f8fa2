"""The autoregressive generator against exact enumeration."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import isingjax as ij
from isingjax import exact
from isingjax.diffusion import train
from isingjax.generators import autoregressive as ar


def _all_states(n):
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)), np.float32)


def _random_params(net, seed):
    """Initialized parameters with every entry redrawn, so no output is trivially uniform."""
    params = net.init(jax.random.key(seed), jnp.zeros((1, net.n)))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(
        tree, [0.7 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("hidden", [0, 12])
def test_probabilities_sum_to_one_and_depend_only_on_earlier_spins(hidden):
    net = ar.MADE(8, hidden)
    params = _random_params(net, 0)
    states = _all_states(8)
    total = np.exp(np.asarray(ar.log_prob(net, params, states), np.float64)).sum()
    assert abs(total - 1.0) < 1e-4
    # a_i must not change when spins j >= i change.
    logits = np.asarray(net.apply(params, states))
    flipped = states.copy()
    flipped[:, 5:] *= -1
    np.testing.assert_allclose(np.asarray(net.apply(params, flipped))[:, :6], logits[:, :6])


def test_sample_frequencies_match_log_prob():
    net = ar.MADE(4, 6)
    params = _random_params(net, 3)
    draws = np.asarray(ar.sample(jax.random.key(7), net, params, 40_000))
    index = np.asarray(exact.spins_to_index(draws))
    observed = np.bincount(index, minlength=16)
    states = np.asarray(exact.index_to_spins(jnp.arange(16), 4))
    expected = np.exp(np.asarray(ar.log_prob(net, params, states), np.float64)) * len(draws)
    _, p_value = scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())
    assert p_value > 1e-3


def test_same_key_same_samples():
    net = ar.MADE(5, 4)
    params = _random_params(net, 1)
    a, b = (np.asarray(ar.sample(jax.random.key(2), net, params, 64)) for _ in range(2))
    c = np.asarray(ar.sample(jax.random.key(3), net, params, 64))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {-1.0, 1.0}


def test_logistic_model_fitted_on_a_chain_recovers_its_exact_log_probabilities():
    # A chain's conditionals P(s_i | s_<i) = P(s_i | s_{i-1}) are logistic-linear, so the
    # logistic autoregressive model can represent it exactly.
    n = 6
    rng = np.random.default_rng(0)
    w = np.zeros((n, n), np.float32)
    for i in range(n - 1):
        w[i, i + 1] = w[i + 1, i] = rng.normal(0, 0.8)
    truth = ij.IsingParams(w=jnp.asarray(w), b=jnp.asarray(rng.normal(0, 0.4, n), jnp.float32))
    draws = exact.sample(jax.random.key(0), truth, 20_000)
    # The 2^6 states weighted by their counts: the same data, a short minibatch draw.
    states = _all_states(n)
    counts = np.bincount(np.asarray(exact.spins_to_index(draws)), minlength=2**n)
    index = np.asarray(exact.spins_to_index(jnp.asarray(states)))
    net = ar.MADE(n, 0)
    init_fn, chunk_fn = ar.make_train_fns(
        net, learning_rate=0.02, weight_decay=0.0, batch_size=8192
    )
    state = init_fn(jax.random.key(1), n)
    log_true = np.asarray(exact.log_prob(truth, states), np.float64)

    def kl(params):
        log_model = np.asarray(ar.log_prob(net, params, states), np.float64)
        return float(np.sum(np.exp(log_true) * (log_true - log_model)))

    untrained = kl(state.params)
    weights = jnp.asarray(counts[index], jnp.float32)
    state, _ = jax.jit(chunk_fn, static_argnums=3)(state, jnp.asarray(states), weights, 1000)
    # 21 parameters fitted on 20000 samples: the expected KL is ~21 / (2 * 20000) = 5e-4.
    assert kl(state.params) < 3e-3 < untrained


def test_resumed_training_equals_uninterrupted(tmp_path):
    net = ar.MADE(5, 8)
    truth = ij.sk_model(jax.random.key(4), 5, beta=1.0)
    spins = exact.sample(jax.random.key(5), truth, 500)
    weights = jnp.ones(500)
    init_fn, chunk_fn = ar.make_train_fns(net, batch_size=64)
    run = functools.partial(train.train, chunk_fn=chunk_fn, data=spins, weights=weights)
    whole = run(init_fn(jax.random.key(6), 5), num_steps=60, chunk_steps=60)
    manager = train.checkpoint_manager(tmp_path / "ckpt")
    first = run(init_fn(jax.random.key(6), 5), num_steps=30, chunk_steps=30, manager=manager)
    assert int(first.step) == 30
    resumed = run(init_fn(jax.random.key(6), 5), num_steps=60, chunk_steps=30, manager=manager)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_inputs_are_refused():
    net = ar.MADE(4, 0)
    params = net.init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"spins must have shape \[\.\.\., 4\]"):
        ar.log_prob(net, params, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        ar.sample(jax.random.key(0), net, params, 0)
    with pytest.raises(TypeError, match="autoregressive.MADE"):
        ar.sample(jax.random.key(0), object(), params, 3)
