"""Pipeline `augment`: does adding generated samples to M observed spins lower the error
of inverse Ising inference (Lim, Lee & Jo, PRE 111, 045302, 2025), with which generator,
chosen how, and against which honest baselines?

For every beta and sample size M, per seed (seeds mapped with `sweeps.map_solver`):
1. an SK instance (biases of std bias_std * beta / sqrt(n) by default) and M exact draws;
2. the arms without a generator, for every estimator:
     observed   the M observed spins alone,
     bootstrap  observed + K spins drawn exactly from the model the same estimator
                inferred from the observed spins (K = ratio * M, every augment.ratios),
     oracle     observed + K further true samples,
     l2         (plm only) plm with the L2 penalty chosen by held-out pseudo-likelihood
                on a split of the observed spins, refitted on all of them;
3. for every generator of generator.names (isingjax/pipelines/generator_stage.py: the
   DDPM thresholded to ±1, masked discrete diffusion, the autoregressive MADE):
   a. trained on all M observed spins, with a checkpoint every checkpoint_every steps; at
      every checkpoint it generates max(max(ratios) M, generator.check_samples) spins,
      and the energy-variance criterion (isingjax/diffusion/criterion.py) and the
      generator checks (exact KL and cross-entropy to the truth, copies of observed
      states against the expected copy fraction of exact samples) go to metrics.jsonl;
   b. the grid: every estimator fitted on observed + the first K spins of every
      checkpoint, for every K = ratio * M (arm 'grid', coordinates step and ratio);
   c. the rules that pick (checkpoint, K) from the grid, without the truth:
        energy_variance  the paper's rule: the criterion's checkpoint, at every K;
        heldout          (selection.rules) K-fold over the observed spins: the generator
                         retrained on the training folds, the estimator fitted on them +
                         K of its spins at each checkpoint and scored on the
                         held-out fold (K = 0 included) by selection.score (default
                         'parameter_distance': the distance of the fit's parameters to
                         plm fitted on the held-out fold; generators/selection.py); the
                         best score over the folds picks (checkpoint, K),
                         K = 0 unless its gain over K = 0 exceeds selection.margin_se
                         standard errors (the one-standard-error rule) and every fold
                         confirms augmenting (the cell the other folds pick gains on it
                         by more than selection.confirm_se of its s.e.), and the full-data
                         generator at that checkpoint (the same training run as the
                         grid's, so the same as retraining to that step) supplies the
                         K * M spins. Held-out log-likelihood of the fold generators
                         (exact for the MADE, ELBO for masked diffusion) and the data-
                         copying test (Meehan et al. 2020) per checkpoint go to
                         metrics.jsonl;
      and, with the truth, 'hindsight': the (checkpoint, K) of the grid (K = 0, observed
      only, included) with the lowest MSE; a rule's regret is its MSE minus hindsight's;
   d. generated_l2 (plm only): the tuned-L2 fit with the energy-variance checkpoint's
      max(ratios) * M spins added to the fitting part of the split and to the refit (the
      held-out part is observed spins only): augmentation and the tuned penalty at equal
      tuning effort.
   Every K is fitted on the observed + its K spins only (one compile per K, shared by
   every checkpoint and seed). Every cell records whether its fits converged (the
   estimator's info['converged']) and the generated cells the number of non-finite values
   the generator produced (an error unless augment.allow_nonfinite).
   The generators of a block and the estimators' arms without a generator run side by
   side, one thread each (`augment_generate.run_block`, `runtime.run_concurrently`): one
   generator's training overlaps another's fits, with the results of running them one
   after another (the training times in metrics.jsonl are then wall times shared with
   the other tasks).

Outputs: config.json, metrics.jsonl (training losses, per-checkpoint criterion and
generator checks, held-out scores), results.jsonl (one line per (beta, M, method,
generator, arm, ratio, step, seed)), results.npz, summary.md, generated/*.npz (the
generated spins of every checkpoint), checkpoints/, figures/. A rerun with the same
workdir resumes: training from its last checkpoint, and finished cells, records and
generated sets are not recomputed.
"""

from __future__ import annotations

