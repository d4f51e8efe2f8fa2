import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import guided as guided_config
from isingjax import exact, guidance, io
from isingjax.inference import plm
from isingjax.models import sk_model
from isingjax.pipelines import guided, guided_summary


def tiny_config():
    config = guided_config.get_config("quick")
    config.model.n = 6
    config.num_seeds = 2
    config.data.num_observed = 60
    config.data.num_heldout = 300
    config.inference.methods = ("plm",)
    config.diffusion.widths = (16, 32)
    config.diffusion.time_dim = 16
    config.diffusion.train_steps = 200
    config.diffusion.checkpoint_every = 100
    config.diffusion.ddim_steps = 20
    config.criterion.num_samples = 100
    config.classifier.widths = (16, 16)
    config.classifier.num_steps = 100
    # The pipeline's wiring: the baseline, the classifier (its own training stage) and
    # rejection (weights and a count control); every sampler's own behaviour, gamma = 0
    # included, is tested in test_guidance.py.
    config.guidance.samplers = ("baseline", "classifier", "rejection")
    for name in config.guidance.samplers[1:]:
        config.guidance.gammas[name] = (0.0,) + tuple(config.guidance.gammas[name][1:3])
    return config


def _table_rows(table: str, header_start: str) -> list[dict]:
    """The rows of the markdown table whose header begins with header_start, as dicts."""
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[at].strip("|").split("|")]
    rows = []
    for line in lines[at + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True)))
    return rows


