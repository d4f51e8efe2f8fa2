"""Choosing how many generated samples to add, and from which checkpoint, without the
truth; and checking a generator for copies of its training data.

The held-out rule ("train on synthetic + real, test on real"): the observed spins are
split into folds; for each held-out fold the estimator is fitted on the other folds plus
the first K generated spins (a generator trained on those folds only), and scored by the
pseudo-log-likelihood of the held-out fold (the downstream task's own score, which needs
no truth). K = 0 is always a candidate, so augmentation is used only where it helps on
held-out data. Every observed row is scored once, by the fit of the fold that held it out
(`pooled_scores`); `choose` takes the best mean score, ties to the smaller K and the
earlier checkpoint, and with a margin (the one-standard-error rule) keeps K = 0 unless the
best K's gain over it exceeds that many standard errors of the per-row gain.

The data-copying test (Meehan, Chaudhuri & Dasgupta, AISTATS 2020), in its global form:
the Hamming distance of every generated sample to its nearest training sample is
compared with that of held-out samples (from the same distribution as the training
data) by a Mann-Whitney U test. Z << 0 means generated samples sit closer to the
training data than fresh data do: the generator copies.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from isingjax.inference import plm


def fold_masks(key: jax.Array, num_samples: int, num_folds: int) -> jax.Array:
    """Held-out masks [num_folds, num_samples] (float 0/1): a random partition into folds
    of sizes differing by at most one."""
    if not 2 <= num_folds <= num_samples:
        raise ValueError(
            f"num_folds must be between 2 and the number of samples ({num_samples}), "
            f"got {num_folds}."
        )
    fold_of = jax.random.permutation(key, num_samples) % num_folds
    return (fold_of[None, :] == jnp.arange(num_folds)[:, None]).astype(jnp.float32)


def heldout_row_scores(fit_fn, spins, heldout, generated, sizes) -> jax.Array:
    """Log pseudo-likelihood of every observed row under the estimator fitted on the
    training rows plus the first K generated ones, per K.

    Args:
      fit_fn: (spins [N, n], weights [N]) -> IsingParams (an estimator; jit/vmap-able).
      spins: observed spins [M, n].
      heldout: held-out mask [M] (1 = scored, not fitted).
      generated: generated spins [K_max, n].
      sizes: the K to try [R] (ints <= K_max; 0 = no augmentation).

    Returns:
      [R, M] (nats; higher is better). Only the held-out rows' entries are held-out
      scores: the others were fitted.
    """
    data = jnp.concatenate([spins, generated])
    train = jnp.concatenate([1.0 - heldout, jnp.zeros(generated.shape[0])])
    index = jnp.arange(generated.shape[0])

    def rows(k):
        weights = train.at[spins.shape[0] :].set((index < k).astype(jnp.float32))
        return plm.log_pseudo_likelihood(fit_fn(data, weights), spins)

    return jax.vmap(rows)(jnp.asarray(sizes))


def heldout_scores(fit_fn, spins, heldout, generated, sizes) -> jax.Array:
    """Mean pseudo-log-likelihood (nats per spin pattern) of the held-out spins, per K
    [R]: `heldout_row_scores` averaged over the held-out rows."""
    rows = heldout_row_scores(fit_fn, spins, heldout, generated, sizes)
    return rows @ heldout / jnp.sum(heldout)


def pooled_scores(row_scores, heldout) -> tuple[np.ndarray, np.ndarray]:
    """The K-fold scores pooled over the observed rows, each scored by the fit that held
    it out: (mean [..., R] over the M rows, standard error [..., R] of the mean per-row
    difference to the first K, which `choose` takes to be K = 0), in float64 NumPy.

    Args:
      row_scores: [F, ..., R, M] `heldout_row_scores` of the F folds.
      heldout: [F, ..., M] their held-out masks (a partition of the rows).
    """
    row_scores = np.asarray(row_scores, np.float64)
    heldout = np.asarray(heldout, np.float64)
    rows = np.sum(row_scores * heldout[..., None, :], axis=0)  # [..., R, M]
    diff = rows - rows[..., :1, :]
    se = np.std(diff, axis=-1, ddof=1) / np.sqrt(rows.shape[-1])
    return np.mean(rows, axis=-1), se


def choose(scores, sizes, se=None, margin_se: float = 0.0) -> tuple[int, int]:
    """(checkpoint index, K) with the best score; scores [C, R] over checkpoints and the K
    of `sizes` [R]. Ties go to the smaller K, then the earlier checkpoint.

    With se [C, R] (`pooled_scores`: standard errors of the per-row gain over K = 0) and
    margin_se > 0, a best K > 0 whose gain over K = 0 at its checkpoint is not larger than
    margin_se standard errors gives way to K = 0 (the one-standard-error rule: augment only
    where held-out data show it helps)."""
    scores, sizes = np.asarray(scores, np.float64), np.asarray(sizes)
    if scores.ndim != 2 or scores.shape[1] != sizes.shape[0] or not np.isfinite(scores).all():
        raise ValueError(
            f"scores must be a finite [checkpoints, {sizes.shape[0]}] array, got shape "
            f"{scores.shape} with {int(np.sum(~np.isfinite(scores)))} non-finite entries."
        )
    if se is not None and (np.shape(se) != scores.shape or 0 not in sizes):
        raise ValueError(
            f"se must have the shape of scores {scores.shape} and sizes must include K = 0, "
            f"got se of shape {np.shape(se)} and sizes {sizes.tolist()}."
        )
    if not (math.isfinite(margin_se) and margin_se >= 0):
        raise ValueError(f"margin_se must be a finite number >= 0, got {margin_se}.")
    c, r = _best(scores, sizes)
    if se is not None and margin_se > 0 and sizes[r] > 0:
        r0 = int(np.flatnonzero(sizes == 0)[0])
        if scores[c, r] - scores[c, r0] <= margin_se * np.asarray(se, np.float64)[c, r]:
            return _best(scores[:, [r0]], sizes[[r0]])[0], 0
    return c, int(sizes[r])


def _best(scores, sizes) -> tuple[int, int]:
    """(checkpoint index, column index) of the best score, ties to the smaller K and then
    the earlier checkpoint."""
    best = np.max(scores)
    for r in np.argsort(sizes, kind="stable"):
        hits = np.flatnonzero(scores[:, r] == best)
        if hits.size:
            return int(hits[0]), int(r)
    raise AssertionError("unreachable: the maximum is in the array")


def nearest_hamming(queries: jax.Array, reference: jax.Array) -> jax.Array:
    """Hamming distance of each query [Q, n] to its nearest reference [R, n] (±1) -> [Q]."""
    overlap = jnp.asarray(queries, jnp.float32) @ jnp.asarray(reference, jnp.float32).T
    return (queries.shape[1] - jnp.max(overlap, axis=1)) / 2


def data_copying_test(generated, train, heldout) -> dict[str, float]:
    """Mann-Whitney test of nearest-training-sample distances, generated vs held-out.

    Returns {'statistic': Z (normal approximation of U, negative = generated closer to the
    training data), 'p_value': one-sided p of copying, 'mean_distance_generated',
    'mean_distance_heldout'}.
    """
    d_gen = np.asarray(nearest_hamming(generated, train))
    d_held = np.asarray(nearest_hamming(heldout, train))
    u, p_value = scipy.stats.mannwhitneyu(d_gen, d_held, alternative="less")
    n1, n2 = len(d_gen), len(d_held)
    z = (u - n1 * n2 / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return {
        "statistic": float(z),
        "p_value": float(p_value),
        "mean_distance_generated": float(d_gen.mean()),
        "mean_distance_heldout": float(d_held.mean()),
    }