import math
import threading
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from isingjax import exact, inference, io, metrics, runtime, sweeps
from isingjax.generators import selection
from isingjax.inference import plm
from isingjax.pipelines import augment_figures as figures
from isingjax.pipelines import augment_generate as generate
from isingjax.pipelines import (
    augment_records,
    augment_summary,
    common,
    diffusion_stage,
    generator_stage,
)
from isingjax.pipelines.augment_generate import generated_path, truth_and_data  # noqa: F401

COORDS = augment_records.COORDS
# Config fields a rerun in the same workdir may change (common.prepare_workdir).
RESUMABLE = ("model.betas", "sweep.sample_sizes", "inference.methods", "generator.names")
RULES = ("energy_variance", "heldout")
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
            (
                "selection.rules",
                config.selection.rules,
                len(config.selection.rules) >= 1
                and set(config.selection.rules) <= set(RULES)
                and "energy_variance" in config.selection.rules,
                f"a tuple from {RULES} that includes 'energy_variance'",
            ),
            (
                "selection.num_folds",
                config.selection.num_folds,
                common.is_int(config.selection.num_folds, 2)
                and all(common.is_int(m, 10) for m in config.sweep.sample_sizes)
                and config.selection.num_folds <= min(config.sweep.sample_sizes, default=0),
                "an integer in [2, min(sweep.sample_sizes)]",
            ),
            (
                "selection.score",
                config.selection.score,
                config.selection.score in ("own", *selection.SCORES),
                f"one of {('own', *selection.SCORES)}",
            ),
            (
                "selection.margin_se",
                config.selection.margin_se,
                common.is_positive(config.selection.margin_se, allow_zero=True),
                "a finite number >= 0 (standard errors; 0: the best mean score)",
            ),
            (
                "selection.confirm_se",
                config.selection.confirm_se,
                common.is_positive(config.selection.confirm_se, allow_zero=True),
                "a finite number >= 0 (a fold's standard errors; 0: no confirmation)",
            ),
            (
                "generator.check_samples",
                config.generator.check_samples,
                common.is_int(config.generator.check_samples, 1),
                "an integer >= 1",
            ),
        ]
        + augmentation_checks(config)
        + diffusion_stage.config_checks(config)
        + generator_stage.config_checks(config)
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


class Stages:
    """The jitted functions of a run, built once and shared by blocks of equal shapes."""

    def __init__(self, config):
        self.config, self._cache, self._lock = config, {}, threading.Lock()
        self.infer_observed = jax.jit(
            sweeps.map_solver(diffusion_stage.fit_fn(config, config.criterion.method))
        )
        self.checks = generate.checkpoint_checks(config)

    def _get(self, key, build):
        with self._lock:  # the tasks of a block ask from threads of their own
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def scores(self, method, m_fit):
        """jit(`sweeps.map_solver` over rows): (observed [M, n], held-out mask [M],
        generated [K, n]) -> the held-out terms of every observed row [1 + R, M] under the
        fits at K in (0,) + ratios * m_fit (`selection.heldout_row_scores`, score
        `generate.heldout_score`; per parameter [1 + R, P] for 'parameter_distance', whose
        reference is plm with the config's options)."""
        sizes = [0] + [r * m_fit for r in self.config.augment.ratios]
        fit = diffusion_stage.fit_fn(self.config, method)
        score = generate.heldout_score(self.config, method)
        reference = diffusion_stage.fit_fn(self.config, "plm")  # of 'parameter_distance'

        def build():
            one = partial(
                selection.heldout_row_scores, fit, sizes=sizes, score=score, reference_fn=reference
            )
            return jax.jit(sweeps.map_solver(lambda x, h, g: one(x, h, g)))

        return self._get(("scores", method, m_fit), build)

    def base(self, method, m):
        return self._get(("base", method, m), lambda: make_base_fn(self.config, method, m))

    def grid(self, method, m):
        return self._get(("grid", method, m), lambda: make_grid_fn(self.config, method, m))


def heldout_mask(config, m: int, key) -> jax.Array:
    """The held-out part of `tuned_l2`'s split: float32 [m], 1 on a random
    baselines.holdout_fraction of the m observed spins (at least one), 0 elsewhere."""
    num_held = _num_held(config, m)
    return (jnp.argsort(jax.random.permutation(key, m)) < num_held).astype(jnp.float32)


def _num_held(config, m: int) -> int:
    return max(1, int(round(config.baselines.holdout_fraction * m)))


