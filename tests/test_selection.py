"""Truth-free choice of K and checkpoint; the data-copying test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import isingjax as ij
from isingjax import exact
from isingjax.generators import selection
from isingjax.inference import plm

N, M = 10, 300
SIZES = (0, M, 4 * M)


@functools.cache
def observed():
    truth = ij.sk_model(jax.random.key(0), N, beta=1.0, bias_std=0.1)
    return truth, exact.sample(jax.random.key(1), truth, M)


def pooled(generated, method="plm", num_folds=5, score=None):
    """Held-out score (default: the method's own objective) over the folds pooled over the
    rows, the s.e. of the gain over K = 0, per K of SIZES, and each fold's score [F, K]."""
    _, spins = observed()
    folds = selection.fold_masks(jax.random.key(2), M, num_folds)
    score = score or selection.own_score(method)

    def fit(data, weights):
        return ij.inference.METHODS[method](data, weights)[0]

    def reference(data, weights):
        return ij.inference.METHODS["plm"](data, weights)[0]

    rows = jax.jit(
        jax.vmap(
            lambda held: selection.heldout_row_scores(
                fit, spins, held, generated, SIZES, score, reference_fn=reference
            )
        )
    )
    row_scores = rows(folds)
    mean, se = selection.pooled_scores(row_scores, folds, score)
    return mean, se, selection.per_fold_scores(row_scores, folds, score)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, score",
    [
        ("plm", None),
        ("erasure", None),
        ("erasure", "interaction_screening"),
        ("plm", "parameter_distance"),
        ("erasure", "parameter_distance"),
    ],
)
def test_noise_generator_gets_no_samples_exact_generator_gets_some(method, score):
    truth, _ = observed()
    noise = jax.random.rademacher(jax.random.key(3), (4 * M, N), jnp.float32)
    fresh = exact.sample(jax.random.key(4), truth, 4 * M)
    both = zip(pooled(noise, method, score=score), pooled(fresh, method, score=score), strict=True)
    scores, se, _ = (np.stack(x) for x in both)
    for margin in (0.0, 1.0):  # with and without the one-standard-error rule
        assert selection.choose(scores[:1], SIZES, se[:1], margin) == (0, 0)
        assert selection.choose(scores[1:], SIZES, se[1:], margin)[1] > 0
        # Both generators as two "checkpoints": the exact one is chosen.
        assert selection.choose(scores, SIZES, se, margin)[0] == 1
    # The default rule (2 folds, margin 1, each fold confirming the other's pick by 1 of
    # its s.e.) declines the noise too. It takes the exact spins for plm and for the
    # erasure machine scored by interaction screening; for the erasure machine scored by
    # the screening or the parameter distance, the exact spins' gain at M = 300 is 2.5
    # and 3.2 pooled s.e. at K = 4 M, and whether each fold confirms it is not asserted.
    rule = {"margin_se": 1.0, "confirm_se": 1.0}
    both = zip(pooled(noise, method, 2, score), pooled(fresh, method, 2, score), strict=True)
    scores, se, folds = (np.stack(x) for x in both)
    assert selection.choose(scores[:1], SIZES, se[:1], fold_scores=folds[:1], **rule) == (0, 0)
    if method == "plm" or score == "interaction_screening":
        assert selection.choose(scores[1:], SIZES, se[1:], fold_scores=folds[1:], **rule)[1] > 0
        assert selection.choose(scores, SIZES, se, fold_scores=folds, **rule)[0] == 1


def perturbed(truth, seed):
    """Ten models near truth: symmetric coupling and bias perturbations of std 0.05 and 0.2."""
    rng = np.random.default_rng(seed)
    n = truth.b.shape[0]
    for scale in (0.05, 0.2):
        for _ in range(5):
            dw = np.triu(rng.normal(scale=scale, size=(n, n)), 1)
            yield ij.IsingParams(
                w=truth.w + jnp.asarray(dw + dw.T, jnp.float32),
                b=truth.b + jnp.asarray(rng.normal(scale=scale, size=n), jnp.float32),
            )


