"""The result arrays (results.npz) and summary.md of the `retina` pipeline."""

from __future__ import annotations

import numpy as np

from isingjax import sweeps
from isingjax.pipelines import common

COORDS = ("section", "num_samples", "arm", "hidden", "seed")
MODEL_ARMS = ("plm", "diffusion_max", "diffusion_val", "l2", "diffusion_l2")
RECON_ARMS = ("silent", "independent", *MODEL_ARMS)
LABELS = {
    "silent": "all silent",
    "independent": "independent",
    "plm": "plm",
    "diffusion_max": "plm + DDPM K=max",
    "diffusion_val": "plm + DDPM K by val.",
    "l2": "plm tuned L2",
    "diffusion_l2": "tuned L2 + DDPM K=max",
}
# (augmented arm, its control): they differ only in the DDPM samples
PAIRS = (("diffusion_max", "plm"), ("diffusion_val", "plm"), ("diffusion_l2", "l2"))
RECON_FIELDS = (
    "map_accuracy",
    "map_balanced_accuracy",
    "map_f1",
    "marginal_accuracy",
    "marginal_balanced_accuracy",
    "marginal_f1",
    "marginal_log_loss",
    "marginal_spike_fraction",
    "test_pnll",
    "converged",
    "ratio",
    "l2_per_sample",
    "num_nonfinite",
)
FIT_FIELDS = (
    "test_pnll",
    "train_pnll",
    "rmse_rates",
    "rmse_corr",
    "rmse_corr3",
    "pk_tv",
    "pk_kl",
    "acceptance_rate",
    "autocorr_time",
    "init_gap",
    "tempered",
    "converged",
)


def fit_arms(config) -> tuple[str, ...]:
    return ("test", "train_data", "independent", *config.fit.methods)


def fit_cells(config, m_fit):
    for arm in fit_arms(config):
        for seed in range(config.num_seeds):
            yield ("fit", m_fit, arm, 0, seed)


def recon_cells(config, m):
    for arm in RECON_ARMS:
        for k in config.reconstruct.hidden:
            for seed in range(config.num_seeds):
                yield ("recon", m, arm, k, seed)


def write_npz(path, records, config, split) -> dict:
    """results.npz: RECON_FIELDS [M, arm, k, seed], fit_<FIELDS> [fit arm, seed], fit_pk
    [fit arm, seed, n + 1] (NaN where absent), the split of every seed and the axes."""
    recon = [r for r in records if r["section"] == "recon"]
    sizes = sorted(set(config.sweep.sample_sizes) | {r["num_samples"] for r in recon})
    hidden = sorted(set(config.reconstruct.hidden) | {r["hidden"] for r in recon})
    seeds = config.num_seeds
    shape = (len(sizes), len(RECON_ARMS), len(hidden), seeds)
    arrays = {f: np.full(shape, np.nan) for f in RECON_FIELDS}
    index = {
        ("recon", m, arm, k, s): (i, a, j, s)
        for i, m in enumerate(sizes)
        for a, arm in enumerate(RECON_ARMS)
        for j, k in enumerate(hidden)
        for s in range(seeds)
    }
    sweeps.fill_cells(arrays, index, recon, COORDS)
    fit = [r for r in records if r["section"] == "fit"]
    arms = fit_arms(config)
    fit_arrays = {f: np.full((len(arms), seeds), np.nan) for f in FIT_FIELDS}
    fit_arrays["pk"] = np.full((len(arms), seeds, config.model.n + 1), np.nan)
    m_fit = max(config.sweep.sample_sizes)
    index = {("fit", m_fit, a, 0, s): (i, s) for i, a in enumerate(arms) for s in range(seeds)}
    sweeps.fill_cells(fit_arrays, index, fit, COORDS)
    arrays |= {f"fit_{k}": v for k, v in fit_arrays.items()}
    arrays |= {
        "sample_sizes": np.asarray(sizes),
        "arms": np.asarray(RECON_ARMS),
        "hidden": np.asarray(hidden),
        "seeds": np.arange(seeds),
        "fit_arms": np.asarray(arms),
        "fit_num_samples": np.asarray(m_fit),
    }
    arrays |= {key: np.asarray(v) for key, v in split.items()}
    np.savez(path, **arrays)
    return arrays


def _cell(values, digits=3, flag=False) -> str:
    mu, se = common.mean_se(values)
    if np.isnan(mu):
        return "–"
    return f"{mu:.{digits}f} ± {se:.{digits}f}" + ("†" if flag else "")


