"""The data and the generators of the `augment` pipeline (isingjax/pipelines/augment.py):
every seed's keys, true model and spins; per generator the training on all observed
spins with the spins and checks of every checkpoint, the fold generators and held-out
scores of the held-out rule, the rules' picks from the grid, and one (beta, M) block's
cells with its tasks side by side (`run_block`)."""

from __future__ import annotations

import math
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from isingjax import exact, io, metrics, runtime, sweeps
from isingjax.diffusion import criterion, sampling
from isingjax.generators import selection
from isingjax.models import energy, sk_model
from isingjax.pipelines import augment_records, common


def named_keys(root, seed):
    names = ("model", "data", "oracle", "diffusion", "criterion", "generate", "boot", "split")
    return dict(zip(names, jax.random.split(sweeps.seed_key(root, seed), len(names)), strict=True))


def generated_path(workdir, beta, m, generator) -> Path:
    """Where a run keeps the spins [S, C, K, n] (int8) generated at every checkpoint of a
    generator in block (beta, M)."""
    return Path(workdir) / "generated" / f"beta{beta:g}_m{m}_{generator}.npz"


def truth_and_data(config, seed, root, beta, m):
    """The seed's true model, its first m observed spins and its oracle spins."""
    keys = named_keys(root, seed)
    truth = sk_model(keys["model"], config.model.n, beta, common.bias_std(config, beta))
    observed = exact.sample(keys["data"], truth, max(config.sweep.sample_sizes))[:m]
    k_max = max(config.augment.ratios) * m
    oracle = exact.sample(jax.random.fold_in(keys["oracle"], m), truth, k_max)
    return truth, observed, oracle


def seed_key_of(root, seed, name, *folds):
    """Seed `seed`'s key `name` (_keys) folded with each of `folds` in turn."""
    key = named_keys(root, seed)[name]
    for f in folds:
        key = jax.random.fold_in(key, f)
    return key


def seed_keys(root, num_seeds, name, *folds):
    """[S] keys: seed_key_of(root, s, name, *folds) for every seed s."""
    return jax.vmap(lambda s: seed_key_of(root, s, name, *folds))(jnp.arange(num_seeds))


def num_generated(config, m):
    return max(max(config.augment.ratios) * m, config.generator.check_samples)


def training_rows(config, data, weights):
    """data [S, M, n] and weights [S, M] padded to max(sweep.sample_sizes) rows of weight 0:
    a generator's minibatches never draw such rows (`diffusion.train.draw_rows`), so it
    trains exactly as on the M rows, with one compile of its training for every M."""
    pad = max(config.sweep.sample_sizes) - data.shape[1]
    return jnp.pad(data, ((0, 0), (0, pad), (0, 0))), jnp.pad(weights, ((0, 0), (0, pad)))


def check_nonfinite(config, nonfinite, what):
    if np.any(np.asarray(nonfinite) > 0) and not config.augment.allow_nonfinite:
        raise RuntimeError(
            f"augment: {what} produced non-finite values (per seed and checkpoint: "
            f"{np.asarray(nonfinite).tolist()}), which thresholding would turn into -1 "
            "spins; set config.augment.allow_nonfinite=True to use them anyway (the cells "
            "are flagged in summary.md)."
        )


def checkpoint_checks(config):
    """jit(vmap over seeds): the criterion's and the generator checks' measurements of one
    checkpoint's generated spins [K, n] (the criterion on the first
    criterion.num_samples, the checks on the first generator.check_samples)."""

    def one_seed(generated, observed, truth, inferred):
        x = generated[: config.criterion.num_samples]
        e_gen, e_obs = energy(inferred, x), energy(inferred, observed)
        y = generated[: config.generator.check_samples]
        return {
            "var_gen_inferred": jnp.var(e_gen),
            "var_obs_inferred": jnp.var(e_obs),
            "var_gen_se": criterion.variance_se(e_gen),
            "var_obs_se": criterion.variance_se(e_obs),
            "var_gen_true": jnp.var(energy(truth, x)),
            "var_obs_true": jnp.var(energy(truth, observed)),
            "kl_generated": exact.kl_divergence(y, truth),
            "cross_entropy": -jnp.mean(exact.log_prob(truth, y)),
            "entropy_true": -jnp.sum(
                jnp.exp(exact.all_log_probs(truth)) * exact.all_log_probs(truth)
            ),
            "copy_fraction": metrics.copy_fraction(y, observed),
            "expected_copy_fraction": metrics.expected_copy_fraction(truth, observed),
            "unique_fraction": metrics.unique_fraction(y),
        }

    return jax.jit(jax.vmap(one_seed))