def test_screening_score_is_highest_at_the_truth():
    # Exact enumeration (n = 8): the population screening score -log sum_s P(s) exp(E(s))
    # of the truth, log Z - n log 2, is above that of every perturbed model, and the
    # held-out score of many exact samples approaches it.
    truth = ij.sk_model(jax.random.key(11), 8, beta=1.0, bias_std=0.3)
    states = exact.index_to_spins(jnp.arange(2**8), 8)
    log_p = np.asarray(exact.all_log_probs(truth), np.float64)

    def population(params):
        e = np.asarray(selection.row_terms(params, states, "screening"), np.float64)
        return -scipy.special.logsumexp(log_p + e)

    best = population(truth)
    np.testing.assert_allclose(best, float(exact.log_partition(truth)) - 8 * np.log(2), rtol=1e-4)
    for other in perturbed(truth, seed=0):
        assert population(other) < best
    spins = exact.sample(jax.random.key(12), truth, 20000)
    rows = selection.row_terms(truth, spins, "screening")[None, None]  # [F = 1, R = 1, M]
    mean, _ = selection.pooled_scores(rows, np.ones((1, 20000)), "screening")
    np.testing.assert_allclose(mean[0], best, atol=0.05)


def test_interaction_screening_score_against_its_closed_form_and_highest_at_the_truth():
    # Exact enumeration (n = 8): summing P(s_i | s_rest) exp(-s_i h_i) over s_i gives the
    # population score -sum_i <cosh(h_i - h*_i) / cosh(h*_i)> over P (h* the true local
    # fields, computed here in NumPy), which is highest where every field is the true one.
    truth = ij.sk_model(jax.random.key(13), 8, beta=1.0, bias_std=0.3)
    states = exact.index_to_spins(jnp.arange(2**8), 8)
    p = np.exp(np.asarray(exact.all_log_probs(truth), np.float64))
    s64 = np.asarray(states, np.float64)

    def fields(params):
        return s64 @ np.asarray(params.w, np.float64).T + np.asarray(params.b, np.float64)

    def population(params):
        terms = np.asarray(selection.row_terms(params, states, "interaction_screening"))
        return float(p @ terms.astype(np.float64))

    def closed_form(params):
        h, h0 = fields(params), fields(truth)
        return -float(p @ np.sum(np.cosh(h - h0) / np.cosh(h0), axis=1))

    best = population(truth)
    np.testing.assert_allclose(best, closed_form(truth), rtol=1e-5)
    for other in perturbed(truth, seed=1):
        np.testing.assert_allclose(population(other), closed_form(other), rtol=1e-5)
        assert population(other) < best


def test_pooled_scores_against_numpy():
    # Row scores of 3 folds x 2 seeds x 3 K x 17 rows; every row is scored by the fold
    # that held it out, and the s.e. is that of the per-row gain over the first K.
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 2, 3, 17)).astype(np.float32)
    held = np.stack(
        [np.asarray(selection.fold_masks(jax.random.key(s), 17, 3)) for s in range(2)], axis=1
    )  # [F, S, M]
    mean, se = selection.pooled_scores(jnp.asarray(rows), jnp.asarray(held))
    for s in range(2):
        fold_of = np.argmax(held[:, s], axis=0)
        own = np.asarray(rows, np.float64)[fold_of, s, :, np.arange(17)].T  # [K, M]
        np.testing.assert_allclose(mean[s], own.mean(axis=1), rtol=1e-5)
        gain = own - own[0]
        expected = gain.std(axis=1, ddof=1) / np.sqrt(17)
        np.testing.assert_allclose(se[s], expected, rtol=1e-4, atol=1e-7)
        assert se[s][0] == 0