def fit_table(arrays) -> str:
    heads = (
        "test −PLL/pattern",
        "train −PLL/pattern",
        "RMSE rates",
        "RMSE C_ij",
        "RMSE C_ijk",
        "P(K) TV",
        "KL(P_test(K)‖P(K))",
        "MCMC acc.",
        "τ_int",
        "start gap",
        "PT",
    )
    fields = FIT_FIELDS[:10]  # 'tempered' and 'converged' get their own marks
    lines = ["| model | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for i, arm in enumerate(arrays["fit_arms"]):
        if arm == "test":
            continue
        flag = np.any(arrays["fit_converged"][i] == 0)
        cells = [_cell(arrays[f"fit_{f}"][i], 4 if f.startswith("rmse") else 3) for f in fields]
        tempered = arrays["fit_tempered"][i]
        cells.append(
            "–" if np.all(np.isnan(tempered)) else ("yes" if np.any(tempered == 1) else "no")
        )
        name = {"train_data": "training patterns"}.get(arm, arm)
        lines.append(f"| {name}{'†' if flag else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recon_table(arrays, field, digits=3) -> str:
    """Rows (M, k), columns the arms: field mean ± s.e. over seeds (– where an arm has
    none); † when some seed's fit did not converge."""
    labels = [LABELS[a] for a in arrays["arms"]]
    lines = ["| M | k | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for i, m in enumerate(arrays["sample_sizes"]):
        for j, k in enumerate(arrays["hidden"]):
            row = [
                _cell(arrays[field][i, a, j], digits, np.any(arrays["converged"][i, a, j] == 0))
                for a in range(len(labels))
            ]
            if any(c != "–" for c in row):
                lines.append(f"| {m} | {k} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def paired_table(arrays, fields) -> str:
    """Per (M, k): augmented minus control, per seed, mean ± s.e., for each field."""
    arms = list(arrays["arms"])
    heads = [f"{f}: {LABELS[a]} − {LABELS[b]}" for f in fields for a, b in PAIRS]
    lines = ["| M | k | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for i, m in enumerate(arrays["sample_sizes"]):
        for j, k in enumerate(arrays["hidden"]):
            row = []
            for f in fields:
                for a, b in PAIRS:
                    diff = arrays[f][i, arms.index(a), j] - arrays[f][i, arms.index(b), j]
                    mu, se = common.mean_se(diff)
                    row.append("–" if np.isnan(mu) else f"{mu:+.4f} ± {se:.4f}")
            if any(c != "–" for c in row):
                lines.append(f"| {m} | {k} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def per_m_table(arrays) -> str:
    """Per M: held-out −PLL per pattern of every arm, the K/M the validation chose and the
    tuned penalties (k-independent fields, read at the first k)."""
    arms = list(arrays["arms"])
    cols = [("test_pnll", a) for a in arms if a != "silent"]
    cols += [("ratio", "diffusion_val"), ("l2_per_sample", "l2"), ("l2_per_sample", "diffusion_l2")]
    heads = [
        f"test −PLL {LABELS[a]}" if f == "test_pnll" else f"{f} ({LABELS[a]})" for f, a in cols
    ]
    lines = ["| M | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for i, m in enumerate(arrays["sample_sizes"]):
        row = [_cell(arrays[f][i, arms.index(a), 0]) for f, a in cols]
        if any(c != "–" for c in row):
            lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary_sections(arrays) -> list[tuple[str, str]]:
    m_fit = int(arrays["fit_num_samples"])
    return [
        (
            f"Is the Ising model any good? Fits on M = {m_fit} training patterns against the "
            "test repeats, mean ± s.e. over seeds (statistics of sigma in {0, 1}; −PLL: "
            "negative pseudo-log-likelihood per pattern, nats, exact −log-likelihood for the "
            "independent model; τ_int in recorded samples; start gap: |mean energy of "
            "data-started − randomly started Metropolis chains| in energy standard deviations; "
            "PT: parallel tempering made the samples; "
            "†: some seed's fit did not converge)",
            fit_table(arrays),
        ),
        (
            "Held-out −PLL per test pattern, chosen K/M of the validation arm and tuned "
            "l2_per_sample, per M (mean ± s.e. over seeds)",
            per_m_table(arrays),
        ),
        (
            "Reconstruction of k hidden neurons: balanced accuracy of the most probable "
            "completion (exact over 2^k states); baselines all-silent (0.5) and independent",
            recon_table(arrays, "map_balanced_accuracy"),
        ),
        ("F1 on spikes of the most probable completion", recon_table(arrays, "map_f1")),
        (
            "Accuracy of the most probable completion (the all-silent column is the fraction "
            "of hidden entries that are silent)",
            recon_table(arrays, "map_accuracy"),
        ),
        (
            "Balanced accuracy of the per-neuron conditional marginals (P(spike | rest) > 1/2)",
            recon_table(arrays, "marginal_balanced_accuracy"),
        ),
        (
            "Log-loss (nats per hidden neuron) of the conditional marginals",
            recon_table(arrays, "marginal_log_loss", 4),
        ),
        (
            "Paired differences per seed (augmented − its control; positive balanced accuracy "
            "and negative log-loss favour augmentation), mean ± s.e.",
            paired_table(arrays, ("map_balanced_accuracy", "marginal_log_loss")),
        ),
    ]
