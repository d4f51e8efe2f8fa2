import json

import jax
import numpy as np
import pytest

import isingjax as ij
from configs import augment as augment_config
from isingjax import io, runtime
from isingjax.diffusion import criterion
from isingjax.generators import selection
from isingjax.pipelines import (
    augment,
    augment_generate,
    augment_heldout_summary,
    augment_penalty,
    augment_records,
    diffusion_stage,
)


def test_criterion_picks_the_earliest_checkpoint_from_which_the_match_persists():
    steps = [100, 200, 300, 400]
    # Var_obs = 2, se = 0.1: gaps |v - 2| / 0.1 = 10, 1, 0, 1: within 2 from step 200 on.
    assert criterion.select(steps, [1.0, 2.1, 2.0, 1.9], 2.0, 0.1, tol=2.0) == 200
    # A chance match at step 100 (gap 0.5) that does not persist (gap 10) is not taken.
    assert criterion.select(steps, [2.05, 3.0, 2.1, 1.9], 2.0, 0.1, tol=2.0) == 300
    # With a tighter tolerance the last checkpoint (gap 1) misses it: the smallest gap.
    assert criterion.select(steps, [1.0, 2.1, 2.0, 1.9], 2.0, 0.1, tol=0.5) == 300
    # se = 0.25: gaps 4, 4, 2.4, 1.2: only the last checkpoint is within 2.
    assert criterion.select(steps, [1.0, 3.0, 2.6, 1.7], 2.0, 0.25, tol=2.0) == 400
    # Per-checkpoint standard errors: gaps 0.5, 1, 0, 1 are all within 2.
    se = [1.0, 0.1, 0.1, 0.1]
    assert criterion.select(steps, [2.5, 2.1, 2.0, 1.9], 2.0, se, tol=2.0) == 100
    np.testing.assert_allclose(criterion.gap_in_se([1.0, 3.0], 2.0, [0.5, 2.0]), [2.0, 0.5])


def test_variance_se_matches_hand_computed_values():
    # x = 0, 0, 0, 4: mean 1, central moments m2 = 12 / 4 = 3, m4 = 84 / 4 = 21;
    # Var(s^2) = (21 - 3^2 (4 - 3) / (4 - 1)) / 4 = 4.5.
    np.testing.assert_allclose(criterion.variance_se([0.0, 0.0, 0.0, 4.0]), np.sqrt(4.5))
    # x = 1, -1: m2 = m4 = 1; (1 - 1 * (-1) / 1) / 2 = 1; batched along the last axis.
    np.testing.assert_allclose(criterion.variance_se([[1.0, -1.0], [3.0, 1.0]]), [1.0, 1.0])
    # For Gaussian values the relative s.e. is sqrt(2 / N): at N = 100 about 0.14.
    x = np.random.default_rng(0).normal(size=(200, 100))
    rel = np.asarray(criterion.variance_se(x)) / x.var(axis=-1)
    assert abs(rel.mean() - np.sqrt(2 / 100)) < 0.02


@pytest.mark.parametrize(
    "steps, var_gen, var_obs, match",
    [
        ([], [], 1.0, "non-empty increasing"),
        ([200, 100], [1.0, 1.0], 1.0, "non-empty increasing"),
        ([100], [np.nan], 1.0, "must be finite"),
        ([100], [1.0], 1.0, "must be finite"),  # se = 0 and a gap of 0 / 0
    ],
)
def test_criterion_rejects_bad_input(steps, var_gen, var_obs, match):
    se = 0.0 if match == "must be finite" and var_gen == [1.0] else 0.1
    with pytest.raises(ValueError, match=match):
        criterion.select(steps, var_gen, var_obs, se)