def records_of(workdir, kind, meta):
    return [
        r
        for r in io.read_jsonl(workdir / "metrics.jsonl")
        if r.get("kind") == kind and all(r.get(k) == v for k, v in meta.items())
    ]


def full_generator(config, gen, stage, workdir, root, beta, m, truth, observed):
    """The generator trained on all observed spins: (checkpoint steps [C], spins
    [S, C, K, n] float32 generated at every checkpoint, the energy-variance criterion's
    step per seed [S], non-finite counts [S, C]); spins cached in generated/, checks in
    metrics.jsonl ({"kind": "checkpoint"})."""
    meta = {"beta": beta, "num_samples": m, "generator": gen.name}
    path = generated_path(workdir, beta, m, gen.name)
    num_seeds = observed.shape[0]
    if path.exists():
        cached = np.load(path)
        steps, spins, nonfinite = cached["steps"].tolist(), cached["spins"], cached["nonfinite"]
    else:
        params_at, steps = gen.train(
            workdir,
            path.stem,
            {"beta": beta, "num_samples": m},
            seed_keys(root, num_seeds, "diffusion", m, 0),
            *training_rows(config, observed, jnp.ones(observed.shape[:2])),
        )
        have = {(r["step"], r["seed"]) for r in records_of(workdir, "checkpoint", meta)}
        inferred = stage.infer_observed(observed)
        per_step, nonfinite = [], []
        for step in steps:
            keys = seed_keys(root, num_seeds, "generate", m, step)
            raw = gen.generate_raw_seeds(params_at(step), keys, num_generated(config, m))
            nonfinite.append(np.asarray(jnp.sum(~jnp.isfinite(raw), axis=(1, 2))))
            x = sampling.threshold(raw)
            per_step.append(np.asarray(x, np.int8))
            if any((step, i) not in have for i in range(num_seeds)):
                out = jax.device_get(stage.checks(x, observed, truth, inferred))
                for i in range(num_seeds):
                    record = {"kind": "checkpoint"} | meta | {"step": step, "seed": i}
                    record |= {"num_nonfinite": int(nonfinite[-1][i])}
                    io.append_jsonl(
                        workdir / "metrics.jsonl",
                        record | {k: float(v[i]) for k, v in out.items()},
                    )
        spins, nonfinite = np.stack(per_step, axis=1), np.stack(nonfinite, axis=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, spins=spins, steps=np.asarray(steps), nonfinite=nonfinite)
    check_nonfinite(config, nonfinite, f"{gen.name} at beta={beta:g}, M={m}")
    rows = {(r["step"], r["seed"]): r for r in records_of(workdir, "checkpoint", meta)}
    ev_steps = []
    for i in range(num_seeds):
        mine = [rows[(s, i)] for s in steps]
        se = [math.hypot(r["var_gen_se"], r["var_obs_se"]) for r in mine]
        var_gen = [r["var_gen_inferred"] for r in mine]
        var_obs = mine[0]["var_obs_inferred"]
        ev_steps.append(criterion.select(steps, var_gen, var_obs, se, tol=config.criterion.tol_se))
    return steps, spins.astype(np.float32), np.asarray(ev_steps), nonfinite


def heldout_score(config, method: str) -> str:
    """The held-out rule's score of an estimator: selection.score, where 'own' is the
    estimator's own (`selection.own_score`: screening for the erasure machine, the
    pseudo-likelihood for the others)."""
    score = config.selection.score
    return selection.own_score(method) if score == "own" else score


