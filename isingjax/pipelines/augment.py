"""Pipeline `augment`: does adding diffusion-generated samples to M observed spins lower
the error of inverse Ising inference (Lim, Lee & Jo, PRE 111, 045302, 2025), and how does
it compare with honest baselines?

For every beta and sample size M, per seed (vmapped over seeds):
1. an SK instance (biases of std bias_std * beta / sqrt(n) by default) and M exact draws;
2. a DDPM trained on the M observed spins, with an Orbax checkpoint every
   `diffusion.checkpoint_every` steps; at each checkpoint the energy-variance criterion
   (isingjax/diffusion/criterion.py) is measured and written to metrics.jsonl, and the
   checkpoint it selects generates K_max = max(ratios) * M spins;
3. for every estimator, the parameter MSE of the arms
     observed   the M observed spins alone,
     diffusion  observed + the first K generated spins, K = ratio * M,
     bootstrap  observed + K spins drawn exactly from the model the same estimator
                inferred from the observed spins,
     oracle     observed + K further true samples,
     l2         (plm only) plm with the L2 penalty chosen by held-out pseudo-likelihood
                on a split of the observed spins, refitted on all of them.
   Every K is a weight mask over one array, so one compile serves all ratios.

Outputs: config.json, metrics.jsonl (training losses, the criterion at every checkpoint,
the chosen checkpoint and its generator checks), results.jsonl (one line per (beta, M,
method, arm, ratio, seed)), results.npz, summary.md, generated/*.npz (the generated
spins), checkpoints/, figures/{mse_vs_m,training,scatter,energy_histograms}.png. A rerun
with the same workdir resumes: training from its last checkpoint, and finished cells,
criterion records and generated sets are not recomputed.
"""

from __future__ import annotations

import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from isingjax import exact, inference, io, metrics, sweeps
from isingjax.inference import plm
from isingjax.models import energy, sk_model
from isingjax.pipelines import common, diffusion_stage

COORDS = ("beta", "num_samples", "method", "arm", "ratio", "seed")
EXTRA_ARMS = ("diffusion", "bootstrap", "oracle")  # observed + K extra spins


def validate_config(config) -> None:
    sizes, methods = config.sweep.sample_sizes, config.inference.methods
    common.check_fields(
        common.model_checks(config)
        + [
            ("model.n", config.model.n, config.model.n <= exact.MAX_N, f"<= {exact.MAX_N}"),
            common.bias_scaling_check(config),
            (
                "sweep.sample_sizes",
                sizes,
                len(sizes) >= 1 and all(common.is_int(m, 10) for m in sizes),
                "a non-empty tuple of integers >= 10",
            ),
            (
                "augment.ratios",
                config.augment.ratios,
                len(config.augment.ratios) >= 1
                and all(common.is_int(r, 1) for r in config.augment.ratios),
                "a non-empty tuple of integers >= 1 (K / M)",
            ),
            (
                "inference.methods",
                methods,
                len(methods) >= 1 and set(methods) <= set(inference.METHODS),
                f"a non-empty tuple drawn from {tuple(inference.METHODS)}",
            ),
            (
                "baselines.l2_grid",
                config.baselines.l2_grid,
                len(config.baselines.l2_grid) >= 1
                and all(v > 0 and math.isfinite(v) for v in config.baselines.l2_grid),
                "a non-empty tuple of positive values (plm l2_per_sample)",
            ),
            (
                "baselines.holdout_fraction",
                config.baselines.holdout_fraction,
                0 < config.baselines.holdout_fraction < 1,
                "in (0, 1)",
            ),
        ]
        + diffusion_stage.config_checks(config)
    )
    diffusion_stage.check_options(config, set(methods) | {config.criterion.method})


def _keys(root, seed):
    names = ("model", "data", "oracle", "diffusion", "criterion", "generate", "boot", "split")
    return dict(zip(names, jax.random.split(sweeps.seed_key(root, seed), len(names)), strict=True))