def tiny_config():
    config = augment_config.get_config("quick")
    config.model.n = 6
    config.model.betas = (1.0,)
    config.num_seeds = 2
    config.sweep.sample_sizes = (40,)
    config.augment.ratios = (1, 2)
    config.inference.methods = ("plm", "erasure")
    config.inference.options.erasure.num_iters = 100
    config.diffusion.widths = (16, 32)
    config.diffusion.time_dim = 16
    config.diffusion.ddim_steps = 20
    config.criterion.num_samples = 100
    config.generator.check_samples = 100
    config.masked.widths = (16,)
    for name in ("diffusion", "masked", "autoregressive"):
        config[name].train_steps = 100
        config[name].checkpoint_every = 50
    return config


@pytest.mark.slow
def test_augment_pipeline_end_to_end_and_resume(tmp_path):
    config = tiny_config()
    records = augment.run(config, tmp_path)
    # per seed, plm: observed, l2, 2 arms x 2 ratios; per generator 2 steps x 2 ratios of
    # the grid, energy variance x 2 ratios, held-out, hindsight, generated_l2 -> 6 + 3 * 9;
    # erasure: 5 + 3 * 8.
    assert len(records) == (33 + 29) * 2
    assert all(isinstance(r["converged"], bool) for r in records)
    assert all(r["num_nonfinite"] == 0 for r in records if "num_nonfinite" in r)
    data = np.load(tmp_path / "results.npz")
    assert data["mse_all"].shape == (1, 1, 2, 6, 2)  # beta, M, method, column, seed
    assert data["gen_mse_all"].shape == (1, 1, 2, 3, 5, 2)  # ..., generator, rule column, seed
    assert data["grid_mse_all"].shape == (1, 1, 2, 3, 2, 2, 2)  # ..., checkpoint, ratio, seed
    assert np.isfinite(data["grid_mse_all"]).all()
    columns = list(zip(data["arms"], data["ratios"], strict=True))
    assert np.isnan(data["mse_all"][0, 0, 1, columns.index(("l2", 0))]).all()  # plm only
    # Twice the true data beats the observed data alone, for both estimators.
    observed = data["mse_all"][0, 0, :, columns.index(("observed", 0))].mean(axis=-1)
    oracle = data["mse_all"][0, 0, :, columns.index(("oracle", 2))].mean(axis=-1)
    assert np.all(oracle < observed)

    progress = io.read_jsonl(tmp_path / "metrics.jsonl")
    by_cell = {
        (r["method"], r["generator"], r["arm"], r["ratio"], r["step"], r["seed"]): r
        for r in records
    }
    reaches_confirmation = 0  # picks whose pooled K > 0 passes the margin
    for gen in config.generator.names:
        crit = [r for r in progress if r["kind"] == "checkpoint" and r["generator"] == gen]
        assert sorted((r["step"], r["seed"]) for r in crit) == [
            (s, i) for s in (50, 100) for i in range(2)
        ]
        for method in config.inference.methods:
            for seed in range(2):
                # the energy-variance step follows the rule, applied here step by step
                mine = sorted((c for c in crit if c["seed"] == seed), key=lambda c: c["step"])
                z = [
                    abs(c["var_gen_inferred"] - c["var_obs_inferred"])
                    / np.sqrt(c["var_gen_se"] ** 2 + c["var_obs_se"] ** 2)
                    for c in mine
                ]
                within = [all(v <= config.criterion.tol_se for v in z[i:]) for i in range(2)]
                step = mine[within.index(True) if any(within) else int(np.argmin(z))]["step"]
                ev = by_cell[method, gen, "energy_variance", 2, 0, seed]
                assert ev["chosen_step"] == step
                assert ev["mse_all"] == by_cell[method, gen, "grid", 2, step, seed]["mse_all"]
                # the held-out rule: the best pooled mean of the recorded scores, ties to
                # the smaller K, and K = 0 unless the gain over it exceeds margin_se s.e.;
                # K = 0 is observed only
                heldout = {
                    r["step"]: r
                    for r in progress
                    if (r["kind"], r.get("generator"), r.get("method"), r.get("seed"))
                    == ("heldout", gen, method, seed)
                }
                assert sorted(heldout) == [50, 100]
                assert all(
                    len(r["fold_scores"]) == config.selection.num_folds for r in heldout.values()
                )
                # every estimator by its parameters' distance to plm on the held-out
                # fold: the pooled score is the folds' mean (each a mean over parameters)
                for r in heldout.values():
                    assert r["score"] == "parameter_distance"
                    folds = np.asarray(r["fold_scores"])
                    np.testing.assert_allclose(r["scores"], np.mean(folds, axis=0), rtol=1e-5)
                mean = np.asarray([heldout[s]["scores"] for s in (50, 100)])
                se = np.asarray([heldout[s]["se"] for s in (50, 100)])
                best = np.argwhere(mean == mean.max())
                c, k = min(best, key=lambda ck: (ck[1], ck[0]))
                if k and mean[c, k] - mean[c, 0] <= config.selection.margin_se * se[c, k]:
                    k = 0
                # ... and unless each fold confirms it: the other folds' best cell (same
                # ties) is K > 0 and gains on this fold by > confirm_se * sqrt(F) * se
                folds = np.asarray([heldout[s]["fold_scores"] for s in (50, 100)])  # [C, F, R]
                num_folds = folds.shape[1]
                reaches_confirmation += bool(k)
                for f in range(num_folds):
                    other = np.delete(folds, f, axis=1).mean(axis=1)
                    c2, k2 = min(np.argwhere(other == other.max()), key=lambda ck: (ck[1], ck[0]))
                    gain = folds[c2, f, k2] - folds[c2, f, 0]
                    bar = config.selection.confirm_se * num_folds**0.5 * se[c2, k2]
                    if k and not (k2 and gain > bar):
                        k = 0
                held = by_cell[method, gen, "heldout", 0, 0, seed]
                ratio = (0, 1, 2)[k]
                assert held["chosen_ratio"] == ratio
                source = (
                    by_cell[method, "", "observed", 0, 0, seed]
                    if ratio == 0
                    else by_cell[method, gen, "grid", ratio, (50, 100)[c], seed]
                )
                assert held["mse_all"] == source["mse_all"]
                # hindsight is the grid's (or observed-only's) minimum
                grid = [
                    by_cell[method, gen, "grid", r, s, seed]["mse_all"]
                    for r in (1, 2)
                    for s in (50, 100)
                ]
                candidates = grid + [by_cell[method, "", "observed", 0, 0, seed]["mse_all"]]
                assert by_cell[method, gen, "hindsight", 0, 0, seed]["mse_all"] == min(candidates)
        checks = [r for r in progress if r["kind"] == "fold_check" and r["generator"] == gen]
        assert len(checks) == 2 * 2 * config.selection.num_folds  # steps x seeds x folds
        assert all(np.isfinite(r["copying_statistic"]) for r in checks)
        assert all(("heldout_loglik" in r) == (gen != "ddpm") for r in checks)
        assert all(r["heldout_loglik"] < 0 for r in checks if "heldout_loglik" in r)
        generated = np.load(tmp_path / "generated" / f"beta1_m40_{gen}.npz")["spins"]
        assert generated.shape == (2, 2, 100, 6)  # seeds, checkpoints, max(80, 100), n
        assert set(np.unique(generated)) <= {-1, 1}
    assert reaches_confirmation > 0  # the confirmation above was exercised
    # The recorded s.e. of Var_obs is the sample-variance formula on the observed energies
    # under plm's estimate (computed here in float64 NumPy).
    _, spins0, _ = augment.truth_and_data(config, 0, jax.random.key(config.seed), 1.0, 40)
    inferred = ij.infer(spins0, "plm", **config.inference.options.plm)
    s = np.asarray(spins0, np.float64)
    e = -(0.5 * np.einsum("mi,ij,mj->m", s, np.asarray(inferred.w, np.float64), s))
    e -= s @ np.asarray(inferred.b, np.float64)
    d = e - e.mean()
    m2, m4 = np.mean(d**2), np.mean(d**4)
    se_obs = np.sqrt((m4 - m2**2 * (40 - 3) / (40 - 1)) / 40)
    for r in (c for c in progress if c["kind"] == "checkpoint" and c["seed"] == 0):
        np.testing.assert_allclose(r["var_obs_inferred"], m2, rtol=1e-3)
        np.testing.assert_allclose(r["var_obs_se"], se_obs, rtol=1e-3)
    for name in ("mse_vs_m", "checkpoint_grid", "training", "scatter", "energy_histograms"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    summary = (tmp_path / "summary.md").read_text()
    assert "| 1 | 40 | plm |" in summary and "Wall time:" in summary
    # The held-out rule re-applied to the recorded scores at the run's margin picks what the
    # run picked: the margin table's row repeats the per-M table's held-out columns.
    by_m = augment_heldout_summary.regret_by_m_table(dict(data)).splitlines()[2].split(" | ")
    margins = augment_heldout_summary.margin_table(
        dict(data), progress, config.selection.margin_se, config.selection.confirm_se
    )
    (row,) = [r.split(" | ") for r in margins.splitlines() if "(this run)" in r]
    below = float(by_m[2]) < min(float(x) for x in by_m[3:-4])  # the mean regrets
    assert row[3:] == [by_m[1], by_m[2], "yes" if below else "no", *by_m[-3:]]
    assert "| 40 | 1 | 1 (this run) |" in summary
    assert "At M = 40, does an augmented plm arm beat tuned-L2 plm" in summary
    assert '"tol_se": 2.0' in summary  # the config that made it

    # A rerun in the same workdir recomputes nothing.
    before = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    augment.run(config, tmp_path)
    after = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    assert after == before
    assert "over 2 invocation(s)" in (tmp_path / "summary.md").read_text()

    # The penalty split refits plm on the same spins: its cases with the run's penalties
    # are the run's observed and energy-variance (K = 2 M) arms.
    split = augment_penalty.run(tmp_path)
    cases = {(r["data"], r["penalty"]): r["mse_all"] for r in split}
    assert {r["method"] for r in split} == {"plm"} and len(cases) == 4
    rules = list(zip(data["rule_arms"], data["rule_ratios"], strict=True))
    ev = data["gen_mse_all"][0, 0, 0, 0, rules.index(("energy_variance", 2))].mean()
    np.testing.assert_allclose(cases["augmented", "1/(M+K)"], ev, rtol=1e-3)
    np.testing.assert_allclose(cases["observed", "1/M"], observed[0], rtol=1e-3)
    assert "| 1 | 40 | 80 | plm | augmented | 1/M |" in (tmp_path / "penalty_split.md").read_text()


@pytest.mark.slow
def test_generators_side_by_side_give_the_results_of_one_after_another(tmp_path, monkeypatch):
    config = tiny_config()
    config.inference.methods = ("plm",)
    config.generator.names = ("autoregressive", "masked")
    augment.run(config, tmp_path / "side_by_side")
    monkeypatch.setattr(runtime, "run_concurrently", lambda tasks: [task() for task in tasks])
    augment.run(config, tmp_path / "one_after_another")

    def lines(run, name):  # sorted (their order differs), without the training times
        records = io.read_jsonl(tmp_path / run / name)
        return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in records)

    for name in ("results.jsonl", "metrics.jsonl"):
        assert lines("side_by_side", name) == lines("one_after_another", name)
    assert len(lines("side_by_side", "results.jsonl")) == 2 * (6 + 2 * 9)  # seeds x cells


