import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

import isingjax as ij
from configs import retina as retina_config
from isingjax import io
from isingjax.pipelines import common, retina
from isingjax.pipelines import retina_data as data
from isingjax.pipelines import retina_fit as fit_checks
from isingjax.pipelines import retina_reconstruct as recon


def labelled_raster(repeats=12, bins=5, spare=6):
    """[repeats, bins, neurons] ±1 whose first 4 neurons spell the repeat number in binary
    (so every pattern tells which repeat it came from) plus `spare` random neurons."""
    code = (np.arange(repeats)[:, None] >> np.arange(4)) & 1  # [repeats, 4]
    label = np.broadcast_to(code[:, None, :], (repeats, bins, 4))
    rest = np.random.default_rng(0).random((repeats, bins, spare)) < 0.3
    return (2 * np.concatenate([label, rest], axis=2) - 1).astype(np.int8)


def repeat_of(patterns):
    return np.sum((np.asarray(patterns)[..., :4] > 0) << np.arange(4), axis=-1)


def small_config(n=10):
    config = retina_config.get_config("quick")
    config.model.n = n
    config.num_seeds = 3
    config.data.neurons = "indices"
    config.data.indices = tuple(range(n))
    config.data.test_fraction = 0.25
    config.data.validation_fraction = 0.2
    config.sweep.sample_sizes = (10, 30)
    config.reconstruct.hidden = (1, 2)
    config.reconstruct.num_patterns = 10
    config.evasion.num_test = 8
    config.evasion.flips = (0, 1, 2, 4)
    config.plots.hidden = 2
    return config


def test_split_is_by_repeat_and_patterns_come_from_their_split():
    config, raster = small_config(), labelled_raster()
    out = data.select(config, raster, jax.random.key(0))
    num_test, num_val, num_train = data.split_sizes(config, 12)
    assert (num_test, num_val, num_train) == (3, 2, 7)
    for s in range(config.num_seeds):
        parts = [set(out[f"{p}_repeats"][s].tolist()) for p in ("train", "validation", "test")]
        assert [len(p) for p in parts] == [7, 2, 3]
        assert set.union(*parts) == set(range(12)) and sum(map(len, parts)) == 12
        assert set(repeat_of(out["train"][s])) <= parts[0]
        expected = np.repeat(sorted(parts[1]), 5).tolist()
        assert sorted(repeat_of(out["validation"][s]).tolist()) == expected
        assert set(repeat_of(out["test"][s])) == parts[2]
        assert set(repeat_of(out["recon"][s])) <= parts[2]
        assert out["train"].shape[1] == 30  # max(M), drawn without replacement:
        assert len({tuple(x) for x in out["train"][s]}) <= 30
    # different seeds split differently; the same seed is the same split
    assert any(set(out["test_repeats"][0]) != set(out["test_repeats"][s]) for s in range(1, 3))
    again = data.select(config, raster, jax.random.key(0))
    np.testing.assert_array_equal(again["train"], out["train"])


def test_training_patterns_are_distinct_bins():
    # Every bin of the labelled raster is unique once its bin index is also spelled.
    repeats, bins = 8, 4
    raster = labelled_raster(repeats, bins)
    raster[:, :, 4:6] = (2 * ((np.arange(bins)[:, None] >> np.arange(2)) & 1) - 1)[None]
    config = small_config()
    config.data.test_fraction = config.data.validation_fraction = 0.125
    config.sweep.sample_sizes = (24,)  # all 6 training repeats x 4 bins
    config.reconstruct.num_patterns = 4
    out = data.select(config, raster, jax.random.key(3))
    for s in range(config.num_seeds):
        assert len({tuple(x) for x in out["train"][s]}) == 24


