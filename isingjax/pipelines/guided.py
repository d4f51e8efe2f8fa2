"""Pipeline `guided` (the main job): can guided diffusion reach the tails of an Ising
model, and do tail samples make better augmentation than unguided ones?

Per seed (vmapped): an SK instance with n <= 20 (every probability exact), M observed
spins, fresh held-out spins, one DDPM trained on the observed spins (checkpoint chosen by
the energy-variance criterion, shared by every sampler and gamma), the Ising model
inferred from the observed spins, and a noise-conditional classifier of high- vs
low-energy configurations. Then for every sampler of isingjax.guidance, one jitted call
covers all seeds and all gammas (vmapped: one compile per sampler, whatever the grid):
K = ratio * M samples, their energy summary and exact tail statistics under the true
model, KL and moment errors, diversity and novelty, and for every estimator the MSE and
the held-out negative log-likelihood of the model inferred from observed + samples.

Outputs: config.json, metrics.jsonl (diffusion training, criterion, classifier
accuracy), results.jsonl (one line per (sampler, gamma, seed); sampler 'observed' is
the observed-only baseline), results.npz, summary.md (each sampler at its best gamma),
samples/<sampler>.npz (seed 0's samples at every gamma), checkpoints/, and
figures/{energy_histograms,tail_kl_vs_gamma,inference_vs_gamma}.png.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from isingjax import exact, guidance, inference, io, metrics, sweeps
from isingjax.diffusion.schedule import q_sample
from isingjax.models import sk_model
from isingjax.pipelines import common, diffusion_stage, guided_figures

COORDS = ("sampler", "gamma", "seed")
RESUMABLE = ("guidance.samplers",)  # config fields a rerun may change (common.prepare_workdir)


def validate_config(config) -> None:
    g, o, cl = config.guidance, config.guidance.options, config.classifier
    samplers = tuple(g.samplers)
    gammas_ok = all(
        name in g.gammas
        and len(g.gammas[name]) >= 1
        and all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in g.gammas[name])
        for name in samplers
        if name in guidance.SAMPLERS
    )
    window = tuple(o.langevin_t_window)
    common.check_fields(
        common.model_checks(config)
        + [
            ("model.n", config.model.n, config.model.n <= exact.MAX_N, f"<= {exact.MAX_N}"),
            (
                "model.betas",
                config.model.betas,
                len(config.model.betas) == 1,
                "a single coupling strength, e.g. (1.0,)",
            ),
            common.bias_scaling_check(config),
            (
                "data.num_observed",
                config.data.num_observed,
                common.is_int(config.data.num_observed, 10),
                "an integer >= 10",
            ),
            (
                "data.num_heldout",
                config.data.num_heldout,
                common.is_int(config.data.num_heldout, 1),
                "an integer >= 1",
            ),
            (
                "augment.ratio",
                config.augment.ratio,
                common.is_int(config.augment.ratio, 1),
                "an integer >= 1 (K / M)",
            ),
            (
                "inference.methods",
                config.inference.methods,
                len(config.inference.methods) >= 1
                and set(config.inference.methods) <= set(inference.METHODS),
                f"a non-empty tuple drawn from {tuple(inference.METHODS)}",
            ),
            (
                "guidance.samplers",
                samplers,
                len(samplers) >= 1 and set(samplers) <= set(guidance.SAMPLERS),
                f"a non-empty tuple drawn from {guidance.SAMPLERS}",
            ),
            (
                "guidance.gammas",
                g.gammas,
                gammas_ok,
                "a non-empty tuple of finite values >= 0 for every sampler in guidance.samplers",
            ),
            (
                "guidance.inferred_method",
                g.inferred_method,
                g.inferred_method in inference.METHODS,
                f"one of {tuple(inference.METHODS)}",
            ),
            (
                "guidance.options.langevin_t_window",
                window,
                len(window) == 2 and 0 <= window[0] <= window[1] <= 1,
                "(lo, hi) with 0 <= lo <= hi <= 1",
            ),
            (
                "guidance.options.langevin_step_size",
                o.langevin_step_size,
                o.langevin_step_size > 0,
                "> 0",
            ),
            (
                "guidance.options.langevin_steps",
                o.langevin_steps,
                common.is_int(o.langevin_steps, 1),
                "an integer >= 1",
            ),
            (
                "guidance.options.pool_factor",
                o.pool_factor,
                common.is_int(o.pool_factor, 1),
                "an integer >= 1",
            ),
            ("guidance.options.minority_t", o.minority_t, 0 < o.minority_t <= 1, "in (0, 1]"),
            (
                "classifier.num_steps",
                cl.num_steps,
                common.is_int(cl.num_steps, 1),
                "an integer >= 1",
            ),
            ("classifier.quantile", cl.quantile, 0 < cl.quantile < 1, "in (0, 1)"),
            (
                "classifier.holdout_fraction",
                cl.holdout_fraction,
                0 < cl.holdout_fraction < 1,
                "in (0, 1)",
            ),
            (
                "measure.tail_quantile",
                config.measure.tail_quantile,
                0 < config.measure.tail_quantile < 1,
                "in (0, 1)",
            ),
        ]
        + diffusion_stage.config_checks(config)
    )
    common.check_options(
        config, set(config.inference.methods) | {config.criterion.method, g.inferred_method}
    )


def _keys(root, seed):
    names = ("model", "data", "heldout", "diffusion", "criterion", "classifier", "sample")
    return dict(zip(names, jax.random.split(sweeps.seed_key(root, seed), len(names)), strict=True))


def _setup(config, seed, root):
    """The seed's true model, observed spins [M, n] and held-out spins [H, n]."""
    keys, beta = _keys(root, seed), float(config.model.betas[0])
    truth = sk_model(keys["model"], config.model.n, beta, common.bias_std(config, beta))
    observed = exact.sample(keys["data"], truth, config.data.num_observed)
    heldout = exact.sample(keys["heldout"], truth, config.data.num_heldout)
    return truth, observed, heldout