@pytest.mark.parametrize(
    "config_json, match",
    [(None, "holds no config.json"), ('{"experiment": "guided"}', "holds a 'guided' run")],
)
def test_penalty_split_refuses_a_workdir_of_no_augment_run(tmp_path, config_json, match):
    if config_json is not None:
        (tmp_path / "config.json").write_text(config_json)
    with pytest.raises(ValueError, match=match):
        augment_penalty.run(tmp_path)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("inference.methods", ("plm", "mle"), "config.inference.methods must be"),
        ("model.n", 21, "config.model.n must be <= 20"),
        ("model.bias_scaling", "sqrt", "config.model.bias_scaling must be one of"),
        ("diffusion.train_steps", 125, "must be a multiple of diffusion.checkpoint_every"),
        ("diffusion.sampler", "euler", "config.diffusion.sampler must be one of"),
        ("augment.ratios", (0, 2), "config.augment.ratios must be"),
        ("baselines.holdout_fraction", 1.0, "config.baselines.holdout_fraction must be in"),
        ("criterion.method", "ml", "config.criterion.method must be one of"),
        ("criterion.tol_se", -1.0, "config.criterion.tol_se must be finite and > 0"),
        ("baselines.l2_grid", (0.1, -1.0), "config.baselines.l2_grid must be"),
        ("generator.names", ("ddpm", "gan"), "config.generator.names must be a non-empty"),
        ("generator.names", ("ddpm", "ddpm"), "names from"),
        ("selection.num_folds", 1, "config.selection.num_folds must be an integer in"),
        ("selection.rules", ("heldout",), "must be a tuple from"),
        ("selection.margin_se", -1.0, "config.selection.margin_se must be a finite number"),
        ("selection.confirm_se", -1.0, "config.selection.confirm_se must be a finite number"),
        ("selection.score", "likelihood", "config.selection.score must be one of"),
        ("masked.train_steps", 125, "must be a multiple of masked.checkpoint_every"),
        ("autoregressive.learning_rate", float("nan"), "autoregressive.learning_rate must be"),
        ("autoregressive.hidden", -1, "autoregressive.hidden must be an integer >= 0"),
    ],
)
def test_augment_rejects_bad_config(tmp_path, field, value, match):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        augment.run(config, tmp_path)