def test_neuron_rules():
    raster = labelled_raster(spare=12)
    config = small_config(n=5)
    config.data.neurons = "top_rate"
    out = data.select(config, raster, jax.random.key(1))
    for s in range(config.num_seeds):
        train = raster[out["train_repeats"][s]].reshape(-1, raster.shape[2])
        counts = np.sum(train > 0, axis=0)
        chosen = out["neurons"][s]
        assert counts[chosen].min() >= np.delete(counts, chosen).max()
    config.data.neurons = "random"
    out = data.select(config, raster, jax.random.key(1))
    assert all(len(set(x)) == 5 and np.all(np.diff(x) > 0) for x in out["neurons"])
    assert len({tuple(x) for x in out["neurons"]}) > 1


def test_hidden_neurons_are_firing_ones_and_nested():
    raster = labelled_raster()
    raster[:, :, 7] = -1  # never fires
    config = small_config()
    config.reconstruct.hidden = (1, 4, 9)
    out = data.select(config, raster, jax.random.key(2))
    assert out["hidden"].shape == (3, 10, 9)
    assert not np.any(out["hidden"] == 7)
    assert all(len(set(row)) == 9 for row in out["hidden"].reshape(-1, 9))
    config.reconstruct.hidden = (10,)
    with pytest.raises(common.ConfigError, match="fewer than the largest k"):
        data.select(config, raster, jax.random.key(2))


def test_data_checks_name_the_limit():
    config = small_config()
    config.sweep.sample_sizes = (10, 1000)
    with pytest.raises(common.ConfigError, match="at most the 35 bins of the 7 training"):
        data.check_data(config, (12, 5, 10))
    config = small_config(n=11)
    config.data.indices = tuple(range(11))
    with pytest.raises(common.ConfigError, match="model.n must be <= the raster's 10"):
        data.check_data(config, (12, 5, 10))


def brute_force(params, spins, hidden):
    """MAP completion and P(s_i = +1 | rest) by enumerating every full state with the
    visible spins clamped (NumPy, float64)."""
    w, b = np.asarray(params.w, np.float64), np.asarray(params.b, np.float64)
    states = np.array(list(itertools.product([-1.0, 1.0], repeat=len(hidden))))
    full = np.repeat(np.asarray(spins, np.float64)[None], len(states), axis=0)
    full[:, hidden] = states
    log_w = 0.5 * np.einsum("si,ij,sj->s", full, w, full) + full @ b
    p = np.exp(log_w - log_w.max())
    p /= p.sum()
    return states[np.argmax(log_w)], p @ (states > 0)


@pytest.mark.parametrize("hidden", [[3], [0, 5], [1, 4, 6], [7, 2, 0, 5, 3]])
def test_reconstruction_matches_brute_force(hidden):
    params = ij.sk_model(jax.random.key(5), 8, 1.5, 0.5)
    spins = jax.random.rademacher(jax.random.key(6), (8,), jnp.float32)
    best, p = recon.complete(params, spins, jnp.asarray(hidden))
    ref_best, ref_p = brute_force(params, spins, hidden)
    np.testing.assert_array_equal(np.asarray(best), ref_best)
    np.testing.assert_allclose(np.asarray(p), ref_p, rtol=1e-4, atol=1e-6)
    # the hidden spins' values do not enter
    best2, p2 = recon.complete(
        params, spins.at[jnp.asarray(hidden)].multiply(-1), jnp.asarray(hidden)
    )
    np.testing.assert_array_equal(best, best2)
    np.testing.assert_allclose(p, p2, rtol=1e-6)


def test_scores_hand_computed():
    truth = jnp.array([1, 1, -1, -1, -1, -1.0])
    said = jnp.array([1, -1, 1, -1, -1, -1.0])
    p = jnp.array([0.9, 0.2, 0.6, 0.1, 0.1, 0.3])
    out = recon.scores(truth, said, p)
    # tp 1, fn 1, fp 1, tn 3
    np.testing.assert_allclose(out["accuracy"], 4 / 6)
    np.testing.assert_allclose(out["balanced_accuracy"], 0.5 * (1 / 2 + 3 / 4))
    np.testing.assert_allclose(out["f1"], 2 / (2 + 1 + 1))
    ref = -np.mean(np.log([0.9, 0.2, 0.4, 0.9, 0.9, 0.7]))
    np.testing.assert_allclose(out["log_loss"], ref, rtol=1e-6)
    silent = recon.scores(-jnp.ones(4), -jnp.ones(4))
    assert np.isnan(silent["f1"]) and np.isnan(silent["balanced_accuracy"])


