"""Pipeline `adversarial`: does diffusion augmentation leave the inferred Ising model
weaker against adversarial inputs and poisoned training data?

For every beta and sample size M, per seed (vmapped over seeds), the arms of `augment`
(same truth, observed spins, generator and keys: augment.truth_and_data and its DDPM with
the energy-variance criterion)
    observed   the M observed spins alone,
    diffusion  observed + K = ratio * M generated spins,
    oracle     observed + K further true samples,
    l2         (plm only) plm with the penalty tuned on held-out observed spins
               (augment.tuned_l2),
are attacked with the same attacks, budgets and keys:
1. evasion (attacks.evasion_core) on fresh exact test patterns: FGSM and PGD at L-inf
   budgets eps on the relaxation, the exact fewest flips k* (certified accuracy at k),
   and the multi-output attacks (greedy flips, PGD-then-round) at k flips;
2. poisoning: round(rho * training patterns) poison patterns are added and the estimator
   is refitted: 'worst' (pgd_poison maximizing the parameter MSE, knowing the truth),
   'proxy' (maximizing the negative pseudo-likelihood of clean held-out spins) and
   'random' (uniform ±1 patterns of the same budget, the control). Poison is crafted
   through a differentiable surrogate of the estimator (plm: refit_plm; nmf and tap:
   refit_nmf; erasure and exact_ml: refit_plm, a transfer attack) and every reported
   number refits the estimator itself;
3. poisoning through the generator: round(generator_rho * M) patterns ('worst': crafted
   against plm on the observed spins; 'random': the control) join the observed spins
   before a DDPM is trained on them (same keys as the clean one); the amplification is
   dMSE(observed + poison + its generated spins vs observed + clean generated spins) over
   dMSE(observed + poison vs observed).

Outputs: config.json, metrics.jsonl (the DDPM's training and criterion),
generator_<kind>/ (the poisoned generators' runs), results.jsonl (one line per (beta, M,
method, arm, seed); resumable), results.npz, summary.md, figures/. A rerun resumes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from isingjax import attacks, exact, inference, io, poisoning, runtime, sweeps
from isingjax.models import flatten_params
from isingjax.pipelines import adversarial_figures as figures
from isingjax.pipelines import adversarial_summary as summary
from isingjax.pipelines import augment, augment_generate, common, diffusion_stage

COORDS = summary.COORDS
ARMS = summary.ARMS
# Config fields a rerun in the same workdir may change (common.prepare_workdir).
RESUMABLE = ("model.betas", "sweep.sample_sizes", "inference.methods")
SURROGATES = {"plm": "plm", "erasure": "plm", "exact_ml": "plm", "nmf": "nmf", "tap": "nmf"}
KINDS = ("worst", "proxy")  # crafted poison; 'random' is the control


def validate_config(config) -> None:
    p, n = config.poison, config.model.n
    methods = config.inference.methods
    unit = lambda v: isinstance(v, int | float) and 0 <= v <= 1  # noqa: E731
    common.check_fields(
        common.model_checks(config)
        + [
            ("model.n", n, n <= exact.MAX_N, f"<= {exact.MAX_N}"),
            common.bias_scaling_check(config),
            (
                "augment.ratios",
                config.augment.ratios,
                len(config.augment.ratios) == 1 and common.is_int(config.augment.ratios[0], 1),
                "a tuple of one integer >= 1 (K / M)",
            ),
            (
                "inference.methods",
                methods,
                len(methods) >= 1 and set(methods) <= set(inference.METHODS),
                f"a non-empty tuple drawn from {tuple(inference.METHODS)}",
            ),
            ("poison.rhos", p.rhos, len(p.rhos) >= 1 and all(map(unit, p.rhos)), "in [0, 1]"),
            ("poison.generator_rho", p.generator_rho, 0 < p.generator_rho <= 1, "in (0, 1]"),
            (
                "poison.generator_kinds",
                p.generator_kinds,
                set(p.generator_kinds) <= {"worst", "random"},
                "a tuple drawn from ('worst', 'random')",
            ),
            ("poison.step_size", p.step_size, p.step_size > 0, "> 0"),
        ]
        + augment.augmentation_checks(config)
        + [
            (f"{name}", value, common.is_int(value, 1), "an integer >= 1")
            for name, value in (
                ("poison.num_steps", p.num_steps),
                ("poison.num_heldout", p.num_heldout),
            )
        ]
        + common.evasion_checks(config)
        + diffusion_stage.config_checks(config)
    )
    common.check_options(config, set(methods) | {config.criterion.method})


def _keys(root, seed):
    """Keys of this pipeline's own draws (the shared arms use augment's keys)."""
    names = ("test", "attack", "start", "random", "heldout", "split", "generator")
    stream = jax.random.fold_in(sweeps.seed_key(root, seed), 0xAD)
    return dict(zip(names, jax.random.split(stream, len(names)), strict=True))


def _fit_options(config, method, l2_per_sample):
    """The method's options, with plm's per-sample penalty replaced by l2_per_sample."""
    options = dict(config.inference.options.get(method, {}))
    if method == "plm":
        options = {k: v for k, v in options.items() if k != "l2"} | {"l2_per_sample": l2_per_sample}
    return options


def _refit_fn(config, method, l2_per_sample):
    """spins, weights -> flattened estimate theta of the method (what is reported)."""
    options = _fit_options(config, method, l2_per_sample)
    return lambda s, w: flatten_params(inference.METHODS[method](s, w, **options)[0])


def _surrogate_fn(method, l2_per_sample):
    """The differentiable refit poison is crafted through."""
    if SURROGATES[method] == "nmf":
        return poisoning.refit_nmf
    return lambda s, w: poisoning.refit_plm(s, w, l2_per_sample=l2_per_sample)


def _plm_penalty(config):
    return float(config.inference.options.get("plm", {}).get("l2_per_sample", 1.0))


def _craft(config, surrogate, data, weights, start, mask, objective):
    p = config.poison
    return poisoning.pgd_poison(
        surrogate,
        objective,
        data,
        start,
        num_steps=p.num_steps,
        step_size=p.step_size,
        weights=weights,
        poison_weights=mask,
    )


def generator_poison(config, root, beta, m):
    """jit(vmap over seeds): the patterns [kinds, round(generator_rho * M), n] added to
    the observed spins before the generator is trained (worst: crafted through plm
    against the parameter MSE; random: the control)."""
    num = max(1, round(config.poison.generator_rho * m))

    def one_seed(seed):
        truth, observed, _ = augment.truth_and_data(config, seed, root, beta, m)
        keys = _keys(root, seed)
        start = observed[jax.random.randint(keys["generator"], (num,), 0, m)]
        surrogate = _surrogate_fn("plm", _plm_penalty(config))
        worst = _craft(
            config,
            surrogate,
            observed,
            None,
            start,
            None,
            lambda t: poisoning.mse_objective(t, truth),
        )
        rand = jax.random.rademacher(keys["generator"], (num, config.model.n), jnp.float32)
        kinds = {"worst": worst, "random": rand}
        return jnp.stack(
            [jnp.concatenate([observed, kinds[k]]) for k in config.poison.generator_kinds]
        )

    return jax.jit(jax.vmap(one_seed))


def _arms(config, method, observed, generated, oracle, l2_best):
    """Training data [N, n] (N = M + K) and, per arm, weights [A, N] and plm penalty [A]."""
    m, k = observed.shape[0], generated.shape[0]
    penalty = _plm_penalty(config)
    data = jnp.stack([jnp.concatenate([observed, x]) for x in (generated, generated, oracle)])
    only_observed = jnp.concatenate([jnp.ones(m), jnp.zeros(k)])
    weights = [only_observed, jnp.ones(m + k), jnp.ones(m + k)]
    penalties = [penalty, penalty, penalty]
    if method == "plm":
        data = jnp.concatenate([data, data[:1]])
        weights.append(only_observed)
        penalties.append(l2_best)
    return data, jnp.stack(weights), jnp.stack(penalties)


def make_stage_fn(config, method: str, m: int):
    """jit(vmap over seeds): fn(inputs, root, beta) -> every measurement of every arm."""
    e, p = config.evasion, config.poison
    ratio = config.augment.ratios[0]
    n_max = m * (1 + ratio)
    p_max = max(1, math.ceil(max(p.rhos) * n_max))
    rhos = jnp.asarray(p.rhos, jnp.float32)
    crafted = jnp.asarray([r for r in p.rhos if r > 0], jnp.float32)
    eps, flips = jnp.asarray(e.eps, jnp.float32), jnp.asarray(e.flips, jnp.int32)
    fit = diffusion_stage.fit_with_converged_fn(config, method)
    mse = poisoning.mse_objective

    def arm(truth, test, heldout, keys, data, weights, penalty):
        refit, surrogate = _refit_fn(config, method, penalty), _surrogate_fn(method, penalty)
        options = _fit_options(config, method, penalty)
        estimate, info = inference.METHODS[method](data, weights, **options)
        out = attacks.evasion_core(
            keys["attack"],
            estimate,
            test,
            eps,
            flips,
            num_steps=e.pgd_steps,
            num_restarts=e.pgd_restarts,
            max_flips=max(e.flips),
        )
        out["converged"] = jnp.asarray(info.get("converged", True), bool)
        out["mse_clean"] = mse(flatten_params(estimate), truth)
        size = jnp.sum(weights)
        masks = lambda r: (jnp.arange(p_max) < jnp.round(r * size)).astype(jnp.float32)  # noqa: E731
        start = data[jax.random.randint(keys["start"], (p_max,), 0, m)]  # observed rows
        objectives = {
            "worst": lambda t: mse(t, truth),
            "proxy": lambda t: poisoning.proxy_objective(t, heldout),
        }

        def craft_kind(kind):
            def one(r):
                return _craft(config, surrogate, data, weights, start, masks(r), objectives[kind])

            # one rho after another: vmapped, every L-BFGS lane waits for the slowest
            made, j = lax.map(one, crafted), iter(range(len(crafted)))
            return jnp.stack([made[next(j)] if r > 0 else start for r in p.rhos])

        poisons = {kind: craft_kind(kind) for kind in KINDS}
        poisons["random"] = jax.random.rademacher(
            keys["random"], (len(p.rhos), p_max, data.shape[1]), jnp.float32
        )
        for kind, poison in poisons.items():
            effect = lax.map(
                lambda a: poisoning.attack_effect(refit, truth, data, a[0], weights, masks(a[1])),
                (poison, rhos),
            )
            for name, values in effect.items():
                out[f"{kind}_{name}"] = values
        return out

    def one_seed(inputs, root, beta):
        truth, observed, oracle = augment.truth_and_data(config, inputs["seed"], root, beta, m)
        keys = _keys(root, inputs["seed"])
        test = exact.sample(keys["test"], truth, e.num_test)
        heldout = exact.sample(keys["heldout"], truth, p.num_heldout)
        l2_best = jnp.asarray(_plm_penalty(config), jnp.float32)
        if method == "plm":
            l2_best = augment.tuned_l2(config, observed, keys["split"])[1]
        data, weights, penalties = _arms(
            config, method, observed, inputs["generated"], oracle, l2_best
        )
        out = lax.map(
            lambda a: arm(truth, test, heldout, keys, *a), (data, weights, penalties)
        )  # every field [A, ...]
        out["l2_per_sample"] = penalties
        out |= _through_generator(fit, truth, observed, inputs)
        return out

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def _through_generator(fit, truth, observed, inputs):
    """dMSE of the poison that went into the generator, without (orig) and with (aug)
    augmentation: [kinds]."""
    m, k = observed.shape[0], inputs["generated"].shape[0]
    mse = lambda est: poisoning.mse_objective(flatten_params(est), truth)  # noqa: E731

    def one(poisoned, generated):
        num = poisoned.shape[0] - m
        zeros, ones = jnp.zeros, jnp.ones
        orig_data = poisoned
        clean = mse(fit(orig_data, jnp.concatenate([ones(m), zeros(num)]))[0])
        dirty = mse(fit(orig_data, ones(m + num))[0])
        aug_clean_data = jnp.concatenate([poisoned, inputs["generated"]])
        aug_dirty_data = jnp.concatenate([poisoned, generated])
        aug_clean = mse(fit(aug_clean_data, jnp.concatenate([ones(m), zeros(num), ones(k)]))[0])
        aug_dirty = mse(fit(aug_dirty_data, ones(m + num + k))[0])
        return {"dmse_orig": dirty - clean, "dmse_aug": aug_dirty - aug_clean}

    out = lax.map(lambda a: one(*a), (inputs["gen_poisoned"], inputs["gen_generated"]))
    return {f"gen_{name}": v for name, v in out.items()}


def _generated(config, diffusion, workdir, root, beta, m, truth, observed):
    """The DDPM stage of `diffusion_stage.generate_selected` with augment's keys (the same
    generator as augment's energy-variance arm of the same config): spins [S, K, n] of
    each seed's chosen checkpoint, K = max(augment.ratios) * M, and their non-finite
    counts [S] (an error unless augment.allow_nonfinite)."""
    seeds = jnp.arange(config.num_seeds)

    def keys(name, *folds):
        return jax.vmap(lambda s: augment_generate.seed_key_of(root, s, name, *folds))(seeds)

    spins, nonfinite = diffusion_stage.generate_selected(
        config,
        diffusion,
        workdir,
        {"beta": beta, "num_samples": m},
        path=workdir / "generated" / f"beta{beta:g}_m{m}.npz",
        keys={
            "train": keys("diffusion", m),
            "criterion": keys("criterion"),
            "generate": keys("generate", m),
        },
        observed=observed,
        truth=truth,
        num_samples=max(config.augment.ratios) * m,
    )
    augment_generate.check_nonfinite(config, nonfinite, f"the DDPM of beta={beta:g}, M={m}")
    return spins, nonfinite


def _generated_sets(config, diffusion, workdir, root, beta, m, truth, observed):
    """(Clean generated spins [S, K, n], poisoned observed [S, G, M + P, n], their
    generators' spins [S, G, K, n], non-finite counts [S]), each generator trained,
    selected and cached by augment's DDPM stage (poisoned ones under generator_<kind>/)."""
    generated, nonfinite = _generated(config, diffusion, workdir, root, beta, m, truth, observed)
    seeds = jnp.arange(config.num_seeds)
    poisoned = np.asarray(generator_poison(config, root, beta, m)(seeds))
    sets = []
    for g, kind in enumerate(config.poison.generator_kinds):
        spins, bad = _generated(
            config, diffusion, workdir / f"generator_{kind}", root, beta, m, truth, poisoned[:, g]
        )
        sets.append(spins)
        nonfinite = nonfinite + bad
    return generated, poisoned, np.stack(sets, axis=1), nonfinite


def _records(out, beta, m, method, config, nonfinite):
    arms = ARMS if method == "plm" else ARMS[:-1]
    for seed in range(config.num_seeds):
        for a, arm in enumerate(arms):
            record = {"beta": float(beta), "num_samples": m, "method": method, "arm": arm}
            record |= {"seed": seed, "converged": bool(out["converged"][seed, a])}
            for name in summary.ARM_FIELDS:
                record[name] = np.asarray(out[name][seed, a]).tolist()
            record["l2_per_sample"] = float(out["l2_per_sample"][seed, a])
            if arm == "diffusion":
                record["num_nonfinite"] = int(nonfinite[seed])
                for name in ("gen_dmse_orig", "gen_dmse_aug"):
                    record[name] = np.asarray(out[name][seed]).tolist()
            if seed == 0:  # the heat map: coupling change of the strongest worst-case poison
                record["worst_dw"] = np.asarray(out["worst_dw"][seed, a, -1]).tolist()
            yield record


def run(config, workdir) -> list[dict]:
    """Runs the adversarial experiment; returns its result records."""
    validate_config(config)
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
    done = sweeps.finished(results_path, COORDS)
    root = jax.random.key(config.seed)
    diffusion, stages = diffusion_stage.Diffusion(config), {}
    seeds, start = np.arange(config.num_seeds), time.time()
    blocks = [(float(b), m) for b in config.model.betas for m in config.sweep.sample_sizes]
    todo = [
        (beta, m, method)
        for beta, m in blocks
        for method in config.inference.methods
        if not set(summary.cells(config, beta, m, method)) <= done
    ]
    progress = runtime.Progress("adversarial: (beta, M, method) cells", len(todo))
    for beta, m in blocks:
        methods = [x for b, mm, x in todo if (b, mm) == (beta, m)]
        if not methods:
            continue
        setup = jax.jit(
            jax.vmap(lambda s, m=m, beta=beta: augment.truth_and_data(config, s, root, beta, m))
        )
        truth, observed, _ = setup(jnp.asarray(seeds))
        generated, poisoned, gen_generated, nonfinite = _generated_sets(
            config, diffusion, workdir, root, beta, m, truth, observed
        )
        inputs = {
            "seed": seeds.astype(np.int32),
            "generated": generated,
            "gen_poisoned": poisoned,
            "gen_generated": gen_generated,
        }
        for method in methods:
            if (method, m) not in stages:  # one compile per (method, M), shared by betas
                stages[method, m] = make_stage_fn(config, method, m)
            out = sweeps.run_over_seeds(stages[method, m], inputs, root, beta)
            records = _records(out, beta, m, method, config, nonfinite)
            sweeps.append_cells(results_path, records, done, COORDS)
            progress.step(f"beta={beta:g} M={m} {method}")
    records = io.read_jsonl(results_path)
    arrays = summary.write_npz(workdir / "results.npz", records, config)
    sections = summary.summary_sections(arrays, config)
    common.write_summary(workdir, "adversarial", sections, config, time.time() - start)
    logging.info("adversarial: summary\n%s", sections[0][1])
    figures.plot_all(Path(workdir) / "figures", arrays, records, config)
    logging.info("adversarial: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records