def test_penalty_split_takes_the_methods_with_a_per_sample_penalty():
    config = tiny_config()
    config.inference.methods = ("plm", "erasure", "exact_ml")
    c = {m: augment_penalty._penalty_per_sample(config, m) for m in config.inference.methods}
    assert c == {"plm": 1.0, "erasure": 0.0, "exact_ml": 1.0}
    config.inference.options.exact_ml = {"max_iter": 3}  # exact_ml's default: no penalty
    config.inference.options.plm = {"l2": 0.1}  # a fixed penalty: nothing to split
    assert augment_penalty._penalty_per_sample(config, "exact_ml") == 0.0
    assert augment_penalty._penalty_per_sample(config, "plm") == 0.0


def test_augment_rejects_a_negative_penalty_and_non_finite_generated_values(tmp_path):
    config = tiny_config()
    config.inference.options.plm.l2_per_sample = -1.0
    with pytest.raises(ValueError, match="options.plm.l2_per_sample must be finite and >= 0"):
        augment.run(config, tmp_path)
    config = tiny_config()
    with pytest.raises(RuntimeError, match=r"ddpm produced non-finite values .*\[0, 2, 0\]"):
        augment_generate.check_nonfinite(config, np.asarray([0, 2, 0]), "ddpm")
    config.augment.allow_nonfinite = True
    augment_generate.check_nonfinite(config, np.asarray([0, 2, 0]), "ddpm")