@pytest.mark.slow
def test_guided_pipeline_end_to_end(tmp_path, monkeypatch):
    config = tiny_config()
    traces = collections.Counter()
    sample = guidance.sample_counted

    def counting(name, *args, **kwargs):
        traces[name] += 1
        return sample(name, *args, **kwargs)

    monkeypatch.setattr(guided.guidance, "sample_counted", counting)
    records = guided.run(config, tmp_path)
    # One trace per sampler, whatever the number of gammas (vmapped); the rejection stage
    # also draws the unguided samples of its count control.
    expected_traces = {name: 1 for name in config.guidance.samplers} | {"baseline": 2}
    assert traces == expected_traces
    grid_sizes = sum(len(config.guidance.gammas[s]) for s in config.guidance.samplers)
    assert len(records) == 2 * (1 + grid_sizes)
    k = config.augment.ratio * config.data.num_observed
    guided_records = [r for r in records if r["sampler"] != "observed"]
    # No sampler left the finite range; every cell records convergence; the count control
    # holds exactly as many samples as its sampler used.
    assert all(r["num_nonfinite"] == 0 for r in guided_records)
    assert all(r["converged"] in (0.0, 1.0) for r in records)
    assert all(r["control_count"] == r["accepted"] for r in guided_records)
    rejection = [r for r in guided_records if r["sampler"] == "rejection"]
    assert all("nll_ctrl_plm" in r and "nll_ctrl_fixed_plm" in r for r in rejection)
    assert any(r["accepted"] < k for r in rejection if r["gamma"] > 0)
    assert all(r["accepted"] == k for r in guided_records if r["sampler"] != "rejection")

    data = np.load(tmp_path / "results.npz")
    samplers = list(data["samplers"])
    assert samplers == ["observed", *config.guidance.samplers]
    assert data["tail_fraction"].shape == (len(samplers), 3, 2)
    # gamma = 0 of every sampler gives the baseline's samples bit for bit (seed 0's are
    # saved), hence its measurements (up to float rounding of differently sized batches).
    base = samplers.index("baseline")
    base_spins = np.load(tmp_path / "samples" / "baseline.npz")["spins"][0]
    for name in config.guidance.samplers[1:]:
        saved = np.load(tmp_path / "samples" / f"{name}.npz")
        np.testing.assert_array_equal(saved["spins"][0], base_spins)
        np.testing.assert_array_equal(saved["weights"][0], 1.0)
        i = samplers.index(name)
        for metric in ("tail_fraction", "cross_entropy", "mse_plm", "nll_plm", "val_nll_plm"):
            np.testing.assert_allclose(data[metric][i, 0], data[metric][base, 0], rtol=1e-5)

    # The chosen gamma is the argmin over gamma > 0 of the mean validation NLL, recomputed
    # here from results.jsonl; the summary reports the test numbers at that gamma.
    table = (tmp_path / "summary.md").read_text()
    rows = {r["sampler"]: r for r in _table_rows(table, "| sampler | γ | l2 |") if r["l2"] != "c/M"}
    rows["observed"] = _table_rows(table, "| sampler | γ | l2 |")[0]
    for name in config.guidance.samplers[1:]:
        cells = [r for r in guided_records if r["sampler"] == name]
        gammas = sorted({r["gamma"] for r in cells if r["gamma"] > 0})
        val = [np.mean([r["val_nll_plm"] for r in cells if r["gamma"] == g]) for g in gammas]
        gamma = gammas[int(np.argmin(val))]
        assert rows[name]["γ"] == f"{gamma:g}"
        test = np.mean([r["nll_plm"] for r in cells if r["gamma"] == gamma])
        assert rows[name]["NLL plm"] == f"{test:.4g}"
        assert f"- {name}: " in table and f"→ γ = {gamma:g}" in table
    observed_nll = np.mean([r["nll_plm"] for r in records if r["sampler"] == "observed"])
    assert rows["observed"]["NLL plm"] == f"{observed_nll:.4g}"
    assert "- none" in table  # no flagged cell

    progress = io.read_jsonl(tmp_path / "metrics.jsonl")
    assert sum(r["kind"] == "classifier" for r in progress) == 2
    assert {r["step"] for r in progress if r["kind"] == "criterion"} == {100, 200}
    for name in ("energy_histograms", "tail_kl_vs_gamma", "inference_vs_gamma"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000

    before = (tmp_path / "results.jsonl").read_text()
    guided.run(config, tmp_path)  # a rerun resumes: nothing is recomputed
    assert (tmp_path / "results.jsonl").read_text() == before
    assert traces == expected_traces


def _hand_records():
    """Two seeds; samplers baseline, rejection (gammas 0, 0.5, 1), temperature (0, 0.1)."""
    base = {"accepted": 10.0, "control_count": 10.0, "num_nonfinite": 0.0, "converged": 1.0}
    records = []
    for seed in (0, 1):
        records.append(
            {"sampler": "observed", "gamma": 0.0, "seed": seed, "nll_plm": 6.5, "mse_plm": 0.3}
            | {"val_nll_plm": 6.4, "accepted": 8.0, "num_nonfinite": 0.0, "converged": 1.0}
        )
        records.append(
            {"sampler": "baseline", "gamma": 0.0, "seed": seed, "nll_plm": 6.0}
            | {"mse_plm": 0.2, "val_nll_plm": 6.0}
            | base
        )
        # Rejection: the validation NLL is lowest at gamma = 0 (not allowed: the baseline
        # itself), then at gamma = 1 (mean 5.0) rather than 0.5 (mean 5.1).
        for gamma, val, test, ctrl in (
            (0.0, 4.0, 6.0, 6.0),
            (0.5, 5.0 + 0.2 * seed, 5.5, 6.0),
            (1.0, 5.0, 6.1 + 0.2 * seed, 6.0 + 0.6 * seed),
        ):
            records.append(
                {"sampler": "rejection", "gamma": gamma, "seed": seed, "val_nll_plm": val}
                | {"nll_plm": test, "mse_plm": 0.25, "nll_ctrl_plm": ctrl, "mse_ctrl_plm": 0.2}
                | base
                | {"accepted": 4.0 + seed, "control_count": 4.0 + seed}
                | ({"num_nonfinite": 2.0} if (gamma, seed) == (0.5, 1) else {})
                | ({"converged": 0.0} if (gamma, seed) == (1.0, 0) else {})
            )
        for gamma in (0.0, 0.1):
            records.append(
                {"sampler": "temperature", "gamma": gamma, "seed": seed, "val_nll_plm": 6.0}
                | {"nll_plm": 6.0 - 0.1 * gamma * (1 + seed), "mse_plm": 0.2}
                | base
            )
    return records


def _hand_config():
    config = tiny_config()
    config.guidance.samplers = ("baseline", "rejection", "temperature")
    config.guidance.gammas.rejection = (0.0, 0.5, 1.0)
    config.guidance.gammas.temperature = (0.0, 0.1)
    return config


def test_summary_table_by_hand(tmp_path):
    config = _hand_config()
    arrays = guided_summary.write_npz(tmp_path / "r.npz", _hand_records(), config)
    np.testing.assert_array_equal(guided_summary.chosen_gamma_index(arrays, config), [0, 0, 2, 1])
    table = guided_summary.summary_table(arrays, config)
    assert table.startswith("Generator: ddpm")  # the generator the samplers steer
    rows = _table_rows(table, "| sampler | γ | l2 |")
    default = {r["sampler"]: r for r in rows[: len(rows) // 2]}  # then the l2 = c/M rows
    assert [r["l2"] for r in rows] == ["c/M"] + ["c/(M+K)"] * 3 + ["c/M"] * 4
    rejection = default["rejection"]
    assert rejection["γ"] == "1"
    # Test NLL at gamma = 1: (6.1 + 6.3) / 2; paired Δ from the baseline (6.0, 6.0):
    # (0.1, 0.3) -> +0.2 ± std(ddof=1)/sqrt(2) = 0.1; from the count control (6.0, 6.6):
    # (0.1, -0.3) -> -0.1 ± 0.2.
    assert rejection["NLL plm"] == "6.2"
    assert rejection["ΔNLL plm"] == "+0.2 ± 0.1"
    assert rejection["ΔNLL plm vs ctrl"] == "-0.1 ± 0.2"
    assert rejection["ΔMSE plm"] == "+0.05 ± 0"
    # Temperature uses all K samples: its count control is the baseline arm, Δ equal.
    temperature = default["temperature"]
    assert temperature["γ"] == "0.1"
    assert temperature["ΔNLL plm"] == temperature["ΔNLL plm vs ctrl"] == "-0.015 ± 0.005"
    assert default["observed"]["ΔNLL plm"] == "+0.5 ± 0"
    samples = {r["sampler"]: r for r in _table_rows(table, "| sampler | γ | samples used |")}
    assert samples["rejection"]["samples used"] == "4.5"
    assert samples["rejection"]["flags"] == "fit not converged: 1/2 seeds"
    assert "- rejection γ=0.5: non-finite samples: 2 (1 seeds)" in table
    assert "- rejection: γ=0: –, γ=0.5: 5.1000, γ=1: 5.0000 → γ = 1" in table


def test_nonfinite_cells_are_an_error_unless_allowed():
    records = _hand_records()
    with pytest.raises(FloatingPointError, match="rejection γ=0.5 seed 1: 2"):
        guided_summary.check_nonfinite(records, allow=False)
    guided_summary.check_nonfinite(records, allow=True)
    guided_summary.check_nonfinite([r for r in records if not r.get("num_nonfinite")], False)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("guidance.samplers", ("baseline", "cfg"), "config.guidance.samplers must be"),
        ("model.betas", (0.5, 1.0), "config.model.betas must be a single coupling strength"),
        ("data.num_observed", 5, "config.data.num_observed must be an integer >= 10"),
        ("classifier.quantile", 1.5, r"config.classifier.quantile must be in \(0, 1\)"),
        ("model.n", 24, "config.model.n must be <= 20"),
        ("data.num_validation", 0, "config.data.num_validation must be an integer >= 1"),
        ("guidance.allow_nonfinite", None, "config.guidance.allow_nonfinite must be True or False"),
    ],
)
def test_guided_rejects_bad_config(tmp_path, field, value, match):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        guided.run(config, tmp_path)


def test_guided_rejects_a_nonpositive_max_norm(tmp_path):
    config = tiny_config()
    config.guidance.options.max_norm = 0.0
    with pytest.raises(ValueError, match="config.guidance.options.max_norm must be finite and > 0"):
        guided.run(config, tmp_path)


def test_guided_rejects_a_negative_gamma(tmp_path):
    config = tiny_config()
    config.guidance.gammas.rejection = (0.0, -1.0)
    with pytest.raises(ValueError, match="config.guidance.gammas must be a non-empty tuple"):
        guided.run(config, tmp_path)


def test_fixed_penalty_fits_hold_l2_at_its_observed_only_value():
    config = tiny_config()  # plm with l2_per_sample c = 1.0, M = 60
    spins = exact.sample(jax.random.key(0), sk_model(jax.random.key(1), 6, 1.0), 100)
    weights = jnp.ones(100).at[80:].set(0.0)
    modes, fit = guided._fit_fns(config)["plm"]
    assert modes == ("", "fixed_")
    estimates, converged = fit(spins, weights)
    for i, total in enumerate((80, 60)):  # c / (total weight), then c / M
        reference, info = plm.fit(spins, weights, l2=1.0 / total)
        np.testing.assert_allclose(estimates.w[i], reference.w, rtol=1e-5, atol=1e-6)
        assert bool(converged[i]) == bool(info["converged"])
    assert float(jnp.max(jnp.abs(estimates.w[0] - estimates.w[1]))) > 1e-4