def _classifier(config, diffusion):
    """(net, jit(vmap over seeds) of fn(key, observed, inferred) -> (params, accuracy))."""
    cl = config.classifier
    net = guidance.NoisyClassifier(tuple(cl.widths), cl.time_dim)
    schedule = diffusion.schedule

    def one_seed(key, observed, inferred):
        labels = guidance.energy_labels(inferred, observed, cl.quantile)
        split_key, train_key, t_key, noise_key = jax.random.split(key, 4)
        m = observed.shape[0]
        num_held = max(1, int(round(cl.holdout_fraction * m)))
        order = jax.random.permutation(split_key, m)
        held, kept = order[:num_held], order[num_held:]
        params = guidance.train_classifier(
            train_key,
            net,
            schedule,
            observed[kept],
            labels[kept],
            num_steps=cl.num_steps,
            batch_size=cl.batch_size,
            learning_rate=cl.learning_rate,
        )
        # Accuracy on held-out spins noised to t ~ U{1..T/2} (ten draws each), and at t = 1.
        x0 = jnp.tile(observed[held], (10, 1))
        y = jnp.tile(labels[held], 10)
        t = jax.random.randint(t_key, (x0.shape[0],), 1, schedule.num_steps // 2 + 1)
        x_t = q_sample(schedule, x0, t, jax.random.normal(noise_key, x0.shape))
        correct = (net.apply(params, x_t, t) > 0) == (y > 0)
        clean = (net.apply(params, observed[held], jnp.ones(num_held, jnp.int32)) > 0) == (
            labels[held] > 0
        )
        return params, {"accuracy_noisy": jnp.mean(correct), "accuracy_t1": jnp.mean(clean)}

    return net, jax.jit(jax.vmap(one_seed))


def make_stage_fn(config, diffusion, classifier_net, name: str):
    """jit(vmap over seeds (vmap over gammas)) of sampler `name`: samples and measures."""
    k = config.augment.ratio * config.data.num_observed
    fits = {m: diffusion_stage.fit_fn(config, m) for m in config.inference.methods}
    q = config.measure.tail_quantile

    def one(inputs, gamma, root):
        truth, observed, heldout = _setup(config, inputs["seed"], root)
        context = guidance.Context(
            inputs["inferred"],
            lambda x, t: classifier_net.apply(inputs["classifier"], x, t),
            dict(config.guidance.options),
        )
        spins, weights = guidance.sample(
            name,
            _keys(root, inputs["seed"])["sample"],
            gamma,
            diffusion.eps_fn(inputs["diffusion"]),
            diffusion.schedule,
            context,
            num_samples=k,
            n=config.model.n,
            sampler=config.diffusion.sampler,
            num_steps=config.diffusion.ddim_steps,
        )
        out = (
            metrics.energy_summary(truth, spins, weights)
            | metrics.tail_stats(spins, truth, weights, q)
            | metrics.moment_errors(metrics.sample_moments(spins, weights), exact.moments(truth))
        )
        out |= {
            "kl": exact.kl_divergence(spins, truth, weights),
            "unique_fraction": metrics.unique_fraction(spins, weights),
            "mean_hamming": metrics.mean_hamming_distance(spins, weights),
            "novelty": 1.0 - metrics.copy_fraction(spins, observed, weights),
            "accepted": jnp.sum(weights),
        }
        data = jnp.concatenate([observed, spins])
        data_weights = jnp.concatenate([jnp.ones(observed.shape[0]), weights])
        for method, fit in fits.items():
            estimate = fit(data, data_weights)
            out[f"mse_{method}"] = metrics.param_mse(estimate, truth)["all"]
            out[f"nll_{method}"] = metrics.held_out_nll(estimate, heldout)
        return out, spins, weights

    over_gammas = jax.vmap(one, in_axes=(None, 0, None))
    return jax.jit(jax.vmap(over_gammas, in_axes=(0, None, None)))


def _observed_fn(config):
    """jit(vmap over seeds): the observed-only estimates' errors."""
    fits = {m: diffusion_stage.fit_fn(config, m) for m in config.inference.methods}

    def one(seed, root):
        truth, observed, heldout = _setup(config, seed, root)
        out = {}
        for method, fit in fits.items():
            estimate = fit(observed)
            out[f"mse_{method}"] = metrics.param_mse(estimate, truth)["all"]
            out[f"nll_{method}"] = metrics.held_out_nll(estimate, heldout)
        out["nll_truth"] = metrics.held_out_nll(truth, heldout)
        # The observed spins are exact draws: the yardstick of the samplers' measurements.
        out |= metrics.tail_stats(observed, truth, q=config.measure.tail_quantile)
        out["kl"] = exact.kl_divergence(observed, truth)
        out["unique_fraction"] = metrics.unique_fraction(observed)
        out["mean_hamming"] = metrics.mean_hamming_distance(observed)
        return out

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def run(config, workdir) -> list[dict]:
    """Runs every guided sampler over its gamma grid; returns the result records."""
    validate_config(config)
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
    done = sweeps.finished(results_path, COORDS)
    root, start = jax.random.key(config.seed), time.time()
    seeds = np.arange(config.num_seeds, dtype=np.int32)
    samplers = list(config.guidance.samplers)
    observed_cells = {("observed", 0.0, s) for s in range(config.num_seeds)}
    cells = observed_cells | {
        (name, float(g), s)
        for name in samplers
        for g in config.guidance.gammas[name]
        for s in range(config.num_seeds)
    }
    if not cells <= done:
        if not observed_cells <= done:
            out = sweeps.run_over_seeds(_observed_fn(config), seeds, root)
            sweeps.append_cells(results_path, _records(out, "observed", [0.0]), done, COORDS)
        diffusion = diffusion_stage.Diffusion(config)
        truth, observed, _ = jax.jit(jax.vmap(lambda s: _setup(config, s, root)))(seeds)
        params, _ = diffusion_stage.train_and_select(
            config,
            diffusion,
            workdir,
            {"stage": "diffusion"},
            tag="diffusion",
            train_keys=jax.vmap(lambda s: _keys(root, s)["diffusion"])(seeds),
            criterion_keys=jax.vmap(lambda s: _keys(root, s)["criterion"])(seeds),
            observed=observed,
            truth=truth,
        )
        inferred = jax.jit(
            jax.vmap(diffusion_stage.fit_fn(config, config.guidance.inferred_method))
        )(observed)
        classifier_net, train_classifier = _classifier(config, diffusion)
        class_keys = jax.vmap(lambda s: _keys(root, s)["classifier"])(seeds)
        classifier_params, accuracy = train_classifier(class_keys, observed, inferred)
        _log_classifier(workdir, accuracy)
        inputs = {
            "seed": seeds,
            "diffusion": params,
            "classifier": classifier_params,
            "inferred": inferred,
        }
        for name in samplers:
            gammas = [float(g) for g in config.guidance.gammas[name]]
            if {(name, g, s) for g in gammas for s in range(config.num_seeds)} <= done:
                continue
            stage = make_stage_fn(config, diffusion, classifier_net, name)
            out, spins, weights = sweeps.run_over_seeds(stage, inputs, jnp.asarray(gammas), root)
            _save_samples(workdir, name, gammas, spins[0], weights[0])
            sweeps.append_cells(results_path, _records(out, name, gammas), done, COORDS)
            logging.info("guided: %s done (%.1fs elapsed)", name, time.time() - start)
    records = io.read_jsonl(results_path)
    arrays = _write_npz(workdir / "results.npz", records, config)
    table = summary_table(arrays, config)
    (workdir / "summary.md").write_text(table)
    logging.info("guided: summary (mean over seeds; each sampler at its best gamma)\n%s", table)
    figures = workdir / "figures"
    best = dict(zip(arrays["samplers"], best_gamma_index(arrays, config), strict=True))
    truth = _setup(config, 0, jax.random.key(config.seed))[0]
    samples = {  # sampler -> seed 0's {gammas, spins, weights}
        name: dict(np.load(samples_path(workdir, name)))
        for name in config.guidance.samplers
        if samples_path(workdir, name).exists()
    }
    guided_figures.plot_energy_histograms(figures / "energy_histograms.png", truth, samples, best)
    guided_figures.plot_vs_gamma(
        figures / "tail_kl_vs_gamma.png", arrays, config, ("tail_fraction", "kl")
    )
    nll = [f"nll_{m}" for m in config.inference.methods]
    mse = [f"mse_{m}" for m in config.inference.methods]
    guided_figures.plot_vs_gamma(figures / "inference_vs_gamma.png", arrays, config, (*mse, *nll))
    logging.info("guided: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records


def _log_classifier(workdir, accuracy):
    path = workdir / "metrics.jsonl"
    if any(r.get("kind") == "classifier" for r in io.read_jsonl(path)):
        return
    accuracy = jax.device_get(accuracy)
    for seed in range(len(accuracy["accuracy_noisy"])):
        record = {"kind": "classifier", "seed": seed}
        io.append_jsonl(path, record | {k: float(v[seed]) for k, v in accuracy.items()})


def samples_path(workdir, name) -> Path:
    """Where a run keeps seed 0's samples of sampler `name` at every gamma."""
    return Path(workdir) / "samples" / f"{name}.npz"


def _save_samples(workdir, name, gammas, spins, weights):
    path = samples_path(workdir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, gammas=np.asarray(gammas), spins=np.asarray(spins, np.int8), weights=weights)


def _records(out, name, gammas):
    """out: {metric: [S, G]} (or [S] for the observed baseline)."""
    values = {k: np.asarray(v).reshape(np.shape(v)[0], -1) for k, v in out.items()}
    num_seeds = next(iter(values.values())).shape[0]
    for seed in range(num_seeds):
        for g, gamma in enumerate(gammas):
            record = {"sampler": name, "gamma": float(gamma), "seed": seed}
            yield record | {k: float(v[seed, g]) for k, v in values.items()}


METRICS = (
    "tail_fraction",
    "tail_mass",
    "mean_log_prob",
    "kl",
    "unique_fraction",
    "novelty",
    "mean_hamming",
    "energy_mean",
    "energy_var",
    "energy_q05",
    "energy_q50",
    "energy_q95",
    "means_rmse",
    "corr_rmse",
    "accepted",
)


def _write_npz(path, records, config):
    samplers = ["observed", *config.guidance.samplers]
    grids = [[0.0]] + [[float(g) for g in config.guidance.gammas[s]] for s in samplers[1:]]
    width = max(len(g) for g in grids)
    names = list(METRICS) + [f"{p}_{m}" for p in ("mse", "nll") for m in config.inference.methods]
    shape = (len(samplers), width, config.num_seeds)
    arrays = {name: np.full(shape, np.nan) for name in names}
    gammas = np.full((len(samplers), width), np.nan)
    index = {}
    for i, (s, grid) in enumerate(zip(samplers, grids, strict=True)):
        gammas[i, : len(grid)] = grid
        for j, g in enumerate(grid):
            for seed in range(config.num_seeds):
                index[(s, g, seed)] = (i, j, seed)
    for r in records:
        at = index.get(sweeps.cell_key(r, COORDS))
        if at is not None:
            for name in names:
                if name in r:
                    arrays[name][at] = r[name]
    arrays |= {"samplers": np.asarray(samplers), "gammas": gammas, "seeds": np.arange(shape[2])}
    np.savez(path, **arrays)
    return arrays


def best_gamma_index(arrays, config) -> np.ndarray:
    """Per sampler, the gamma > 0 (gamma = 0 is the baseline itself) with the lowest mean
    held-out NLL of the first estimator."""
    nll = arrays[f"nll_{config.inference.methods[0]}"]
    positive = (arrays["gammas"] > 0) | (arrays["samplers"] == "baseline")[:, None]
    positive[0] = True  # the observed-only row
    finite = np.isfinite(nll).all(axis=-1) & positive  # measured for every seed
    mean = np.where(finite, np.where(finite[..., None], nll, 0.0).mean(axis=-1), np.inf)
    return np.asarray([int(np.argmin(row)) for row in mean])


def summary_table(arrays, config) -> str:
    """Markdown: each sampler at its best gamma (mean over seeds); the 'observed' row
    measures the M observed spins themselves (exact draws) and the estimates from them.
    The Δ columns are the paired differences from unguided augmentation (the baseline
    sampler), mean ± standard error over seeds: negative = better than the baseline."""
    methods = list(config.inference.methods)
    cols = ["tail_fraction", "tail_mass", "kl", "unique_fraction", "novelty"]
    cols += [f"mse_{m}" for m in methods] + [f"nll_{m}" for m in methods]
    deltas = [f"mse_{m}" for m in methods] + [f"nll_{m}" for m in methods]
    lines = [
        "| sampler | γ | " + " | ".join(cols + [f"Δ{d}" for d in deltas]) + " |",
        "|---|---|" + "---|" * (len(cols) + len(deltas)),
    ]
    best = best_gamma_index(arrays, config)
    base = list(arrays["samplers"]).index("baseline") if "baseline" in arrays["samplers"] else None
    for i, name in enumerate(arrays["samplers"]):
        j = best[i]
        cells = []
        for c in cols:
            v = arrays[c][i, j]
            cells.append("–" if np.isnan(v).all() else f"{np.nanmean(v):.4g}")
        for d in deltas:
            if base is None or name == "baseline":
                cells.append("–")
                continue
            diff = arrays[d][i, j] - arrays[d][base, 0]
            mean, se = common.mean_se(diff)
            cells.append(f"{mean:+.3g} ± {se:.2g}")
        gamma = "–" if name == "observed" else f"{arrays['gammas'][i, j]:g}"
        lines.append(f"| {name} | {gamma} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
