"""Evasion attacks and certified flips against closed forms and brute force."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import isingjax as ij
from isingjax import attacks, exact

N = 8


def _setup(seed=0, n=N, num=20):
    params = ij.sk_model(jax.random.key(seed), n, beta=1.0, bias_std=0.3)
    spins = exact.sample(jax.random.key(seed + 1), params, num)
    return params, spins


def _all_targets(fn, params, spins, *args):
    """fn(params, pattern, target, *args) over every pattern and target: [num, n, ...]."""
    targets = jnp.arange(spins.shape[1])
    over_targets = jax.vmap(fn, in_axes=(None, None, 0) + (None,) * len(args))
    return jax.vmap(over_targets, in_axes=(None, 0, None) + (None,) * len(args))(
        params, spins, targets, *args
    )


@pytest.mark.parametrize("attack", ["fgsm", "worst_case_linf", "pgd"])
def test_zero_budget_is_the_identity_and_budgets_are_respected(attack):
    params, spins = _setup()
    if attack == "pgd":
        fn = lambda p, s, i, eps: attacks.pgd(jax.random.key(3), p, s, i, eps)  # noqa: E731
    else:
        fn = getattr(attacks, attack)
    zero = _all_targets(fn, params, spins, 0.0)
    np.testing.assert_array_equal(zero, np.broadcast_to(spins[:, None, :], zero.shape))
    for eps in (0.05, 0.5, 1.0, 2.5):
        x = np.asarray(_all_targets(fn, params, spins, eps))
        s = np.broadcast_to(np.asarray(spins)[:, None, :], x.shape)
        assert np.all(np.abs(x - s) <= eps + 1e-6) and np.all(np.abs(x) <= 1.0)
        diag = x[:, np.arange(N), np.arange(N)]
        np.testing.assert_array_equal(diag, np.asarray(spins))  # the target is never moved


def test_fgsm_is_the_exact_worst_case_and_pgd_is_at_least_as_strong():
    params, spins = _setup()

    def margins(x):
        """s_i h_i(x[p, i]) in float64 NumPy, for attacked patterns x [num, n (target), n]."""
        s_i = np.asarray(spins)  # [num, n]: the target's own spin
        w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
        return s_i * (np.einsum("pij,ij->pi", np.asarray(x, np.float64), w) + b)

    for eps in (0.1, 0.5, 1.0):
        worst = _all_targets(attacks.worst_case_linf, params, spins, eps)
        fgsm = _all_targets(attacks.fgsm, params, spins, eps)
        pgd = _all_targets(
            lambda p, s, i, e: attacks.pgd(jax.random.key(5), p, s, i, e), params, spins, eps
        )
        np.testing.assert_allclose(margins(fgsm), margins(worst), atol=1e-5)
        assert np.all(margins(pgd) <= margins(fgsm) + 1e-4)  # PGD at least as strong
        np.testing.assert_allclose(margins(pgd), margins(worst), atol=1e-4)


def test_closed_form_worst_case_against_brute_force_over_the_box_vertices():
    n = 6
    params, spins = _setup(seed=2, n=n, num=4)
    eps = 0.7
    for s in np.asarray(spins):
        for i in range(n):
            others = [j for j in range(n) if j != i]
            best = np.inf
            for corner in itertools.product([-1, 1], repeat=n - 1):
                x = s.astype(np.float64).copy()
                x[others] = np.clip(s[others] + eps * np.array(corner), -1, 1)
                best = min(best, s[i] * (np.asarray(params.w[i]) @ x + float(params.b[i])))
            x = attacks.worst_case_linf(params, jnp.asarray(s), i, eps)
            assert float(attacks.margin(params, x, i, s[i])) == pytest.approx(best, abs=1e-5)


def test_min_flips_against_brute_force_over_flip_subsets():
    n = 8
    params, spins = _setup(seed=4, n=n, num=6)
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    for s in np.asarray(spins, np.float64):
        for i in range(n):
            others = [j for j in range(n) if j != i]
            brute = n
            for k in range(n):
                for subset in itertools.combinations(others, k):
                    x = s.copy()
                    x[list(subset)] *= -1
                    if s[i] * (w[i] @ x + b[i]) <= 0:
                        brute = k
                        break
                if brute < n:
                    break
            assert int(attacks.min_flips(params, jnp.asarray(s, jnp.float32), i)) == brute


def test_success_rate_and_certified_accuracy_on_hand_built_cases():
    clean = jnp.array([1.0, 2.0, -1.0, 0.5])
    attacked = jnp.array([-1.0, 3.0, -2.0, 0.0])
    # Correct: 1, 2, 0.5 (three); made wrong: the first and the last.
    assert float(attacks.success_rate(clean, attacked)) == pytest.approx(2 / 3)
    k_star = jnp.array([0, 1, 3, 5])
    np.testing.assert_allclose(
        attacks.certified_accuracy(k_star, (0, 1, 2, 4)), [0.75, 0.5, 0.5, 0.25]
    )
