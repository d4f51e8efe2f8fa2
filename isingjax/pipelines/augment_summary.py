"""The result arrays (results.npz) and summary.md of the `augment` pipeline."""

from __future__ import annotations

import numpy as np

from isingjax import inference, sweeps
from isingjax.pipelines import common

COORDS = ("beta", "num_samples", "method", "arm", "ratio", "seed")
EXTRA_ARMS = ("diffusion", "bootstrap", "oracle")  # observed + K extra spins
TUNED_ARMS = ("l2", "diffusion_l2")  # plm only: the penalty tuned on held-out observed spins
LABELS = {"l2": "tuned L2 (plm)", "diffusion_l2": "diffusion K={r}M + tuned L2 (plm)"}


def label(arm, ratio) -> str:
    if arm in LABELS:
        return LABELS[arm].format(r=ratio)
    return f"{arm} K={ratio}M" if ratio else arm


def columns(config) -> list[tuple[str, int]]:
    """(arm, ratio) of every column of the result arrays."""
    ratios = list(config.augment.ratios)
    return (
        [("observed", 0)]
        + [(a, r) for a in EXTRA_ARMS for r in ratios]
        + [("l2", 0), ("diffusion_l2", max(ratios))]
    )


def cells(config, beta, m):
    """The result coordinates of block (beta, M)."""
    for method in config.inference.methods:
        for arm, ratio in columns(config):
            if arm not in TUNED_ARMS or method == "plm":
                for seed in range(config.num_seeds):
                    yield (beta, m, method, arm, ratio, seed)


FIELDS = ("mse_all", "mse_w", "mse_b", "converged", "num_nonfinite")


def write_npz(path, records, config) -> dict:
    """results.npz: FIELDS [beta, M, method, column, seed] (NaN where absent) + the axes.

    The axes are those of the config joined with those of the records, so a run resumed
    with a narrower selection (say methods=('plm',)) still summarizes every finished
    cell of the workdir."""
    betas = sorted({float(b) for b in config.model.betas} | {r["beta"] for r in records})
    sizes = sorted(set(config.sweep.sample_sizes) | {r["num_samples"] for r in records})
    known = set(config.inference.methods) | {r["method"] for r in records}
    methods = [m for m in inference.METHODS if m in known]
    cols = columns(config)
    shape = (len(betas), len(sizes), len(methods), len(cols), config.num_seeds)
    arrays = {name: np.full(shape, np.nan) for name in FIELDS}
    index = {
        (b, m, meth, arm, r, s): (i, j, k, c, s)
        for i, b in enumerate(betas)
        for j, m in enumerate(sizes)
        for k, meth in enumerate(methods)
        for c, (arm, r) in enumerate(cols)
        for s in range(config.num_seeds)
    }
    sweeps.fill_cells(arrays, index, records, COORDS)
    arrays |= {
        "betas": np.asarray(betas),
        "sample_sizes": np.asarray(sizes),
        "methods": np.asarray(methods),
        "arms": np.asarray([a for a, _ in cols]),
        "ratios": np.asarray([r for _, r in cols]),
        "seeds": np.arange(config.num_seeds),
    }
    np.savez(path, **arrays)
    return arrays


def _flags(converged, nonfinite) -> str:
    """'†' when some seed's fit did not converge, '‡' when some seed's generated spins
    came from non-finite values."""
    flag = "†" if np.any(converged == 0) else ""
    return flag + ("‡" if np.any(np.nan_to_num(nonfinite) > 0) else "")


def summary_table(arrays) -> str:
    """Markdown: MSE (all) mean ± s.e. over seeds per (beta, M, method) row and arm column,
    '–' for cells a method does not have (or a partial run has not computed), with the
    flags of `_flags`; rows without any computed cell are left out."""
    labels = [label(a, r) for a, r in zip(arrays["arms"], arrays["ratios"], strict=True)]
    lines = [
        "| β | M | method | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    mean, se = common.mean_se(arrays["mse_all"])
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                row = []
                for c in range(len(labels)):
                    at = (i, j, k, c)
                    flags = _flags(arrays["converged"][at], arrays["num_nonfinite"][at])
                    mu, e = mean[at], se[at]
                    row.append("–" if np.isnan(mu) else f"{mu:.2e} ± {e:.0e}{flags}")
                if set(row) != {"–"}:  # rows a partial run has not computed are left out
                    lines.append(f"| {beta:g} | {m} | {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def paired_delta(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over seeds (last axis) of the per-seed difference a - b."""
    return common.mean_se(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def paired_table(arrays) -> str:
    """Markdown: per (beta, M, method), the paired differences (mean ± s.e. over seeds) of
    the MSE of diffusion K=max M minus observed, and for plm of diffusion + tuned L2 minus
    tuned L2 (negative: the first arm is better)."""
    cols = list(zip(arrays["arms"].tolist(), arrays["ratios"].tolist(), strict=True))
    r_max = max(r for _, r in cols)
    pairs = [
        (("diffusion", r_max), ("observed", 0)),
        (("diffusion_l2", r_max), ("l2", 0)),
    ]
    heads = [f"{label(*a)} − {label(*b)}" for a, b in pairs]
    lines = [
        "| β | M | method | " + " | ".join(heads) + " |",
        "|---|---|---|" + "---|" * len(heads),
    ]
    mse = arrays["mse_all"]
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                row = []
                for a, b in pairs:
                    mu, e = paired_delta(mse[i, j, k, cols.index(a)], mse[i, j, k, cols.index(b)])
                    row.append("–" if np.isnan(mu) else f"{mu:+.2e} ± {e:.0e}")
                if set(row) != {"–"}:
                    lines.append(f"| {beta:g} | {m} | {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary_sections(arrays) -> list[tuple[str, str]]:
    return [
        (
            "Parameter MSE (all w and b), mean ± s.e. over seeds "
            "(†: some seed's fit did not converge; ‡: some seed's generated spins came "
            "from non-finite values)",
            summary_table(arrays),
        ),
        ("Paired differences of the MSE per seed, mean ± s.e.", paired_table(arrays)),
    ]