def tuned_l2(config, observed, key, extra=None):
    """plm with l2_per_sample chosen on config.baselines.l2_grid by held-out
    pseudo-likelihood, then refitted on all the data; returns (estimate, chosen
    l2_per_sample, converged: the refit and every grid fit converged).

    The held-out part is a random holdout_fraction of the observed spins [M, n] (split by
    key, `heldout_mask`). Extra spins [K, n] (generated ones), when given, join the fitting
    part of the split and the refit but are never held out, so the penalty is chosen by
    how well a fit predicts observed spins it has not seen. The grid value c is per
    observed sample: the coupling penalty is l2 = c / (observed spins in the fit), whatever
    K, so with or without extra spins the grid spans the same penalties (a per-sample
    penalty over M + K spins would be K/M times weaker at the same c)."""
    m = observed.shape[0]
    held = heldout_mask(config, m, key)
    data, fitted = observed, 1.0 - held
    if extra is not None:
        data = jnp.concatenate([observed, extra])
        fitted = jnp.concatenate([fitted, jnp.ones(extra.shape[0])])
        held = jnp.concatenate([held, jnp.zeros(extra.shape[0])])
    return tuned_l2_weighted(config, data, fitted, held, m)


def tuned_l2_weighted(config, spins, fitted, held, m: int):
    """`tuned_l2` on patterns given with multiplicities: spins [U, n], the weight of each
    row in the fitting part of the split (fitted [U]) and in the held-out part (held [U]);
    m is the number of observed spins (their total weight in both parts). With the rows of
    `tuned_l2` and 0/1 weights it is `tuned_l2`; with repeated patterns merged (weights =
    their counts, `common.unique_rows`) it computes the same fits over fewer rows."""
    options = {
        k: v
        for k, v in config.inference.options.get("plm", {}).items()
        if k not in ("l2", "l2_per_sample")
    }
    grid = jnp.asarray(config.baselines.l2_grid, jnp.float32)
    num_fit = float(m - _num_held(config, m))  # observed spins in the fitting part

    def held_out_loss(c):
        est, info = plm.fit(spins, fitted, l2=c / num_fit, **options)
        loss = plm.loss(est, spins, held / jnp.sum(held), l2=0.0, l2_bias=0.0)
        return loss, info["converged"]

    losses, grid_converged = sweeps.map_solver(held_out_loss)(grid)
    best = grid[jnp.argmin(losses)]
    est, info = plm.fit(spins, fitted + held, l2=best / m, **options)
    return est, best, info["converged"] & jnp.all(grid_converged)


def _fit_ratios(config, fit, data, m):
    """Fits of every arm's observed + extra spins data [A, M + K_max, n] on the observed
    and the first ratio * M extra spins only, per augment.ratios (one shape, so one
    compile, per ratio; arms mapped with `sweeps.map_solver`) -> leaves [A, R, ...]."""
    fits = [
        sweeps.map_solver(lambda x, r=r: fit(x[: (1 + r) * m]))(data) for r in config.augment.ratios
    ]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves, axis=1), *fits)


def make_base_fn(config, method: str, m: int):
    """jit(`sweeps.map_solver` over seeds): fn(seed, root, beta) -> the arms without a
    generator."""
    k_max = max(config.augment.ratios) * m
    fit = diffusion_stage.fit_with_converged_fn(config, method)
    rows, cols = jnp.triu_indices(config.model.n, k=1)

    def one_seed(seed, root, beta):
        truth, observed, oracle = generate.truth_and_data(config, seed, root, beta, m)
        keys = generate.named_keys(root, seed)
        est_observed, conv_observed = fit(observed)
        boot = exact.sample(jax.random.fold_in(keys["boot"], m), est_observed, k_max)
        extra = jnp.stack([boot, oracle])  # [arms, K_max, n]
        data = jnp.concatenate([jnp.broadcast_to(observed, (2, *observed.shape)), extra], axis=1)
        estimates, conv_extra = _fit_ratios(config, fit, data, m)
        conv_extra = conv_extra.at[0].set(conv_extra[0] & conv_observed)  # bootstrap rests on it
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
            est, best, conv = tuned_l2(config, observed, keys["split"])
            out |= {"l2": errors(est), "converged_l2": conv, "l2_per_sample_l2": best}
            out["w_l2"] = est.w[rows, cols]
        return out

    return jax.jit(sweeps.map_solver(one_seed, in_axes=(0, None, None)))


