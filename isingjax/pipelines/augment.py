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
                on a split of the observed spins, refitted on all of them;
     diffusion_l2  (plm only) the same tuning with the K_max generated spins added to the
                fitting part of the split and to the refit (the held-out part is observed
                spins only): augmentation and the tuned penalty at equal tuning effort.
   Every K is a weight mask over one array, so one compile serves all ratios. Every cell
   records whether its fits converged (the estimator's info['converged']), and the
   diffusion cells the number of non-finite values in the reverse process's raw output
   (an error unless augment.allow_nonfinite).

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

from isingjax import exact, inference, io, metrics, runtime, sweeps
from isingjax.diffusion import sampling
from isingjax.inference import plm
from isingjax.models import energy, sk_model
from isingjax.pipelines import augment_figures as figures
from isingjax.pipelines import augment_summary, common, diffusion_stage

COORDS = augment_summary.COORDS
# Config fields a rerun in the same workdir may change (common.prepare_workdir).
RESUMABLE = ("model.betas", "sweep.sample_sizes", "inference.methods")
EXTRA_ARMS, TUNED_ARMS = augment_summary.EXTRA_ARMS, augment_summary.TUNED_ARMS
summary_table = augment_summary.summary_table


def validate_config(config) -> None:
    methods = config.inference.methods
    common.check_fields(
        common.model_checks(config)
        + [
            ("model.n", config.model.n, config.model.n <= exact.MAX_N, f"<= {exact.MAX_N}"),
            common.bias_scaling_check(config),
            (
                "inference.methods",
                methods,
                len(methods) >= 1 and set(methods) <= set(inference.METHODS),
                f"a non-empty tuple drawn from {tuple(inference.METHODS)}",
            ),
        ]
        + augmentation_checks(config)
        + diffusion_stage.config_checks(config)
    )
    common.check_options(config, set(methods) | {config.criterion.method})


def augmentation_checks(config) -> list:
    """check_fields entries of sweep.sample_sizes, augment.* and baselines.* (the fields
    every augmentation pipeline reads: the sample sizes, the K / M ratios and the tuned-L2
    baseline of `tuned_l2`)."""
    sizes = config.sweep.sample_sizes
    return [
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
            "baselines.l2_grid",
            config.baselines.l2_grid,
            len(config.baselines.l2_grid) >= 1
            and all(v > 0 and math.isfinite(v) for v in config.baselines.l2_grid),
            "a non-empty tuple of positive values (plm l2_per_sample)",
        ),
        (
            "augment.allow_nonfinite",
            config.augment.allow_nonfinite,
            isinstance(config.augment.allow_nonfinite, bool),
            "True or False",
        ),
        (
            "baselines.holdout_fraction",
            config.baselines.holdout_fraction,
            0 < config.baselines.holdout_fraction < 1,
            "in (0, 1)",
        ),
    ]


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
    """(The generated spins [S, K_max, n] of each seed's chosen checkpoint, the count of
    non-finite values [S] in the raw reverse-process output they were thresholded from),
    cached in generated/<block>.npz; that checkpoint's generator checks go to
    metrics.jsonl. Non-finite values raise unless config.augment.allow_nonfinite."""
    path = generated_path(workdir, beta, m)
    tag = path.stem
    if path.exists():
        cached = np.load(path)
        nonfinite = cached["num_nonfinite"]
        _check_nonfinite(config, nonfinite, beta, m)
        return cached["spins"].astype(np.float32), nonfinite
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
    raw = diffusion.generate_raw_seeds(params, keys, k_max)
    nonfinite = np.asarray(jnp.sum(~jnp.isfinite(raw), axis=(1, 2)))
    spins = sampling.threshold(raw)
    checks = _generator_checks_seeds(spins, observed, truth)
    for i, step in enumerate(chosen):
        record = {"kind": "generator", "beta": beta, "num_samples": m, "seed": i}
        record |= {"chosen_step": step, "num_nonfinite": int(nonfinite[i])}
        record |= {k: float(v[i]) for k, v in checks.items()}
        io.append_jsonl(workdir / "metrics.jsonl", record)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        spins=np.asarray(spins, np.int8),
        chosen_steps=np.asarray(chosen),
        num_nonfinite=nonfinite,
    )
    _check_nonfinite(config, nonfinite, beta, m)
    return np.asarray(spins), nonfinite


