"""Pipeline `guided` (the main job): can guided diffusion reach the tails of an Ising
model, and do tail samples make better augmentation than unguided ones?

Per seed (mapped with `sweeps.map_solver`): an SK instance with n <= 20 (every probability
exact), M observed spins, and two further independent exact draws: test spins (score every
reported NLL) and validation spins (choose gamma; see guided_summary). One DDPM trained on
the observed spins (checkpoint chosen by the energy-variance criterion, shared by every
sampler and gamma), the Ising model inferred from the observed spins, and a
noise-conditional classifier of high- vs low-energy configurations. Then for every sampler
of isingjax.guidance, one jitted call covers all seeds and gammas (one compile per
sampler): K = ratio * M samples, the number that were non-finite before thresholding (an
error unless guidance.allow_nonfinite), their energy summary and exact tail statistics,
cross-entropy -mean log P and KL under the true model, moment errors, diversity and
novelty; and for every estimator, fitted on observed + samples, the MSE, test NLL,
validation NLL and whether the fit converged. Two controls per cell: the count control
(observed + as many randomly chosen unguided samples as the sampler used) and, for the
penalized estimators, both arms refitted with the penalty fixed at its observed-only value
l2 = c / M.

Outputs: config.json, metrics.jsonl (diffusion training, criterion, classifier
accuracy), results.jsonl (one line per (sampler, gamma, seed); sampler 'observed' is
the observed-only baseline), results.npz, summary.md (each sampler at the gamma chosen
on validation), samples/<sampler>.npz (seed 0's samples at every gamma), checkpoints/,
and figures/{energy_histograms,tail_kl_vs_gamma,inference_vs_gamma}.png.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from isingjax import exact, guidance, inference, io, metrics, runtime, sweeps
from isingjax.diffusion.schedule import q_sample
from isingjax.models import sk_model
from isingjax.pipelines import common, diffusion_stage, guided_figures, guided_summary

COORDS = guided_summary.COORDS
RESUMABLE = ("guidance.samplers",)  # config fields a rerun may change (common.prepare_workdir)


def _int_check(name, value, low):
    return (name, value, common.is_int(value, low), f"an integer >= {low}")


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
    methods = tuple(inference.METHODS)
    unit = "in (0, 1)"
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
            _int_check("data.num_observed", config.data.num_observed, 10),
            _int_check("data.num_heldout", config.data.num_heldout, 1),
            _int_check("data.num_validation", config.data.num_validation, 1),
            _int_check("augment.ratio", config.augment.ratio, 1),
            (
                "inference.methods",
                config.inference.methods,
                len(config.inference.methods) >= 1
                and set(config.inference.methods) <= set(methods),
                f"a non-empty tuple drawn from {methods}",
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
                g.inferred_method in methods,
                f"one of {methods}",
            ),
            (
                "guidance.allow_nonfinite",
                g.allow_nonfinite,
                isinstance(g.allow_nonfinite, bool),
                "True or False",
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
            _int_check("guidance.options.langevin_steps", o.langevin_steps, 1),
            _int_check("guidance.options.pool_factor", o.pool_factor, 1),
            ("guidance.options.minority_t", o.minority_t, 0 < o.minority_t <= 1, "in (0, 1]"),
            (
                "guidance.options.max_norm",
                o.max_norm,
                isinstance(o.max_norm, int | float) and 0 < o.max_norm < math.inf,
                "finite and > 0",
            ),
            _int_check("classifier.num_steps", cl.num_steps, 1),
            ("classifier.quantile", cl.quantile, 0 < cl.quantile < 1, unit),
            ("classifier.holdout_fraction", cl.holdout_fraction, 0 < cl.holdout_fraction < 1, unit),
            (
                "measure.tail_quantile",
                config.measure.tail_quantile,
                0 < config.measure.tail_quantile < 1,
                unit,
            ),
        ]
        + diffusion_stage.config_checks(config)
    )
    common.check_options(
        config, set(config.inference.methods) | {config.criterion.method, g.inferred_method}
    )


def _keys(root, seed):
    names = ("model", "data", "heldout", "diffusion", "criterion", "classifier", "sample")
    key = sweeps.seed_key(root, seed)
    keys = dict(zip(names, jax.random.split(key, len(names)), strict=True))
    # Added purposes fold in (the split above stays what earlier runs drew).
    return keys | {"validation": jax.random.fold_in(key, 1), "control": jax.random.fold_in(key, 2)}


def _setup(config, seed, root):
    """The seed's true model, observed spins [M, n], test spins [H, n] (scoring only) and
    validation spins [V, n] (choosing gamma only): three independent exact draws."""
    keys, beta = _keys(root, seed), float(config.model.betas[0])
    truth = sk_model(keys["model"], config.model.n, beta, common.bias_std(config, beta))
    observed = exact.sample(keys["data"], truth, config.data.num_observed)
    test = exact.sample(keys["heldout"], truth, config.data.num_heldout)
    validation = exact.sample(keys["validation"], truth, config.data.num_validation)
    return truth, observed, test, validation


def _fit_fns(config):
    """method -> (modes, fn(spins, weights) -> (IsingParams stacked over modes, converged
    [modes])), the config's options. Modes: "" (the method's own penalty) and, for the
    penalized methods, "fixed_" (l2 = c / M, the observed-only penalty, whatever the total
    weight); the two are one vmapped fit over l2 (one compile)."""
    fns = {}
    for method in config.inference.methods:
        options = dict(config.inference.options.get(method, {}))
        c = guided_summary.penalty_per_sample(config, method)
        if c:
            options.pop("l2_per_sample", None)
        fit = functools.partial(inference.METHODS[method], **options)
        if c:

            def fn(spins, weights, fit=fit, c=c):
                total = spins.shape[0] if weights is None else jnp.sum(weights)
                l2 = jnp.stack([c / total, c / config.data.num_observed])
                return jax.vmap(lambda x: _with_converged(*fit(spins, weights, l2=x)))(l2)

            fns[method] = (("", "fixed_"), fn)
        else:
            fns[method] = (("",), lambda x, w, fit=fit: _stack(_with_converged(*fit(x, w))))
    return fns


def _with_converged(params, info):
    return params, jnp.asarray(info.get("converged", jnp.asarray(True)))


def _stack(tree):
    return jax.tree.map(lambda x: x[None], tree)


def _score(out, prefix, estimate, truth, test, validation=None):
    """Parameter MSE and test NLL (and validation NLL) of an estimate into out."""
    sets = [test] if validation is None else [test, validation]
    log_p = exact.log_prob(estimate, jnp.concatenate(sets))  # one log Z for both sets
    out[f"mse_{prefix}"] = metrics.param_mse(estimate, truth)["all"]
    out[f"nll_{prefix}"] = -jnp.mean(log_p[: test.shape[0]])
    if validation is not None:
        out[f"val_nll_{prefix}"] = -jnp.mean(log_p[test.shape[0] :])


def _augmentation_metrics(config, truth, observed, test, validation, arms):
    """arms: {prefix: (spins [K, n], weights [K])} added to the observed spins; every
    estimator (and, at the fixed penalty, the penalized ones) fitted on each."""
    out, converged = {}, jnp.asarray(True)
    for prefix, (spins, weights) in arms.items():
        data = jnp.concatenate([observed, spins])
        data_weights = jnp.concatenate([jnp.ones(observed.shape[0]), weights])
        val = validation if prefix == "" else None
        for method, (modes, fit) in _fit_fns(config).items():
            estimates, ok = fit(data, data_weights)
            for i, mode in enumerate(modes):
                estimate = jax.tree.map(lambda x, i=i: x[i], estimates)
                _score(out, f"{prefix}{mode}{method}", estimate, truth, test, val)
            converged &= jnp.all(ok)
    out["converged"] = converged
    return out


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
    """jit(`sweeps.map_solver` over seeds (and over gammas)) of sampler `name`: samples
    and measures."""
    k = config.augment.ratio * config.data.num_observed
    q = config.measure.tail_quantile

    def one(inputs, gamma, root):
        truth, observed, test, validation = _setup(config, inputs["seed"], root)
        keys = _keys(root, inputs["seed"])
        context = guidance.Context(
            inputs["inferred"],
            lambda x, t: classifier_net.apply(inputs["classifier"], x, t),
            dict(config.guidance.options),
        )

        def draw(sampler, strength):
            return guidance.sample_counted(
                sampler,
                keys["sample"],
                strength,
                diffusion.eps_fn(inputs["diffusion"]),
                diffusion.schedule,
                context,
                num_samples=k,
                n=config.model.n,
                sampler=config.diffusion.sampler,
                num_steps=config.diffusion.ddim_steps,
            )

        spins, weights, num_nonfinite = draw(name, gamma)
        # Count control: as many unguided samples as this sampler uses (rejection: accepted),
        # chosen at random, so a difference is not the sample count's.
        rank = jnp.argsort(jax.random.permutation(keys["control"], k))
        control_weights = (rank < jnp.sum(weights)).astype(weights.dtype)
        out = (
            metrics.energy_summary(truth, spins, weights)
            | metrics.tail_stats(spins, truth, weights, q)
            | metrics.moment_errors(metrics.sample_moments(spins, weights), exact.moments(truth))
        )
        out |= {
            "cross_entropy": -out["mean_log_prob"],
            "kl": exact.kl_divergence(spins, truth, weights),
            "unique_fraction": metrics.unique_fraction(spins, weights),
            "mean_hamming": metrics.mean_hamming_distance(spins, weights),
            "novelty": 1.0 - metrics.copy_fraction(spins, observed, weights),
            "accepted": jnp.sum(weights),
            "control_count": jnp.sum(control_weights),
            "num_nonfinite": num_nonfinite,
        }
        arms = {"": (spins, weights)}
        if name == "rejection":  # the others use all K: their count control is the baseline
            arms["ctrl_"] = (draw("baseline", 0.0)[0], control_weights)
        out |= _augmentation_metrics(config, truth, observed, test, validation, arms)
        return out, spins, weights

    over_gammas = sweeps.map_solver(one, in_axes=(None, 0, None))
    return jax.jit(sweeps.map_solver(over_gammas, in_axes=(0, None, None)))


def _observed_fn(config):
    """jit(`sweeps.map_solver` over seeds): the observed-only estimates' errors (at
    l2 = c / M, which is also the fixed penalty) and the observed spins' own measurements."""
    fits = _fit_fns(config)

    def one(seed, root):
        truth, observed, test, validation = _setup(config, seed, root)
        out, converged = {}, jnp.asarray(True)
        for method, (modes, fit) in fits.items():
            estimates, ok = fit(observed, None)  # l2 = c / M in both modes
            _score(out, method, jax.tree.map(lambda x: x[0], estimates), truth, test, validation)
            if len(modes) > 1:
                out[f"mse_fixed_{method}"] = out[f"mse_{method}"]
                out[f"nll_fixed_{method}"] = out[f"nll_{method}"]
            converged &= jnp.all(ok)
        out["converged"] = converged
        out["nll_truth"] = -jnp.mean(exact.log_prob(truth, test))
        # The observed spins are exact draws: the yardstick of the samplers' measurements.
        out |= metrics.tail_stats(observed, truth, q=config.measure.tail_quantile)
        out["cross_entropy"] = -out["mean_log_prob"]
        out["kl"] = exact.kl_divergence(observed, truth)
        out["unique_fraction"] = metrics.unique_fraction(observed)
        out["mean_hamming"] = metrics.mean_hamming_distance(observed)
        out["accepted"] = jnp.asarray(float(observed.shape[0]))
        out["num_nonfinite"] = jnp.asarray(0, jnp.int32)
        return out

    return jax.jit(sweeps.map_solver(one, in_axes=(0, None)))


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
        truth, observed = jax.jit(jax.vmap(lambda s: _setup(config, s, root)[:2]))(seeds)
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
        seed_range = range(config.num_seeds)
        todo = [
            name
            for name in samplers
            if not {(name, float(g), s) for g in config.guidance.gammas[name] for s in seed_range}
            <= done
        ]
        progress = runtime.Progress("guided: samplers", len(todo))
        for name in todo:
            gammas = [float(g) for g in config.guidance.gammas[name]]
            stage = make_stage_fn(config, diffusion, classifier_net, name)
            out, spins, weights = sweeps.run_over_seeds(stage, inputs, jnp.asarray(gammas), root)
            _save_samples(workdir, name, gammas, spins[0], weights[0])
            sweeps.append_cells(results_path, _records(out, name, gammas), done, COORDS)
            progress.step(name)
    records = io.read_jsonl(results_path)
    guided_summary.check_nonfinite(records, config.guidance.allow_nonfinite)
    arrays = guided_summary.write_npz(workdir / "results.npz", records, config)
    table = guided_summary.summary_table(arrays, config)
    (workdir / "summary.md").write_text(table)
    logging.info("guided: summary (mean over seeds; gamma chosen on validation)\n%s", table)
    figures = workdir / "figures"
    chosen = guided_summary.chosen_gamma_index(arrays, config)
    chosen = dict(zip(arrays["samplers"], chosen, strict=True))
    truth = _setup(config, 0, jax.random.key(config.seed))[0]
    samples = {  # sampler -> seed 0's {gammas, spins, weights}
        name: dict(np.load(samples_path(workdir, name)))
        for name in config.guidance.samplers
        if samples_path(workdir, name).exists()
    }
    guided_figures.plot_energy_histograms(figures / "energy_histograms.png", truth, samples, chosen)
    guided_figures.plot_vs_gamma(
        figures / "tail_kl_vs_gamma.png",
        arrays,
        config,
        ("tail_fraction", "cross_entropy", "kl"),
        chosen,
    )
    methods = config.inference.methods
    rows = [f"{p}_{m}" for p in ("mse", "nll", "val_nll") for m in methods]
    guided_figures.plot_vs_gamma(figures / "inference_vs_gamma.png", arrays, config, rows, chosen)
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
