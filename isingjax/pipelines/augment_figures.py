"""Figures of the `augment` pipeline (isingjax/pipelines/augment.py)."""

from __future__ import annotations

import numpy as np

from isingjax.models import energy
from isingjax.pipelines import common
from isingjax.pipelines.augment_records import label

GEN_COLORS = {"ddpm": "tab:red", "masked": "tab:orange", "autoregressive": "tab:purple"}
RATIO_STYLES = (":", "--", "-", "-.")


def plot_all(out, arrays, records, checks, config, seed0):
    """Every figure into directory `out`; seed0: beta -> (truth, observed, {generator:
    generated}) of seed 0 at the smallest M."""
    plot_mse_vs_m(out / "mse_vs_m.png", arrays, config)
    plot_checkpoint_grid(out / "checkpoint_grid.png", arrays, config)
    plot_training(out / "training.png", checks)
    plot_scatter(out / "scatter.png", records, config)
    plot_energy_histograms(out / "energy_histograms.png", seed0, min(config.sweep.sample_sizes))


def _errorbar(ax, x, values, **kwargs):
    mean, se = common.mean_se(values)
    ax.errorbar(x, mean, yerr=se, marker="o", ms=2.5, capsize=2, **kwargs)


def plot_mse_vs_m(path, arrays, config):
    """MSE vs M per (beta, method): the arms without a generator and every generator's
    held-out and energy-variance (largest K) rules."""
    betas, methods, gens = arrays["betas"], list(arrays["methods"]), list(arrays["generators"])
    fig, axes = common.new_figure(len(betas), len(methods), 4.2, 3.6)
    base = list(zip(arrays["arms"].tolist(), arrays["ratios"].tolist(), strict=True))
    rules = list(zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True))
    r_min, r_max = min(config.augment.ratios), max(config.augment.ratios)
    plm = methods.index("plm") if "plm" in methods else None
    sizes = arrays["sample_sizes"]
    for i, beta in enumerate(betas):
        for k, method in enumerate(methods):
            ax = axes[i, k]
            for (arm, ratio), color in (
                (("observed", 0), "black"),
                (("oracle", r_min), "tab:green"),
            ):
                values = arrays["mse_all"][i, :, k, base.index((arm, ratio))]
                _errorbar(
                    ax,
                    sizes,
                    values,
                    color=color,
                    lw=2 if arm == "observed" else 1.2,
                    label=label(arm, ratio),
                )
            if plm is not None:
                _errorbar(
                    ax,
                    sizes,
                    arrays["mse_all"][i, :, plm, base.index(("l2", 0))],
                    color="gray",
                    label=label("l2", 0),
                )
            for h, gen in enumerate(gens):
                for (arm, ratio), ls in ((("heldout", 0), "-"), (("energy_variance", r_max), ":")):
                    if (arm, ratio) in rules:
                        values = arrays["gen_mse_all"][i, :, k, h, rules.index((arm, ratio))]
                        _errorbar(
                            ax,
                            sizes,
                            values,
                            color=GEN_COLORS.get(gen),
                            ls=ls,
                            lw=1.2,
                            label=f"{gen}: {label(arm, ratio)}",
                        )
            ax.set(xscale="log", yscale="log", xlabel="observed samples M")
            ax.set_title(f"{method}, β = {beta:g}", fontsize=9)
        axes[i, 0].set_ylabel("parameter MSE (all), mean ± s.e.")
    # beside the panels, not over them
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"SK n = {config.model.n}, {config.num_seeds} seeds", fontsize=10)
    common.save_figure(fig, path)


def plot_checkpoint_grid(path, arrays, config):
    """The grid at the smallest M for the first method: MSE vs checkpoint per K, per beta
    (rows) and generator (columns), beside observed only (black)."""
    gens, k = list(arrays["generators"]), 0
    fig, axes = common.new_figure(len(arrays["betas"]), max(len(gens), 1), 3.6, 3.2)
    observed = list(arrays["arms"]).index("observed")
    for i, beta in enumerate(arrays["betas"]):
        for h, gen in enumerate(gens):
            ax, steps = axes[i, h], arrays["grid_steps"][h]
            used = steps > 0
            for q, ratio in enumerate(arrays["grid_ratios"]):
                values = arrays["grid_mse_all"][i, 0, k, h, used, q]
                _errorbar(
                    ax,
                    steps[used],
                    values,
                    color=GEN_COLORS.get(gen),
                    ls=RATIO_STYLES[q % 4],
                    label=f"K = {ratio}M",
                )
            mean, _ = common.mean_se(arrays["mse_all"][i, 0, k, observed])
            ax.axhline(mean, color="black", lw=1, label="observed only")
            ax.set(yscale="log", xlabel=f"{gen} training step")
            ax.set_title(f"{gen}, β = {beta:g}, M = {arrays['sample_sizes'][0]}", fontsize=9)
        axes[i, 0].set_ylabel(f"MSE of {arrays['methods'][k]} (all)")
    axes[0, 0].legend(fontsize=6)
    common.save_figure(fig, path)


