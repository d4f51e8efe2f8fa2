import collections

import numpy as np
import pytest

from configs import guided as guided_config
from isingjax import guidance, io
from isingjax.pipelines import guided


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
    for name in guidance.SAMPLERS[1:]:
        config.guidance.gammas[name] = (0.0,) + tuple(config.guidance.gammas[name][1:3])
    return config


@pytest.mark.slow
def test_guided_pipeline_end_to_end(tmp_path, monkeypatch):
    config = tiny_config()
    traces = collections.Counter()
    sample = guidance.sample

    def counting(name, *args, **kwargs):
        traces[name] += 1
        return sample(name, *args, **kwargs)

    monkeypatch.setattr(guided.guidance, "sample", counting)
    records = guided.run(config, tmp_path)
    # One trace per sampler, whatever the number of gammas (vmapped).
    assert traces == {name: 1 for name in guidance.SAMPLERS}
    grid_sizes = sum(len(config.guidance.gammas[s]) for s in guidance.SAMPLERS)
    assert len(records) == 2 * (1 + grid_sizes)
    data = np.load(tmp_path / "results.npz")
    samplers = list(data["samplers"])
    assert samplers == ["observed", *guidance.SAMPLERS]
    assert data["tail_fraction"].shape == (len(samplers), 3, 2)
    # gamma = 0 of every sampler gives the baseline's samples bit for bit (seed 0's are
    # saved), hence its measurements (up to float rounding of differently sized batches).
    base = samplers.index("baseline")
    base_spins = np.load(tmp_path / "samples" / "baseline.npz")["spins"][0]
    for name in guidance.SAMPLERS[1:]:
        saved = np.load(tmp_path / "samples" / f"{name}.npz")
        np.testing.assert_array_equal(saved["spins"][0], base_spins)
        np.testing.assert_array_equal(saved["weights"][0], 1.0)
        i = samplers.index(name)
        for metric in ("tail_fraction", "kl", "mse_plm", "nll_plm", "energy_mean"):
            np.testing.assert_allclose(data[metric][i, 0], data[metric][base, 0], rtol=1e-5)
    finite = [data["kl"][samplers.index(s), : len(config.guidance.gammas[s])] for s in samplers[1:]]
    assert all(np.isfinite(x).all() for x in finite)
    assert np.all((data["tail_fraction"][1:] >= 0) | np.isnan(data["tail_fraction"][1:]))
    progress = io.read_jsonl(tmp_path / "metrics.jsonl")
    assert sum(r["kind"] == "classifier" for r in progress) == 2
    assert {r["step"] for r in progress if r["kind"] == "criterion"} == {100, 200}
    table = (tmp_path / "summary.md").read_text()
    assert all(f"| {s} |" in table for s in samplers)
    for name in ("energy_histograms", "tail_kl_vs_gamma", "inference_vs_gamma"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000

    before = (tmp_path / "results.jsonl").read_text()
    guided.run(config, tmp_path)  # a rerun resumes: nothing is recomputed
    assert (tmp_path / "results.jsonl").read_text() == before
    assert traces == {name: 1 for name in guidance.SAMPLERS}


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("guidance.samplers", ("baseline", "cfg"), "config.guidance.samplers must be"),
        ("model.betas", (0.5, 1.0), "config.model.betas must be a single coupling strength"),
        ("data.num_observed", 5, "config.data.num_observed must be an integer >= 10"),
        ("classifier.quantile", 1.5, r"config.classifier.quantile must be in \(0, 1\)"),
        ("model.n", 24, "config.model.n must be <= 20"),
    ],
)
def test_guided_rejects_bad_config(tmp_path, field, value, match):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        guided.run(config, tmp_path)


def test_guided_rejects_a_negative_gamma(tmp_path):
    config = tiny_config()
    config.guidance.gammas.langevin = (0.0, -1.0)
    with pytest.raises(ValueError, match="config.guidance.gammas must be a non-empty tuple"):
        guided.run(config, tmp_path)
