"""The result arrays (results.npz) and summary.md of the `adversarial` pipeline."""

from __future__ import annotations

import numpy as np

from isingjax import attacks, inference, sweeps
from isingjax.pipelines import common

COORDS = ("beta", "num_samples", "method", "arm", "seed")
ARMS = ("observed", "diffusion", "oracle", "l2")  # l2: plm only
POISON_KINDS = ("worst", "proxy", "random")
EFFECTS = ("delta_mse", "rel_dw", "rel_db", "sign_flips")
ARM_FIELDS = (
    *attacks.EVASION_FIELDS,
    "mse_clean",
    *(f"{k}_{e}" for k in POISON_KINDS for e in EFFECTS),
)
GEN_FIELDS = ("gen_dmse_orig", "gen_dmse_aug")  # on the diffusion arm's records
LABELS = {
    "observed": "observed",
    "diffusion": "observed + generated",
    "oracle": "observed + true extra",
    "l2": "tuned L2 (plm)",
}


def cells(config, beta, m, method):
    """The result coordinates of (beta, M, method)."""
    for arm in ARMS if method == "plm" else ARMS[:-1]:
        for seed in range(config.num_seeds):
            yield (beta, m, method, arm, seed)


def write_npz(path, records, config) -> dict:
    """results.npz: every field [beta, M, method, arm, seed, ...] (NaN where absent) + the
    axes (those of the config joined with those of the records)."""
    betas = sorted({float(b) for b in config.model.betas} | {r["beta"] for r in records})
    sizes = sorted(set(config.sweep.sample_sizes) | {r["num_samples"] for r in records})
    known = set(config.inference.methods) | {r["method"] for r in records}
    methods = [m for m in inference.METHODS if m in known]
    lead = (len(betas), len(sizes), len(methods), len(ARMS), config.num_seeds)
    arrays = {}
    for name in (*ARM_FIELDS, *GEN_FIELDS, "converged", "num_nonfinite", "l2_per_sample"):
        example = next((r[name] for r in records if name in r), None)
        if example is not None:
            arrays[name] = np.full(lead + np.shape(example), np.nan)
    index = {
        (b, m, meth, arm, s): (i, j, k, a, s)
        for i, b in enumerate(betas)
        for j, m in enumerate(sizes)
        for k, meth in enumerate(methods)
        for a, arm in enumerate(ARMS)
        for s in range(config.num_seeds)
    }
    sweeps.fill_cells(arrays, index, records, COORDS)
    arrays |= {
        "betas": np.asarray(betas),
        "sample_sizes": np.asarray(sizes),
        "methods": np.asarray(methods),
        "arms": np.asarray(ARMS),
        "seeds": np.arange(config.num_seeds),
        "eps": np.asarray(config.evasion.eps),
        "flips": np.asarray(config.evasion.flips),
        "rhos": np.asarray(config.poison.rhos),
        "generator_kinds": np.asarray(config.poison.generator_kinds),
    }
    np.savez(path, **arrays)
    return arrays


def _cell(values, fmt, flag="") -> str:
    mu, se = common.mean_se(values)
    return "–" if np.isnan(mu) else f"{mu:{fmt}} ± {se:.1g}{flag}"


def table(arrays, field, heads, *, fmt=".3f", paired=False, arms=ARMS) -> str:
    """Markdown: field [beta, M, method, arm, seed, C] as mean ± s.e. over seeds, a row per
    (beta, M, method, arm) and a column per C (heads); paired: the per-seed difference
    arm − observed. '†': some seed's fit did not converge. Rows without values are left
    out."""
    values = arrays[field]
    lines = ["| β | M | method | arm | " + " | ".join(map(str, heads)) + " |"]
    lines.append("|---|---|---|---|" + "---|" * len(heads))
    observed = ARMS.index("observed")
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                for arm in arms:
                    a = ARMS.index(arm)
                    if paired and arm == "observed":
                        continue
                    v = values[i, j, k, a].reshape(values.shape[4], -1)  # [seed, C]
                    if paired:
                        v = v - values[i, j, k, observed].reshape(v.shape)
                    conv = arrays["converged"][i, j, k, a]
                    flag = "†" if np.any(conv == 0) else ""
                    row = [_cell(v[:, c], fmt, flag) for c in range(len(heads))]
                    if set(row) != {"–"}:
                        name = LABELS[arm] + (" − observed" if paired else "")
                        lines.append(
                            f"| {beta:g} | {m} | {method} | {name} | " + " | ".join(row) + " |"
                        )
    return "\n".join(lines) + "\n"