def test_results_arrays_cover_every_finished_cell_of_the_workdir(tmp_path):
    config = tiny_config()
    config.inference.methods = ("plm",)  # a resume that narrowed the selection
    record = {"beta": 2.0, "num_samples": 40, "method": "erasure", "generator": ""}
    record |= {"arm": "observed", "ratio": 0, "step": 0, "seed": 1}
    record |= {"mse_all": 0.5, "mse_w": 0.4, "mse_b": 0.1, "converged": True}
    grid = record | {"generator": "masked", "arm": "grid", "ratio": 2, "step": 100}
    arrays = augment_records.write_npz(
        tmp_path / "r.npz", [record, grid | {"mse_all": 0.7}], config
    )
    assert list(arrays["methods"]) == ["plm", "erasure"]  # in inference.METHODS order
    assert list(arrays["betas"]) == [1.0, 2.0]
    assert arrays["mse_all"][1, 0, 1, 0, 1] == 0.5 and arrays["converged"][1, 0, 1, 0, 1] == 1
    assert np.isnan(arrays["mse_all"][0]).all()
    h = list(arrays["generators"]).index("masked")
    assert arrays["grid_steps"][h].tolist() == [50, 100]
    assert arrays["grid_mse_all"][1, 0, 1, h, 1, 1, 1] == 0.7