def test_parameter_distance_terms_and_their_pooling_against_numpy():
    # Per fold, -(theta_K - theta_ref)^2 of every parameter (b, then w_{i<j}) with the
    # reference fitted on the held-out rows; pooled: the mean over folds and parameters and
    # the s.e. of the mean per-parameter gain over K = 0; per fold: the mean over parameters.
    truth, spins = observed()
    generated = exact.sample(jax.random.key(5), truth, 4 * M)
    folds = selection.fold_masks(jax.random.key(6), M, 2)

    def fit(data, weights):
        return ij.inference.METHODS["erasure"](data, weights)[0]

    def reference(data, weights):
        return ij.inference.METHODS["plm"](data, weights)[0]

    terms = np.asarray(
        jax.vmap(
            lambda held: selection.heldout_row_scores(
                fit, spins, held, generated, SIZES, "parameter_distance", reference
            )
        )(folds),
        np.float64,
    )  # [F, R, P]
    iu = np.triu_indices(N, 1)

    def flat(p):
        return np.concatenate([np.asarray(p.b), np.asarray(p.w)[iu]]).astype(np.float64)

    for f in range(2):
        ref = flat(jax.jit(reference)(spins, folds[f]))
        for r, k in enumerate(SIZES):
            data = jnp.concatenate([spins, generated[:k]])
            weights = jnp.concatenate([1.0 - folds[f], jnp.ones(k)])
            expected = -((flat(jax.jit(fit)(data, weights)) - ref) ** 2)
            np.testing.assert_allclose(terms[f, r], expected, rtol=1e-3, atol=1e-6)
    mean, se = selection.pooled_scores(terms, folds, "parameter_distance")
    per_param = terms.mean(axis=0)  # [R, P]
    np.testing.assert_allclose(mean, per_param.mean(axis=1), rtol=1e-12)
    gain = per_param - per_param[:1]
    expected_se = gain.std(axis=1, ddof=1) / np.sqrt(gain.shape[1])
    np.testing.assert_allclose(se, expected_se, rtol=1e-12)
    per_fold = selection.per_fold_scores(terms, folds, "parameter_distance")
    np.testing.assert_allclose(per_fold, terms.mean(axis=2), rtol=1e-12)
    with pytest.raises(ValueError, match="needs a reference_fn"):
        selection.heldout_row_scores(fit, spins, folds[0], generated, SIZES, "parameter_distance")


def test_pooled_screening_scores_and_their_standard_error_against_a_bootstrap():
    # -log mean exp of the pooled rows, and the delta-method s.e. of the difference to
    # the first K against a bootstrap over the rows (independent of the formula)
    rng = np.random.default_rng(2)
    num = 2000
    base = rng.normal(size=num)
    rows = np.stack([base, base + rng.normal(scale=0.3, size=num) - 0.1])[None]  # [1, 2, M]
    mean, se = selection.pooled_scores(rows, np.ones((1, num)), "screening")
    np.testing.assert_allclose(mean, -np.log(np.exp(rows[0]).mean(axis=1)))
    assert se[0] == 0
    boot = []
    for _ in range(2000):
        pick = rng.integers(0, num, num)
        lme = np.log(np.exp(rows[0][:, pick]).mean(axis=1))
        boot.append(lme[0] - lme[1])
    np.testing.assert_allclose(se[1], np.std(boot), rtol=0.1)


