import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import isingjax as ij
from isingjax import exact
from tests.reference import brute_force, scipy_asymmetric_plm


def population(n=6, beta=1.0, bias_std=0.3, seed=0):
    """All 2^n states weighted by their exact probabilities (the infinite-data limit)."""
    params = ij.sk_model(jax.random.key(seed), n, beta=beta, bias_std=bias_std)
    states = exact.index_to_spins(jnp.arange(2**n), n)
    return params, states, jnp.exp(exact.all_log_probs(params))


def max_abs_error(estimate, truth):
    return max(
        float(jnp.max(jnp.abs(estimate.w - truth.w))), float(jnp.max(jnp.abs(estimate.b - truth.b)))
    )


@pytest.mark.parametrize(
    "method, options",
    [
        ("plm", dict(l2=0.0, tol=1e-7)),
        ("plm", dict(l2=0.0, tol=1e-7, symmetric=False)),
        ("exact_ml", dict(tol=1e-6)),
    ],
)
def test_population_limit_recovers_truth(method, options):
    truth, states, probs = population()
    estimate = ij.infer(states, method, weights=probs, **options)
    assert max_abs_error(estimate, truth) < 1e-4


def test_erasure_population_limit_bias_vanishes_as_eps_goes_to_zero():
    # In the infinite-data limit the erasure machine's fixed point is the truth only as
    # eps -> 0; its bias grows with eps (MSE 1.7e-6 at eps = 0.1, 5.8e-3 at eps = 0.9 for
    # this model). With finite data the selected eps trades this bias against variance.
    truth, states, probs = population(beta=0.5, bias_std=0.2)
    mses = []
    for eps in (0.1, 0.4, 0.7, 0.9):
        estimate, info = ij.infer_with_info(
            states, "erasure", weights=probs, eps_grid=(eps,), num_iters=1000
        )
        mses.append(float(ij.metrics.param_mse(estimate, truth)["all"]))
        assert float(info["stationarity"]) < 1e-5
    assert mses[0] < 1e-5, mses
    assert all(a < b for a, b in zip(mses, mses[1:], strict=False)), mses
    assert mses[-1] < 1e-2, mses


def test_mean_field_exact_for_independent_spins_and_close_at_weak_coupling():
    n = 6
    b = jnp.linspace(-0.8, 0.6, n)
    independent = ij.IsingParams(w=jnp.zeros((n, n)), b=b)
    states = exact.index_to_spins(jnp.arange(2**n), n)
    probs = jnp.exp(exact.all_log_probs(independent))
    for method in ("nmf", "tap"):
        estimate = ij.infer(states, method, weights=probs)
        assert max_abs_error(estimate, independent) < 1e-4, method
    # At weak coupling nMF errs at second order in w and TAP corrects it.
    weak, states, probs = population(beta=0.1, bias_std=0.2)
    nmf_error = max_abs_error(ij.infer(states, "nmf", weights=probs), weak)
    tap_error = max_abs_error(ij.infer(states, "tap", weights=probs), weak)
    assert nmf_error < 1e-2 and tap_error < nmf_error / 5, (nmf_error, tap_error)


def test_asymmetric_plm_matches_scipy_reference():
    truth = ij.sk_model(jax.random.key(1), 8, beta=1.0, bias_std=0.3)
    spins = exact.sample(jax.random.key(2), truth, 500)
    w_ref, b_ref = scipy_asymmetric_plm(spins, l2=0.01, l2_bias=0.001)
    est = ij.infer(spins, "plm", symmetric=False, l2=0.01, l2_bias=0.001)
    assert np.max(np.abs(np.asarray(est.w) - w_ref)) <= 1e-3
    assert np.max(np.abs(np.asarray(est.b) - b_ref)) <= 1e-3


def test_erasure_stationarity_and_literature_mse():
    n, beta = 20, 0.5
    truth = ij.sk_model(jax.random.key(3), n, beta=beta, bias_std=beta / np.sqrt(n))
    spins = exact.sample(jax.random.key(4), truth, 800)
    estimate, info = ij.infer_with_info(spins, "erasure")
    assert float(info["stationarity"]) < 1e-4
    mse = float(ij.metrics.param_mse(estimate, truth)["all"])
    # Hoang et al. (PRE 2019) report MSE ~2-3e-3 for this setting; we measure 2.2e-3 (eps = 0.65).
    assert 1.5e-3 < mse < 4e-3, mse


@pytest.mark.parametrize("method", ["plm", "erasure", "nmf", "tap", "exact_ml"])
def test_error_decreases_with_sample_size(method):
    truth = ij.sk_model(jax.random.key(5), 10, beta=0.7, bias_std=0.2)
    spins = exact.sample(jax.random.key(6), truth, 3200)
    sizes = (100, 400, 3200)
    fit = jax.jit(jax.vmap(lambda w: ij.infer(spins, method, weights=w)))
    weights = (jnp.arange(3200)[None, :] < jnp.asarray(sizes)[:, None]).astype(jnp.float32)
    estimates = fit(weights)
    mses = jax.vmap(lambda est: ij.metrics.param_mse(est, truth)["all"])(estimates).tolist()
    assert mses[0] > mses[1] > mses[2], mses