@pytest.mark.parametrize("method", ["plm", "erasure"])
def test_fits_per_k_equal_fits_with_the_spins_past_k_weighted_zero(method):
    # The grid's and the held-out rule's fits on observed + their K spins only equal the
    # fits of the whole array whose spins past K are weighted 0 (made here directly).
    config = tiny_config()
    truth = ij.sk_model(jax.random.key(0), 6, beta=1.0, bias_std=0.2)
    spins = ij.exact.sample(jax.random.key(1), truth, 2 * 120).reshape(2, 120, 6)  # M + 2M
    fit = diffusion_stage.fit_with_converged_fn(config, method)
    est, converged = jax.jit(lambda d: augment._fit_ratios(config, fit, d, 40))(spins)
    assert est.w.shape == (2, 2, 6, 6) and bool(np.all(converged))
    for a in range(2):
        for r, ratio in enumerate(config.augment.ratios):
            weights = (np.arange(120) < 40 * (1 + ratio)).astype(np.float32)
            ref, _ = jax.jit(fit)(spins[a], weights)
            np.testing.assert_allclose(est.w[a, r], ref.w, atol=2e-4)
            np.testing.assert_allclose(est.b[a, r], ref.b, atol=2e-4)
    held = selection.fold_masks(jax.random.key(2), 40, 2)
    config.selection.score = "own"
    score = augment_generate.heldout_score(config, method)
    assert score == ("screening" if method == "erasure" else "pseudo_likelihood")
    terms = augment.Stages(config).scores(method, 20)(spins[:, :40], held, spins[:, 40:])
    for row in range(2):
        weights = np.concatenate([1 - held[row], np.arange(80) < 40]).astype(np.float32)
        ref, _ = jax.jit(fit)(spins[row], weights)  # K = 2 * m_fit = 40 generated spins
        expected = selection.row_terms(ref, spins[row, :40], score)
        np.testing.assert_allclose(terms[row, 2], expected, rtol=1e-4, atol=1e-3)
    # scored in parameter space: against plm fitted on the held-out rows, per parameter
    config.selection.score = "parameter_distance"
    terms = augment.Stages(config).scores(method, 20)(spins[:, :40], held, spins[:, 40:])
    assert terms.shape == (2, 1 + len(config.augment.ratios), 6 + 15)
    reference = jax.jit(diffusion_stage.fit_fn(config, "plm"))
    iu = np.triu_indices(6, 1)
    for row in range(2):
        weights = np.concatenate([1 - held[row], np.arange(80) < 40]).astype(np.float32)
        est, _ = jax.jit(fit)(spins[row], weights)
        ref = reference(spins[row, :40], held[row])
        diff = [np.asarray(est.b - ref.b), np.asarray(est.w - ref.w)[iu]]
        np.testing.assert_allclose(
            terms[row, 2], -(np.concatenate(diff) ** 2), rtol=1e-4, atol=1e-5
        )