def test_heldout_row_scores_fit_only_the_training_rows_and_the_first_k():
    truth = ij.sk_model(jax.random.key(6), 6, beta=1.0, bias_std=0.1)
    spins, generated = (
        exact.sample(jax.random.key(7), truth, 60),
        exact.sample(jax.random.key(8), truth, 120),
    )
    held = selection.fold_masks(jax.random.key(2), 60, 3)[0]
    sizes = (0, 60)

    def fit(data, weights):
        return plm.fit(data, weights)[0]

    @jax.jit
    def both(spins, held, generated):
        return (
            selection.heldout_row_scores(fit, spins, held, generated, sizes),
            selection.heldout_row_scores(fit, spins, held, generated, sizes, "screening"),
            fit(jnp.concatenate([spins, generated]), weights),
        )

    # independent: the fit at K = 60 on all rows with the held-out and the last 60
    # generated ones weighted 0, its per-row terms in NumPy
    weights = jnp.concatenate([1.0 - held, (jnp.arange(120) < 60).astype(jnp.float32)])
    rows, energies, est = both(spins, held, generated)
    s, w, b = (np.asarray(x, np.float64) for x in (spins, est.w, est.b))
    expected = -np.logaddexp(0, -2 * s * (s @ w.T + b)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(rows[1]), expected, rtol=1e-4)
    expected = -(0.5 * np.sum((s @ w) * s, axis=1) + s @ b)
    np.testing.assert_allclose(np.asarray(energies[1]), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown held-out score"):
        selection.row_terms(est, spins, "likelihood")
    with pytest.raises(ValueError, match=r"sizes must lie in \[0, 120\]"):
        selection.heldout_row_scores(fit, spins, held, generated, (0, 121))


def test_per_fold_scores_against_numpy():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(3, 2, 4, 17))  # [F, S, R, M]
    held = np.stack(
        [np.asarray(selection.fold_masks(jax.random.key(s), 17, 3)) for s in range(2)], axis=1
    )
    plain = selection.per_fold_scores(rows, held)
    screening = selection.per_fold_scores(rows, held, "screening")
    for f in range(3):
        for s in range(2):
            mine = rows[f, s][:, held[f, s] > 0]
            np.testing.assert_allclose(plain[f, s], mine.mean(axis=1))
            np.testing.assert_allclose(screening[f, s], -np.log(np.exp(mine).mean(axis=1)))


def test_choose_with_a_margin_keeps_no_augmentation_unless_the_gain_is_clear():
    scores = [[-10.0, -9.9, -9.5], [-10.0, -9.8, -9.7]]  # best: checkpoint 0, K = 40
    se = [[0.0, 0.05, 0.4], [0.0, 0.05, 0.1]]
    sizes = (0, 10, 40)
    assert selection.choose(scores, sizes) == (0, 40)
    assert selection.choose(scores, sizes, se, margin_se=0.0) == (0, 40)
    assert selection.choose(scores, sizes, se, margin_se=1.0) == (0, 40)  # gain 0.5 > 0.4
    assert selection.choose(scores, sizes, se, margin_se=1.5) == (0, 0)  # 0.5 <= 0.6
    with pytest.raises(ValueError, match="margin_se must be"):
        selection.choose(scores, sizes, se, margin_se=-1.0)
    with pytest.raises(ValueError, match="sizes must include K = 0"):
        selection.choose(scores, (5, 10, 40), se, margin_se=1.0)


