"""Figures of the `guided` pipeline (isingjax/pipelines/guided.py)."""

from __future__ import annotations

import numpy as np

from isingjax.models import energy
from isingjax.pipelines import common


def plot_energy_histograms(path, truth, samples, best):
    """Per sampler, seed 0's samples at its chosen gamma (samples: sampler -> {gammas,
    spins, weights} over gammas; best: sampler -> index of the gamma chosen on validation)
    against the exact energy distribution and the unguided samples."""
    samplers = list(samples)
    ncols = min(4, max(len(samplers), 1))
    fig, axes = common.new_figure(-(-max(len(samplers), 1) // ncols), ncols, 3.4, 2.9)
    base = samples.get("baseline")
    for ax, name in zip(axes.flat, samplers, strict=False):
        data = samples[name]
        j = best[name]
        e = np.asarray(energy(truth, data["spins"][j].astype(np.float32)))
        bins = common.plot_exact_energies(ax, truth)
        if base is not None:
            e0 = np.asarray(energy(truth, base["spins"][0].astype(np.float32)))
            ax.hist(e0, bins=bins, density=True, color="gray", alpha=0.4, label="baseline")
        ax.hist(
            e,
            bins=bins,
            weights=data["weights"][j],
            density=True,
            histtype="step",
            color="tab:red",
            lw=1.5,
            label=f"γ = {data['gammas'][j]:g}",
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("E(s), true parameters")
        ax.legend(fontsize=6)
    for ax in axes.flat[len(samplers) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("density (seed 0, chosen γ)")
    common.save_figure(fig, path)


def plot_vs_gamma(path, arrays, config, names, chosen=None):
    """names (rows) against every gamma of each guided sampler (columns), mean ± s.e. over
    seeds; chosen: sampler -> index of the gamma chosen on validation (a dotted line)."""
    samplers = [s for s in config.guidance.samplers if s != "baseline"]
    fig, axes = common.new_figure(len(names), max(len(samplers), 1), 2.8, 2.4)
    index = {s: i for i, s in enumerate(arrays["samplers"])}
    for row, name in enumerate(names):
        base = arrays[name][index["baseline"], 0] if "baseline" in index else None
        with_observed = name.startswith(("mse", "nll", "val_nll")) or name == "cross_entropy"
        obs = arrays[name][index["observed"], 0] if with_observed else None
        for col, sampler in enumerate(samplers):
            ax = axes[row, col]
            i = index[sampler]
            grid = arrays["gammas"][i]
            ok = np.isfinite(grid)
            values = arrays[name][i][ok]
            mean, err = common.mean_se(values)
            ax.errorbar(
                grid[ok],
                mean,
                yerr=err,
                marker="o",
                ms=3,
                capsize=2,
                color="tab:red",
            )
            if base is not None:
                ax.axhline(np.mean(base), color="gray", ls="--", lw=1, label="baseline γ = 0")
            if obs is not None:
                ax.axhline(np.mean(obs), color="black", ls=":", lw=1, label="observed only")
            if name == "tail_fraction":
                ax.axhline(
                    config.measure.tail_quantile,
                    color="tab:green",
                    ls=":",
                    lw=1,
                    label="exact samples",
                )
            if chosen is not None:
                ax.axvline(grid[chosen[sampler]], color="tab:blue", ls=":", lw=1, label="chosen γ")
            if row == 0:
                ax.set_title(sampler, fontsize=9)
            if row == len(names) - 1:
                ax.set_xlabel("γ")
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    axes[0, 0].legend(fontsize=6)
    common.save_figure(fig, path)
