"""The `guided` pipeline's results: results.npz, the choice of gamma, summary.md.

The choice of gamma. Per guided sampler, gamma is the value > 0 of its grid (gamma = 0 is
the baseline's samples bit for bit, reported in the baseline row) with the lowest mean
over seeds of the *validation* NLL of the first estimator (config.inference.methods[0])
fitted on observed + samples. The validation spins are fresh exact draws of the true
model with their own key, disjoint from the test spins that score every reported NLL.
Fresh draws rather than a split of the observed spins: the observed set then stays the
one the diffusion model, the estimators and the classifier see (a split would shrink it
and change the experiment), and the exact NLL on a separate set is the same measurement
as the test one, so nothing reported is scored on data that chose it. Every gamma's
numbers stay in results.jsonl / results.npz and in the figures.

The Δ columns are paired differences over seeds (mean ± standard error): from unguided
augmentation (the baseline sampler, all K samples) and from the count control (observed
+ as many randomly chosen unguided samples as the sampler used: for rejection its
accepted ones, for the others all K, so there the control is the baseline). Rows 'l2 =
c/M' refit the penalized estimators with the penalty held at its observed-only value
instead of c / (total weight).
"""

from __future__ import annotations

import inspect

import numpy as np

from isingjax import inference, sweeps
from isingjax.pipelines import common

COORDS = ("sampler", "gamma", "seed")
METRICS = (
    "tail_fraction",
    "tail_mass",
    "mean_log_prob",
    "cross_entropy",
    "kl",
    "unique_fraction",
    "novelty",
    "mean_hamming",
    "energy_mean",
    "energy_var",
    "energy_q05",
    "energy_q50",
    "energy_q95",
    "means_rmse",
    "corr_rmse",
    "accepted",
    "control_count",
    "num_nonfinite",
    "converged",
)


def penalty_per_sample(config, method: str) -> float:
    """c of a method's penalty l2 = c / (total weight); 0 where it has none (or a fixed l2)."""
    options = config.inference.options.get(method, {})
    if "l2_per_sample" not in inference.options_of(method) or "l2" in options:
        return 0.0
    default = inspect.signature(inference.METHODS[method]).parameters["l2_per_sample"].default
    return float(options.get("l2_per_sample", default))


def penalized(config) -> list[str]:
    """The methods with a per-sample penalty (those the fixed-penalty rows refit)."""
    return [m for m in config.inference.methods if penalty_per_sample(config, m)]


def metric_names(config) -> list[str]:
    names = list(METRICS)
    for m in config.inference.methods:
        names += [f"mse_{m}", f"nll_{m}", f"val_nll_{m}", f"mse_ctrl_{m}", f"nll_ctrl_{m}"]
    for m in penalized(config):
        names += [f"{p}_{a}fixed_{m}" for p in ("mse", "nll") for a in ("", "ctrl_")]
    return names


def write_npz(path, records, config) -> dict:
    """{metric: [sampler, gamma, seed]} (NaN where not measured) with coordinate arrays."""
    samplers = ["observed", *config.guidance.samplers]
    grids = [[0.0]] + [[float(g) for g in config.guidance.gammas[s]] for s in samplers[1:]]
    width = max(len(g) for g in grids)
    names = metric_names(config)
    shape = (len(samplers), width, config.num_seeds)
    arrays = {name: np.full(shape, np.nan) for name in names}
    gammas = np.full((len(samplers), width), np.nan)
    index = {}
    for i, (s, grid) in enumerate(zip(samplers, grids, strict=True)):
        gammas[i, : len(grid)] = grid
        for j, g in enumerate(grid):
            for seed in range(config.num_seeds):
                index[(s, g, seed)] = (i, j, seed)
    sweeps.fill_cells(arrays, index, records, COORDS)
    # A sampler that uses all K samples has the baseline arm (all K unguided samples, the
    # same data) as its count control; the pipeline fits it once, in the baseline row.
    if "baseline" in samplers:
        base = samplers.index("baseline")
        for name in names:
            if "_ctrl_" in name:
                arm = arrays[name.replace("ctrl_", "")][base, 0]
                full = arrays["control_count"] == arrays["accepted"][base, 0]
                arrays[name] = np.where(np.isnan(arrays[name]) & full, arm, arrays[name])
    arrays |= {"samplers": np.asarray(samplers), "gammas": gammas, "seeds": np.arange(shape[2])}
    np.savez(path, **arrays)
    return arrays


def validation_means(arrays, config) -> np.ndarray:
    """[sampler, gamma] mean over seeds of the first estimator's validation NLL; inf where
    a gamma may not be chosen (gamma = 0 of a guided sampler, padding, unmeasured seeds)."""
    nll = arrays[f"val_nll_{config.inference.methods[0]}"]
    allowed = (arrays["gammas"] > 0) | np.isin(arrays["samplers"], ["observed", "baseline"])[
        :, None
    ]
    ok = np.isfinite(nll).all(axis=-1) & allowed
    return np.where(ok, np.where(ok[..., None], nll, 0.0).mean(axis=-1), np.inf)


def chosen_gamma_index(arrays, config) -> np.ndarray:
    """Per sampler, the index of the gamma with the lowest mean validation NLL."""
    return np.argmin(validation_means(arrays, config), axis=1)


