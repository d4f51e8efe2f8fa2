import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import sample as sample_config
from isingjax.pipelines import sample

ROOT = Path(__file__).resolve().parents[1]


def tiny_config():
    config = sample_config.get_config("quick")
    config.model.n = 6
    config.model.betas = (0.5, 1.6)
    config.num_seeds = 2
    config.sampler.num_samples = 256
    config.sampler.num_chains = 16
    config.sampler.burn_in = 20
    config.sampler.num_temps = 3
    return config


def test_sample_pipeline_end_to_end_and_resume(tmp_path):
    config = tiny_config()
    records = sample.run(config, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "results.jsonl", "results.npz"}
    assert (tmp_path / "figures" / "energy_histograms.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "config.json").read_text())["model"]["n"] == 6
    assert [(r["beta"], r["seed"]) for r in records] == [(0.5, 0), (0.5, 1), (1.6, 0), (1.6, 1)]
    assert [r["sampler"] for r in records][-1] == "parallel_tempering"
    for r in records:
        np.testing.assert_allclose(sum(r["hist_exact"]), 1.0, atol=1e-5)
        np.testing.assert_allclose(sum(r["hist_mcmc"]), 1.0, atol=1e-5)
        # 256 samples of 64 states: moment errors of the order of 1/sqrt(256) like i.i.d. draws.
        assert r["mcmc_means_max"] < 0.35 and r["iid_means_max"] < 0.35
    assert "| 1.6 | parallel tempering |" in (tmp_path / "summary.md").read_text()
    data = np.load(tmp_path / "results.npz")
    assert data["mcmc_kl"].shape == (2, 2) and data["hist_exact"].shape == (2, 2, sample.NUM_BINS)
    np.testing.assert_array_equal(data["betas"], [0.5, 1.6])

    # Drop the last cell as an interrupted run would, and resume: only it is recomputed,
    # and it comes out the same (same key per seed).
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    resumed = sample.run(config, tmp_path)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4
    # Only float rounding may differ (a batch of one seed instead of two).
    assert resumed[-1]["sampler"] == records[-1]["sampler"]
    for key, value in records[-1].items():
        if key != "sampler":
            np.testing.assert_allclose(resumed[-1][key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    # A rerun may narrow the betas (the finished cells are reused) but not change anything
    # else: that would mix the results of two configs.
    narrower = tiny_config()
    narrower.model.betas = (1.6,)
    assert [(r["beta"], r["seed"]) for r in sample.run(narrower, tmp_path)] == [(1.6, 0), (1.6, 1)]
    changed = tiny_config()
    changed.sampler.burn_in = 21
    with pytest.raises(ValueError, match=r"another config \(sampler.burn_in: 20 -> 21\)"):
        sample.run(changed, tmp_path)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("model.n", 1, "config.model.n must be an integer >= 2"),
        ("num_seeds", 0, "config.num_seeds must be an integer >= 1"),
        ("model.betas", (0.5, float("nan")), "config.model.betas must be a non-empty tuple"),
        ("model.bias_std", -1.0, "config.model.bias_std must be finite and >= 0"),
    ],
)
def test_sample_pipeline_rejects_bad_config(tmp_path, field, value, match):
    config = tiny_config()
    section, _, name = field.rpartition(".")
    setattr(config[section] if section else config, name, value)
    with pytest.raises(ValueError, match=match):
        sample.run(config, tmp_path)


def _main(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "main.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("[a-z]*.py")))
def test_main_loads_every_config_file(name, tmp_path):
    """python experiments/main.py --config=configs/<name>.py finds the config and its
    imports (the adversarial config builds on the augment one) wherever it runs from."""
    result = _main(f"--config=configs/{name}.py", "--config.no_such_key=1", f"--workdir={tmp_path}")
    assert "unknown config field 'no_such_key'" in result.stderr, result.stderr[-2000:]


def test_main_rejects_a_mistyped_config_key(tmp_path):
    result = _main(
        "--config=configs/sample.py:quick", "--config.model.nn=5", f"--workdir={tmp_path}"
    )
    assert result.returncode != 0
    assert "unknown config field 'nn' in --config.model.nn=5" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "override, match",
    [
        ("--config.modl.n=3", 'Did you mean "model"'),
        ("--config.model.n=abc", "invalid literal for int"),
    ],
)
def test_main_reports_bad_overrides_in_one_line(tmp_path, override, match):
    result = _main("--config=configs/sample.py:quick", override, f"--workdir={tmp_path}")
    assert result.returncode != 0 and match in result.stderr
    assert "Traceback" not in result.stderr


def test_main_reports_a_refused_config_value_and_workdir_in_one_line(tmp_path):
    quick = "--config=configs/sample.py:quick"
    result = _main(quick, "--config.model.n=1", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "error: config.model.n must be an integer >= 2, got 1" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "config.json").write_text('{"experiment": "inverse"}')
    result = _main(quick, f"--workdir={tmp_path}")
    assert result.returncode != 0 and "holds the results of another config (" in result.stderr
    assert "experiment: 'inverse' -> 'sample'" in result.stderr
    assert "Traceback" not in result.stderr


def test_main_reports_a_missing_config_file(tmp_path):
    result = _main("--config=configs/nothere.py", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "config file 'configs/nothere.py' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_main_rejects_an_unknown_variant(tmp_path):
    result = _main("--config=configs/sample.py:huge", f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert "unknown variant 'huge'" in result.stderr


def test_sample_summary_table_matches_hand_computed_cells():
    config = tiny_config()
    config.model.betas = (0.5,)
    base = {"beta": 0.5, "sampler": "metropolis", "min_swap_rate": float("nan")}
    values = [
        dict(acceptance_rate=0.6, autocorr_time=1.0, mcmc_means_max=0.1, iid_means_max=0.2),
        dict(acceptance_rate=0.8, autocorr_time=3.0, mcmc_means_max=0.3, iid_means_max=0.2),
    ]
    records = []
    for seed, v in enumerate(values):
        r = base | v | {"seed": seed}
        r |= {f"{s}_{k}": 1.0 for s in ("mcmc", "iid") for k in ("corr_max", "kl", "energy_tv")}
        records.append(r)
    lines = sample.summary_table(records, config).splitlines()
    assert lines[0].startswith("| β | sampler | acceptance | τ_int (records) | min swap rate |")
    assert len(lines[1].split("|")) == len(lines[0].split(" | ")) + 2  # one --- per column
    # acceptance: mean 0.7, s.e. 0.1; tau: 2 ± 1; max |Δ mean|: 0.2 ± 0.1 / 0.2 ± 0.
    assert lines[2].startswith("| 0.5 | metropolis | 0.7 ± 0.1 | 2 ± 1 | – | 0.2 ± 0.1 / 0.2 ± 0 |")