def _check_nonfinite(config, nonfinite, beta, m):
    if np.any(nonfinite > 0) and not config.augment.allow_nonfinite:
        raise RuntimeError(
            f"augment: the generator of beta={beta:g}, M={m} produced non-finite values "
            f"(per seed: {np.asarray(nonfinite).tolist()}), which thresholding would turn "
            "into -1 spins; set config.augment.allow_nonfinite=True to use them anyway "
            "(the cells are flagged in summary.md)."
        )


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


def tuned_l2(config, observed, key, extra=None):
    """plm with l2_per_sample chosen on config.baselines.l2_grid by held-out
    pseudo-likelihood, then refitted on all the data; returns (estimate, chosen
    l2_per_sample, converged: the refit and every grid fit converged).

    The held-out part is a random holdout_fraction of the observed spins [M, n] (split by
    key). Extra spins [K, n] (generated ones), when given, join the fitting part of the
    split and the refit but are never held out, so the penalty is chosen by how well a
    fit predicts observed spins it has not seen. The grid value c is per observed sample:
    the coupling penalty is l2 = c / (observed spins in the fit), whatever K, so with or
    without extra spins the grid spans the same penalties (a per-sample penalty over
    M + K spins would be K/M times weaker at the same c)."""
    m = observed.shape[0]
    options = {
        k: v
        for k, v in config.inference.options.get("plm", {}).items()
        if k not in ("l2", "l2_per_sample")
    }
    num_held = max(1, int(round(config.baselines.holdout_fraction * m)))
    held = (jnp.argsort(jax.random.permutation(key, m)) < num_held).astype(jnp.float32)
    data, everything = observed, jnp.ones(m)
    if extra is not None:
        data = jnp.concatenate([observed, extra])
        held = jnp.concatenate([held, jnp.zeros(extra.shape[0])])
        everything = jnp.ones(data.shape[0])
    grid = jnp.asarray(config.baselines.l2_grid, jnp.float32)
    num_fit = float(m - num_held)  # observed spins in the fitting part of the split

    def held_out_loss(c):
        est, info = plm.fit(data, everything - held, l2=c / num_fit, **options)
        loss = plm.loss(est, data, held / jnp.sum(held), l2=0.0, l2_bias=0.0)
        return loss, info["converged"]

    losses, grid_converged = jax.vmap(held_out_loss)(grid)
    best = grid[jnp.argmin(losses)]
    est, info = plm.fit(data, everything, l2=best / m, **options)
    return est, best, info["converged"] & jnp.all(grid_converged)


