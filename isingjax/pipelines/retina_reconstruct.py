"""Missing-spike reconstruction under a fitted Ising model, and its scores.

Hiding the spins H (k of them) of a pattern s leaves their conditional distribution

    P(s_H | s_rest) ∝ exp(1/2 s_H^T w_HH s_H + s_H^T (b_H + w_{H,rest} s_rest)),

itself an Ising model over k spins (couplings w_HH, fields b_H + w_{H,rest} s_rest), so
for k <= 20 it is enumerated exactly (isingjax.exact): (a) the most probable completion
argmax over the 2^k states, (b) the conditional marginals P(s_i = +1 | s_rest) for i in H
(predicted spike when > 1/2). Baselines: all-silent (every hidden neuron predicted
silent) and the independent-neuron model (P(spike) = the training firing rate, smoothed
(count + 1/2) / (M + 1)). Spikes (+1) are the positive class of the scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax import exact
from isingjax.models import IsingParams

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] in the log-loss


def conditional(params: IsingParams, spins: jax.Array, hidden: jax.Array) -> IsingParams:
    """The Ising model of the hidden spins given the others: spins [n], hidden [k] -> k spins."""
    rest = spins.at[hidden].set(0.0)
    return IsingParams(w=params.w[hidden][:, hidden], b=params.b[hidden] + params.w[hidden] @ rest)


def complete(params: IsingParams, spins: jax.Array, hidden: jax.Array):
    """(Most probable completion [k] ±1, P(s_i = +1 | rest) [k]) by enumerating 2^k states."""
    cond = conditional(params, spins, hidden)
    k = hidden.shape[0]
    if k == 1:  # P(s = +1 | rest) = sigmoid(2 h)
        p = jax.nn.sigmoid(2.0 * cond.b)
        return jnp.where(cond.b > 0, 1.0, -1.0), p
    log_p = exact.all_log_probs(cond)
    states = exact.index_to_spins(jnp.arange(2**k, dtype=jnp.int32), k)
    return states[jnp.argmax(log_p)], jnp.exp(log_p) @ (states > 0).astype(jnp.float32)


def complete_all(params: IsingParams, patterns: jax.Array, hidden: jax.Array):
    """complete() over patterns [P, n] with hidden sets [P, k] -> ([P, k], [P, k])."""
    return jax.lax.map(lambda a: complete(params, a[0], a[1]), (patterns, hidden), batch_size=64)


def scores(truth: jax.Array, predicted: jax.Array, p_spike: jax.Array | None = None) -> dict:
    """Accuracy, balanced accuracy, F1 on spikes (and log-loss when p_spike is given) of
    predictions of ±1 truth [...]; NaN where undefined (no spike to find)."""
    spike, said = truth > 0, predicted > 0
    tp = jnp.sum(spike & said)
    fp, fn = jnp.sum(~spike & said), jnp.sum(spike & ~said)
    tn = jnp.sum(~spike & ~said)
    tpr = tp / (tp + fn)
    tnr = tn / (tn + fp)
    out = {
        "accuracy": jnp.mean(spike == said),
        "balanced_accuracy": 0.5 * (tpr + tnr),
        "f1": 2 * tp / jnp.maximum(2 * tp + fp + fn, 1) + jnp.where(tp + fn > 0, 0.0, jnp.nan),
        "spike_fraction": jnp.mean(spike),
    }
    if p_spike is not None:
        p = jnp.clip(p_spike, EPS, 1 - EPS)
        out["log_loss"] = -jnp.mean(jnp.where(spike, jnp.log(p), jnp.log1p(-p)))
    return out


def model_scores(params: IsingParams, patterns, hidden) -> dict:
    """{'map_*': scores of the most probable completion, 'marginal_*': of the thresholded
    conditional marginals (with log-loss)} of hiding `hidden` [P, k] in patterns [P, n]."""
    truth = jnp.take_along_axis(patterns, hidden, axis=1)
    best, p = complete_all(params, patterns, hidden)
    return {f"map_{k}": v for k, v in scores(truth, best).items() if k != "spike_fraction"} | {
        f"marginal_{k}": v for k, v in scores(truth, jnp.where(p > 0.5, 1.0, -1.0), p).items()
    }


def independent_rates(observed: jax.Array) -> jax.Array:
    """Smoothed firing rates (count + 1/2) / (M + 1) of ±1 patterns [M, n] -> [n]."""
    return (jnp.sum(observed > 0, axis=0) + 0.5) / (observed.shape[0] + 1.0)


def per_neuron_scores(truth: jax.Array, p: jax.Array) -> dict:
    """Scores of a predictor that gives each hidden neuron its own P(spike) p [...] (its
    completion is per neuron, so the same scores go under 'map_' and 'marginal_')."""
    out = scores(truth, jnp.where(p > 0.5, 1.0, -1.0), p)
    return {f"{m}_{k}": v for m in ("map", "marginal") for k, v in out.items()}


def baseline_scores(rates: jax.Array, patterns, hidden) -> dict:
    """The all-silent and independent-neuron baselines (same keys as model_scores, the
    independent model under both 'map_' and 'marginal_': its completion is per neuron)."""
    truth = jnp.take_along_axis(patterns, hidden, axis=1)
    silent = scores(truth, -jnp.ones_like(truth))
    return {
        "silent": {f"{m}_{k}": v for m in ("map", "marginal") for k, v in silent.items()},
        "independent": per_neuron_scores(truth, rates[hidden]),
    }


def inpainting_scores(spike_fraction: jax.Array, num_draws: int, patterns, hidden) -> dict:
    """Scores of inpainting with a generator: spike_fraction [P, k], the fraction of
    num_draws inpainted completions in which each hidden neuron spikes, smoothed to
    P(spike) = (count + 1/2) / (num_draws + 1) (a spike predicted by a strict majority)."""
    truth = jnp.take_along_axis(patterns, hidden, axis=1)
    return per_neuron_scores(truth, (spike_fraction * num_draws + 0.5) / (num_draws + 1.0))
