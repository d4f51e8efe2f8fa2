"""Choosing how many generated samples to add, and from which checkpoint, without the
truth; and checking a generator for copies of its training data.

The held-out rule ("train on synthetic + real, test on real"): the observed spins are
split into folds; for each held-out fold the estimator is fitted on the other folds plus
the first K generated spins (a generator trained on those folds only), and scored on the
held-out fold, which needs no truth. K = 0 is always a candidate, so augmentation is used
only where it helps on held-out data. Every observed row is scored once, by the fit of
the fold that held it out (`pooled_scores`); `choose` takes the best score, ties to the
smaller K and the earlier checkpoint, and with a margin (the one-standard-error rule)
keeps K = 0 unless the best K's gain over it exceeds that many standard errors. The best
of many (checkpoint, K) cells gains over K = 0 by a few standard errors even where no
cell gains at all (a winner's curse), so `choose` can also ask every fold to confirm on
rows the pick was not scored on (`confirmed`): the cell the other folds' scores pick must
gain on the fold by more than a stated number of that fold's standard errors.

Four held-out scores (`SCORES`), all maximized in expectation by the true parameters:
  pseudo_likelihood  the mean log pseudo-likelihood sum_i log P(s_i | s_rest) of the
                     held-out rows (plm's objective);
  interaction_screening
                     -sum_i mean_mu exp(-s_i^mu h_i^mu), h_i = b_i + sum_j w_ij s_j: the
                     local interaction screening objectives of Vuffray et al. (NeurIPS
                     2016), one per spin. Its expectation is -sum_i <cosh(h_i - h*_i) /
                     cosh h*_i> over the other spins (h* the true fields), highest where
                     every field is the true one; each term is one spin's exponential,
                     not the whole energy's, so its spread is far smaller than that of
                     the screening score below;
  screening          -log mean_mu exp(E_theta(s^mu)), the erasure machine's objective at
                     eps = 0 (Jo et al.; the global form of the interaction screening
                     objective of Vuffray et al., NeurIPS 2016): its gradient
                     <O exp(E_theta)>_P / <exp(E_theta)>_P vanishes at theta = truth,
                     where exp(E) erases the Boltzmann weight (every operator averages to
                     0 over all states), and it is concave in theta (E is linear in it);
  parameter_distance -mean_k (theta_k - theta_ref_k)^2 over the n(n+1)/2 parameters
                     (b_i, w_{i<j}), theta_ref = plm fitted on the held-out fold: a
                     score in parameter space, where the other three score predictions
                     of the held-out spins. The reference is independent of the fit
                     (disjoint rows), so its expectation is -(MSE of the fit + MSE of the
                     reference) + 2 <bias of the fit, bias of the reference>: up to the
                     reference's small bias (plm's penalty, 1 / M per coupling), the
                     differences between fits estimate their differences in parameter
                     MSE, the quantity the experiment reports.

`own_score(method)` is each estimator's own: screening for the erasure machine, the
pseudo-likelihood for the others (for exact_ml a consistent stand-in for the likelihood,
whose log partition function a held-out score would have to enumerate). Scored by the
pseudo-likelihood, the erasure machine's fits can gain held-out score while their
parameter error rises (shrinking its couplings, as broad generated spins do, raises their
pseudo-likelihood at n = 20, beta = 1; see the README). The local interaction screening
score does the same with the DDPM's spins, while it sees the gain that the screening
score misses with those of the autoregressive model and masked diffusion (README).

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
import scipy.special
import scipy.stats

from isingjax.inference import plm
from isingjax.models import energy, flatten_params


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


SCORES = ("pseudo_likelihood", "interaction_screening", "screening", "parameter_distance")
_OWN_SCORES = {"erasure": "screening"}


def own_score(method: str) -> str:
    """The held-out score of an estimator's own objective (see the module docstring)."""
    return _OWN_SCORES.get(method, "pseudo_likelihood")


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown held-out score {score!r}; known: {SCORES}.")


def row_terms(params, spins, score: str = "pseudo_likelihood") -> jax.Array:
    """Per-row terms [M] of a fit's held-out score on spins [M, n]: the log pseudo-
    likelihood of each row (score 'pseudo_likelihood', the mean of the terms), its
    -sum_i exp(-s_i h_i) ('interaction_screening', the mean of the terms) or its energy
    E_theta(s) ('screening', -log of the mean of exp of the terms)."""
    _check_score(score)
    if score == "screening":
        return energy(params, spins)
    if score == "interaction_screening":
        fields = spins @ params.w.T + params.b
        return -jnp.sum(jnp.exp(-spins * fields), axis=1)
    return plm.log_pseudo_likelihood(params, spins)


