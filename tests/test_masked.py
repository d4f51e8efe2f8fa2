"""Masked discrete diffusion against exact enumeration on a 6-spin model."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import isingjax as ij
from isingjax import exact
from isingjax.diffusion import train
from isingjax.generators import masked

N = 6


def _order_log_probs(net, params, order, states):
    """log p_sigma(x) = sum_k log p(x_{sigma_k} | x_{sigma_<k}) for one unmasking order."""

    def reveal(carry, pos):
        mask, total = carry
        logits = net.apply(params, states * (1 - mask), mask)[:, pos]
        total = total - jnp.logaddexp(0.0, -2.0 * states[:, pos] * logits)
        return (mask.at[:, pos].set(0.0), total), None

    start = (jnp.ones_like(states), jnp.zeros(states.shape[0]))
    return jax.lax.scan(reveal, start, order)[0][1]


def exact_model(net, params, states):
    """(log p_model, exact ELBO) of each state by enumerating all n! unmasking orders: the
    sampler draws a uniform order, so p_model = mean_sigma p_sigma; for the linear schedule
    the continuous-time ELBO equals mean_sigma log p_sigma."""
    orders = jnp.asarray(list(itertools.permutations(range(N))))
    one_order = functools.partial(_order_log_probs, net, params, states=jnp.asarray(states))
    per_order = np.asarray(jax.jit(jax.vmap(one_order))(orders), np.float64)
    log_model = scipy.special.logsumexp(per_order, axis=0) - np.log(len(per_order))
    return log_model, per_order.mean(axis=0)


@functools.cache
def trained():
    truth = ij.sk_model(jax.random.key(0), N, beta=1.0, bias_std=0.3)
    states = np.asarray(exact.index_to_spins(jnp.arange(2**N), N))
    draws = exact.sample(jax.random.key(1), truth, 20_000)
    counts = np.bincount(np.asarray(exact.spins_to_index(draws)), minlength=2**N)
    net = masked.Denoiser(N, (64, 64))
    init_fn, chunk_fn = masked.make_train_fns(net, learning_rate=3e-3, batch_size=1024)
    untrained = init_fn(jax.random.key(3), N)
    state, _ = jax.jit(chunk_fn, static_argnums=3)(
        untrained, jnp.asarray(states), jnp.asarray(counts, jnp.float32), 1000
    )
    return truth, states, net, untrained.params, state.params


@pytest.mark.slow
def test_elbo_estimate_is_unbiased_bounds_the_likelihood_and_is_close_to_the_truth():
    truth, states, net, _, params = trained()
    log_model, exact_elbo = exact_model(net, params, states)
    assert abs(np.exp(log_model).sum() - 1.0) < 1e-4  # the sampler's distribution normalizes
    # The Monte Carlo estimator against the enumerated ELBO, state by state (5 s.e.).
    draw = jax.jit(jax.vmap(lambda k: -masked._nelbo_draw(net, params, jnp.asarray(states), k)))
    draws = np.asarray(draw(jax.random.split(jax.random.key(4), 2000)), np.float64)
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact_elbo) < 5 * se)
    one = masked.elbo(jax.random.key(4), net, params, jnp.asarray(states), num_draws=4)
    assert one.shape == (2**N,) and np.all(np.isfinite(one))
    # Held-out data in the population limit (weights = exact probabilities):
    # E[ELBO] <= E[log p_model] <= E[log P_true] (Gibbs), and the stated gap: 0.05 nats.
    p_true = np.exp(np.asarray(exact.all_log_probs(truth), np.float64))
    index = np.asarray(exact.spins_to_index(jnp.asarray(states)))
    log_true = np.log(p_true[index])
    weights = p_true[index]
    assert weights @ exact_elbo <= weights @ log_model <= weights @ log_true
    assert weights @ log_true - weights @ exact_elbo < 0.05


@pytest.mark.slow
def test_samples_follow_the_model_and_are_close_to_the_truth():
    truth, states, net, untrained, params = trained()
    draws = masked.sample(jax.random.key(5), net, params, 20_000)
    observed = np.bincount(np.asarray(exact.spins_to_index(draws)), minlength=2**N)
    expected = np.exp(exact_model(net, params, states)[0]) * observed.sum()
    _, p_value = scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())
    assert p_value > 1e-3
    assert float(exact.kl_divergence(draws, truth)) < 0.03
    before = masked.sample(jax.random.key(5), net, untrained, 20_000)
    assert float(exact.kl_divergence(before, truth)) > 0.3


def test_same_key_same_samples_and_bad_inputs():
    net = masked.Denoiser(5, (8,))
    params = net.init(jax.random.key(0), jnp.zeros((1, 5)), jnp.zeros((1, 5)))
    a, b = (np.asarray(masked.sample(jax.random.key(1), net, params, 32)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {-1.0, 1.0}
    assert not np.array_equal(a, np.asarray(masked.sample(jax.random.key(2), net, params, 32)))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        masked.sample(jax.random.key(1), net, params, -1)
    with pytest.raises(TypeError, match="masked.Denoiser"):
        masked.sample(jax.random.key(1), object(), params, 3)


def test_resumed_training_equals_uninterrupted(tmp_path):
    net = masked.Denoiser(5, (8,))
    spins = exact.sample(jax.random.key(5), ij.sk_model(jax.random.key(4), 5), 300)
    weights = jnp.ones(300)
    init_fn, chunk_fn = masked.make_train_fns(net, batch_size=32)
    run = functools.partial(train.train, chunk_fn=chunk_fn, data=spins, weights=weights)
    whole = run(init_fn(jax.random.key(6), 5), num_steps=40, chunk_steps=40)
    manager = train.checkpoint_manager(tmp_path / "ckpt")
    run(init_fn(jax.random.key(6), 5), num_steps=20, chunk_steps=20, manager=manager)
    resumed = run(init_fn(jax.random.key(6), 5), num_steps=40, chunk_steps=20, manager=manager)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