def fold_scores(config, gen, stage, workdir, root, beta, m, observed, methods):
    """The held-out rule's scores: {method: (scores [S, C, 1 + R], se [S, C, 1 + R],
    per_fold [S, C, F, 1 + R])}, the `heldout_score` of every observed spin under the fit
    of the fold that held it out, pooled over the M spins (for 'parameter_distance': of
    every parameter of each fold's fit, pooled over folds), at every checkpoint and K in
    (0,) + ratios * M_fit, the standard errors of the gain over K = 0
    (`selection.pooled_scores`) and each fold's own score (`selection.per_fold_scores`),
    from one generator per (seed, fold) trained on the other folds; records
    {"kind": "heldout"} (score, pooled scores, s.e. and per-fold scores) and {"kind": "fold_check"}
    (data-copying test, held-out log-likelihood) in metrics.jsonl."""
    num_seeds, folds = observed.shape[0], config.selection.num_folds
    meta = {"beta": beta, "num_samples": m, "generator": gen.name}
    split = jax.vmap(lambda k: selection.fold_masks(k, m, folds))(
        seed_keys(root, num_seeds, "split", m)
    )  # [S, F, M] held-out masks
    held = split.transpose(1, 0, 2).reshape(folds * num_seeds, m)  # row f * S + s
    data = jnp.tile(observed, (folds, 1, 1))

    def heldout_records():  # records of runs before the pooled and per-fold scores are redone
        return [r for r in records_of(workdir, "heldout", meta) if "se" in r and "fold_scores" in r]

    have = {(r["method"], r["step"]) for r in heldout_records()}
    steps = list(range(gen.checkpoint_every, gen.train_steps + 1, gen.checkpoint_every))
    if any((method, step) not in have for method in methods for step in steps):
        keys = jnp.concatenate(
            [seed_keys(root, num_seeds, "diffusion", m, 1 + f) for f in range(folds)]
        )
        params_at, steps = gen.train(
            workdir,
            f"{generated_path(workdir, beta, m, gen.name).stem}_folds",
            {"beta": beta, "num_samples": m, "folds": folds},
            keys,
            *training_rows(config, data, 1.0 - held),
        )
        m_fit = m - m // folds  # the smallest training part (folds differ by at most one)
        k_fold = max(config.augment.ratios) * m_fit
        checked = {r["step"] for r in records_of(workdir, "fold_check", meta)}
        held_by_fold = np.asarray(held, np.float64).reshape(folds, num_seeds, m)
        for step in steps:
            missing = [x for x in methods if (x, step) not in have]
            if not missing and step in checked:
                continue
            keys = jnp.concatenate(
                [seed_keys(root, num_seeds, "generate", m, step, 1 + f) for f in range(folds)]
            )
            params = params_at(step)
            raw = gen.generate_raw_seeds(params, keys, k_fold)
            check_nonfinite(
                config,
                jnp.sum(~jnp.isfinite(raw), axis=(1, 2)),
                f"{gen.name} (fold generators) at beta={beta:g}, M={m}",
            )
            x = sampling.threshold(raw)
            for method in missing:
                rows = np.asarray(stage.scores(method, m_fit)(data, held, x), np.float64)
                rows = rows.reshape(folds, num_seeds, *rows.shape[1:])  # [F, S, 1+R, M]
                score = heldout_score(config, method)
                mean, se = selection.pooled_scores(rows, held_by_fold, score)
                per_fold = selection.per_fold_scores(rows, held_by_fold, score)
                for i in range(num_seeds):
                    record = {"kind": "heldout"} | meta | {"method": method, "step": step}
                    record["score"] = score
                    record |= {"seed": i, "scores": mean[i].tolist(), "se": se[i].tolist()}
                    record["fold_scores"] = per_fold[:, i].tolist()
                    io.append_jsonl(workdir / "metrics.jsonl", record)
            if step not in checked:
                fold_checks(gen, workdir, meta, step, params, data, held, x, root, folds)
    out, width = {}, 1 + len(config.augment.ratios)
    rows = heldout_records()
    for method in methods:
        table = np.full((2, num_seeds, len(steps), width), np.nan)
        per_fold = np.full((num_seeds, len(steps), folds, width), np.nan)
        for r in rows:
            if r["method"] == method and r["step"] in steps:
                at = r["seed"], steps.index(r["step"])
                table[(slice(None), *at)] = r["scores"], r["se"]
                per_fold[at] = r["fold_scores"]
        out[method] = table[0], table[1], per_fold
    return steps, out