def _truth_and_data(config, seed, root, beta, m):
    """The seed's true model, its first m observed spins and its oracle spins."""
    keys = _keys(root, seed)
    truth = sk_model(keys["model"], config.model.n, beta, common.bias_std(config, beta))
    observed = exact.sample(keys["data"], truth, max(config.sweep.sample_sizes))[:m]
    k_max = max(config.augment.ratios) * m
    oracle = exact.sample(jax.random.fold_in(keys["oracle"], m), truth, k_max)
    return truth, observed, oracle


def _generated(config, diffusion, workdir, root, beta, m, truth, observed):
    """The generated spins [S, K_max, n] of each seed's chosen checkpoint (cached in
    generated/<block>.npz) and that checkpoint's generator checks in metrics.jsonl."""
    tag = f"beta{beta:g}_m{m}"
    path = workdir / "generated" / f"{tag}.npz"
    if path.exists():
        return np.load(path)["spins"].astype(np.float32)
    seeds = jnp.arange(config.num_seeds)
    params, chosen = diffusion_stage.train_and_select(
        config,
        diffusion,
        workdir,
        {"beta": beta, "num_samples": m},
        tag=tag,
        train_keys=jax.vmap(lambda s: jax.random.fold_in(_keys(root, s)["diffusion"], m))(seeds),
        criterion_keys=jax.vmap(lambda s: _keys(root, s)["criterion"])(seeds),
        observed=observed,
        truth=truth,
    )
    k_max = max(config.augment.ratios) * m
    keys = jax.vmap(lambda s: jax.random.fold_in(_keys(root, s)["generate"], m))(seeds)
    spins = diffusion.generate_seeds(params, keys, k_max)
    checks = _generator_checks_seeds(spins, observed, truth)
    for i, step in enumerate(chosen):
        record = {"kind": "generator", "beta": beta, "num_samples": m, "seed": i}
        record |= {"chosen_step": step} | {k: float(v[i]) for k, v in checks.items()}
        io.append_jsonl(workdir / "metrics.jsonl", record)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, spins=np.asarray(spins, np.int8), chosen_steps=np.asarray(chosen))
    return np.asarray(spins)


def _generator_checks(generated, observed, truth):
    exact_moments = exact.moments(truth)
    return {
        "kl_generated": exact.kl_divergence(generated, truth),
        "copy_fraction": metrics.copy_fraction(generated, observed),
        "expected_copy_fraction": metrics.expected_copy_fraction(truth, observed),
        "unique_fraction": metrics.unique_fraction(generated),
        "mean_hamming": metrics.mean_hamming_distance(generated),
        "energy_var_generated": jnp.var(energy(truth, generated)),
        "energy_var_observed": jnp.var(energy(truth, observed)),
        "energy_var_exact": _exact_energy_var(truth),
    } | {
        f"generated_{k}": v
        for k, v in metrics.moment_errors(metrics.sample_moments(generated), exact_moments).items()
    }


_generator_checks_seeds = jax.jit(jax.vmap(_generator_checks))


def _exact_energy_var(truth):
    n = truth.b.shape[0]
    p = jnp.exp(exact.all_log_probs(truth))
    e = energy(truth, exact.index_to_spins(jnp.arange(2**n, dtype=jnp.int32), n))
    mean = p @ e
    return p @ (e - mean) ** 2


def _l2_arm(config, observed, key):
    """plm with l2_per_sample chosen by held-out pseudo-likelihood, refitted on all data."""
    m = observed.shape[0]
    options = {
        k: v
        for k, v in config.inference.options.get("plm", {}).items()
        if k not in ("l2", "l2_per_sample")
    }
    num_held = max(1, int(round(config.baselines.holdout_fraction * m)))
    held = (jnp.argsort(jax.random.permutation(key, m)) < num_held).astype(jnp.float32)
    grid = jnp.asarray(config.baselines.l2_grid, jnp.float32)

    def held_out_loss(lam):
        est, _ = plm.fit(observed, 1.0 - held, l2_per_sample=lam, **options)
        return plm.loss(est, observed, held / jnp.sum(held), l2=0.0, l2_bias=0.0)

    best = grid[jnp.argmin(jax.vmap(held_out_loss)(grid))]
    return plm.fit(observed, l2_per_sample=best, **options)[0], best