@pytest.mark.parametrize("method", ["plm", "erasure", "tap"])
def test_vmap_over_datasets_equals_loop(method):
    truth = ij.sk_model(jax.random.key(7), 6, beta=1.0, bias_std=0.2)
    data = jax.vmap(lambda k: exact.sample(k, truth, 200))(jax.random.split(jax.random.key(8), 3))
    fit = functools.partial(ij.infer, method=method)
    batched = jax.jit(jax.vmap(fit))(data)
    for i in range(3):
        single = jax.jit(fit)(data[i])
        np.testing.assert_allclose(batched.w[i], single.w, atol=2e-5)


def test_erasure_random_start_is_keyed():
    truth = ij.sk_model(jax.random.key(9), 6, beta=1.0)
    spins = exact.sample(jax.random.key(10), truth, 200)
    with pytest.warns(UserWarning, match="stopped before"):  # 5 iterations do not converge
        a = ij.infer(spins, "erasure", init_scale=0.1, key=jax.random.key(1), num_iters=5)
        b = ij.infer(spins, "erasure", init_scale=0.1, key=jax.random.key(1), num_iters=5)
        c = ij.infer(spins, "erasure", init_scale=0.1, key=jax.random.key(2), num_iters=5)
    np.testing.assert_array_equal(a.w, b.w)
    assert not np.array_equal(a.w, c.w)


@pytest.mark.parametrize("method", ["plm", "erasure", "nmf", "tap", "exact_ml"])
def test_degenerate_data_gives_finite_answer_and_warning(method):
    rng_spins = np.array(exact.sample(jax.random.key(11), ij.sk_model(jax.random.key(12), 8), 6))
    rng_spins[:, 3] = 1.0  # a spin that never changes; also M = 6 < n = 8
    duplicated = np.concatenate([rng_spins, rng_spins])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = ij.infer(duplicated, method)
    assert np.all(np.isfinite(est.w)) and np.all(np.isfinite(est.b))
    assert any("never change" in str(w.message) for w in caught)


def test_penalized_exact_ml_is_stationary_by_brute_force():
    """The l2_per_sample fit solves <s_i s_j>_model - <s_i s_j>_data + 2 (c / M) w_ij = 0
    and <s_i>_model = <s_i>_data, checked with a NumPy loop over the 2^6 states; without
    the penalty the same 12 samples drive the couplings far beyond the truth."""
    truth = ij.sk_model(jax.random.key(3), 6, beta=1.5, bias_std=0.2)
    spins = exact.sample(jax.random.key(4), truth, 12)
    est, info = ij.infer_with_info(spins, "exact_ml", l2_per_sample=1.0, tol=1e-6)
    _, probs, states = brute_force(np.asarray(est.w), np.asarray(est.b))
    x = np.asarray(spins, np.float64)
    grad_w = states.T @ (probs[:, None] * states) - x.T @ x / len(x) + 2 * est.w / len(x)
    grad_b = probs @ states - x.mean(0)
    off = ~np.eye(6, dtype=bool)
    assert np.max(np.abs(grad_w[off])) < 1e-4 and np.max(np.abs(grad_b)) < 1e-4
    assert float(info["l2"]) == pytest.approx(1 / 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = ij.infer(spins, "exact_ml", max_iter=300)
    assert float(jnp.max(jnp.abs(plain.w))) > 3 * float(jnp.max(jnp.abs(est.w)))


def test_unregularized_plm_diverges_and_default_does_not():
    truth = ij.sk_model(jax.random.key(13), 20, beta=1.0, bias_std=0.1)
    spins = exact.sample(jax.random.key(14), truth, 50)  # M = 2.5 n: separable data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = ij.infer(spins, "plm", l2=0.0)
    default = ij.infer(spins, "plm")
    largest = float(jnp.max(jnp.abs(truth.w)))
    assert float(jnp.max(jnp.abs(plain.w))) > 10 * largest
    assert float(jnp.max(jnp.abs(default.w))) < 3 * largest
    assert (
        ij.metrics.param_mse(default, truth)["all"] < ij.metrics.param_mse(plain, truth)["all"] / 10
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(method="mle"),
            "unknown method 'mle'; valid methods: plm, erasure, nmf, tap, exact_ml",
        ),
        (dict(method="plm", lam=0.1), r"unknown option\(s\) lam; its options are: symmetric, l2"),
        (
            dict(method="plm", weights=np.ones(3)),
            r"weights must have shape \[num_samples\] = \[10\]",
        ),
        (
            dict(method="plm", weights=-np.ones(10)),
            r"weights must be finite and >= 0; weights\[0\]",
        ),
        (dict(method="plm", weights=np.zeros(10)), "all weights are zero"),
        (dict(method="exact_ml", l2_per_sample=-1.0), "exact_ml: l2_per_sample must be finite"),
        (dict(method="plm", l2=float("nan")), "plm: l2 must be finite and >= 0, got nan"),
    ],
)
def test_infer_rejects_bad_arguments(kwargs, match):
    spins = np.where(np.arange(40).reshape(10, 4) % 3, 1.0, -1.0)
    with pytest.raises(ValueError, match=match):
        ij.infer(spins, **kwargs)