def test_statistics_match_numpy():
    spins = np.asarray(jax.random.rademacher(jax.random.key(7), (300, 5), jnp.float32))
    out = fit_checks.statistics(jnp.asarray(spins))
    sigma = (spins + 1) / 2
    d = sigma - sigma.mean(0)
    pairs = list(itertools.combinations(range(5), 2))
    triples = list(itertools.combinations(range(5), 3))
    np.testing.assert_allclose(out["rates"], sigma.mean(0), atol=1e-6)
    np.testing.assert_allclose(
        out["corr"], [np.mean(d[:, i] * d[:, j]) for i, j in pairs], atol=1e-6
    )
    ref3 = [np.mean(d[:, i] * d[:, j] * d[:, k]) for i, j, k in triples]
    np.testing.assert_allclose(out["corr3"], ref3, atol=1e-6)
    np.testing.assert_allclose(out["pk"], np.bincount(sigma.sum(1).astype(int), minlength=6) / 300)


def test_config_checks():
    config = retina_config.get_config()
    config.fit.methods = ("plm", "exact_ml")  # n = 40
    with pytest.raises(common.ConfigError, match="exact_ml needs model.n <= 20"):
        retina.validate_config(config)
    config = retina_config.get_config()
    config.evasion.num_test = config.reconstruct.num_patterns + 1
    with pytest.raises(common.ConfigError, match="evasion.num_test"):
        retina.validate_config(config)
    config = retina_config.get_config()
    config.plots.hidden = 3
    with pytest.raises(common.ConfigError, match="plots.hidden must be one of"):
        retina.validate_config(config)
    config = retina_config.get_config()
    config.data.neurons = "indices"
    with pytest.raises(common.ConfigError, match="model.n distinct integers"):
        retina.validate_config(config)
    retina.validate_config(retina_config.get_config())
    retina.validate_config(retina_config.get_config("quick"))


