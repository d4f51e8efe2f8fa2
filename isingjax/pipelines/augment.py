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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from isingjax import exact, inference, io, metrics, sweeps
from isingjax.inference import plm
from isingjax.models import energy, sk_model
from isingjax.pipelines import augment_figures as figures
from isingjax.pipelines import common, diffusion_stage

COORDS = ("beta", "num_samples", "method", "arm", "ratio", "seed")
# Config fields a rerun in the same workdir may change (common.prepare_workdir).
RESUMABLE = ("model.betas", "sweep.sample_sizes", "inference.methods")
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
    common.check_options(config, set(methods) | {config.criterion.method})


def _keys(root, seed):
    names = ("model", "data", "oracle", "diffusion", "criterion", "generate", "boot", "split")
    return dict(zip(names, jax.random.split(sweeps.seed_key(root, seed), len(names)), strict=True))


def generated_path(workdir, beta, m) -> Path:
    """Where a run keeps the generated spins [S, K_max, n] of block (beta, M)."""
    return Path(workdir) / "generated" / f"beta{beta:g}_m{m}.npz"


def truth_and_data(config, seed, root, beta, m):
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
    path = generated_path(workdir, beta, m)
    tag = path.stem
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
        truth, observed, oracle = truth_and_data(config, inputs["seed"], root, beta, m)
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
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
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
                jax.vmap(lambda s, m=m, beta=beta: truth_and_data(config, s, root, beta, m))
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
    out = workdir / "figures"
    figures.plot_mse_vs_m(out / "mse_vs_m.png", arrays, config)
    figures.plot_training(out / "training.png", progress, config)
    figures.plot_scatter(out / "scatter.png", records, config)
    m = min(config.sweep.sample_sizes)
    seed0 = {}  # beta -> (truth, observed, generated) of seed 0 at the smallest M
    for beta in (float(b) for b in config.model.betas):
        if generated_path(workdir, beta, m).exists():
            truth, observed, _ = truth_and_data(config, 0, root, beta, m)
            generated = np.load(generated_path(workdir, beta, m))["spins"][0]
            seed0[beta] = truth, observed, generated.astype(np.float32)
    figures.plot_energy_histograms(out / "energy_histograms.png", seed0, m)
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


def summary_table(arrays) -> str:
    """Markdown: MSE (all) mean ± s.e. per (beta, M, method) row and arm column."""
    labels = [figures.label(a, r) for a, r in zip(arrays["arms"], arrays["ratios"], strict=True)]
    lines = [
        "| β | M | method | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    mean, se = common.mean_se(arrays["mse_all"])
    for i, beta in enumerate(arrays["betas"]):
        for j, m in enumerate(arrays["sample_sizes"]):
            for k, method in enumerate(arrays["methods"]):
                cells = [
                    "–" if np.isnan(mu) else f"{mu:.2e} ± {e:.0e}"
                    for mu, e in zip(mean[i, j, k], se[i, j, k], strict=True)
                ]
                lines.append(f"| {beta:g} | {m} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