def make_stage_fn(config, method: str, m: int):
    """jit(vmap over seeds): fn({'seed', 'generated'}, root, beta) -> errors of every arm."""
    ratios = jnp.asarray(config.augment.ratios)
    k_max = max(config.augment.ratios) * m
    fit = diffusion_stage.fit_with_converged_fn(config, method)
    masks = jnp.concatenate(
        [jnp.ones((len(ratios), m)), (jnp.arange(k_max)[None, :] < ratios[:, None] * m)], axis=1
    ).astype(jnp.float32)
    rows, cols = jnp.triu_indices(config.model.n, k=1)

    def one_seed(inputs, root, beta):
        truth, observed, oracle = truth_and_data(config, inputs["seed"], root, beta, m)
        keys = _keys(root, inputs["seed"])
        est_observed, conv_observed = fit(observed)
        boot = exact.sample(jax.random.fold_in(keys["boot"], m), est_observed, k_max)
        extra = jnp.stack([inputs["generated"], boot, oracle])  # [arms, K_max, n]
        data = jnp.concatenate([jnp.broadcast_to(observed, (3, *observed.shape)), extra], axis=1)
        # The arm x ratio fits run one after another (lax.map): vmapped, every L-BFGS
        # lane would wait for the slowest fit's iterations.
        pairs = jnp.stack(jnp.meshgrid(jnp.arange(3), jnp.arange(len(ratios)), indexing="ij"))
        flat = lax.map(lambda ak: fit(data[ak[0]], masks[ak[1]]), pairs.reshape(2, -1).T)
        estimates, conv_extra = jax.tree.map(
            lambda x: x.reshape(3, len(ratios), *x.shape[1:]), flat
        )
        # a bootstrap cell also rests on the observed fit it samples from
        conv_extra = conv_extra.at[1].set(conv_extra[1] & conv_observed)
        errors = partial(metrics.param_mse, truth=truth)
        out = {
            "observed": errors(est_observed),
            "converged_observed": conv_observed,
            "extra": jax.vmap(jax.vmap(errors))(estimates),  # [arms, ratios]
            "converged_extra": conv_extra,
            "w_true": truth.w[rows, cols],
            "w_observed": est_observed.w[rows, cols],
            "w_extra": estimates.w[:, :, rows, cols],
        }
        if method == "plm":
            for arm, extra in (("l2", None), ("diffusion_l2", inputs["generated"])):
                est, best, conv = tuned_l2(config, observed, keys["split"], extra)
                out |= {
                    arm: errors(est),
                    f"converged_{arm}": conv,
                    f"l2_per_sample_{arm}": best,
                    f"w_{arm}": est.w[rows, cols],
                }
        return out

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _records(out, beta, m, method, config, nonfinite):
    cells = [("observed", 0, out["observed"], out["w_observed"], out["converged_observed"])]
    for a, arm in enumerate(EXTRA_ARMS):
        for k, ratio in enumerate(config.augment.ratios):
            mse = {part: v[:, a, k] for part, v in out["extra"].items()}
            conv = out["converged_extra"][:, a, k]
            cells.append((arm, ratio, mse, out["w_extra"][:, a, k], conv))
    for arm in TUNED_ARMS:
        if arm in out:
            ratio = max(config.augment.ratios) if arm == "diffusion_l2" else 0
            cells.append((arm, ratio, out[arm], out[f"w_{arm}"], out[f"converged_{arm}"]))
    for seed in range(config.num_seeds):
        for arm, ratio, mse, w_est, conv in cells:
            record = {
                "beta": float(beta),
                "num_samples": m,
                "method": method,
                "arm": arm,
                "ratio": ratio,
                "seed": seed,
            }
            record |= {f"mse_{part}": float(mse[part][seed]) for part in ("all", "w", "b")}
            record["converged"] = bool(conv[seed])
            if arm in TUNED_ARMS:
                record["l2_per_sample"] = float(out[f"l2_per_sample_{arm}"][seed])
            if arm.startswith("diffusion"):
                record["num_nonfinite"] = int(nonfinite[seed])
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
    todo = [
        (beta, m, method)
        for beta in (float(b) for b in config.model.betas)
        for m in config.sweep.sample_sizes
        for method in config.inference.methods
        if not {c for c in augment_summary.cells(config, beta, m) if c[2] == method} <= done
    ]
    progress = runtime.Progress("augment: (beta, M, method) cells", len(todo))
    for beta in (float(b) for b in config.model.betas):
        for m in config.sweep.sample_sizes:
            cells = set(augment_summary.cells(config, beta, m))
            if cells <= done:
                continue
            setup = jax.jit(
                jax.vmap(lambda s, m=m, beta=beta: truth_and_data(config, s, root, beta, m))
            )
            truth, observed, _ = setup(jnp.asarray(seeds))
            generated, nonfinite = _generated(
                config, diffusion, workdir, root, beta, m, truth, observed
            )
            for method in config.inference.methods:
                if {c for c in cells if c[2] == method} <= done:
                    continue
                if (method, m) not in stages:  # one compile per (method, M), shared by betas
                    stages[method, m] = make_stage_fn(config, method, m)
                stage = stages[method, m]
                inputs = {"seed": seeds.astype(np.int32), "generated": generated}
                out = sweeps.run_over_seeds(stage, inputs, root, beta)
                sweeps.append_cells(
                    results_path,
                    _records(out, beta, m, method, config, nonfinite),
                    done,
                    COORDS,
                )
                progress.step(f"beta={beta:g} M={m} {method}")
    records = io.read_jsonl(results_path)
    arrays = augment_summary.write_npz(workdir / "results.npz", records, config)
    sections = augment_summary.summary_sections(arrays)
    common.write_summary(workdir, "augment", sections, config, time.time() - start)
    logging.info("augment: MSE (all parameters), mean ± s.e. over seeds\n%s", sections[0][1])
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