def test_missing_data_file_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(io.DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ISINGJAX_DATA.*10.15479/AT:ISTA:61"):
        retina.run(retina_config.get_config("quick"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def tiny_config(path):
    config = small_config(n=6)
    config.data.path = str(path)
    config.num_seeds = 2
    config.sweep.sample_sizes = (150,)  # of the 180 bins of the 9 training repeats
    config.augment.ratios = (1,)
    config.fit.methods = ("plm", "exact_ml")
    config.fit.num_samples = 512
    config.sampler.burn_in = 20
    config.baselines.l2_grid = (0.3, 3.0)
    config.diffusion.widths = (16,)
    config.diffusion.time_dim = 8
    config.diffusion.train_steps = 100
    config.diffusion.checkpoint_every = 50
    config.diffusion.ddim_steps = 10
    config.criterion.num_samples = 100
    return config


@pytest.mark.slow
def test_merged_patterns_give_the_fits_over_all_rows():
    """The plm fits of a block run over distinct patterns weighted by their counts; they
    are the fits over every row (the arms' estimates and the tuned penalties)."""
    from isingjax.inference import plm
    from isingjax.pipelines import augment

    config = small_config(6)
    config.augment.ratios = (1, 2)
    m, root = 40, jax.random.key(3)
    rng = np.random.default_rng(1)
    sparse = lambda *shape: 2.0 * (rng.random(shape) < 0.15) - 1.0  # noqa: E731
    observed, generated = sparse(3, m, 6), sparse(3, 2 * m, 6)
    merged = retina.merged_fit_inputs(config, root, m, observed, generated)
    assert merged["observed_rows"].shape[1] < m  # repeats were merged
    assert merged["augmented_rows"].shape[:2] == (3, 2)
    fit = lambda x, w=None: plm.fit(jnp.asarray(x), None if w is None else jnp.asarray(w))[0]  # noqa: E731
    close = lambda a, b: np.testing.assert_allclose(a.w, b.w, atol=2e-3)  # noqa: E731
    # the seed with the fewest distinct patterns: its rows are padded (weight 0)
    s = int(np.argmin(np.sum(merged["observed_weights"][..., 0] > 0, axis=1)))
    assert merged["observed_weights"][s, -1, 0] == 0
    rows, weights = merged["observed_rows"][s], merged["observed_weights"][s]
    close(fit(rows, weights[:, 0]), fit(observed[s]))
    for i, r in enumerate(config.augment.ratios):
        both = np.concatenate([observed[s], generated[s, : r * m]])
        rows, weights = merged["augmented_rows"][s, i], merged["augmented_weights"][s, i]
        assert weights.sum() == len(both)
        close(fit(rows, weights[:, 0]), fit(both))
    key = jax.random.fold_in(data.keys(root, jnp.int32(s))["l2"], m)
    held = np.asarray(augment.heldout_mask(config, m, key)) > 0
    for name, extra_rows in (("l2", observed[s, :0]), ("diffusion_l2", generated[s])):
        rows, weights = merged[f"{name}_rows"][s], merged[f"{name}_weights"][s]
        fitting = np.concatenate([observed[s][~held], extra_rows])
        for row, (w_fit, w_held) in zip(rows, weights, strict=True):
            count = lambda x, row=row: np.sum(np.all(x == row, axis=1))  # noqa: E731
            if w_fit + w_held > 0:  # not padding: the row's copies in each part
                assert (w_fit, w_held) == (count(fitting), count(observed[s][held]))
    for name, extra in (("l2", None), ("diffusion_l2", jnp.asarray(generated[s]))):
        rows, weights = merged[f"{name}_rows"][s], merged[f"{name}_weights"][s]
        est, best, _ = augment.tuned_l2_weighted(config, rows, weights[:, 0], weights[:, 1], m)
        est_all, best_all, _ = augment.tuned_l2(config, jnp.asarray(observed[s]), key, extra)
        assert best == best_all
        close(est, est_all)


def test_pipeline_end_to_end_on_a_synthetic_raster_and_resume(tmp_path):
    truth = ij.sk_model(jax.random.key(8), 8, 1.0, 0.0)
    truth = ij.IsingParams(w=truth.w, b=truth.b - 1.0)  # sparse activity, like spikes
    spins = np.asarray(ij.exact.sample(jax.random.key(9), truth, 16 * 20))
    bint = ((spins + 1) / 2).astype(np.uint8).reshape(16, 20, 8).transpose(0, 2, 1)
    scipy.io.savemat(tmp_path / "raster.mat", {"bint": bint})
    config = tiny_config(tmp_path / "raster.mat")
    records = retina.run(config, tmp_path / "run")
    # fit: test, training patterns, independent, plm, exact_ml; recon: 8 arms x 2 k;
    # attack: the 5 model arms
    assert len(records) == (5 + 8 * 2 + 5) * 2
    for name in ("config.json", "split.json", "results.npz", "summary.md"):
        assert (tmp_path / "run" / name).exists()
    for name in ("pk", "correlations", "reconstruction_vs_k", "reconstruction_vs_m", "attacks"):
        assert (tmp_path / "run" / "figures" / f"{name}.png").exists()
    arrays = np.load(tmp_path / "run" / "results.npz")
    assert arrays["neurons"].shape == (2, 6)
    assert not set(arrays["train_repeats"][0]) & set(arrays["test_repeats"][0])
    a = list(arrays["arms"])
    # the all-silent baseline's accuracy is the silent fraction; its balanced accuracy 1/2
    np.testing.assert_allclose(
        arrays["map_accuracy"][:, a.index("silent")],
        1 - arrays["marginal_spike_fraction"][:, a.index("plm")],
    )
    np.testing.assert_allclose(arrays["map_balanced_accuracy"][:, a.index("silent")], 0.5)
    assert np.all(np.isfinite(arrays["map_balanced_accuracy"][:, a.index("plm")]))
    # DDPM inpainting predicts per neuron: its most probable and marginal scores coincide
    inpaint = a.index("inpaint")
    assert np.all(np.isfinite(arrays["marginal_log_loss"][:, inpaint]))
    np.testing.assert_array_equal(
        arrays["map_accuracy"][:, inpaint], arrays["marginal_accuracy"][:, inpaint]
    )
    # the Ising fits beat independent neurons on held-out pseudo-likelihood of this
    # pairwise-coupled raster
    fa = list(arrays["fit_arms"])
    assert np.all(
        arrays["fit_test_pnll"][fa.index("exact_ml")]
        < arrays["fit_test_pnll"][fa.index("independent")]
    )
    # the decoder under attack: k* = 0 exactly for the wrong predictions, so certified
    # accuracy at k = 0 is the clean accuracy, as is every attack's at zero budget; FGSM
    # is the exact worst case of a linear conditional, which PGD cannot beat
    clean = arrays["attack_clean_accuracy"]
    assert np.all(np.isfinite(clean)) and clean.shape == (1, 5, 2)
    np.testing.assert_allclose(arrays["attack_certified_accuracy"][..., 0], clean, atol=1e-6)
    for attack in ("fgsm", "pgd"):
        np.testing.assert_allclose(arrays[f"attack_{attack}_accuracy"][..., 0], clean, atol=1e-6)
    assert np.all(arrays["attack_pgd_accuracy"] >= arrays["attack_fgsm_accuracy"] - 1e-6)
    assert np.all(np.diff(arrays["attack_certified_accuracy"], axis=-1) <= 0)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "Is the Ising model any good" in summary and "Paired differences" in summary
    assert "The decoder under attack" in summary and "Paired certified accuracy" in summary
    again = retina.run(config, tmp_path / "run")  # resumes: nothing recomputed
    assert again == records
    config.seed = 1
    with pytest.raises(common.ConfigError, match="holds the results of another config"):
        retina.run(config, tmp_path / "run")


REAL = io.Path("/work/shared/data/salamander_retina") / io.RETINA_FILE


def _real_file():
    import os

    env = os.environ.get(io.DATA_ENV)
    for path in ([io.Path(env) / io.RETINA_FILE] if env else []) + [REAL]:
        if path.exists():
            return path
    return None


@pytest.mark.skipif(_real_file() is None, reason="the retina raster is not present")
def test_real_file_loads_and_splits_by_repeat():
    raster = io.load_raster(_real_file())
    assert raster.shape == (297, 953, 160)  # the published layout, transposed to bins-major
    config = retina_config.get_config()
    config.num_seeds = 2
    out = data.select(config, raster, jax.random.key(0))
    assert out["neurons"].shape == (2, 40) and out["train"].shape == (2, 8000, 40)
    for s in range(2):
        parts = [set(out[f"{p}_repeats"][s].tolist()) for p in ("train", "validation", "test")]
        assert set.union(*parts) == set(range(297)) and sum(map(len, parts)) == 297
    assert set(np.unique(out["train"])) <= {-1.0, 1.0}


def test_recon_table_marks_unconverged_fits_and_nonfinite_generators():
    from isingjax.pipelines import retina_summary

    shape = (1, len(retina_summary.RECON_ARMS), 1, 2)  # M, arm, k, seed
    arrays = {
        "sample_sizes": np.asarray([100]),
        "hidden": np.asarray([4]),
        "arms": np.asarray(retina_summary.RECON_ARMS),
        "map_f1": np.full(shape, 0.25),
        "converged": np.ones(shape),
        "num_nonfinite": np.zeros(shape),
    }
    arms = list(retina_summary.RECON_ARMS)
    arrays["converged"][0, arms.index("plm"), 0, 1] = 0
    arrays["num_nonfinite"][0, arms.index("inpaint"), 0, 0] = 3
    row = retina_summary.recon_table(arrays, "map_f1").splitlines()[2].split(" | ")[2:]
    cells = dict(zip(arms, row, strict=True))
    assert cells["plm"] == "0.250 ± 0.000†"
    assert cells["inpaint"].rstrip(" |") == "0.250 ± 0.000‡"
    assert cells["l2"] == "0.250 ± 0.000"
