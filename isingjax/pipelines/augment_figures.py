"""Figures and summary helpers of the `augment` pipeline (isingjax/pipelines/augment.py)."""

from __future__ import annotations

import numpy as np

from isingjax.models import energy
from isingjax.pipelines import common
from isingjax.pipelines.augment_summary import TUNED_ARMS, label

ARM_COLORS = {
    "observed": "black",
    "l2": "gray",
    "diffusion": "tab:red",
    "bootstrap": "tab:blue",
    "oracle": "tab:green",
    "diffusion_l2": "tab:purple",
}
RATIO_STYLES = (":", "--", "-", "-.")


def plot_mse_vs_m(path, arrays, config):
    betas, methods = arrays["betas"], list(arrays["methods"])
    fig, axes = common.new_figure(len(betas), len(methods), 4.2, 3.6)
    mean, se = common.mean_se(arrays["mse_all"])
    ratios = list(config.augment.ratios)
    plm_index = methods.index("plm") if "plm" in methods else None
    for i, beta in enumerate(betas):
        for k, method in enumerate(methods):
            ax = axes[i, k]
            for c, (arm, ratio) in enumerate(zip(arrays["arms"], arrays["ratios"], strict=True)):
                source = plm_index if arm in TUNED_ARMS else k
                if source is None:
                    continue
                name = label(arm, ratio)
                ax.errorbar(
                    arrays["sample_sizes"],
                    mean[i, :, source, c],
                    yerr=se[i, :, source, c],
                    color=ARM_COLORS[arm],
                    ls=RATIO_STYLES[ratios.index(ratio) % 4] if ratio else "-",
                    lw=2.0 if arm == "observed" else 1.2,
                    marker="o",
                    ms=2.5,
                    capsize=2,
                    label=name,
                )
            ax.set(xscale="log", yscale="log", xlabel="observed samples M")
            ax.set_title(f"{method}, β = {beta:g}", fontsize=9)
        axes[i, 0].set_ylabel("parameter MSE (all), mean ± s.e.")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.suptitle(
        f"SK n = {config.model.n}, {config.num_seeds} seeds: observed vs augmented "
        "(K extra samples per arm)",
        fontsize=10,
    )
    common.save_figure(fig, path)


def plot_training(path, progress, config):
    crit = [r for r in progress if r.get("kind") == "criterion"]
    chosen = [r for r in progress if r.get("kind") == "generator"]
    blocks = sorted({(r["beta"], r["num_samples"]) for r in crit})
    fig, axes = common.new_figure(2, max(len(blocks), 1), 3.6, 3.2)
    for col, (beta, m) in enumerate(blocks):
        rows = [r for r in crit if (r["beta"], r["num_samples"]) == (beta, m)]
        steps = sorted({r["step"] for r in rows})

        def curve(name, rows=rows, steps=steps):
            values = np.asarray(
                [[r[name] for r in rows if r["step"] == s] for s in steps], dtype=float
            )
            return common.mean_se(values)

        top, bottom = axes[0, col], axes[1, col]
        for name, style, text in (
            ("var_gen_inferred", "-", "generated, inferred params"),
            ("var_obs_inferred", ":", "observed, inferred params"),
            ("var_gen_true", "-", "generated, true params"),
            ("var_obs_true", ":", "observed, true params"),
        ):
            mu, err = curve(name)
            color = "tab:red" if "inferred" in name else "tab:blue"
            top.errorbar(steps, mu, yerr=err, ls=style, color=color, capsize=2, label=text)
        for name, color, text in (
            ("mse_augmented", "tab:red", f"observed + {config.criterion.num_samples} generated"),
            ("mse_observed", "black", "observed only"),
        ):
            mu, err = curve(name)
            bottom.errorbar(steps, mu, yerr=err, color=color, capsize=2, label=text)
        for r in chosen:
            if (r["beta"], r["num_samples"]) == (beta, m):
                for ax in (top, bottom):
                    ax.axvline(r["chosen_step"], color="gray", alpha=0.3, lw=0.8)
        top.set_title(f"β = {beta:g}, M = {m} (gray: chosen steps)", fontsize=9)
        bottom.set(xlabel="diffusion training step", yscale="log")
    axes[0, 0].set_ylabel("Var[E] (mean ± s.e. over seeds)")
    axes[1, 0].set_ylabel(f"MSE of {config.criterion.method} (all)")
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6)
    common.save_figure(fig, path)


def plot_scatter(path, records, config):
    beta, m = float(config.model.betas[-1]), min(config.sweep.sample_sizes)
    method = config.inference.methods[0]
    ratio = min(config.augment.ratios, key=lambda r: abs(r - config.plots.ratio))
    chosen = [
        r
        for r in records
        if r["seed"] == 0
        and (r["beta"], r["num_samples"], r["method"]) == (beta, m, method)
        and r["ratio"] in (0, ratio)
        and r["arm"] not in TUNED_ARMS
    ]
    fig, axes = common.new_figure(1, max(len(chosen), 1), 3.0, 3.1)
    for ax, r in zip(axes[0], chosen, strict=False):
        w_true, w_est = np.asarray(r["w_true"]), np.asarray(r["w_est"])
        lim = 1.1 * max(np.abs(w_true).max(), np.abs(w_est).max())
        ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
        ax.scatter(w_true, w_est, s=5, alpha=0.7, color=ARM_COLORS[r["arm"]])
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="true $w_{ij}$")
        ax.set_title(f"{label(r['arm'], r['ratio'])}\nMSE(w) {r['mse_w']:.2g}", fontsize=9)
    axes[0, 0].set_ylabel(f"{method} $w_{{ij}}$ (β = {beta:g}, M = {m}, seed 0)")
    common.save_figure(fig, path)


def plot_energy_histograms(path, seed0, m):
    """seed0: beta -> (truth, observed, generated) of one seed; m = len(observed)."""
    fig, axes = common.new_figure(1, max(len(seed0), 1), 4.0, 3.2)
    for ax, (beta, (truth, observed, generated)) in zip(axes[0], seed0.items(), strict=False):
        e_obs, e_gen = np.asarray(energy(truth, observed)), np.asarray(energy(truth, generated))
        lo, hi = min(e_obs.min(), e_gen.min()) - 1, max(e_obs.max(), e_gen.max()) + 1
        bins = common.plot_exact_energies(ax, truth, np.linspace(lo, hi, 40))
        ax.hist(
            e_obs, bins=bins, density=True, alpha=0.4, color="tab:blue", label=f"observed ({m})"
        )
        ax.hist(
            e_gen,
            bins=bins,
            density=True,
            histtype="step",
            color="tab:red",
            label=f"generated ({len(e_gen)})",
        )
        ax.set(xlabel="energy E(s) under the true parameters", title=f"β = {beta:g}, seed 0")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=7)
    common.save_figure(fig, path)