def check_nonfinite(records, allow: bool) -> None:
    """Raises when a cell's sampler produced non-finite samples, unless allowed."""
    bad = [r for r in records if r.get("num_nonfinite", 0) > 0]
    if bad and not allow:
        cells = ", ".join(
            f"{r['sampler']} γ={r['gamma']:g} seed {r['seed']}: {int(r['num_nonfinite'])}"
            for r in bad[:5]
        )
        raise FloatingPointError(
            f"{len(bad)} cell(s) produced non-finite samples before thresholding ({cells}); "
            "their spins are not samples of the model. Lower the guidance strength or "
            "guidance.options.max_norm, or set guidance.allow_nonfinite=True to report them "
            "(flagged in summary.md)."
        )


def _flags(arrays, i, j) -> str:
    flags = []
    bad = arrays["num_nonfinite"][i, j]
    if np.nansum(bad) > 0:
        flags.append(f"non-finite samples: {int(np.nansum(bad))} ({np.sum(bad > 0)} seeds)")
    converged = arrays["converged"][i, j]
    if np.any(converged == 0):
        flags.append(f"fit not converged: {np.sum(converged == 0)}/{converged.size} seeds")
    return "; ".join(flags)


def _mean(v) -> str:
    return "–" if np.isnan(v).all() else f"{np.nanmean(v):.4g}"


def _delta(a, b) -> str:
    mean, se = common.mean_se(a - b)
    return "–" if np.isnan(mean) else f"{mean:+.3g} ± {se:.2g}"


def summary_table(arrays, config) -> str:
    """Markdown: the samples and the augmentation at each sampler's chosen gamma (mean over
    seeds), the validation NLL behind each choice, and the flagged cells."""
    methods, fixed = list(config.inference.methods), penalized(config)
    names, chosen = list(arrays["samplers"]), chosen_gamma_index(arrays, config)
    base = names.index("baseline") if "baseline" in names else None

    def gamma(i):
        return "–" if names[i] == "observed" else f"{arrays['gammas'][i, chosen[i]]:g}"

    cols = ["tail_fraction", "tail_mass", "cross_entropy", "unique_fraction", "novelty"]
    lines = [
        "Generator: ddpm (the Gaussian DDPM of config.diffusion, thresholded to ±1), the "
        "one generator of isingjax/pipelines/generator_stage.py whose samplers these are: "
        "every guidance term acts on the DDPM's continuous reverse process; masked "
        "diffusion and the autoregressive model have no such process to steer.",
        "",
        "Samples at the chosen γ (cross-entropy = −mean log P(sample) under the true model; "
        "the exact KL of the empirical distribution is in results.jsonl but not compared "
        "here: it grows with the number of distinct samples, so arms of different counts "
        "differ in it for that reason alone).",
        "",
        "| sampler | γ | samples used | " + " | ".join(cols) + " | non-finite | flags |",
        "|---|---|---|" + "---|" * (len(cols) + 2),
    ]
    for i, name in enumerate(names):
        j = chosen[i]
        cells = [_mean(arrays[c][i, j]) for c in ["accepted", *cols, "num_nonfinite"]]
        lines.append(
            f"| {name} | {gamma(i)} | " + " | ".join(cells) + f" | {_flags(arrays, i, j)} |"
        )

    header = ["sampler", "γ", "l2"]
    for m in methods:
        header += [f"MSE {m}", f"NLL {m}", f"ΔMSE {m}", f"ΔNLL {m}"]
        header += [f"ΔMSE {m} vs ctrl", f"ΔNLL {m} vs ctrl"]
    lines += [
        "",
        "Augmentation at the chosen γ: observed + samples, scored on the test spins. "
        "Δ = paired difference from unguided augmentation (baseline, K samples); "
        "Δ vs ctrl = from observed + the same number of random unguided samples; "
        "negative = better. Rows l2 = c/M hold the penalty at its observed-only value.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for mode in ("", "fixed_"):
        for i, name in enumerate(names):
            if mode and not fixed:
                break
            j, cells = chosen[i], []
            for m in methods:
                if mode and m not in fixed:
                    cells += ["–"] * 6
                    continue
                key = f"{mode}{m}"
                for p in ("mse", "nll"):
                    cells.append(_mean(arrays[f"{p}_{key}"][i, j]))
                for p in ("mse", "nll"):
                    ok = base is not None and name != "baseline"
                    ref = arrays[f"{p}_{key}"][base, 0] if ok else np.nan
                    cells.append(_delta(arrays[f"{p}_{key}"][i, j], ref) if ok else "–")
                for p in ("mse", "nll"):
                    ctrl = arrays[f"{p}_ctrl_{key}"][i, j]
                    cells.append(_delta(arrays[f"{p}_{key}"][i, j], ctrl))
            l2 = "c/M" if mode or name == "observed" else "c/(M+K)"
            lines.append(f"| {name} | {gamma(i)} | {l2} | " + " | ".join(cells) + " |")

    means = validation_means(arrays, config)
    lines += ["", f"γ chosen by the validation NLL of {methods[0]} (mean over seeds):", ""]
    for i, name in enumerate(names):
        if name in ("observed", "baseline"):
            continue
        grid = [
            f"γ={g:g}: {means[i, j]:.4f}" if np.isfinite(means[i, j]) else f"γ={g:g}: –"
            for j, g in enumerate(arrays["gammas"][i])
            if np.isfinite(g)
        ]
        lines.append(f"- {name}: {', '.join(grid)} → γ = {gamma(i)}")
    flagged = [
        f"- {name} γ={arrays['gammas'][i, j]:g}: {_flags(arrays, i, j)}"
        for i, name in enumerate(names)
        for j in range(arrays["gammas"].shape[1])
        if np.isfinite(arrays["gammas"][i, j]) and _flags(arrays, i, j)
    ]
    lines += ["", "Flagged cells (any γ):", "", *(flagged or ["- none"])]
    return "\n".join(lines) + "\n"