def heldout_row_scores(
    fit_fn, spins, heldout, generated, sizes, score: str = "pseudo_likelihood", reference_fn=None
) -> jax.Array:
    """The `row_terms` of every observed row under the estimator fitted on the training
    rows plus the first K generated ones, per K; for 'parameter_distance' the terms
    -(theta_k - theta_ref_k)^2 of every parameter (b, then w_{i<j}) instead, theta_ref the
    reference fitted on the held-out rows.

    Args:
      fit_fn: (spins [N, n], weights [N]) -> IsingParams (an estimator; jit/vmap-able).
      spins: observed spins [M, n].
      heldout: held-out mask [M] (1 = scored, not fitted).
      generated: generated spins [K_max, n].
      sizes: the K to try [R] (Python ints <= K_max; 0 = no augmentation). Each K is
        fitted on observed + generated[:K] only, one shape (one compile) per K.
      score: one of `SCORES`.
      reference_fn: (spins, weights) -> IsingParams, the reference of 'parameter_distance'
        (required there, unused otherwise).

    Returns:
      [R, M]: only the held-out rows' entries are held-out terms (the others were
      fitted); [R, n (n + 1) / 2] for 'parameter_distance'.
    """
    _check_score(score)
    sizes = [int(k) for k in sizes]
    if any(not 0 <= k <= generated.shape[0] for k in sizes):
        raise ValueError(f"sizes must lie in [0, {generated.shape[0]}], got {sizes}.")
    if score == "parameter_distance":
        if reference_fn is None:
            raise ValueError("score 'parameter_distance' needs a reference_fn.")
        reference = flatten_params(reference_fn(spins, heldout))

    def rows(k):
        data = jnp.concatenate([spins, generated[:k]])
        weights = jnp.concatenate([1.0 - heldout, jnp.ones(k, jnp.float32)])
        fit = fit_fn(data, weights)
        if score == "parameter_distance":
            return -((flatten_params(fit) - reference) ** 2)
        return row_terms(fit, spins, score)

    return jnp.stack([rows(k) for k in sizes])


def pooled_scores(row_scores, heldout, score: str = "pseudo_likelihood"):
    """The K-fold scores pooled over the observed rows, each scored by the fit that held
    it out: (score [..., R] over the M rows, standard error [..., R] of its difference to
    the first K, which `choose` takes to be K = 0), in float64 NumPy.

    'pseudo_likelihood' and 'interaction_screening': the mean of the row terms, and the
    s.e. of the mean per-row gain.
    'screening': -log mean_mu exp(t_mu), and the delta-method s.e. of the difference of
    two such scores, std_mu(a_mu / mean(a) - a0_mu / mean(a0)) / sqrt(M) with
    a = exp(t) and a0 that of the first K.
    'parameter_distance': the terms are per parameter [F, ..., R, P], each fold's fit
    against its own reference; the mean over folds and parameters, and the s.e. of the
    mean per-parameter gain (parameters taken as independent; heldout is not used).

    Args:
      row_scores: [F, ..., R, M] `heldout_row_scores` of the F folds.
      heldout: [F, ..., M] their held-out masks (a partition of the rows).
      score: the score the row terms belong to (`SCORES`).
    """
    _check_score(score)
    row_scores = np.asarray(row_scores, np.float64)
    if score == "parameter_distance":
        rows = np.mean(row_scores, axis=0)  # [..., R, P]
    else:
        heldout = np.asarray(heldout, np.float64)
        rows = np.sum(row_scores * heldout[..., None, :], axis=0)  # [..., R, M]
    mean = _reduce(rows, np.ones(rows.shape, bool), score)
    if score == "screening":
        ratio = np.exp(rows + mean[..., None])  # a_mu / mean(a), with a = exp(t)
        diff = ratio[..., :1, :] - ratio
    else:
        diff = rows - rows[..., :1, :]
    return mean, np.std(diff, axis=-1, ddof=1) / np.sqrt(rows.shape[-1])


def per_fold_scores(row_scores, heldout, score: str = "pseudo_likelihood") -> np.ndarray:
    """Each fold's own held-out score [F, ..., R] (float64 NumPy) from its held-out rows'
    terms (from all its parameters' terms for 'parameter_distance'). row_scores
    [F, ..., R, M], heldout [F, ..., M]."""
    _check_score(score)
    row_scores = np.asarray(row_scores, np.float64)
    if score == "parameter_distance":
        return np.mean(row_scores, axis=-1)
    held = np.asarray(heldout, np.float64)[..., None, :] > 0
    return _reduce(row_scores, held, score)


def _reduce(rows, held, score):
    """The score of the row terms [..., M] where held [..., M] is True: their mean, or
    -log mean exp for 'screening'."""
    count = np.sum(held, axis=-1)
    if score == "screening":
        lse = scipy.special.logsumexp(np.where(held, rows, -np.inf), axis=-1)
        return np.log(count) - lse
    return np.sum(np.where(held, rows, 0.0), axis=-1) / count


