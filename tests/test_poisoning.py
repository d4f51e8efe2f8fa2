"""Poisoning: implicit gradients against finite differences; attacks against random noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import isingjax as ij
from isingjax import exact, poisoning

REFITS = {"plm": poisoning.refit_plm, "nmf": poisoning.refit_nmf}


@pytest.mark.parametrize("method", ["plm", "nmf"])
def test_gradient_through_the_refit_matches_finite_differences(method):
    with jax.enable_x64(True):
        n = 5
        truth = jax.tree.map(
            lambda x: x.astype(jnp.float64), ij.sk_model(jax.random.key(0), n, beta=1.0)
        )
        spins = exact.sample(jax.random.key(1), truth, 60).astype(jnp.float64)
        poison = jax.random.uniform(jax.random.key(2), (3, n), jnp.float64, -1.0, 1.0)
        refit = REFITS[method]
        value = jax.jit(
            lambda p: poisoning._attack_value(
                refit, lambda t: poisoning.mse_objective(t, truth), spins, p
            )
        )
        grad = np.asarray(jax.grad(value)(poison))
        h, fd = 1e-5, np.zeros(poison.shape)
        for idx in np.ndindex(poison.shape):
            step = jnp.zeros(poison.shape, jnp.float64).at[idx].set(h)
            fd[idx] = (value(poison + step) - value(poison - step)) / (2 * h)
        # The forward fit stops at a gradient norm of 1e-6: that bounds the agreement.
        np.testing.assert_allclose(grad, fd, atol=1e-3 * np.abs(fd).max())


def test_zero_budget_changes_nothing():
    truth = ij.sk_model(jax.random.key(3), 6, beta=1.0)
    spins = exact.sample(jax.random.key(4), truth, 100)
    effect = poisoning.attack_effect(poisoning.refit_nmf, truth, spins, jnp.zeros((0, 6)))
    assert float(effect["delta_mse"]) == 0.0 and float(effect["sign_flips"]) == 0.0


@functools.cache
def _problem():
    truth = ij.sk_model(jax.random.key(5), 8, beta=1.0, bias_std=0.2)
    spins = exact.sample(jax.random.key(6), truth, 200)
    return truth, spins


@pytest.mark.parametrize("method", ["plm", "nmf"])
def test_pgd_poisoning_beats_random_patterns_of_the_same_budget(method):
    truth, spins = _problem()
    refit, k = REFITS[method], 20  # rho = 0.1
    start = spins[jax.random.choice(jax.random.key(7), spins.shape[0], (k,), replace=False)]
    objective = functools.partial(poisoning.mse_objective, truth=truth)
    poison = jax.jit(
        lambda s: poisoning.pgd_poison(refit, objective, spins, s, num_steps=10, step_size=0.5)
    )(start)
    effect = jax.jit(lambda p: poisoning.attack_effect(refit, truth, spins, p)["delta_mse"])
    attacked = float(effect(poison))
    assert set(np.unique(np.asarray(poison))) <= {-1.0, 1.0} and poison.shape == (k, 8)
    keys = jax.random.split(jax.random.key(8), 5)
    noise = jax.vmap(lambda key: jax.random.rademacher(key, (k, 8), jnp.float32))(keys)
    random = np.asarray(jax.vmap(effect)(noise))
    assert attacked > 0 and attacked > random.max()


@pytest.mark.parametrize("method", ["plm", "nmf"])
def test_masked_rows_are_absent_and_a_zero_mask_changes_nothing_exactly(method):
    truth, spins = _problem()
    refit = REFITS[method]
    effect = jax.jit(functools.partial(poisoning.attack_effect, refit, truth))
    poison = jax.random.rademacher(jax.random.key(9), (10, 8), jnp.float32)
    mask = (jnp.arange(10) < 4).astype(jnp.float32)
    half = (jnp.arange(spins.shape[0]) < 100).astype(jnp.float32)
    # zero weights on training rows 100.. and poison rows 4..: those rows are absent
    masked = effect(spins, poison, half, mask)
    sliced = effect(spins[:100], poison[:4], jnp.ones(100), jnp.ones(4))
    for name in ("delta_mse", "rel_dw", "rel_db"):
        np.testing.assert_allclose(masked[name], sliced[name], rtol=2e-3, atol=1e-6)
    assert float(masked["delta_mse"]) != 0.0
    zero = effect(spins, poison, half, jnp.zeros(10))
    assert float(zero["delta_mse"]) == 0.0 and float(zero["rel_dw"]) == 0.0