def plot_training(path, checks):
    """Training loss (mean over seeds) per generator and block."""
    rows = [r for r in checks if r.get("kind") == "train" and "folds" not in r]
    gens = sorted({r["generator"] for r in rows})
    fig, axes = common.new_figure(1, max(len(gens), 1), 3.8, 3.2)
    for ax, gen in zip(axes[0], gens, strict=False):
        blocks = sorted({(r["beta"], r["num_samples"]) for r in rows if r["generator"] == gen})
        for beta, m in blocks:
            mine = sorted(
                (
                    r
                    for r in rows
                    if (r["generator"], r["beta"], r["num_samples"]) == (gen, beta, m)
                ),
                key=lambda r: r["step"],
            )
            ax.plot(
                [r["step"] for r in mine],
                [np.mean(r["loss"]) for r in mine],
                marker="o",
                ms=2.5,
                label=f"β = {beta:g}, M = {m}",
            )
        ax.set(xlabel="training step", title=gen)
    axes[0, 0].set_ylabel("training loss (chunk mean, mean over seeds)")
    axes[0, 0].legend(fontsize=6)
    common.save_figure(fig, path)


def plot_scatter(path, records, config):
    """Seed 0's couplings against the truth: observed, tuned L2 and each generator's
    held-out rule (largest beta, smallest M, first method)."""
    beta, m = float(config.model.betas[-1]), min(config.sweep.sample_sizes)
    method = config.inference.methods[0]
    block = [
        r
        for r in records
        if r["seed"] == 0
        and (r["beta"], r["num_samples"], r["method"]) == (beta, m, method)
        and "w_est" in r
    ]
    w_true = next((r["w_true"] for r in block if "w_true" in r), None)
    wanted = [("", "observed"), ("", "l2")] + [(g, "heldout") for g in config.generator.names]
    chosen = [r for key in wanted for r in block if (r["generator"], r["arm"]) == key]
    fig, axes = common.new_figure(1, max(len(chosen), 1), 3.0, 3.1)
    for ax, r in zip(axes[0], chosen, strict=False):
        truth, est = np.asarray(w_true), np.asarray(r["w_est"])
        lim = 1.1 * max(np.abs(truth).max(), np.abs(est).max())
        ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
        ax.scatter(truth, est, s=5, alpha=0.7, color=GEN_COLORS.get(r["generator"], "black"))
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="true $w_{ij}$")
        name = f"{r['generator']}: " if r["generator"] else ""
        ax.set_title(f"{name}{label(r['arm'], r['ratio'])}\nMSE(w) {r['mse_w']:.2g}", fontsize=9)
    axes[0, 0].set_ylabel(f"{method} $w_{{ij}}$ (β = {beta:g}, M = {m}, seed 0)")
    common.save_figure(fig, path)


def plot_energy_histograms(path, seed0, m):
    """seed0: beta -> (truth, observed, {generator: generated}) of one seed."""
    fig, axes = common.new_figure(1, max(len(seed0), 1), 4.0, 3.2)
    for ax, (beta, (truth, observed, generated)) in zip(axes[0], seed0.items(), strict=False):
        e_obs = np.asarray(energy(truth, observed))
        e_gen = {g: np.asarray(energy(truth, x)) for g, x in generated.items()}
        values = np.concatenate([e_obs, *e_gen.values()])
        bins = common.plot_exact_energies(
            ax, truth, np.linspace(values.min() - 1, values.max() + 1, 40)
        )
        ax.hist(
            e_obs, bins=bins, density=True, alpha=0.4, color="tab:blue", label=f"observed ({m})"
        )
        for g, e in e_gen.items():
            ax.hist(
                e,
                bins=bins,
                density=True,
                histtype="step",
                color=GEN_COLORS.get(g),
                label=f"{g} ({len(e)}, energy-variance checkpoint)",
            )
        ax.set(xlabel="energy E(s) under the true parameters", title=f"β = {beta:g}, seed 0")
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=6)
    common.save_figure(fig, path)
