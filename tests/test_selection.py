"""Truth-free choice of K and checkpoint; the data-copying test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def mean_scores(generated):
    """Mean held-out pseudo-log-likelihood over 5 folds, per K of SIZES."""
    _, spins = observed()
    folds = selection.fold_masks(jax.random.key(2), M, 5)

    def fit(data, weights):
        return plm.fit(data, weights)[0]

    scores = jax.jit(
        jax.vmap(lambda held: selection.heldout_scores(fit, spins, held, generated, SIZES))
    )
    return np.asarray(scores(folds)).mean(axis=0)


@pytest.mark.slow
def test_noise_generator_gets_no_samples_exact_generator_gets_some():
    truth, _ = observed()
    noise = jax.random.rademacher(jax.random.key(3), (4 * M, N), jnp.float32)
    fresh = exact.sample(jax.random.key(4), truth, 4 * M)
    scores = np.stack([mean_scores(noise), mean_scores(fresh)])
    assert selection.choose(scores[:1], SIZES) == (0, 0)
    assert selection.choose(scores[1:], SIZES)[1] > 0
    # Both generators as two "checkpoints": the exact one is chosen.
    assert selection.choose(scores, SIZES)[0] == 1


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