def choose(
    scores, sizes, se=None, margin_se: float = 0.0, fold_scores=None, confirm_se: float = 0.0
) -> tuple[int, int]:
    """(checkpoint index, K) with the best score; scores [C, R] over checkpoints and the K
    of `sizes` [R]. Ties go to the smaller K, then the earlier checkpoint.

    With se [C, R] (`pooled_scores`: standard errors of the per-row gain over K = 0) and
    margin_se > 0, a best K > 0 whose gain over K = 0 at its checkpoint is not larger than
    margin_se standard errors gives way to K = 0 (the one-standard-error rule: augment only
    where held-out data show it helps). With se, fold_scores [C, F, R] (`per_fold_scores`)
    and confirm_se > 0, a best K > 0 also gives way to K = 0 unless every fold confirms
    augmenting (`confirmed`; each fold checks the cell the other folds pick, which need not
    be the pooled best)."""
    scores, sizes = np.asarray(scores, np.float64), np.asarray(sizes)
    if scores.ndim != 2 or scores.shape[1] != sizes.shape[0] or not np.isfinite(scores).all():
        raise ValueError(
            f"scores must be a finite [checkpoints, {sizes.shape[0]}] array, got shape "
            f"{scores.shape} with {int(np.sum(~np.isfinite(scores)))} non-finite entries."
        )
    for name, value in (("margin_se", margin_se), ("confirm_se", confirm_se)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    if confirm_se > 0 and (se is None or fold_scores is None):
        raise ValueError("confirm_se > 0 needs se and fold_scores.")
    c, r = _best(scores, sizes)
    if se is None:
        return c, int(sizes[r])
    se, r0 = _checked_se(se, sizes, scores.shape)
    if sizes[r] == 0:
        return c, 0
    clear = margin_se == 0 or scores[c, r] - scores[c, r0] > margin_se * se[c, r]
    if clear and (confirm_se == 0 or confirmed(fold_scores, sizes, se, confirm_se)):
        return c, int(sizes[r])
    return _best(scores[:, [r0]], sizes[[r0]])[0], 0


def confirmed(fold_scores, sizes, se, confirm_se: float) -> bool:
    """Whether every fold confirms augmentation on rows the pick was not scored on: for
    each fold f of F, the (checkpoint, K) that the mean score of the other folds picks
    (`choose` without a margin) has K > 0 and gains over K = 0 on fold f by more than
    confirm_se standard errors of a fold's gain, taken as sqrt(F) times the pooled s.e.
    se [C, R] of the gain over all M rows (F folds of M / F rows each). (The other folds'
    fits were trained on fold f's rows; what the check keeps apart is the scoring noise
    of the pick and of its confirmation.)

    fold_scores: [C, F, R] (`per_fold_scores`, checkpoint first); sizes [R] with K = 0.
    """
    fold_scores, sizes = np.asarray(fold_scores, np.float64), np.asarray(sizes)
    se = np.asarray(se, np.float64)
    if se.ndim != 2 or sizes.shape != (se.shape[1],):
        raise ValueError(
            f"se must be a [checkpoints, {sizes.shape[0]}] array (one column per K of sizes), "
            f"got shape {se.shape}."
        )
    se, r0 = _checked_se(se, sizes, se.shape)
    num_folds = fold_scores.shape[1] if fold_scores.ndim == 3 else 0
    if fold_scores.shape != (se.shape[0], num_folds, se.shape[1]) or num_folds < 2:
        raise ValueError(
            f"fold_scores must be a [checkpoints, folds >= 2, {se.shape[1]}] array matching se "
            f"{se.shape}, got shape {fold_scores.shape}."
        )
    if not np.isfinite(fold_scores).all():
        raise ValueError("fold_scores must be finite.")
    for f in range(num_folds):
        others = np.delete(fold_scores, f, axis=1).mean(axis=1)  # [C, R]
        c, r = _best(others, sizes)
        gain = fold_scores[c, f, r] - fold_scores[c, f, r0]
        if sizes[r] == 0 or not gain > confirm_se * math.sqrt(num_folds) * se[c, r]:
            return False
    return True


def _checked_se(se, sizes, shape) -> tuple[np.ndarray, int]:
    """se as a float64 array of the given shape, finite and >= 0, and the column of K = 0
    in sizes; a ValueError naming what is wrong otherwise."""
    se = np.asarray(se, np.float64)
    if se.shape != tuple(shape) or 0 not in sizes:
        raise ValueError(
            f"se must have the shape of scores {tuple(shape)} and sizes must include K = 0, "
            f"got se of shape {se.shape} and sizes {np.asarray(sizes).tolist()}."
        )
    if not (np.isfinite(se).all() and (se >= 0).all()):
        raise ValueError("se must be finite and >= 0.")
    return se, int(np.flatnonzero(np.asarray(sizes) == 0)[0])


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