def make_stage_fn(config, method: str, m: int):
    """jit(vmap over seeds): fn({'seed', 'generated'}, root, beta) -> errors of every arm."""
    ratios = jnp.asarray(config.augment.ratios)
    k_max = max(config.augment.ratios) * m
    fit = diffusion_stage.fit_fn(config, method)
    masks = jnp.concatenate(
        [jnp.ones((len(ratios), m)), (jnp.arange(k_max)[None, :] < ratios[:, None] * m)], axis=1
    ).astype(jnp.float32)
    rows, cols = jnp.triu_indices(config.model.n, k=1)

    def one_seed(inputs, root, beta):
        truth, observed, oracle = _truth_and_data(config, inputs["seed"], root, beta, m)
        keys = _keys(root, inputs["seed"])
        est_observed = fit(observed)
        boot = exact.sample(jax.random.fold_in(keys["boot"], m), est_observed, k_max)
        extra = jnp.stack([inputs["generated"], boot, oracle])  # [arms, K_max, n]
        data = jnp.concatenate([jnp.broadcast_to(observed, (3, *observed.shape)), extra], axis=1)
        # The arm x ratio fits run one after another (lax.map): vmapped, every L-BFGS
        # lane would wait for the slowest fit's iterations.
        pairs = jnp.stack(jnp.meshgrid(jnp.arange(3), jnp.arange(len(ratios)), indexing="ij"))
        flat = lax.map(lambda ak: fit(data[ak[0]], masks[ak[1]]), pairs.reshape(2, -1).T)
        estimates = jax.tree.map(lambda x: x.reshape(3, len(ratios), *x.shape[1:]), flat)
        errors = partial(metrics.param_mse, truth=truth)
        out = {
            "observed": errors(est_observed),
            "extra": jax.vmap(jax.vmap(errors))(estimates),  # [arms, ratios]
            "w_true": truth.w[rows, cols],
            "w_observed": est_observed.w[rows, cols],
            "w_extra": estimates.w[:, :, rows, cols],
        }
        if method == "plm":
            est_l2, best = _l2_arm(config, observed, keys["split"])
            out |= {"l2": errors(est_l2), "l2_per_sample": best, "w_l2": est_l2.w[rows, cols]}
        return out

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _records(out, beta, m, method, config):
    cells = [("observed", 0, out["observed"], out["w_observed"])]
    for a, arm in enumerate(EXTRA_ARMS):
        for k, ratio in enumerate(config.augment.ratios):
            mse = {part: v[:, a, k] for part, v in out["extra"].items()}
            cells.append((arm, ratio, mse, out["w_extra"][:, a, k]))
    if "l2" in out:
        cells.append(("l2", 0, out["l2"], out["w_l2"]))
    for seed in range(config.num_seeds):
        for arm, ratio, mse, w_est in cells:
            record = {
                "beta": float(beta),
                "num_samples": m,
                "method": method,
                "arm": arm,
                "ratio": ratio,
                "seed": seed,
            }
            record |= {f"mse_{part}": float(mse[part][seed]) for part in ("all", "w", "b")}
            if arm == "l2":
                record["l2_per_sample"] = float(out["l2_per_sample"][seed])
            if seed == 0:  # the scatter figure needs one seed's couplings
                record["w_est"] = np.asarray(w_est[seed]).tolist()
                record["w_true"] = np.asarray(out["w_true"][seed]).tolist()
            yield record


