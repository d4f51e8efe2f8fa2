"""Pipeline `inverse`: the learning curve of every estimator on SK models.

For every beta and every method, one jitted call covers all seeds (vmapped, sharded over
devices) and all sample sizes (weight masks over nested prefixes of one dataset per
seed). Each (beta, method) batch appends one line per (seed, M) cell to results.jsonl as
soon as it finishes; a rerun with the same workdir skips finished batches.

Outputs: config.json, results.jsonl (with each fit's `converged`), results.npz
(mse_{all,w,b}, relative_error, converged [beta, method, M, seed] with coordinate
arrays), summary.md (MSE mean ± s.e. over seeds, † where some seed's fit did not
converge; the config and the wall time), figures/mse_vs_m.png and figures/scatter.png.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from isingjax import exact, inference, io, mcmc, metrics, runtime, sweeps
from isingjax.models import sk_model
from isingjax.pipelines import common

COORDS = ("beta", "method", "num_samples", "seed")
# Config fields a rerun in the same workdir may change (common.prepare_workdir).
RESUMABLE = ("model.betas", "sweep.sample_sizes", "inference.methods")
SAMPLERS = ("exact", "metropolis")


def validate_config(config) -> None:
    sizes, methods = config.sweep.sample_sizes, config.inference.methods
    common.check_fields(
        common.model_checks(config)
        + [
            (
                "data.sampler",
                config.data.sampler,
                config.data.sampler in SAMPLERS,
                f"one of {SAMPLERS}",
            ),
            (
                "data.sampler",
                config.data.sampler,
                config.data.sampler != "exact" or config.model.n <= exact.MAX_N,
                f"'metropolis' when model.n > {exact.MAX_N}",
            ),
            (
                "sweep.sample_sizes",
                sizes,
                len(sizes) >= 1 and all(common.is_int(m, 1) for m in sizes),
                "a non-empty tuple of integers >= 1",
            ),
            (
                "inference.methods",
                methods,
                len(methods) >= 1 and set(methods) <= set(inference.METHODS),
                f"a non-empty tuple drawn from {tuple(inference.METHODS)}",
            ),
        ]
    )
    common.check_options(config, methods)


def draw_data(key, params, num_samples, config):
    """num_samples observed spins from the true model (exact sampler or Metropolis)."""
    if config.data.sampler == "exact":
        return exact.sample(key, params, num_samples)
    s = config.sampler
    chains = min(s.num_chains, num_samples)
    total = -(-num_samples // chains) * chains
    samples, _ = mcmc.metropolis(
        key,
        params,
        num_samples=total,
        num_chains=chains,
        burn_in=s.burn_in,
        thin=s.thin,
        block_size=s.block_size,
    )
    return samples[:num_samples]


def make_stage_fn(config, method: str):
    """jit(vmap over seeds): fn(seeds [S], root, beta) -> errors [S, K] and estimates."""
    n, sizes = config.model.n, tuple(config.sweep.sample_sizes)
    weights = jnp.asarray(sweeps.prefix_weights(sizes, max(sizes)))
    options = dict(config.inference.options.get(method, {}))
    fit = inference.METHODS[method]

    def one_seed(seed, root, beta):
        model_key, data_key = jax.random.split(sweeps.seed_key(root, seed))
        truth = sk_model(model_key, n, beta, config.model.bias_std)
        spins = draw_data(data_key, truth, max(sizes), config)
        estimates, info = jax.vmap(lambda w: fit(spins, w, **options))(weights)
        mse = jax.vmap(lambda est: metrics.param_mse(est, truth))(estimates)
        rel = jax.vmap(lambda est: metrics.relative_error(est, truth))(estimates)
        rows, cols = jnp.triu_indices(n, k=1)
        return {
            "mse": mse,
            "relative_error": rel,
            "converged": info.get("converged", jnp.ones(len(sizes), bool)),
            "w_true": truth.w[rows, cols],
            "w_est": estimates.w[:, rows, cols],
        }

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _records(out, beta, method, seeds, sizes):
    for s, seed in enumerate(seeds):
        for k, m in enumerate(sizes):
            record = {
                "beta": float(beta),
                "method": method,
                "num_samples": int(m),
                "seed": seed,
                "relative_error": float(out["relative_error"][s, k]),
                "converged": bool(out["converged"][s, k]),
            }
            record |= {f"mse_{part}": float(out["mse"][part][s, k]) for part in ("all", "w", "b")}
            if seed == 0:  # the scatter figure needs one seed's couplings
                record["w_true"] = out["w_true"][s].tolist()
                record["w_est"] = out["w_est"][s, k].tolist()
            yield record


def run(config, workdir) -> list[dict]:
    """Runs the learning-curve sweep; returns its result records."""
    validate_config(config)
    # Metropolis draws max(M) samples as chains x records, so a different max(M) is a
    # different dataset: then the sample sizes are fixed for the workdir.
    resumable = RESUMABLE if config.data.sampler == "exact" else RESUMABLE[:1] + RESUMABLE[2:]
    workdir, results_path = common.prepare_workdir(config, workdir, resumable)
    done = sweeps.finished(results_path, COORDS)
    root = jax.random.key(config.seed)
    sizes, seeds = tuple(config.sweep.sample_sizes), list(range(config.num_seeds))
    start = time.time()
    todo = [
        (method, beta)
        for method in config.inference.methods
        for beta in config.model.betas
        if not {(float(beta), method, m, s) for m in sizes for s in seeds} <= done
    ]
    progress, stages = runtime.Progress("inverse: (method, beta) cells", len(todo)), {}
    for method, beta in todo:
        if method not in stages:
            stages[method] = make_stage_fn(config, method)  # one compile per method
        out = sweeps.run_over_seeds(stages[method], seeds, root, float(beta))
        sweeps.append_cells(results_path, _records(out, beta, method, seeds, sizes), done, COORDS)
        progress.step(f"{method} at beta={beta:g}, {len(seeds)} seeds x {len(sizes)} sizes")
    records = io.read_jsonl(results_path)
    arrays = _write_npz(workdir / "results.npz", records, config)
    table = summary_table(arrays)
    caption = (
        "Parameter MSE (all w and b), mean ± s.e. over seeds (†: some seed's fit did not converge)"
    )
    common.write_summary(workdir, "inverse", [(caption, table)], config, time.time() - start)
    logging.info("inverse: %s\n%s", caption, table)
    _plot_learning_curves(workdir / "figures" / "mse_vs_m.png", arrays, config)
    _plot_scatter(workdir / "figures" / "scatter.png", records, config)
    logging.info("inverse: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records


def _write_npz(path, records, config):
    betas = [float(b) for b in config.model.betas]
    methods, sizes = list(config.inference.methods), list(config.sweep.sample_sizes)
    shape = (len(betas), len(methods), len(sizes), config.num_seeds)
    arrays = {f"mse_{p}": np.full(shape, np.nan) for p in ("all", "w", "b")}
    arrays["relative_error"] = np.full(shape, np.nan)
    arrays["converged"] = np.full(shape, np.nan)
    index = {
        (b, m, k, s): (i, j, q, s)
        for i, b in enumerate(betas)
        for j, m in enumerate(methods)
        for q, k in enumerate(sizes)
        for s in range(config.num_seeds)
    }
    sweeps.fill_cells(arrays, index, records, COORDS)
    arrays |= {
        "betas": np.asarray(betas),
        "methods": np.asarray(methods),
        "sample_sizes": np.asarray(sizes),
        "seeds": np.arange(config.num_seeds),
    }
    np.savez(path, **arrays)
    return arrays


def summary_table(arrays) -> str:
    """Markdown: MSE (all) mean ± s.e. over seeds, a row per (beta, M), a column per
    method; '†' marks a cell where some seed's fit did not converge."""
    methods = [str(m) for m in arrays["methods"]]
    lines = ["| β | M | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    mean, se = common.mean_se(arrays["mse_all"])
    for i, beta in enumerate(arrays["betas"]):
        for q, m in enumerate(arrays["sample_sizes"]):
            cells = []
            for j in range(len(methods)):
                flag = "†" if np.any(arrays["converged"][i, j, q] == 0) else ""
                mu, e = mean[i, j, q], se[i, j, q]
                cells.append("–" if np.isnan(mu) else f"{mu:.3g} ± {e:.1g}{flag}")
            lines.append(f"| {beta:g} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_learning_curves(path, arrays, config):
    fig, axes = common.new_figure(1, len(arrays["betas"]), 4.6, 3.8)
    for ax, beta, mse in zip(axes[0], arrays["betas"], arrays["mse_all"], strict=True):
        for method, curve in zip(arrays["methods"], mse, strict=True):
            mean, err = common.mean_se(curve)
            ax.errorbar(
                arrays["sample_sizes"],
                mean,
                yerr=err,
                marker="o",
                ms=3,
                capsize=2,
                label=str(method),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("observed samples M")
        ax.set_title(
            f"SK n = {config.model.n}, β = {beta:g}, bias std {config.model.bias_std:g}\n"
            f"mean ± s.e. over {config.num_seeds} seeds",
            fontsize=9,
        )
    axes[0, 0].set_ylabel("parameter MSE (all w and b)")
    axes[0, 0].legend(fontsize=8)
    common.save_figure(fig, path)


def _plot_scatter(path, records, config):
    beta = float(config.model.betas[-1])
    sizes = list(config.sweep.sample_sizes)
    size = min(sizes, key=lambda m: abs(m - config.plots.scatter_size))
    chosen = [
        r
        for r in records
        if r["seed"] == 0
        and r["beta"] == beta
        and r["num_samples"] == size
        and r["method"] in config.inference.methods
    ]
    fig, axes = common.new_figure(1, max(len(chosen), 1), 3.2, 3.2)
    for ax, r in zip(axes[0], chosen, strict=False):
        w_true, w_est = np.asarray(r["w_true"]), np.asarray(r["w_est"])
        lim = 1.1 * max(np.abs(w_true).max(), np.abs(w_est).max())
        ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
        ax.scatter(w_true, w_est, s=6, alpha=0.7)
        ax.set(
            xlim=(-lim, lim),
            ylim=(-lim, lim),
            xlabel="true $w_{ij}$",
            title=f"{r['method']}: MSE(w) {r['mse_w']:.2g}",
        )
    axes[0, 0].set_ylabel(f"inferred $w_{{ij}}$ (β = {beta:g}, M = {size}, seed 0)")
    common.save_figure(fig, path)