def test_infer_rejects_invalid_spins_and_large_exact_ml():
    with pytest.raises(ValueError, match=r"entry \[0, 1\] is 0.5"):
        ij.infer(np.array([[1.0, 0.5], [1.0, -1.0]]), "plm")
    with pytest.raises(ValueError, match="exact_ml .* needs n <= 20; got n = 21"):
        ij.infer(np.ones((5, 21)), "exact_ml")


def test_erasure_without_operator_matrix_gives_the_same_fit(monkeypatch):
    truth = ij.sk_model(jax.random.key(15), 7, beta=1.0, bias_std=0.2)
    spins = exact.sample(jax.random.key(16), truth, 300)
    with_phi, info = ij.infer_with_info(spins, "erasure", num_iters=200)
    monkeypatch.setattr(ij.inference.erasure, "MAX_OPERATOR_ENTRIES", 0)
    without, info2 = ij.infer_with_info(spins, "erasure", num_iters=200)
    np.testing.assert_allclose(without.w, with_phi.w, atol=1e-5)
    np.testing.assert_allclose(without.b, with_phi.b, atol=1e-5)
    assert info["eps"] == info2["eps"]


@functools.cache
def _many_samples_and_scipy_fit():
    """6800 exact samples of an n = 12 SK model at beta = 1 and their float64 SciPy
    asymmetric plm fit (l2 = 1e-4): spins, (w, b)."""
    truth = ij.sk_model(jax.random.key(0), 12, beta=1.0, bias_std=0.3)
    spins = exact.sample(jax.random.key(1), truth, 6800)
    return spins, scipy_asymmetric_plm(np.asarray(spins), l2=1e-4)


def test_lbfgs_stops_when_a_float32_loss_stalls():
    # PLM on 6800 samples with a tolerance float32 cannot reach: the loss reaches its
    # rounding first (near gradient norm 2e-7). The solver stops (not at max_iter), says
    # so, and the estimate agrees with a float64 SciPy fit to the precision float32 allows.
    spins, (w_ref, b_ref) = _many_samples_and_scipy_fit()
    est, info = ij.infer_with_info(spins, "plm", symmetric=False, l2=1e-4, max_iter=2000, tol=1e-8)
    assert int(info["iterations"]) < 2000
    assert bool(info["stalled"]) and bool(info["converged"])
    assert float(info["grad_norm"]) >= 1e-8  # stopped by the stall rule, not by tol
    assert np.max(np.abs(np.asarray(est.w) - w_ref)) <= 1e-5
    assert np.max(np.abs(np.asarray(est.b) - b_ref)) <= 1e-5


def test_plm_reaches_the_default_tolerance_where_the_product_form_stalled():
    # n = 12, beta = 1, M = 6800: summed as the float32 product p @ terms the loss was too
    # coarse for the line search (170 iterations, stalled at gradient norm 1e-3, 3e-3
    # from the float64 fit); summed elementwise it converges to tol.
    spins, (w_ref, _) = _many_samples_and_scipy_fit()
    est, info = ij.infer_with_info(spins, "plm", symmetric=False, l2=1e-4)
    assert not bool(info["stalled"]) and float(info["grad_norm"]) < 1e-5
    assert np.max(np.abs(np.asarray(est.w) - w_ref)) <= 1e-4


@pytest.mark.parametrize("method", ["nmf", "tap"])
def test_mean_field_says_why_it_did_not_converge(method):
    spins = np.array(exact.sample(jax.random.key(20), ij.sk_model(jax.random.key(21), 6), 300))
    spins[:, 1] = spins[:, 0]  # two identical spins: a singular correlation matrix
    with pytest.warns(UserWarning, match="needed a ridge beyond the requested one"):
        ij.infer(spins, method)


def test_static_options_may_be_lists_or_arrays():
    spins = exact.sample(jax.random.key(22), ij.sk_model(jax.random.key(23), 6), 200)
    as_tuple = ij.infer(spins, "erasure", eps_grid=(0.5, 0.7))
    for grid in ([0.5, 0.7], np.array([0.5, 0.7])):
        np.testing.assert_array_equal(ij.infer(spins, "erasure", eps_grid=grid).w, as_tuple.w)