def run(config, workdir) -> list[dict]:
    """Runs the augmentation experiment; returns its result records."""
    validate_config(config)
    workdir, results_path = common.prepare_workdir(config, workdir)
    done = sweeps.finished(results_path, COORDS)
    root = jax.random.key(config.seed)
    diffusion, stages = diffusion_stage.Diffusion(config), {}
    seeds, start = np.arange(config.num_seeds), time.time()
    for beta in (float(b) for b in config.model.betas):
        for m in config.sweep.sample_sizes:
            cells = set(_cells(config, beta, m))
            if cells <= done:
                continue
            setup = jax.jit(
                jax.vmap(lambda s, m=m, beta=beta: _truth_and_data(config, s, root, beta, m))
            )
            truth, observed, _ = setup(jnp.asarray(seeds))
            generated = _generated(config, diffusion, workdir, root, beta, m, truth, observed)
            for method in config.inference.methods:
                if {c for c in cells if c[2] == method} <= done:
                    continue
                if (method, m) not in stages:  # one compile per (method, M), shared by betas
                    stages[method, m] = make_stage_fn(config, method, m)
                stage = stages[method, m]
                inputs = {"seed": seeds.astype(np.int32), "generated": generated}
                out = sweeps.run_over_seeds(stage, inputs, root, beta)
                sweeps.append_cells(
                    results_path, _records(out, beta, m, method, config), done, COORDS
                )
                logging.info(
                    "augment: beta=%g M=%d %s done (%.1fs elapsed)",
                    beta,
                    m,
                    method,
                    time.time() - start,
                )
    records = io.read_jsonl(results_path)
    arrays = _write_npz(workdir / "results.npz", records, config)
    table = summary_table(arrays)
    (workdir / "summary.md").write_text(table)
    logging.info("augment: MSE (all parameters), mean ± s.e. over seeds\n%s", table)
    progress = io.read_jsonl(workdir / "metrics.jsonl")
    figures = workdir / "figures"
    _plot_mse_vs_m(figures / "mse_vs_m.png", arrays, config)
    _plot_training(figures / "training.png", progress, config)
    _plot_scatter(figures / "scatter.png", records, config)
    _plot_energy_histograms(figures / "energy_histograms.png", workdir, config)
    logging.info("augment: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records


def _columns(config) -> list[tuple[str, int]]:
    """(arm, ratio) of every column of the result arrays."""
    ratios = list(config.augment.ratios)
    return [("observed", 0), ("l2", 0)] + [(a, r) for a in EXTRA_ARMS for r in ratios]


def _cells(config, beta, m):
    for method in config.inference.methods:
        for arm, ratio in _columns(config):
            if arm != "l2" or method == "plm":
                for seed in range(config.num_seeds):
                    yield (beta, m, method, arm, ratio, seed)


def _write_npz(path, records, config):
    betas = [float(b) for b in config.model.betas]
    sizes, methods = list(config.sweep.sample_sizes), list(config.inference.methods)
    columns = _columns(config)
    shape = (len(betas), len(sizes), len(methods), len(columns), config.num_seeds)
    arrays = {f"mse_{p}": np.full(shape, np.nan) for p in ("all", "w", "b")}
    index = {
        (b, m, meth, arm, r, s): (i, j, k, c, s)
        for i, b in enumerate(betas)
        for j, m in enumerate(sizes)
        for k, meth in enumerate(methods)
        for c, (arm, r) in enumerate(columns)
        for s in range(config.num_seeds)
    }
    for r in records:
        at = index.get(sweeps.cell_key(r, COORDS))
        if at is not None:
            for name in ("mse_all", "mse_w", "mse_b"):
                arrays[name][at] = r[name]
    arrays |= {
        "betas": np.asarray(betas),
        "sample_sizes": np.asarray(sizes),
        "methods": np.asarray(methods),
        "arms": np.asarray([a for a, _ in columns]),
        "ratios": np.asarray([r for _, r in columns]),
        "seeds": np.arange(config.num_seeds),
    }
    np.savez(path, **arrays)
    return arrays


def _mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the last axis."""
    num = values.shape[-1]
    se = values.std(axis=-1, ddof=1) / np.sqrt(num) if num > 1 else np.zeros(values.shape[:-1])
    return values.mean(axis=-1), se


def _label(arm, ratio) -> str:
    return f"{arm} K={ratio}M" if ratio else arm


def summary_table(arrays) -> str:
    """Markdown: MSE (all) mean ± s.e. per (beta, M, method) row and arm column."""
    labels = [_label(a, r) for a, r in zip(arrays["arms"], arrays["ratios"], strict=True)]
    lines = [
        "| β | M | method | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    mean, se = _mean_se(arrays["mse_all"])
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                cells = [
                    "–" if np.isnan(mu) else f"{mu:.2e} ± {e:.0e}"
                    for mu, e in zip(mean[i, j, k], se[i, j, k], strict=True)
                ]
                lines.append(f"| {beta:g} | {m} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


ARM_COLORS = {
    "observed": "black",
    "l2": "gray",
    "diffusion": "tab:red",
    "bootstrap": "tab:blue",
    "oracle": "tab:green",
}
RATIO_STYLES = (":", "--", "-", "-.")


def _plot_mse_vs_m(path, arrays, config):
    betas, methods = arrays["betas"], list(arrays["methods"])
    fig, axes = common.new_figure(len(betas), len(methods), 4.2, 3.6)
    mean, se = _mean_se(arrays["mse_all"])
    ratios = list(config.augment.ratios)
    plm_index = methods.index("plm") if "plm" in methods else None
    for i, beta in enumerate(betas):
        for k, method in enumerate(methods):
            ax = axes[i, k]
            for c, (arm, ratio) in enumerate(zip(arrays["arms"], arrays["ratios"], strict=True)):
                source = plm_index if arm == "l2" else k
                if source is None:
                    continue
                label = "plm + tuned L2" if arm == "l2" else _label(arm, ratio)
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
                    label=label,
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


def _plot_training(path, progress, config):
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
            return _mean_se(values)

        top, bottom = axes[0, col], axes[1, col]
        for name, style, label in (
            ("var_gen_inferred", "-", "generated, inferred params"),
            ("var_obs_inferred", ":", "observed, inferred params"),
            ("var_gen_true", "-", "generated, true params"),
            ("var_obs_true", ":", "observed, true params"),
        ):
            mu, err = curve(name)
            color = "tab:red" if "inferred" in name else "tab:blue"
            top.errorbar(steps, mu, yerr=err, ls=style, color=color, capsize=2, label=label)
        for name, color, label in (
            ("mse_augmented", "tab:red", f"observed + {config.criterion.num_samples} generated"),
            ("mse_observed", "black", "observed only"),
        ):
            mu, err = curve(name)
            bottom.errorbar(steps, mu, yerr=err, color=color, capsize=2, label=label)
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


def _plot_scatter(path, records, config):
    beta, m = float(config.model.betas[-1]), min(config.sweep.sample_sizes)
    method = config.inference.methods[0]
    ratio = min(config.augment.ratios, key=lambda r: abs(r - config.plots.ratio))
    chosen = [
        r
        for r in records
        if r["seed"] == 0
        and (r["beta"], r["num_samples"], r["method"]) == (beta, m, method)
        and r["ratio"] in (0, ratio)
    ]
    fig, axes = common.new_figure(1, max(len(chosen), 1), 3.0, 3.1)
    for ax, r in zip(axes[0], chosen, strict=False):
        w_true, w_est = np.asarray(r["w_true"]), np.asarray(r["w_est"])
        lim = 1.1 * max(np.abs(w_true).max(), np.abs(w_est).max())
        ax.plot([-lim, lim], [-lim, lim], color="gray", lw=0.8)
        ax.scatter(w_true, w_est, s=5, alpha=0.7, color=ARM_COLORS[r["arm"]])
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="true $w_{ij}$")
        ax.set_title(f"{_label(r['arm'], r['ratio'])}\nMSE(w) {r['mse_w']:.2g}", fontsize=9)
    axes[0, 0].set_ylabel(f"{method} $w_{{ij}}$ (β = {beta:g}, M = {m}, seed 0)")
    common.save_figure(fig, path)


def _plot_energy_histograms(path, workdir, config):
    m = min(config.sweep.sample_sizes)
    root = jax.random.key(config.seed)
    betas = [float(b) for b in config.model.betas]
    fig, axes = common.new_figure(1, len(betas), 4.0, 3.2)
    for ax, beta in zip(axes[0], betas, strict=True):
        file = workdir / "generated" / f"beta{beta:g}_m{m}.npz"
        if not file.exists():
            continue
        truth, observed, _ = _truth_and_data(config, 0, root, beta, m)
        generated = np.load(file)["spins"][0].astype(np.float32)
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
