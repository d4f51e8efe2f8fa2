"""The result arrays (results.npz) and summary.md of the `retina` pipeline."""

from __future__ import annotations

import numpy as np

from isingjax import attacks, sweeps
from isingjax.pipelines import common

COORDS = ("section", "num_samples", "arm", "hidden", "seed")
MODEL_ARMS = ("plm", "diffusion_max", "diffusion_val", "l2", "diffusion_l2")
RECON_ARMS = ("silent", "independent", *MODEL_ARMS, "inpaint")
LABELS = {
    "silent": "all silent",
    "independent": "independent",
    "plm": "plm",
    "diffusion_max": "plm + DDPM K=max",
    "diffusion_val": "plm + DDPM K by val.",
    "l2": "plm tuned L2",
    "diffusion_l2": "tuned L2 + DDPM K=max",
    "inpaint": "DDPM inpainting",
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


def block_cells(config, m):
    """The cells of one M block: reconstruction (every arm and k) and attack (model arms)."""
    for arm in RECON_ARMS if config.reconstruct.inpaint_samples else RECON_ARMS[:-1]:
        for k in config.reconstruct.hidden:
            for seed in range(config.num_seeds):
                yield ("recon", m, arm, k, seed)
    for arm in MODEL_ARMS:
        for seed in range(config.num_seeds):
            yield ("attack", m, arm, 1, seed)


def write_npz(path, records, config, split) -> dict:
    """results.npz: RECON_FIELDS [M, arm, k, seed], fit_<FIELDS> [fit arm, seed], fit_pk
    [fit arm, seed, n + 1], attack_<attacks.EVASION_FIELDS> [M, model arm, seed, ...] (NaN
    where absent), the split of every seed and the axes."""
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
    attack = [r for r in records if r["section"] == "attack"]
    for name in attacks.EVASION_FIELDS:
        example = next((r[name] for r in attack if name in r), None)
        if example is not None:
            arrays[f"attack_{name}"] = np.full(
                (len(sizes), len(MODEL_ARMS), seeds) + np.shape(example), np.nan
            )
    index = {
        ("attack", m, arm, 1, s): (i, a, s)
        for i, m in enumerate(sizes)
        for a, arm in enumerate(MODEL_ARMS)
        for s in range(seeds)
    }
    attack_arrays = {k[len("attack_") :]: v for k, v in arrays.items() if k.startswith("attack_")}
    sweeps.fill_cells(attack_arrays, index, attack, COORDS)
    arrays |= {
        "sample_sizes": np.asarray(sizes),
        "arms": np.asarray(RECON_ARMS),
        "hidden": np.asarray(hidden),
        "seeds": np.arange(seeds),
        "fit_arms": np.asarray(arms),
        "fit_num_samples": np.asarray(m_fit),
        "attack_arms": np.asarray(MODEL_ARMS),
        "eps": np.asarray(config.evasion.eps),
        "flips": np.asarray(config.evasion.flips),
    }
    arrays |= {key: np.asarray(v) for key, v in split.items()}
    np.savez(path, **arrays)
    return arrays


def _cell(values, digits=3, flag="", signed=False) -> str:
    mu, se = common.mean_se(values)
    if np.isnan(mu):
        return "–"
    return f"{mu:{'+' if signed else ''}.{digits}f} ± {se:.{digits}f}" + flag


def _flags(arrays, at) -> str:
    """'†' when some seed's fit at `at` did not converge, '‡' when its generator made
    non-finite values (allowed by augment.allow_nonfinite)."""
    flags = "†" if np.any(arrays["converged"][at] == 0) else ""
    return flags + ("‡" if np.any(arrays["num_nonfinite"][at] > 0) else "")


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
        flag = "†" if np.any(arrays["fit_converged"][i] == 0) else ""
        cells = [_cell(arrays[f"fit_{f}"][i], 4 if f.startswith("rmse") else 3) for f in fields]
        tempered = arrays["fit_tempered"][i]
        cells.append(
            "–" if np.all(np.isnan(tempered)) else ("yes" if np.any(tempered == 1) else "no")
        )
        name = {"train_data": "training patterns"}.get(arm, arm)
        lines.append(f"| {name}{flag} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recon_table(arrays, field, digits=3) -> str:
    """Rows (M, k), columns the arms: field mean ± s.e. over seeds (– where an arm has
    none); marks as `_flags`."""
    labels = [LABELS[a] for a in arrays["arms"]]
    lines = ["| M | k | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for i, m in enumerate(arrays["sample_sizes"]):
        for j, k in enumerate(arrays["hidden"]):
            row = [
                _cell(arrays[field][i, a, j], digits, _flags(arrays, (i, a, j)))
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
                    row.append(_cell(diff, 4, signed=True))
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


def attack_table(arrays, field, heads, *, digits=3, paired=False) -> str:
    """Rows (M, model arm), columns heads: attack_<field> [M, arm, seed, C] as mean ± s.e.
    over seeds; paired: per seed, each augmented arm minus its control (PAIRS)."""
    values, arms = arrays[f"attack_{field}"], list(arrays["attack_arms"])
    lines = ["| M | arm | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    rows = PAIRS if paired else [(a, None) for a in arms]
    for i, m in enumerate(arrays["sample_sizes"]):
        for arm, control in rows:
            v = values[i, arms.index(arm)].reshape(values.shape[2], -1)  # [seed, C]
            if control is not None:
                v = v - values[i, arms.index(control)].reshape(v.shape)
            row = [_cell(v[:, c], digits, signed=paired) for c in range(len(heads))]
            name = LABELS[arm] + ("" if control is None else f" − {LABELS[control]}")
            if any(c != "–" for c in row):
                lines.append(f"| {m} | {name} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def attack_sections(arrays) -> list[tuple[str, str]]:
    """The decoder under attack: every neuron predicted from the others (sign of its
    conditional field) on the attacked test patterns."""
    if "attack_pgd_accuracy" not in arrays:
        return []
    eps = [f"ε={e:g}" for e in arrays["eps"]]
    flips = [f"k={k}" for k in arrays["flips"]]
    both = (arrays["attack_clean_accuracy"], arrays["attack_k_star_mean"])
    clean = arrays | {"attack_clean": np.stack(both, axis=-1)}
    return [
        (
            "The decoder under attack: each neuron predicted from the other n − 1 (the k = 1 "
            "reconstruction) on the first evasion.num_test test patterns. Clean accuracy "
            "and mean k* (fewest flips of other neurons that change a correct prediction; exact; n "
            "when no flips can)",
            attack_table(clean, "clean", ["clean accuracy", "mean k*"]),
        ),
        (
            "PGD robust accuracy vs L-inf budget ε on the relaxation (mean ± s.e. over seeds)",
            attack_table(arrays, "pgd_accuracy", eps),
        ),
        (
            "PGD success rate (originally correct predictions made wrong)",
            attack_table(arrays, "pgd_success", eps),
        ),
        (
            "Paired PGD robust accuracy, augmented − its control (per seed)",
            attack_table(arrays, "pgd_accuracy", eps, paired=True),
        ),
        (
            "Certified robust accuracy vs flips k of other neurons (exact k*)",
            attack_table(arrays, "certified_accuracy", flips),
        ),
        (
            "Paired certified accuracy, augmented − its control (per seed)",
            attack_table(arrays, "certified_accuracy", flips, paired=True),
        ),
        (
            "Success rate of the greedy k-flip attack on all n predictions of a pattern at once",
            attack_table(arrays, "greedy_success", flips),
        ),
    ]


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
            "completion (exact over 2^k states); baselines all-silent (0.5) and independent "
            "(†: some seed's fit did not converge; ‡: its generator made non-finite values, "
            "allowed by augment.allow_nonfinite)",
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
        *attack_sections(arrays),
    ]