def test_choose_with_confirmation_needs_every_fold_to_confirm_the_others_pick():
    sizes, se = (0, 10), [[0.0, 0.1], [0.0, 0.1]]
    # Two checkpoints, two folds; the pooled scores are the folds' mean: [0, 0.6] at both,
    # so the pooled pick is checkpoint 0, K = 10 (gain 0.6 > 1 s.e.). Fold 1 prefers
    # checkpoint 1 (gain 1.0), where fold 0 gains 0.2: confirmed at c s.e. of a fold
    # (sqrt(2) 0.1 c) for c = 1 (0.14), not for c = 2 (0.28).
    folds = [[[0.0, 1.0], [0.0, 0.2]], [[0.0, 0.2], [0.0, 1.0]]]  # [checkpoint, fold, K]
    scores = np.mean(folds, axis=1)
    assert selection.choose(scores, sizes, se, 1.0, folds, 1.0) == (0, 10)
    assert selection.choose(scores, sizes, se, 1.0, folds, 2.0) == (0, 0)
    assert selection.choose(scores, sizes, se, 1.0, folds, 0.0) == (0, 10)  # off
    assert selection.confirmed(folds, sizes, se, 1.0) and not selection.confirmed(
        folds, sizes, se, 2.0
    )
    # With three folds the other folds' mean can pick K = 0 while the fold gains: fold 0
    # gains 1.0, but folds 1 and 2 (mean -0.6) pick K = 0, so fold 0 confirms nothing.
    three = [[[0.0, 1.0], [0.0, -0.6], [0.0, -0.6]]]
    assert not selection.confirmed(three, sizes, se[:1], 0.0)
    assert selection.confirmed([[[0.0, 1.0], [0.0, 0.6], [0.0, 0.6]]], sizes, se[:1], 1.0)
    with pytest.raises(ValueError, match="confirm_se > 0 needs se and fold_scores"):
        selection.choose(scores, sizes, se, 1.0, None, 2.0)
    with pytest.raises(ValueError, match="confirm_se must be"):
        selection.choose(scores, sizes, se, 1.0, folds, -1.0)
    with pytest.raises(ValueError, match=r"fold_scores must be a \[checkpoints, folds >= 2, 2\]"):
        selection.confirmed(np.asarray(folds)[:, :1], sizes, se, 1.0)
    with pytest.raises(ValueError, match="fold_scores must be finite"):
        selection.confirmed(np.full((2, 2, 2), np.nan), sizes, se, 1.0)
    with pytest.raises(ValueError, match="se must be finite and >= 0"):
        selection.choose(scores, sizes, [[0.0, np.nan], [0.0, 0.1]], 1.0)
    with pytest.raises(ValueError, match=r"se must be a \[checkpoints, 2\] array"):
        selection.confirmed(folds, sizes, [0.0, 0.1], 1.0)
    with pytest.raises(ValueError, match="sizes must include K = 0"):
        selection.confirmed(folds, (5, 10), se, 1.0)


def test_choose_breaks_ties_toward_no_augmentation_and_earlier_checkpoints():
    scores = [[1.0, 2.0, 2.0], [2.0, 0.0, 2.0]]
    assert selection.choose(scores, (0, 10, 40)) == (1, 0)
    assert selection.choose([[1.0, 3.0, 2.0], [3.0, 3.0, 0.0]], (40, 10, 0)) == (0, 10)
    with pytest.raises(ValueError, match="non-finite"):
        selection.choose([[np.nan, 1.0]], (0, 10))
    with pytest.raises(ValueError, match=r"\[checkpoints, 3\]"):
        selection.choose([[1.0, 2.0]], (0, 10, 40))


def test_fold_masks_partition_the_samples():
    masks = np.asarray(selection.fold_masks(jax.random.key(0), 23, 5))
    np.testing.assert_array_equal(masks.sum(axis=0), np.ones(23))
    assert sorted(masks.sum(axis=1)) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="num_folds must be between 2 and"):
        selection.fold_masks(jax.random.key(0), 3, 5)


def test_nearest_hamming_against_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.choice([-1.0, 1.0], (7, 9)), rng.choice([-1.0, 1.0], (11, 9))
    brute = [min(int(np.sum(a != b)) for b in r) for a in q]
    np.testing.assert_array_equal(np.asarray(selection.nearest_hamming(q, r)), brute)


def test_data_copying_flags_a_copying_generator_and_passes_fresh_samples():
    truth = ij.sk_model(jax.random.key(5), 16, beta=0.5)
    train = exact.sample(jax.random.key(6), truth, 400)
    heldout = exact.sample(jax.random.key(7), truth, 400)
    copies = train[jax.random.randint(jax.random.key(8), (400,), 0, 400)]
    fresh = exact.sample(jax.random.key(9), truth, 400)
    copying = selection.data_copying_test(copies, train, heldout)
    honest = selection.data_copying_test(fresh, train, heldout)
    assert copying["statistic"] < -5 and copying["p_value"] < 1e-3
    assert copying["mean_distance_generated"] == 0.0
    assert honest["p_value"] > 0.01
