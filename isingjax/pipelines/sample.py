"""Pipeline `sample`: SK instances sampled by Metropolis, checked against exact enumeration.

For every coupling strength beta in config.model.betas and every seed, draw an SK
instance, sample it with single-spin-flip Metropolis (parallel tempering when
beta >= config.sampler.tempering_above), and for n <= 20 compare the samples with
the exact distribution: errors of means and correlations, the KL divergence of the
empirical distribution, and the energy histogram. As a yardstick, the same numbers
are computed for the same count of exact i.i.d. samples: a correct, well-mixed
sampler matches them up to the factor sqrt(autocorrelation time).

Outputs in workdir: config.json, results.jsonl (a line per (beta, seed) cell, written
as each beta finishes; a rerun skips finished cells), results.npz, summary.md (mean ±
s.e. over seeds, the config and the wall time) and figures/energy_histograms.png.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from isingjax import exact, io, mcmc, metrics, runtime, sweeps
from isingjax.models import energy, sk_model
from isingjax.pipelines import common

NUM_BINS = 40
RESUMABLE = ("model.betas",)  # config fields a rerun may change (common.prepare_workdir)


def validate_config(config) -> None:
    """Raises ValueError naming the config field that is out of range."""
    s = config.sampler
    common.check_fields(
        common.model_checks(config)
        + [
            ("sampler.num_temps", s.num_temps, common.is_int(s.num_temps, 2), "an integer >= 2"),
            ("sampler.beta_min", s.beta_min, 0 < s.beta_min < 1, "in (0, 1)"),
        ]
    )


def make_stage_fn(config, use_tempering: bool):
    """Returns a jitted fn(root key, seeds [S], beta) -> per-seed metrics and histograms."""
    n, s = config.model.n, config.sampler
    run_args = dict(
        num_samples=s.num_samples,
        num_chains=s.num_chains,
        burn_in=s.burn_in,
        thin=s.thin,
        block_size=s.block_size,
    )
    betas = mcmc.geometric_betas(s.num_temps, s.beta_min)

    def one_seed(seed, root, beta):
        model_key, chain_key, reference_key = jax.random.split(sweeps.seed_key(root, seed), 3)
        params = sk_model(model_key, n, beta, config.model.bias_std)
        if use_tempering:
            samples, info = mcmc.parallel_tempering(chain_key, params, betas=betas, **run_args)
        else:
            samples, info = mcmc.metropolis(chain_key, params, **run_args)
        out = {
            "acceptance_rate": info.acceptance_rate,
            "autocorr_time": info.autocorr_time,
            "min_swap_rate": jnp.min(info.swap_rates) if use_tempering else jnp.nan,
            "energy_mean": jnp.mean(info.energy_trace),
        }
        if n <= exact.MAX_N:
            reference = exact.sample(reference_key, params, s.num_samples)
            out |= _compare_with_exact(params, samples, reference)
        return out

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _compare_with_exact(params, samples, reference):
    truth = exact.moments(params)
    log_p = exact.all_log_probs(params)
    state_energy = -log_p - exact.log_partition(params)  # E(s) for every state
    # Margins keep sample energies (computed by another route, so rounded differently) of
    # the lowest and highest states inside the outer bins.
    pad = 1e-3 * (state_energy.max() - state_energy.min()) + 1e-4
    edges = jnp.linspace(state_energy.min() - pad, state_energy.max() + pad, NUM_BINS + 1)
    exact_hist = jnp.histogram(state_energy, edges, weights=jnp.exp(log_p))[0]
    out = {"hist_edges": edges, "hist_exact": exact_hist}
    for name, spins in (("mcmc", samples), ("iid", reference)):
        hist = jnp.histogram(energy(params, spins), edges)[0] / spins.shape[0]
        errors = metrics.moment_errors(metrics.sample_moments(spins), truth)
        out |= {f"{name}_{k}": v for k, v in errors.items()}
        out[f"{name}_kl"] = exact.kl_divergence(spins, params)
        out[f"{name}_energy_tv"] = 0.5 * jnp.sum(jnp.abs(hist - exact_hist))
        out[f"hist_{name}"] = hist
    return out


def run(config, workdir) -> list[dict]:
    """Runs the pipeline; returns the result records (one per (beta, seed))."""
    validate_config(config)
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
    done = {(r["beta"], r["seed"]) for r in io.read_jsonl(results_path)}
    root = jax.random.key(config.seed)
    start = time.time()
    seeds = range(config.num_seeds)
    betas = [b for b in config.model.betas if any((float(b), i) not in done for i in seeds)]
    progress = runtime.Progress("sample: betas", len(betas))
    for beta in betas:
        todo = [i for i in seeds if (float(beta), i) not in done]
        use_tempering = beta >= config.sampler.tempering_above
        stage = make_stage_fn(config, use_tempering)
        out = sweeps.run_over_seeds(stage, todo, root, float(beta))
        for row, seed in enumerate(todo):
            record = {
                "beta": float(beta),
                "seed": seed,
                "sampler": "parallel_tempering" if use_tempering else "metropolis",
            }
            record |= {k: np.asarray(v[row]).tolist() for k, v in out.items()}
            io.append_jsonl(results_path, record)
        sampler = "parallel tempering" if use_tempering else "Metropolis"
        progress.step(f"beta={beta:g}: {len(todo)} seeds with {sampler}")
    records = _sorted_records(io.read_jsonl(results_path), config)
    _write_npz(workdir / "results.npz", records, config)
    table = summary_table(records, config)
    caption = f"Mean ± s.e. over {config.num_seeds} seeds (n = {config.model.n})"
    common.write_summary(workdir, "sample", [(caption, table)], config, time.time() - start)
    logging.info("sample: %s\n%s", caption, table)
    if config.model.n <= exact.MAX_N:
        _plot_histograms(workdir / "figures" / "energy_histograms.png", records, config)
    logging.info("sample: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records


def _fmt(values, digits: int = 2) -> str:
    mean, se = common.mean_se(np.asarray(values, np.float64))
    return f"{mean:.{digits}g} ± {se:.1g}"


def summary_table(records, config) -> str:
    """Markdown: per beta, the sampler's diagnostics and, for n <= 20, each check against
    the exact distribution for the sampler / for as many exact i.i.d. draws (mean ± s.e.
    over seeds)."""
    compare = config.model.n <= exact.MAX_N
    columns = ["β", "sampler", "acceptance", "τ_int (records)", "min swap rate"]
    checks = (
        ("means_max", "max \\|Δ mean\\|"),
        ("corr_max", "max \\|Δ corr\\|"),
        ("kl", "KL"),
        ("energy_tv", "energy TV"),
    )
    if compare:
        columns += [f"{label} MCMC / i.i.d." for _, label in checks]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for beta in (float(b) for b in config.model.betas):
        rows = [r for r in records if r["beta"] == beta]
        if not rows:
            continue
        swap = [r["min_swap_rate"] for r in rows]
        cells = [
            f"{beta:g}",
            rows[0]["sampler"].replace("_", " "),
            _fmt([r["acceptance_rate"] for r in rows]),
            _fmt([r["autocorr_time"] for r in rows]),
            "–" if np.all(np.isnan(np.asarray(swap, float))) else _fmt(swap),
        ]
        if compare:
            for key, _ in checks:
                mcmc = _fmt([r[f"mcmc_{key}"] for r in rows])
                iid = _fmt([r[f"iid_{key}"] for r in rows])
                cells.append(f"{mcmc} / {iid}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sorted_records(records, config):
    wanted = {(float(b), i) for b in config.model.betas for i in range(config.num_seeds)}
    latest = {(r["beta"], r["seed"]): r for r in records if (r["beta"], r["seed"]) in wanted}
    return [latest[k] for k in sorted(latest)]


def _write_npz(path, records, config):
    betas = np.asarray([float(b) for b in config.model.betas])
    seeds = np.arange(config.num_seeds)
    arrays = {"betas": betas, "seeds": seeds}
    fields = [k for k, v in records[0].items() if k not in ("beta", "seed", "sampler")]
    for field in fields:
        stacked = np.asarray([r[field] for r in records], np.float64)
        arrays[field] = stacked.reshape(len(betas), len(seeds), *stacked.shape[1:])
    np.savez(path, **arrays)


def _plot_histograms(path, records, config):
    first = [r for r in records if r["seed"] == 0]
    fig, axes = common.new_figure(1, len(first), 4.2, 3.4)
    for ax, r in zip(axes[0], first, strict=True):
        edges = np.asarray(r["hist_edges"])
        ax.stairs(r["hist_exact"], edges, color="black", lw=2, label="exact")
        ax.stairs(r["hist_mcmc"], edges, color="tab:red", label=f"{r['sampler']}")
        ax.stairs(r["hist_iid"], edges, color="tab:blue", ls="--", label="exact i.i.d. draws")
        ax.set_title(
            f"β = {r['beta']:g}, n = {config.model.n}, seed 0\n"
            f"TV: {r['sampler']} {r['mcmc_energy_tv']:.3f}, i.i.d. {r['iid_energy_tv']:.3f}",
            fontsize=9,
        )
        ax.set_xlabel("energy E(s)")
    axes[0, 0].set_ylabel("probability per bin")
    axes[0, 0].legend(fontsize=8)
    common.save_figure(fig, path)