def fold_checks(gen, workdir, meta, step, params, data, held, generated, root, folds):
    """Per (seed, fold): the data-copying test of the fold generator's spins against its
    held-out fold, and the held-out fold's mean log-likelihood under the fold generator
    (where it has one: exact for the MADE, the ELBO's lower bound for masked diffusion)."""
    num_rows = data.shape[0]
    loglik = None
    if gen.log_likelihood_seeds is not None:
        keys = jax.random.split(
            jax.random.fold_in(named_keys(root, 0)["criterion"], step), num_rows
        )
        loglik = np.asarray(gen.log_likelihood_seeds(params, keys, data))  # [F*S, M]
    data, held, generated = np.asarray(data), np.asarray(held), np.asarray(generated)
    for row in range(num_rows):
        mask = held[row] > 0
        test = selection.data_copying_test(generated[row], data[row][~mask], data[row][mask])
        record = {"kind": "fold_check"} | meta | {"step": step}
        record |= {"seed": row % (num_rows // folds), "fold": row // (num_rows // folds)}
        record |= {"copying_" + k: v for k, v in test.items()}
        if loglik is not None:
            record["heldout_loglik"] = float(loglik[row][mask].mean())
        io.append_jsonl(workdir / "metrics.jsonl", record)


def hindsight(out, steps, observed, config):
    """Per seed, the (step, ratio) of the grid or observed-only (0, 0) with the lowest MSE."""
    ratios, picks = list(config.augment.ratios), []
    for seed in range(config.num_seeds):
        grid = out["grid"]["all"][seed]  # [C, R]
        c, k = np.unravel_index(np.argmin(grid), grid.shape)
        if observed[seed]["mse_all"] <= grid[c, k]:
            picks.append((0, 0))
        else:
            picks.append((steps[c], ratios[k]))
    return picks


def heldout_picks(scores, se, per_fold, steps, config):
    """Per seed, the held-out rule's (step, ratio) from pooled scores and their standard
    errors [S, C, 1 + R] and each fold's scores [S, C, F, 1 + R] (`fold_scores`), with the
    margin config.selection.margin_se and the confirmation config.selection.confirm_se."""
    sizes = [0] + list(config.augment.ratios)
    picks = []
    for seed in range(config.num_seeds):
        c, ratio = selection.choose(
            scores[seed],
            sizes,
            se[seed],
            config.selection.margin_se,
            per_fold[seed],
            config.selection.confirm_se,
        )
        picks.append((steps[c] if ratio else 0, ratio))
    return picks


def run_block(config, stages, gens, workdir, root, beta, m, done) -> None:
    """The cells of block (beta, M) not yet in done (appended to the workdir's
    results.jsonl and added to done): every estimator's arms without a generator and
    every generator's cells, side by side (`runtime.run_concurrently`: one generator's
    training overlaps another's fits and the arms without a generator; the same results
    as one after another). A generator's rules need the observed-only fits, so its grid
    waits for them."""
    results_path = workdir / "results.jsonl"
    seeds = np.arange(config.num_seeds)
    cells = set(augment_records.cells(config, beta, m))
    setup = jax.jit(jax.vmap(lambda s: truth_and_data(config, s, root, beta, m)))
    truth, observed, _ = setup(jnp.asarray(seeds))
    base_locks = {method: threading.Lock() for method in config.inference.methods}
    observed_of = {}  # method -> its observed-only records per seed

    def to_do(method, generator):  # the cells of (method, generator; "": none) not done
        return not {c for c in cells if c[2] == method and c[3] == generator} <= done

    def base_cells(method):  # once, whichever task asks first; the others wait for it
        with base_locks[method]:
            if method not in observed_of:
                if to_do(method, ""):
                    out = sweeps.run_over_seeds(stages.base(method, m), seeds, root, beta)
                    records = augment_records.base_records(out, beta, m, method, config)
                    sweeps.append_cells(results_path, records, done, augment_records.COORDS)
                of_seed = {
                    r["seed"]: r
                    for r in io.read_jsonl(results_path)
                    if (r["beta"], r["num_samples"], r["method"], r["arm"])
                    == (beta, m, method, "observed")
                }
                observed_of[method] = [of_seed[s] for s in seeds]
            return observed_of[method]

    def generator_cells(name, gen):
        todo = [x for x in config.inference.methods if to_do(x, name)]
        if not todo:
            return
        steps, spins, ev_steps, nonfinite = full_generator(
            config, gen, stages, workdir, root, beta, m, truth, observed
        )
        choices = {"energy_variance": [(s, 0) for s in ev_steps]}
        if "heldout" in config.selection.rules:
            _, scores = fold_scores(config, gen, stages, workdir, root, beta, m, observed, todo)
        k_max = max(config.augment.ratios) * m
        ev_generated = spins[np.arange(len(seeds)), [steps.index(s) for s in ev_steps], :k_max]
        inputs = {"seed": seeds.astype(np.int32), "generated": spins[:, :, :k_max]}
        inputs["ev_generated"] = ev_generated
        for method in todo:
            out = sweeps.run_over_seeds(stages.grid(method, m), inputs, root, beta)
            observed_records = base_cells(method)
            rule_picks = dict(choices)
            if "heldout" in config.selection.rules:
                rule_picks["heldout"] = heldout_picks(*scores[method], steps, config)
            rule_picks["hindsight"] = hindsight(out, steps, observed_records, config)
            records = augment_records.grid_records(
                out,
                beta,
                m,
                method,
                name,
                steps,
                rule_picks,
                observed_records,
                config,
                nonfinite,
            )
            sweeps.append_cells(results_path, records, done, augment_records.COORDS)

    runtime.run_concurrently(
        [partial(base_cells, method) for method in config.inference.methods]
        + [partial(generator_cells, *item) for item in gens.items()]
    )
