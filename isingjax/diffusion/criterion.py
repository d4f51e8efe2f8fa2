"""The energy-variance criterion: which diffusion checkpoint augments the data.

At every checkpoint a batch is generated and the variance of its energy E(s) under the
Ising model inferred from the observed data is compared with the variance of the
observed samples' energy under the same model, which a user without the true parameters
can compute. The rule implemented by `select`:

    the earliest checkpoint whose relative gap |Var_gen / Var_obs - 1| is at most `tol`;
    if no checkpoint reaches it, the one with the smallest gap.

Why the earliest: an under-trained network generates nearly independent spins, whose
energy distribution differs from the data's; as training goes on the generated energy
variance approaches the observed one, and a network trained much longer on few samples
starts to reproduce the observed states themselves (memorization), which also matches
Var_obs while adding nothing new. Stopping at the first match takes the generator at
the point where it has learned the energy distribution and no later.
"""

from __future__ import annotations

import numpy as np


def relative_gap(var_generated, var_observed) -> np.ndarray:
    """|Var_gen / Var_obs - 1| (elementwise; inf or nan where Var_obs = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(np.asarray(var_generated) / np.asarray(var_observed) - 1.0)


def select(steps, var_generated, var_observed, *, tol: float = 0.1) -> int:
    """The chosen checkpoint step by the rule above.

    Args:
      steps: [C] checkpoint steps in increasing order.
      var_generated: [C] energy variances of the generated batches.
      var_observed: the observed data's energy variance (scalar or [C]).
      tol: relative tolerance of the match.
    """
    steps = np.asarray(steps)
    gap = relative_gap(var_generated, var_observed) * np.ones(len(steps))
    if steps.ndim != 1 or len(steps) == 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must be a non-empty increasing sequence, got {steps.tolist()}.")
    if not np.all(np.isfinite(gap)):
        raise ValueError(f"energy variances must be finite and Var_obs > 0, got gaps {gap}.")
    within = np.flatnonzero(gap <= tol)
    return int(steps[within[0]] if len(within) else steps[np.argmin(gap)])
