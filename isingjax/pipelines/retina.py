"""Pipeline `retina`: the real-data study on the salamander retina raster (Tkačik et al.,
PLoS Comput Biol 10: e1003408, 2014), the real-data part of Lim, Lee & Jo (PRE 111,
045302, 2025).

Per seed (vmapped): the split by movie repeat, the neurons and the patterns of
retina_data.py. Then
1. "Is the Ising model any good": the estimators of config.fit.methods fitted on the
   max(M) training patterns are sampled with ij.metropolis (parallel tempering when the
   chains mix slowly) and compared with the test patterns (retina_fit.py): rates,
   pairwise and third-order connected correlations, P(K), held-out pseudo-log-likelihood,
   beside the independent-neuron model and the training patterns themselves.
2. Missing-spike reconstruction for every M of sweep.sample_sizes, arms
     plm           the M training patterns alone (inference.options.plm),
     diffusion_max plm on them + K = max(ratios) M DDPM samples (diffusion_stage: one DDPM
                   per seed, checkpoint chosen by the energy-variance criterion),
     diffusion_val the same with K chosen among 0 and ratios * M by the pseudo-likelihood
                   of the validation repeats,
     l2            plm with the penalty tuned on held-out training patterns (augment.tuned_l2),
     diffusion_l2  the same tuning with the K = max(ratios) M DDPM samples added,
     inpaint       the DDPM itself (the diffusion arms' checkpoint) filling the hidden
                   neurons in by the replacement method (sampling.inpainting_corrector),
                   reconstruct.inpaint_samples draws per pattern (per-neuron majority),
   beside the all-silent and independent-neuron baselines: every k of reconstruct.hidden
   neurons of each test pattern hidden and reconstructed (retina_reconstruct.py).
3. The decoder under attack, every model arm of 2. with the same keys and budgets: each
   neuron predicted from the other n - 1 (the k = 1 reconstruction) on the first
   evasion.num_test reconstruction patterns, attacked by attacks.evasion_core (FGSM / PGD
   at L-inf budgets on the relaxation, the exact fewest flips k* and certified accuracy,
   greedy and PGD-then-round flips against all n predictions of a pattern at once).

Outputs: config.json, split.json (the repeats and neurons of every seed), metrics.jsonl,
results.jsonl (one line per (section, M, arm, k, seed), section 'attack' with k = 1; a
rerun resumes), results.npz,
summary.md, generated/m<M>.npz, checkpoints/, figures/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from isingjax import attacks, exact, inference, io, metrics, runtime, sweeps
from isingjax.diffusion import sampling
from isingjax.pipelines import augment, common, diffusion_stage
from isingjax.pipelines import retina_data as data
from isingjax.pipelines import retina_figures as figures
from isingjax.pipelines import retina_fit as fit_checks
from isingjax.pipelines import retina_reconstruct as recon
from isingjax.pipelines import retina_summary as summary

COORDS = summary.COORDS
RESUMABLE = ("sweep.sample_sizes", "reconstruct.hidden")  # prefixes: finished cells stay valid


def validate_config(config) -> None:
    d, r = config.data, config.reconstruct
    fractions_ok = 0 < d.test_fraction < 1 and 0 < d.validation_fraction < 1
    common.check_fields(
        [
            ("model.n", config.model.n, common.is_int(config.model.n, 2), "an integer >= 2"),
            ("num_seeds", config.num_seeds, common.is_int(config.num_seeds, 1), ">= 1"),
            (
                "data.neurons",
                d.neurons,
                d.neurons in data.NEURON_RULES,
                f"one of {data.NEURON_RULES}",
            ),
            (
                "data.indices",
                d.indices,
                d.neurons != "indices"
                or (
                    len(set(d.indices)) == config.model.n
                    and all(common.is_int(i, 0) for i in d.indices)
                ),
                "model.n distinct integers >= 0 when data.neurons == 'indices'",
            ),
            (
                "data.bins_per_repeat",
                d.bins_per_repeat,
                common.is_int(d.bins_per_repeat, 1),
                "an integer >= 1",
            ),
            (
                "data.test_fraction",
                d.test_fraction,
                fractions_ok and d.test_fraction + d.validation_fraction < 1,
                "in (0, 1), with validation_fraction summing to < 1",
            ),
            ("data.validation_fraction", d.validation_fraction, fractions_ok, "in (0, 1)"),
            (
                "fit.methods",
                config.fit.methods,
                len(config.fit.methods) >= 1
                and set(config.fit.methods) <= set(inference.METHODS)
                and ("exact_ml" not in config.fit.methods or config.model.n <= exact.MAX_N),
                f"a non-empty tuple from {tuple(inference.METHODS)} (exact_ml needs model.n "
                f"<= {exact.MAX_N})",
            ),
            (
                "fit.num_samples",
                config.fit.num_samples,
                common.is_int(config.fit.num_samples, 1)
                and config.fit.num_samples % config.sampler.num_chains == 0,
                f"a positive multiple of sampler.num_chains ({config.sampler.num_chains})",
            ),
            (
                "reconstruct.hidden",
                r.hidden,
                len(r.hidden) >= 1
                and all(
                    common.is_int(k, 1) and k <= min(exact.MAX_N, config.model.n - 1)
                    for k in r.hidden
                ),
                f"a non-empty tuple of integers in [1, min({exact.MAX_N}, model.n - 1)]",
            ),
            (
                "reconstruct.num_patterns",
                r.num_patterns,
                common.is_int(r.num_patterns, 1),
                "an integer >= 1",
            ),
            ("reconstruct.min_rate", r.min_rate, 0 <= r.min_rate < 1, "in [0, 1)"),
            (
                "evasion.num_test",
                config.evasion.num_test,
                config.evasion.num_test <= r.num_patterns,
                f"<= reconstruct.num_patterns ({r.num_patterns}): the attacked patterns are "
                "the first reconstruction patterns",
            ),
            (
                "plots.hidden",
                config.plots.hidden,
                config.plots.hidden in r.hidden,
                "one of reconstruct.hidden",
            ),
        ]
        + augment.augmentation_checks(config)
        + common.evasion_checks(config)
        + diffusion_stage.config_checks(config)
    )
    common.check_options(config, set(config.fit.methods) | {"plm", config.criterion.method})


def generated_path(workdir, m) -> Path:
    return Path(workdir) / "generated" / f"m{m}.npz"


def _generated(config, diffusion, workdir, root, m, observed, recon_inputs):
    """Each seed's DDPM (trained on its M patterns observed [S, M, n], checkpoint chosen by
    the criterion), cached in generated/m<M>.npz: 'spins' [S, K_max, n] generated, and for
    every k of reconstruct.hidden 'inpaint_k<k>' [S, P, k], the fraction of
    reconstruct.inpaint_samples inpainted completions of the recon patterns in which each
    hidden neuron spikes; 'num_nonfinite' and 'inpaint_nonfinite' [S] count the non-finite
    values of the raw outputs (an error unless augment.allow_nonfinite)."""
    path = generated_path(workdir, m)
    cached = dict(np.load(path)) if path.exists() else {}
    wanted = ["spins"] + _inpaint_names(config)
    if not all(name in cached for name in wanted):
        seeds = jnp.arange(config.num_seeds)
        seed_keys = jax.vmap(lambda s: data.keys(root, s))(seeds)
        params, chosen = diffusion_stage.train_and_select(  # resumes: checkpoints, records
            config,
            diffusion,
            workdir,
            {"num_samples": m},
            tag=path.stem,
            train_keys=jax.vmap(lambda k: jax.random.fold_in(k, m))(seed_keys["diffusion"]),
            criterion_keys=seed_keys["criterion"],
            observed=observed,
            truth=None,
        )
        if "spins" not in cached:
            cached |= _generate(config, diffusion, workdir, seed_keys, params, chosen, m, observed)
        if _inpaint_names(config):
            cached |= _inpaint(config, diffusion, seed_keys, params, m, recon_inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **cached)
    for name in ("num_nonfinite", "inpaint_nonfinite"):
        nonfinite = cached.get(name, np.zeros(1))
        if np.any(nonfinite > 0) and not config.augment.allow_nonfinite:
            raise RuntimeError(
                f"retina: the generator of M={m} produced non-finite values ({name} per "
                f"seed: {np.asarray(nonfinite).tolist()}); set "
                "config.augment.allow_nonfinite=True to use them anyway (the cells are "
                "flagged in summary.md)."
            )
    cached["spins"] = cached["spins"].astype(np.float32)
    return cached


def _inpaint_names(config):
    if config.reconstruct.inpaint_samples == 0:
        return []
    return [f"inpaint_k{k}" for k in config.reconstruct.hidden] + ["inpaint_nonfinite"]


def _generate(config, diffusion, workdir, seed_keys, params, chosen, m, observed):
    """K_max = max(ratios) M spins per seed at the chosen checkpoints, with their checks."""
    k_max = max(config.augment.ratios) * m
    keys = jax.vmap(lambda k: jax.random.fold_in(k, m))(seed_keys["generate"])
    raw = diffusion.generate_raw_seeds(params, keys, k_max)
    nonfinite = np.asarray(jnp.sum(~jnp.isfinite(raw), axis=(1, 2)))
    spins = np.asarray(sampling.threshold(raw))
    for i in range(config.num_seeds):
        record = {"kind": "generator", "num_samples": m, "seed": i, "chosen_step": chosen[i]}
        record |= {"num_nonfinite": int(nonfinite[i])}
        record |= {"copy_fraction": float(metrics.copy_fraction(spins[i], observed[i]))}
        record |= {"unique_fraction": float(metrics.unique_fraction(spins[i]))}
        io.append_jsonl(workdir / "metrics.jsonl", record)
    chosen = np.asarray(chosen)
    return {"spins": spins.astype(np.int8), "chosen_steps": chosen, "num_nonfinite": nonfinite}


def _inpaint(config, diffusion, seed_keys, params, m, recon_inputs):
    """Inpainting of the recon patterns [S, P, n] with their hidden neurons (the first k
    of recon_inputs['hidden'] [S, P, k_max]) masked, reconstruct.inpaint_samples draws
    each: the spike fraction of every hidden neuron, per k."""
    draws, n = config.reconstruct.inpaint_samples, config.model.n
    patterns, order = jnp.asarray(recon_inputs["recon"]), jnp.asarray(recon_inputs["hidden"])
    num_seeds, num_patterns = patterns.shape[:2]
    known = jnp.repeat(patterns, draws, axis=1)  # [S, P * draws, n]
    out, nonfinite = {}, np.zeros(num_seeds, np.int64)
    for k in config.reconstruct.hidden:
        hidden = order[:, :, :k]
        mask = ~jnp.any(jax.nn.one_hot(hidden, n, dtype=bool), axis=2)  # True: known
        keys = jax.vmap(lambda key, k=k: jax.random.fold_in(key, m * 64 + k))(seed_keys["inpaint"])
        raw = diffusion.inpaint_seeds(params, keys, known, jnp.repeat(mask, draws, axis=1))
        nonfinite += np.asarray(jnp.sum(~jnp.isfinite(raw), axis=(1, 2)))
        spikes = jnp.mean(raw.reshape(num_seeds, num_patterns, draws, n) > 0, axis=2)
        out[f"inpaint_k{k}"] = np.asarray(jnp.take_along_axis(spikes, hidden, axis=2))
    return out | {"inpaint_nonfinite": nonfinite}


def merged_fit_inputs(config, root, m: int, observed, generated) -> dict:
    """The patterns every plm fit of a block runs over, repeats merged (common.unique_rows:
    the same fits, at M = 8000 over about a quarter of the rows), per seed and padded to
    the largest count: 'observed' (the M training patterns), 'augmented' [R] (+ the first
    ratio * M generated ones, one per ratio), 'l2' and 'diffusion_l2' (the fitting and
    held-out weights of `augment.tuned_l2`'s split of the observed patterns, the latter
    with all K = max(ratios) M generated patterns in its fitting part).
    observed [S, M, n], generated [S, K, n]."""
    ones = np.ones((m, 1), np.float32)
    out = {"observed": [], "augmented": [], "l2": [], "diffusion_l2": []}
    for s, (obs, gen) in enumerate(zip(observed, generated, strict=True)):
        out["observed"].append(common.unique_rows(obs, ones))
        for r in config.augment.ratios:  # seed-major: reshaped to [S, R, ...] below
            both = np.concatenate([obs, gen[: r * m]])
            out["augmented"].append(common.unique_rows(both, np.ones((len(both), 1))))
        key = jax.random.fold_in(data.keys(root, jnp.int32(s))["l2"], m)
        held = np.asarray(augment.heldout_mask(config, m, key))
        split = np.stack([1.0 - held, held], axis=1)
        out["l2"].append(common.unique_rows(obs, split))
        extra = np.concatenate([split, np.tile([[1.0, 0.0]], (len(gen), 1))])
        out["diffusion_l2"].append(common.unique_rows(np.concatenate([obs, gen]), extra))
    merged = {}
    for name, groups in out.items():
        rows, weights = common.stack_padded(groups)
        lead = (len(observed), -1) if name == "augmented" else (len(observed),)
        merged[f"{name}_rows"] = rows.reshape(*lead, *rows.shape[1:])
        merged[f"{name}_weights"] = weights.reshape(*lead, *weights.shape[1:])
    return merged


def make_stage_fn(config, m: int):
    """jit(vmap over seeds): fn(inputs, root) -> reconstruction scores of every arm; the
    plm fits run over `merged_fit_inputs`."""
    ratios = jnp.asarray(config.augment.ratios)
    fit = diffusion_stage.fit_with_converged_fn(config, "plm")
    hidden_sizes = tuple(config.reconstruct.hidden)
    e = config.evasion
    eps, flips = jnp.asarray(e.eps, jnp.float32), jnp.asarray(e.flips, jnp.int32)

    def one_seed(inputs, root):
        observed = inputs["observed"]
        keys = data.keys(root, inputs["seed"])
        est_plm, conv_plm = fit(inputs["observed_rows"], inputs["observed_weights"][:, 0])
        augmented, conv_aug = lax.map(  # [ratios]
            lambda rw: fit(rw[0], rw[1][:, 0]),
            (inputs["augmented_rows"], inputs["augmented_weights"]),
        )
        candidates = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), est_plm, augmented)
        val_nll = jax.vmap(lambda p: fit_checks.pseudo_nll(p, inputs["validation"]))(candidates)
        pick = jnp.argmin(val_nll)
        conv_all = jnp.concatenate([conv_plm[None], conv_aug])

        def tuned(name):
            rows, weights = inputs[f"{name}_rows"], inputs[f"{name}_weights"]
            return augment.tuned_l2_weighted(config, rows, weights[:, 0], weights[:, 1], m)

        est_l2, best_l2, conv_l2 = tuned("l2")
        est_dl2, best_dl2, conv_dl2 = tuned("diffusion_l2")
        arms = {
            "plm": (est_plm, conv_plm, {}),
            "diffusion_max": (
                jax.tree.map(lambda x: x[-1], augmented),
                conv_aug[-1] & conv_plm,
                {},
            ),
            "diffusion_val": (
                jax.tree.map(lambda x: x[pick], candidates),
                conv_all[pick],
                {"ratio": jnp.concatenate([jnp.zeros(1, ratios.dtype), ratios])[pick]},
            ),
            "l2": (est_l2, conv_l2, {"l2_per_sample": best_l2}),
            "diffusion_l2": (est_dl2, conv_dl2, {"l2_per_sample": best_dl2}),
        }
        patterns, order = inputs["recon"], inputs["hidden"]
        rates = recon.independent_rates(observed)
        out = {}
        for arm, (est, conv, extra) in arms.items():
            per_arm = {"converged": conv, "test_pnll": fit_checks.pseudo_nll(est, inputs["test"])}
            scores = {
                f"k{k}": recon.model_scores(est, patterns, order[:, :k]) for k in hidden_sizes
            }
            attacked = attacks.evasion_core(  # same key, patterns and budgets for every arm
                jax.random.fold_in(keys["attack"], m),
                est,
                patterns[: e.num_test],
                eps,
                flips,
                num_steps=e.pgd_steps,
                num_restarts=e.pgd_restarts,
                max_flips=max(e.flips),
            )
            out[arm] = {"arm": per_arm | extra, "hidden": scores, "attack": attacked}
        base = {k: recon.baseline_scores(rates, patterns, order[:, :k]) for k in hidden_sizes}
        indep_nll = fit_checks.independent_nll(rates, inputs["test"])
        for arm in ("independent", "silent"):
            out[arm] = {"arm": {}, "hidden": {f"k{k}": base[k][arm] for k in base}}
        if config.reconstruct.inpaint_samples:
            draws = config.reconstruct.inpaint_samples
            inpainted = {
                f"k{k}": recon.inpainting_scores(
                    inputs[f"inpaint_k{k}"], draws, patterns, order[:, :k]
                )
                for k in hidden_sizes
            }
            out["inpaint"] = {"arm": {}, "hidden": inpainted}
        out["independent"]["arm"]["test_pnll"] = indep_nll
        return out

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None)))


def _recon_records(out, m, config, cached):
    for arm, fields in out.items():
        for seed in range(config.num_seeds) if "attack" in fields else ():
            record = {"section": "attack", "num_samples": m, "arm": arm, "hidden": 1}
            record |= {"seed": seed}
            record |= {f: np.asarray(v[seed]).tolist() for f, v in fields["attack"].items()}
            yield record
        scalars = fields["arm"]
        for k in config.reconstruct.hidden:
            for seed in range(config.num_seeds):
                record = {"section": "recon", "num_samples": m, "arm": arm, "hidden": k}
                record |= {"seed": seed}
                record |= {f: _scalar(v[seed]) for f, v in scalars.items()}
                record |= {f: _scalar(v[seed]) for f, v in fields["hidden"][f"k{k}"].items()}
                if arm.startswith("diffusion"):
                    record["num_nonfinite"] = int(cached["num_nonfinite"][seed])
                if arm == "inpaint":
                    record["num_nonfinite"] = int(cached["inpaint_nonfinite"][seed])
                yield record


def _scalar(value):
    value = np.asarray(value).item()
    return bool(value) if isinstance(value, bool) else float(value)


def _fit_section(config, sel, root, m_fit):
    """Records of section 'fit' (hidden = 0): every method, the independent model and the
    training patterns, compared with the test patterns of each seed."""
    seeds = jnp.arange(config.num_seeds)
    seed_keys = jax.vmap(lambda s: data.keys(root, s))(seeds)
    train = jnp.asarray(sel["train"][:, :m_fit])
    test = jnp.asarray(sel["test"])
    stats = jax.jit(lambda x: lax.map(fit_checks.statistics, x))
    test_stats, train_stats = stats(test), stats(train)
    num = config.fit.num_samples
    rates = jax.vmap(recon.independent_rates)(train)
    independent = jax.vmap(lambda k, r: 2.0 * jax.random.bernoulli(k, r, (num, r.shape[0])) - 1.0)(
        seed_keys["independent"], rates
    )
    compare = jax.jit(jax.vmap(lambda a, b, size: fit_checks.compare(a, b, size), (0, 0, None)))
    nll = jax.jit(jax.vmap(fit_checks.independent_nll))
    rows = {
        "test": ({}, test_stats),
        "train_data": (compare(train_stats, test_stats, m_fit), train_stats),
        "independent": (
            compare(stats(independent), test_stats, num)
            | {"test_pnll": nll(rates, test), "train_pnll": nll(rates, train)},
            None,
        ),
    }
    starts = train[:, : config.sampler.num_chains]  # the chains' first states (random bins)
    for method in config.fit.methods:
        est, conv = jax.jit(jax.vmap(diffusion_stage.fit_with_converged_fn(config, method)))(train)
        index = list(inference.METHODS).index(method)
        keys = jax.vmap(lambda k, i=index: jax.random.fold_in(k, i))(seed_keys["mcmc"])
        samples, diag = fit_checks.sample_models(config, keys, est, starts)
        pnll = jax.jit(jax.vmap(fit_checks.pseudo_nll))
        model_stats = stats(samples)
        rows[method] = (
            compare(model_stats, test_stats, num)
            | diag
            | {"converged": conv, "test_pnll": pnll(est, test), "train_pnll": pnll(est, train)},
            model_stats,
        )
    rows["independent"] = (rows["independent"][0], stats(independent))
    for arm, (values, arm_stats) in rows.items():
        for seed in range(config.num_seeds):
            record = {"section": "fit", "num_samples": m_fit, "arm": arm, "hidden": 0}
            record |= {"seed": seed} | {f: _scalar(v[seed]) for f, v in values.items()}
            record["pk"] = np.asarray(arm_stats["pk"][seed]).tolist()
            if seed == 0:  # the scatter figure shows one seed's correlations
                record["corr"] = np.asarray(arm_stats["corr"][seed]).tolist()
            yield record


def _write_split(workdir, sel, config):
    split = {
        "neurons": sel["neurons"].tolist(),
        "train_repeats": sel["train_repeats"].tolist(),
        "validation_repeats": sel["validation_repeats"].tolist(),
        "test_repeats": sel["test_repeats"].tolist(),
    }
    (Path(workdir) / "split.json").write_text(json.dumps(split) + "\n")
    return split


def run(config, workdir) -> list[dict]:
    """Runs the retina study; returns its result records."""
    validate_config(config)
    raster = data.load(config)
    data.check_data(config, raster.shape)
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
    start, root = time.time(), jax.random.key(config.seed)
    sel = data.select(config, raster, root)
    del raster
    split = _write_split(workdir, sel, config)
    done = sweeps.finished(results_path, COORDS)
    m_fit = max(config.sweep.sample_sizes)
    if not set(summary.fit_cells(config, m_fit)) <= done:
        logging.info("retina: goodness-of-fit checks at M=%d", m_fit)
        sweeps.append_cells(results_path, _fit_section(config, sel, root, m_fit), done, COORDS)
    diffusion = diffusion_stage.Diffusion(config)
    todo = [m for m in config.sweep.sample_sizes if not set(summary.block_cells(config, m)) <= done]
    progress = runtime.Progress("retina: reconstruction blocks (M)", len(todo))
    for m in todo:
        observed = sel["train"][:, :m]
        inputs = {"seed": np.arange(config.num_seeds, dtype=np.int32), "observed": observed}
        inputs |= {key: sel[key] for key in ("validation", "test", "recon", "hidden")}
        cached = _generated(config, diffusion, workdir, root, m, observed, inputs)
        inputs |= merged_fit_inputs(config, root, m, observed, cached["spins"])
        inputs |= {name: cached[name] for name in _inpaint_names(config)[:-1]}
        out = sweeps.run_over_seeds(make_stage_fn(config, m), inputs, root)
        sweeps.append_cells(results_path, _recon_records(out, m, config, cached), done, COORDS)
        progress.step(f"M={m}")
    records = io.read_jsonl(results_path)
    arrays = summary.write_npz(workdir / "results.npz", records, config, split)
    sections = summary.summary_sections(arrays)
    common.write_summary(workdir, "retina", sections, config, time.time() - start)
    out = workdir / "figures"
    figures.plot_pk(out / "pk.png", records, config)
    figures.plot_correlations(out / "correlations.png", records, config)
    figures.plot_vs_hidden(out / "reconstruction_vs_k.png", arrays)
    figures.plot_vs_m(out / "reconstruction_vs_m.png", arrays, config.plots.hidden)
    figures.plot_attacks(out / "attacks.png", arrays)
    logging.info("retina: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records
