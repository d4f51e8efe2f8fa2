"""Figures of the `adversarial` pipeline (isingjax/pipelines/adversarial.py)."""

from __future__ import annotations

import numpy as np

from isingjax.pipelines import common
from isingjax.pipelines.adversarial_summary import ARMS, LABELS

ARM_COLORS = {"observed": "black", "diffusion": "tab:red", "oracle": "tab:green", "l2": "gray"}


def _curves(path, arrays, x, series, xlabel, ylabel):
    """A panel per (beta, M) row and method column; series: (field, line style, label
    suffix) drawn per arm as mean ± s.e. over seeds against x."""
    blocks = [
        (i, j) for i in range(len(arrays["betas"])) for j in range(len(arrays["sample_sizes"]))
    ]
    methods = list(arrays["methods"])
    fig, axes = common.new_figure(len(blocks), len(methods), 4.0, 3.2)
    for r, (i, j) in enumerate(blocks):
        for k, method in enumerate(methods):
            ax = axes[r, k]
            for a, arm in enumerate(ARMS):
                for field, style, suffix in series:
                    values = arrays[field][i, j, k, a]  # [seed, C]
                    if np.all(np.isnan(values)):
                        continue
                    mu, se = common.mean_se(values.T)
                    ax.errorbar(
                        x,
                        mu,
                        yerr=se,
                        color=ARM_COLORS[arm],
                        ls=style,
                        marker="o",
                        ms=2.5,
                        capsize=2,
                        label=LABELS[arm] + suffix,
                    )
            ax.set(xlabel=xlabel, ylabel=ylabel)
            ax.set_title(
                f"{method}, β = {arrays['betas'][i]:g}, M = {arrays['sample_sizes'][j]}", fontsize=9
            )
    axes[0, 0].legend(fontsize=6)  # the first method column has every arm (plm: tuned L2)
    common.save_figure(fig, path)


def plot_heatmap(path, records, config):
    """The coupling change dw of the strongest worst-case poison, seed 0, first cell."""
    beta, m = float(config.model.betas[0]), config.sweep.sample_sizes[0]
    method = config.inference.methods[0]
    chosen = [
        r
        for r in records
        if "worst_dw" in r and (r["beta"], r["num_samples"], r["method"]) == (beta, m, method)
    ]
    fig, axes = common.new_figure(1, max(len(chosen), 1), 3.4, 3.0)
    lim = max([np.abs(np.asarray(r["worst_dw"])).max() for r in chosen] + [1e-12])
    for ax, r in zip(axes[0], chosen, strict=False):
        image = ax.imshow(np.asarray(r["worst_dw"]), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"{LABELS[r['arm']]}", fontsize=8)
    if chosen:
        fig.colorbar(image, ax=axes[0, -1])
    fig.suptitle(
        f"dw, worst-case poison ρ = {max(config.poison.rhos):g}: "
        f"{method}, β = {beta:g}, M = {m}, seed 0",
        fontsize=9,
    )
    common.save_figure(fig, path)


def plot_all(out, arrays, records, config):
    eps, flips, rhos = arrays["eps"], arrays["flips"], arrays["rhos"]
    _curves(
        out / "robust_accuracy_eps.png",
        arrays,
        eps,
        [("pgd_accuracy", "-", " (PGD)"), ("fgsm_accuracy", ":", " (FGSM)")],
        "L-inf budget ε",
        "robust accuracy",
    )
    _curves(
        out / "robust_accuracy_k.png",
        arrays,
        flips,
        [
            ("certified_accuracy", "-", " (certified, 1 target)"),
            ("greedy_accuracy", "--", " (greedy, all targets)"),
        ],
        "flips k",
        "robust accuracy",
    )
    _curves(
        out / "dmse_rho.png",
        arrays,
        rhos,
        [
            ("worst_delta_mse", "-", " (worst)"),
            ("proxy_delta_mse", "--", " (proxy)"),
            ("random_delta_mse", ":", " (random control)"),
        ],
        "poison fraction ρ",
        "dMSE",
    )
    plot_heatmap(out / "dw_heatmap.png", records, config)