def make_grid_fn(config, method: str, m: int):
    """jit(`sweeps.map_solver` over seeds): fn({'seed', 'generated' [C, K_max, n],
    'ev_generated' [K_max, n]}, root, beta) -> the grid's errors [C, R] (and for plm the
    generated_l2 arm on the energy-variance checkpoint's spins)."""
    fit = diffusion_stage.fit_with_converged_fn(config, method)
    rows, cols = jnp.triu_indices(config.model.n, k=1)

    def one_seed(inputs, root, beta):
        truth, observed, _ = generate.truth_and_data(config, inputs["seed"], root, beta, m)
        generated = inputs["generated"]
        data = jnp.concatenate(
            [jnp.broadcast_to(observed, (generated.shape[0], *observed.shape)), generated], axis=1
        )
        estimates, converged = _fit_ratios(config, fit, data, m)
        errors = partial(metrics.param_mse, truth=truth)
        out = {
            "grid": jax.vmap(jax.vmap(errors))(estimates),
            "converged_grid": converged,
            "w_grid": estimates.w[:, :, rows, cols],
        }
        if method == "plm":
            key = generate.named_keys(root, inputs["seed"])["split"]
            est, best, conv = tuned_l2(config, observed, key, inputs["ev_generated"])
            out |= {"generated_l2": errors(est), "converged_generated_l2": conv}
            out |= {"l2_per_sample_generated_l2": best, "w_generated_l2": est.w[rows, cols]}
        return out

    return jax.jit(sweeps.map_solver(one_seed, in_axes=(0, None, None)))


def run(config, workdir) -> list[dict]:
    """Runs the augmentation experiment; returns its result records."""
    validate_config(config)
    workdir, results_path = common.prepare_workdir(config, workdir, RESUMABLE)
    done = sweeps.finished(results_path, COORDS)
    root = jax.random.key(config.seed)
    stages = Stages(config)
    gens = {name: generator_stage.Generator(name, config) for name in config.generator.names}
    start = time.time()
    blocks = [
        (beta, m)
        for beta in (float(b) for b in config.model.betas)
        for m in config.sweep.sample_sizes
        if not set(augment_records.cells(config, beta, m)) <= done
    ]
    progress = runtime.Progress("augment: (beta, M) blocks", len(blocks))
    for beta, m in blocks:
        generate.run_block(config, stages, gens, workdir, root, beta, m, done)
        progress.step(f"beta={beta:g} M={m}")
    records = io.read_jsonl(results_path)
    arrays = augment_records.write_npz(workdir / "results.npz", records, config)
    checks = io.read_jsonl(workdir / "metrics.jsonl")
    sections = augment_summary.summary_sections(arrays, checks, config)
    common.write_summary(workdir, "augment", sections, config, time.time() - start)
    logging.info("augment: MSE (all parameters), mean ± s.e. over seeds\n%s", sections[0][1])
    seed0 = _seed0(workdir, records, config, root)
    figures.plot_all(workdir / "figures", arrays, records, checks, config, seed0)
    logging.info("augment: done in %.1fs; outputs in %s", time.time() - start, workdir)
    return records


def _seed0(workdir, records, config, root):
    """beta -> (truth, observed, {generator: spins at its energy-variance checkpoint}) of
    seed 0 at the smallest M, for the energy histograms."""
    m, out = min(config.sweep.sample_sizes), {}
    for beta in (float(b) for b in config.model.betas):
        generated = {}
        for gen in config.generator.names:
            path = generate.generated_path(workdir, beta, m, gen)
            step = [
                r["chosen_step"]
                for r in records
                if (r["beta"], r["num_samples"], r["generator"], r["arm"], r["seed"])
                == (beta, m, gen, "energy_variance", 0)
            ]
            if path.exists() and step:
                cached = np.load(path)
                c = cached["steps"].tolist().index(step[0])
                generated[gen] = cached["spins"][0, c, : max(config.augment.ratios) * m]
        if generated:
            truth, observed, _ = generate.truth_and_data(config, 0, root, beta, m)
            out[beta] = truth, observed, {g: x.astype(np.float32) for g, x in generated.items()}
    return out
