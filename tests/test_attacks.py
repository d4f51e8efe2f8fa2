"""Evasion attacks and certified flips against closed forms and brute force."""

import functools
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


def _np_total_loss(w, b, x, s):
    """Sum over conditionals of softplus(-2 s_i h_i(x)), float64 NumPy."""
    return float(np.sum(np.logaddexp(0.0, -2.0 * s * (w @ x + b))))


def test_greedy_flips_against_brute_force_and_a_numpy_greedy():
    n, k_max = 8, 4
    params, spins = _setup(seed=6, n=n, num=5)
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    greedy = jax.jit(functools.partial(attacks.greedy_flips, num_flips=k_max))
    for s in np.asarray(spins, np.float64):
        losses, margins = greedy(params, jnp.asarray(s, jnp.float32))
        losses, margins = np.asarray(losses), np.asarray(margins)
        # brute force: the best total loss over every set of at most k flips
        brute = [_np_total_loss(w, b, s, s)]
        for k in range(1, k_max + 1):
            best = brute[-1]
            for subset in itertools.combinations(range(n), k):
                x = s.copy()
                x[list(subset)] *= -1
                best = max(best, _np_total_loss(w, b, x, s))
            brute.append(best)
        # a NumPy greedy: flip the best not-yet-flipped spin, keep the best prefix
        x, flipped, path = s.copy(), set(), [_np_total_loss(w, b, s, s)]
        for _ in range(k_max):
            cands = {}
            for j in set(range(n)) - flipped:
                y = x.copy()
                y[j] *= -1
                cands[j] = _np_total_loss(w, b, y, s)
            j = max(cands, key=cands.get)
            x[j] *= -1
            flipped.add(j)
            path.append(cands[j])
        np.testing.assert_allclose(losses, np.maximum.accumulate(path), rtol=1e-5)
        assert np.all(losses <= np.asarray(brute) * (1 + 1e-5))  # never above the optimum
        np.testing.assert_allclose(losses[:2], brute[:2], rtol=1e-5)  # one flip: exact
        assert np.all(np.diff(losses) >= 0)  # at most k flips: monotone in k
        # the margins belong to the reported attack: their loss is the reported loss
        np.testing.assert_allclose(
            np.sum(np.logaddexp(0.0, -2.0 * margins), axis=1), losses, rtol=1e-5
        )


def test_pgd_then_round_is_a_valid_attack_of_at_most_k_flips():
    n, k_max = 8, 4
    params, spins = _setup(seed=7, n=n, num=5)
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    attack = jax.jit(functools.partial(attacks.pgd_round, num_flips=k_max))
    one_flip = jax.jit(functools.partial(attacks.greedy_flips, num_flips=1))
    for s in np.asarray(spins, np.float64):
        losses, margins = attack(jax.random.key(0), params, jnp.asarray(s, jnp.float32))
        greedy, _ = one_flip(params, jnp.asarray(s, jnp.float32))
        losses = np.asarray(losses)
        assert losses[0] == pytest.approx(_np_total_loss(w, b, s, s), rel=1e-5)
        assert np.all(np.diff(losses) >= 0)
        assert losses[1] <= float(greedy[1]) * (1 + 1e-5)  # one flip: greedy is exact
        # every reported margin vector is that of some pattern within k flips: the number
        # of wrong conditionals is reproduced by a brute-force search over those patterns
        for k in range(k_max + 1):
            found = False
            for kk in range(k + 1):
                for subset in itertools.combinations(range(n), kk):
                    x = s.copy()
                    x[list(subset)] *= -1
                    if np.allclose(s * (w @ x + b), np.asarray(margins[k]), atol=1e-4):
                        found = True
                        break
                if found:
                    break
            assert found


def test_evaluate_zero_budgets_break_nothing_and_checks_inputs():
    params, spins = _setup(seed=8, n=6, num=30)
    out = attacks.evaluate(jax.random.key(0), params, spins, [0.0, 0.5], [0, 2])
    for name in ("fgsm_success", "pgd_success", "greedy_success", "pgdround_success"):
        assert float(out[name][0]) == 0.0
        assert float(out[name][1]) > 0.0  # and a real budget breaks something
    for name in ("fgsm_accuracy", "pgd_accuracy"):
        assert float(out[name][0]) == pytest.approx(float(out["clean_accuracy"]), abs=1e-6)
    assert float(out["certified_accuracy"][0]) == pytest.approx(float(out["clean_accuracy"]))
    np.testing.assert_allclose(float(np.sum(out["k_star_hist"])), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="spins must be ±1"):
        attacks.evaluate(jax.random.key(0), params, spins * 0.5, [0.1], [1])
    with pytest.raises(ValueError, match="eps must be"):
        attacks.evaluate(jax.random.key(0), params, spins, [-0.1], [1])
    with pytest.raises(ValueError, match=r"budgets must be .* in \[0, 6\]"):
        attacks.evaluate(jax.random.key(0), params, spins, [0.1], [7])


def test_evaluate_second_call_compiles_nothing():
    from tests.test_compile import compilations

    params, spins = _setup(seed=9, n=6, num=16)
    other, other_spins = _setup(seed=10, n=6, num=16)
    with compilations() as first:
        attacks.evaluate(jax.random.key(0), params, spins, [0.1, 0.2], [0, 1])
    assert first
    with compilations() as second:  # new parameters, patterns, key and budgets: same shapes
        attacks.evaluate(jax.random.key(1), other, other_spins, [0.3, 1.0], [2, 3])
    assert second == []
