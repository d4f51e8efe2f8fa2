import numpy as np
import pytest

from configs import augment as augment_config
from isingjax import io
from isingjax.diffusion import criterion
from isingjax.pipelines import augment, augment_penalty


def test_criterion_picks_the_earliest_checkpoint_from_which_the_match_persists():
    steps = [100, 200, 300, 400]
    # Gaps |v / 2 - 1|: 0.5, 0.05, 0.0, 0.05: within 0.1 from step 200 on.
    assert criterion.select(steps, [1.0, 2.1, 2.0, 1.9], 2.0, tol=0.1) == 200
    # A chance match at step 100 that does not persist is not taken.
    assert criterion.select(steps, [2.05, 3.0, 2.1, 1.9], 2.0, tol=0.1) == 300
    # With a tighter tolerance the last checkpoint misses it: the smallest gap.
    assert criterion.select(steps, [1.0, 2.1, 2.0, 1.9], 2.0, tol=0.01) == 300
    assert criterion.select(steps, [1.0, 3.0, 2.6, 1.5], 2.0, tol=0.1) == 400
    np.testing.assert_allclose(criterion.relative_gap([1.0, 3.0], 2.0), [0.5, 0.5])


@pytest.mark.parametrize(
    "steps, var_gen, var_obs, match",
    [
        ([], [], 1.0, "non-empty increasing"),
        ([200, 100], [1.0, 1.0], 1.0, "non-empty increasing"),
        ([100], [np.nan], 1.0, "must be finite"),
        ([100], [1.0], 0.0, "must be finite"),
    ],
)
def test_criterion_rejects_bad_input(steps, var_gen, var_obs, match):
    with pytest.raises(ValueError, match=match):
        criterion.select(steps, var_gen, var_obs)


def tiny_config():
    config = augment_config.get_config("quick")
    config.model.n = 6
    config.model.betas = (1.0,)
    config.num_seeds = 3
    config.sweep.sample_sizes = (40,)
    config.augment.ratios = (1, 2)
    config.inference.methods = ("plm", "erasure")
    config.inference.options.erasure.num_iters = 100
    config.diffusion.widths = (16, 32)
    config.diffusion.time_dim = 16
    config.diffusion.train_steps = 200
    config.diffusion.checkpoint_every = 100
    config.diffusion.ddim_steps = 20
    config.criterion.num_samples = 100
    return config


@pytest.mark.slow
def test_augment_pipeline_end_to_end_and_resume(tmp_path):
    config = tiny_config()
    records = augment.run(config, tmp_path)
    # plm: observed, l2, 3 arms x 2 ratios = 8 cells; erasure: 7 cells; 3 seeds each.
    assert len(records) == (8 + 7) * 3
    data = np.load(tmp_path / "results.npz")
    assert data["mse_all"].shape == (1, 1, 2, 8, 3)  # beta, M, method, column, seed
    columns = list(zip(data["arms"], data["ratios"], strict=True))
    l2 = columns.index(("l2", 0))
    assert np.all(np.isnan(data["mse_all"][0, 0, 1, l2]))  # erasure has no l2 arm
    assert np.isfinite(np.delete(data["mse_all"][0, 0, 1], l2, axis=0)).all()
    assert np.isfinite(data["mse_all"][0, 0, 0]).all()
    # Three times the true data beats the observed data alone, for both estimators.
    observed = data["mse_all"][0, 0, :, columns.index(("observed", 0))].mean(axis=-1)
    oracle = data["mse_all"][0, 0, :, columns.index(("oracle", 2))].mean(axis=-1)
    assert np.all(oracle < observed)
    chosen_l2 = [r["l2_per_sample"] for r in records if r["arm"] == "l2"]
    assert set(chosen_l2) <= set(np.float32(config.baselines.l2_grid).tolist())

    progress = io.read_jsonl(tmp_path / "metrics.jsonl")
    crit = [r for r in progress if r["kind"] == "criterion"]
    assert sorted((r["step"], r["seed"]) for r in crit) == [
        (s, i) for s in (100, 200) for i in range(3)
    ]
    assert all(r["var_obs_inferred"] > 0 and r["var_gen_inferred"] > 0 for r in crit)
    gens = [r for r in progress if r["kind"] == "generator"]
    assert len(gens) == 3
    for r in gens:  # the chosen step is what the rule gives for that seed's records
        mine = sorted((c for c in crit if c["seed"] == r["seed"]), key=lambda c: c["step"])
        expected = criterion.select(
            [c["step"] for c in mine],
            [c["var_gen_inferred"] for c in mine],
            mine[0]["var_obs_inferred"],
            tol=config.criterion.tol,
        )
        assert r["chosen_step"] == expected
    generated = np.load(tmp_path / "generated" / "beta1_m40.npz")["spins"]
    assert generated.shape == (3, 80, 6)
    assert set(np.unique(generated)) <= {-1, 1}
    for name in ("mse_vs_m", "training", "scatter", "energy_histograms"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "| 1 | 40 | plm |" in (tmp_path / "summary.md").read_text()

    # A rerun in the same workdir recomputes nothing.
    before = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    augment.run(config, tmp_path)
    after = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    assert after == before

    # The penalty split refits plm on the same spins: its cases with the run's penalties
    # are the run's observed and diffusion (K = 2 M) arms.
    split = augment_penalty.run(tmp_path)
    cases = {(r["data"], r["penalty"]): r["mse_all"] for r in split}
    assert {r["method"] for r in split} == {"plm"} and len(cases) == 4
    diffusion = data["mse_all"][0, 0, 0, columns.index(("diffusion", 2))].mean()
    np.testing.assert_allclose(cases["augmented", "1/(M+K)"], diffusion, rtol=1e-3)
    np.testing.assert_allclose(cases["observed", "1/M"], observed[0], rtol=1e-3)
    assert "| 1 | 40 | 80 | plm | augmented | 1/M |" in (tmp_path / "penalty_split.md").read_text()


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
        ("diffusion.train_steps", 250, "must be a multiple of diffusion.checkpoint_every"),
        ("diffusion.sampler", "euler", "config.diffusion.sampler must be one of"),
        ("augment.ratios", (0, 2), "config.augment.ratios must be"),
        ("baselines.holdout_fraction", 1.0, "config.baselines.holdout_fraction must be in"),
        ("criterion.method", "ml", "config.criterion.method must be one of"),
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