def generator_table(arrays) -> str:
    """Markdown: poisoning through the generator, per (beta, M, method, kind): dMSE
    without and with augmentation (mean ± s.e.) and the amplification ratio of the means."""
    lines = ["| β | M | method | poison | dMSE(original) | dMSE(augmented) | amplification |"]
    lines.append("|---|---|---|---|---|---|---|")
    if "gen_dmse_orig" not in arrays:
        return "\n".join(lines) + "\n"
    a = ARMS.index("diffusion")
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                for g, kind in enumerate(arrays["generator_kinds"]):
                    orig = arrays["gen_dmse_orig"][i, j, k, a, :, g]
                    aug = arrays["gen_dmse_aug"][i, j, k, a, :, g]
                    if np.all(np.isnan(orig)):
                        continue
                    ratio = np.mean(aug) / np.mean(orig)
                    lines.append(
                        f"| {beta:g} | {m} | {method} | {kind} | {_cell(orig, '.2e')} "
                        f"| {_cell(aug, '.2e')} | {ratio:.2f} |"
                    )
    return "\n".join(lines) + "\n"


def summary_sections(arrays, config) -> list[tuple[str, str]]:
    eps = [f"ε={e:g}" for e in arrays["eps"]]
    flips = [f"k={k}" for k in arrays["flips"]]
    rhos = [f"ρ={r:g}" for r in arrays["rhos"]]
    sections = [
        (
            "PGD robust accuracy vs L-inf budget ε (single target), mean ± s.e. over seeds",
            table(arrays, "pgd_accuracy", eps),
        ),
        (
            "PGD success rate (originally correct predictions made wrong)",
            table(arrays, "pgd_success", eps),
        ),
        (
            "Paired PGD robust accuracy, arm − observed",
            table(arrays, "pgd_accuracy", eps, paired=True),
        ),
        ("FGSM success rate", table(arrays, "fgsm_success", eps)),
        ("PGD mean log-loss increase", table(arrays, "pgd_dloss", eps)),
        (
            "Certified robust accuracy vs flips k (exact k*)",
            table(arrays, "certified_accuracy", flips),
        ),
        (
            "Paired certified accuracy, arm − observed",
            table(arrays, "certified_accuracy", flips, paired=True),
        ),
        (
            "Mean k* of originally correct predictions; clean accuracy",
            table(arrays, "k_star_mean", ["mean k*"], fmt=".2f")
            + "\n"
            + table(arrays, "clean_accuracy", ["clean accuracy"]),
        ),
        ("Multi-output greedy flips: success rate vs k", table(arrays, "greedy_success", flips)),
        (
            "Multi-output PGD-then-round: success rate vs k",
            table(arrays, "pgdround_success", flips),
        ),
    ]
    for kind in POISON_KINDS:
        sections.append(
            (
                f"Poisoning ({kind}): dMSE = MSE(poisoned) − MSE(clean) vs ρ",
                table(arrays, f"{kind}_delta_mse", rhos, fmt=".2e"),
            )
        )
    sections += [
        (
            "Paired worst-case dMSE, arm − observed",
            table(arrays, "worst_delta_mse", rhos, fmt=".2e", paired=True),
        ),
        ("Poisoning (worst): relative ||dw|| vs ρ", table(arrays, "worst_rel_dw", rhos)),
        ("Poisoning (random control): relative ||dw|| vs ρ", table(arrays, "random_rel_dw", rhos)),
        ("Poisoning (worst): relative ||db|| vs ρ", table(arrays, "worst_rel_db", rhos)),
        (
            "Poisoning (worst): fraction of coupling signs flipped vs ρ",
            table(arrays, "worst_sign_flips", rhos),
        ),
        (
            "Poisoning (random control): fraction of coupling signs flipped vs ρ",
            table(arrays, "random_sign_flips", rhos),
        ),
        (
            f"Poisoning through the generator (ρ = {config.poison.generator_rho:g} of M before "
            "training; amplification = mean dMSE(augmented) / mean dMSE(original))",
            generator_table(arrays),
        ),
    ]
    return sections
