"""The energy-variance criterion: which diffusion checkpoint augments the data.

At every checkpoint a batch of B spins is generated and the variance of its energy E(s)
under the Ising model inferred from the observed data is compared with the variance of
the M observed samples' energy under the same model, which a user without the true
parameters can compute (Lim, Lee & Jo, PRE 111, 045302, 2025: the checkpoint whose
generated energy variance matches the observed one).

Both variances are estimates: the sample variance s^2 of N values has the standard error

    se(s^2) = sqrt((m4 - s^4 (N - 3) / (N - 1)) / N),

m4 the sample fourth central moment (`variance_se`; for Gaussian values it is about
s^2 sqrt(2 / N), 14 % of s^2 at M = 100 observed spins). A fixed relative tolerance below
that noise would reject a perfect generator by chance, so the gap is measured in units of
the standard error of the difference of the two (independent) variances,

    z = |Var_gen - Var_obs| / sqrt(se_gen^2 + se_obs^2),

and the rule implemented by `select` is

    the earliest checkpoint from which on z stays within `tol` (default 2: a generator
    whose energy variance is the observed data's passes each checkpoint ~95 % of the time)
    up to the last checkpoint; if the last checkpoint misses `tol`, the checkpoint with
    the smallest z.

Why: an under-trained network generates nearly independent spins whose energy variance
differs from the data's, and on its way to the data's value it can cross it by chance;
requiring the match to persist picks the point where training has converged in this
statistic. Taking the earliest such point rather than the last limits memorization:
trained on few samples, the network goes on to reproduce the observed states themselves,
which keeps Var_obs matched while adding nothing new.

Limits: the model is inferred from the same observed spins whose Var_obs it scores
(in-sample), so Var_obs carries the fit's optimism, which the standard error does not
cover; and one energy variance is a single number that a poor generator can match.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def variance_se(x, axis: int = -1):
    """Standard error of the sample variance mean((x - mean x)^2) along `axis`:
    sqrt((m4 - m2^2 (N - 3) / (N - 1)) / N) with m2, m4 the sample central moments
    (clipped at 0; jit-able)."""
    x = jnp.asarray(x)
    num = x.shape[axis]
    dev = x - jnp.mean(x, axis=axis, keepdims=True)
    m2 = jnp.mean(dev**2, axis=axis)
    m4 = jnp.mean(dev**4, axis=axis)
    return jnp.sqrt(jnp.maximum(m4 - m2**2 * (num - 3) / (num - 1), 0.0) / num)


def gap_in_se(var_generated, var_observed, se) -> np.ndarray:
    """|Var_gen - Var_obs| / se (elementwise; inf or nan where se = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(np.asarray(var_generated) - np.asarray(var_observed)) / np.asarray(se)


def select(steps, var_generated, var_observed, se, *, tol: float = 2.0) -> int:
    """The chosen checkpoint step (the rule above).

    Args:
      steps: [C] checkpoint steps in increasing order.
      var_generated: [C] energy variances of the generated batches.
      var_observed: the observed data's energy variance (scalar or [C]).
      se: [C] (or scalar) standard error of Var_gen - Var_obs,
        sqrt(se_gen^2 + se_obs^2).
      tol: tolerance of the match, in units of se.
    """
    steps = np.asarray(steps)
    if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must be a non-empty increasing sequence, got {steps.tolist()}.")
    gap = gap_in_se(var_generated, var_observed, se) * np.ones(len(steps))
    if not np.all(np.isfinite(gap)):
        raise ValueError(f"energy variances must be finite and their s.e. > 0, got gaps {gap}.")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be finite and > 0, got {tol}.")
    missed = np.flatnonzero(gap > tol)
    if len(missed) and missed[-1] == len(steps) - 1:
        return int(steps[np.argmin(gap)])
    return int(steps[missed[-1] + 1 if len(missed) else 0])
