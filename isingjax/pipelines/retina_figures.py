"""Figures of the `retina` pipeline (isingjax/pipelines/retina.py)."""

from __future__ import annotations

import numpy as np

from isingjax.pipelines import common
from isingjax.pipelines.retina_summary import LABELS

COLORS = {
    "test": "black",
    "train_data": "gray",
    "independent": "tab:orange",
    "silent": "silver",
    "plm": "tab:blue",
    "erasure": "tab:green",
    "exact_ml": "tab:brown",
    "diffusion_max": "tab:red",
    "diffusion_val": "tab:pink",
    "l2": "tab:cyan",
    "diffusion_l2": "tab:purple",
    "inpaint": "tab:olive",
}
FIT_LABELS = {"test": "test patterns", "train_data": "training patterns"}
RECON_PANELS = (
    ("map_balanced_accuracy", "balanced accuracy (most probable)"),
    ("map_f1", "F1 on spikes (most probable)"),
    ("map_accuracy", "accuracy (most probable)"),
    ("marginal_log_loss", "log-loss of the marginals (nats)"),
)


def _fit_records(records, seed=0):
    return {r["arm"]: r for r in records if r["section"] == "fit" and r["seed"] == seed}


def plot_pk(path, records, config):
    """P(K), the distribution of the number of active neurons per bin (seed 0), log scale."""
    fig, axes = common.new_figure(1, 1, 5.5, 4.0)
    ax = axes[0, 0]
    for arm, record in _fit_records(records).items():
        pk = np.asarray(record["pk"])
        k = np.flatnonzero(pk > 0)
        ax.plot(
            k,
            pk[k],
            marker="o",
            ms=3,
            lw=2.0 if arm == "test" else 1.2,
            color=COLORS.get(arm, "tab:olive"),
            label=FIT_LABELS.get(arm, arm),
        )
    ax.set(yscale="log", xlabel="K (neurons active in a 20 ms bin)", ylabel="P(K)")
    ax.set_title(f"{config.model.n} neurons, seed 0: test repeats vs models", fontsize=9)
    ax.legend(fontsize=7)
    common.save_figure(fig, path)


def plot_correlations(path, records, config):
    """Connected pairwise correlations of model samples (and of the training patterns)
    against those of the test patterns (seed 0)."""
    fits = _fit_records(records)
    test = np.asarray(fits.pop("test")["corr"])
    arms = [a for a in fits if "corr" in fits[a]]
    fig, axes = common.new_figure(1, len(arms), 3.4, 3.4)
    lim = (min(test.min(), 0.0), test.max() * 1.05)
    for ax, arm in zip(axes[0], arms, strict=True):
        ax.scatter(
            test, np.asarray(fits[arm]["corr"]), s=4, alpha=0.5, color=COLORS.get(arm, "tab:olive")
        )
        ax.plot(lim, lim, color="black", lw=0.8)
        ax.set(xlabel="C_ij test patterns", title=FIT_LABELS.get(arm, arm))
    axes[0, 0].set_ylabel("C_ij model samples")
    fig.suptitle(
        f"connected correlations of sigma in {{0,1}}, {config.model.n} neurons, seed 0", fontsize=9
    )
    common.save_figure(fig, path)


def _plot_lines(axes, arrays, x, select):
    for c, (field, title) in enumerate(RECON_PANELS):
        mean, se = common.mean_se(arrays[field])
        ax = axes[0, c]
        for a, arm in enumerate(arrays["arms"]):
            mu, err = select(mean)[:, a], select(se)[:, a]
            if np.all(np.isnan(mu)):
                continue
            ax.errorbar(
                x,
                mu,
                yerr=err,
                color=COLORS[arm],
                marker="o",
                ms=3,
                capsize=2,
                lw=1.2,
                label=LABELS[arm],
            )
        ax.set_title(title, fontsize=9)
        ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in x])
        ax.minorticks_off()
    axes[0, 0].legend(fontsize=6)


def plot_vs_hidden(path, arrays):
    """The scores against k (hidden neurons) at the largest M, every arm."""
    fig, axes = common.new_figure(1, len(RECON_PANELS), 3.6, 3.2)
    m = arrays["sample_sizes"][-1]
    _plot_lines(axes, arrays, arrays["hidden"], lambda x: x[-1].T)
    for ax in axes[0]:
        ax.set(xlabel=f"hidden neurons k (M = {m})")
    common.save_figure(fig, path)


def plot_vs_m(path, arrays, k):
    """The scores against M (training patterns) at k hidden neurons, every arm."""
    fig, axes = common.new_figure(1, len(RECON_PANELS), 3.6, 3.2)
    j = list(arrays["hidden"]).index(k)
    _plot_lines(axes, arrays, arrays["sample_sizes"], lambda x: x[:, :, j])
    for ax in axes[0]:
        ax.set(xlabel=f"training patterns M (k = {k})")
    common.save_figure(fig, path)


def plot_attacks(path, arrays):
    """The decoder under attack, a row per M: PGD robust accuracy against the L-inf budget
    eps and certified robust accuracy against flips k, every model arm (mean ± s.e.)."""
    if "attack_pgd_accuracy" not in arrays:
        return
    sizes = arrays["sample_sizes"]
    fig, axes = common.new_figure(len(sizes), 2, 3.8, 2.8)
    panels = (("pgd_accuracy", "eps", "L-inf budget ε"), ("certified_accuracy", "flips", "flips k"))
    for i, m in enumerate(sizes):
        for c, (field, axis, xlabel) in enumerate(panels):
            ax, x = axes[i, c], arrays[axis]
            mean, se = common.mean_se(np.moveaxis(arrays[f"attack_{field}"][i], 1, -1))
            for a, arm in enumerate(arrays["attack_arms"]):
                if not np.all(np.isnan(mean[a])):
                    ax.errorbar(
                        x, mean[a], yerr=se[a], color=COLORS[arm], marker="o", ms=3,
                        capsize=2, lw=1.2, label=LABELS[arm],
                    )  # fmt: skip
            ax.set(xlabel=xlabel, ylabel=f"robust accuracy (M = {m})")
    axes[0, 0].legend(fontsize=6)
    axes[0, 0].set_title("PGD on the relaxation", fontsize=9)
    axes[0, 1].set_title("certified (exact k*)", fontsize=9)
    common.save_figure(fig, path)
