import numpy as np
import pytest

from isingjax.pipelines import inverse
from tests.test_sweeps import tiny_config


def test_inverse_pipeline_end_to_end(tmp_path):
    config = tiny_config()
    records = inverse.run(config, tmp_path)
    assert len(records) == 3 * 2 * 2 * 3
    data = np.load(tmp_path / "results.npz")
    assert data["mse_all"].shape == (2, 3, 2, 3)  # beta, method, M, seed
    assert np.all(np.isfinite(data["mse_all"]))
    assert list(data["methods"]) == ["plm", "nmf", "erasure"]
    # More data, smaller error, for every method and beta (mean over seeds).
    mean = data["mse_all"].mean(axis=-1)
    assert np.all(mean[:, :, 1] < mean[:, :, 0])
    for name in ("mse_vs_m.png", "scatter.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000
    assert {r["converged"] for r in records} <= {True, False}
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| 1 | 80 |") == 1 and "Wall time:" in summary


def test_inverse_summary_table_matches_hand_computed_cells():
    mse = np.asarray([[[[1.0, 3.0], [0.5, 0.5]], [[2.0, 2.0], [np.nan, np.nan]]]])
    arrays = {
        "mse_all": mse,  # [beta, method, M, seed]
        "converged": np.asarray([[[[1, 1], [1, 0]], [[1, 1], [np.nan, np.nan]]]], float),
        "betas": np.asarray([1.0]),
        "methods": np.asarray(["plm", "nmf"]),
        "sample_sizes": np.asarray([50, 200]),
    }
    assert inverse.summary_table(arrays).splitlines() == [
        "| β | M | plm | nmf |",
        "|---|---|---|---|",
        "| 1 | 50 | 2 ± 1 | 2 ± 0 |",  # plm: mean of 1 and 3, s.e. |3 - 1| / 2
        "| 1 | 200 | 0.5 ± 0† | – |",  # seed 1 of plm at M = 200 did not converge
    ]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(methods=("plm", "mle")), "config.inference.methods must be a non-empty tuple drawn"),
        (dict(sample_sizes=(0, 10)), "config.sweep.sample_sizes must be a non-empty tuple"),
        (dict(n=25), "config.data.sampler must be 'metropolis' when model.n > 20"),
        (dict(sampler="gibbs"), r"config.data.sampler must be one of \('exact', 'metropolis'\)"),
        (dict(plm_option=1.0), r"config.inference.options.plm has unknown option\(s\) \['lamda'\]"),
    ],
)
def test_inverse_pipeline_rejects_bad_config(tmp_path, change, match):
    config = tiny_config()
    if "methods" in change:
        config.inference.methods = change["methods"]
    if "sample_sizes" in change:
        config.sweep.sample_sizes = change["sample_sizes"]
    if "n" in change:
        config.model.n = change["n"]
    if "sampler" in change:
        config.data.sampler = change["sampler"]
    if "plm_option" in change:
        config.inference.options.plm.unlock()
        config.inference.options.plm.lamda = change["plm_option"]
    with pytest.raises(ValueError, match=match):
        inverse.run(config, tmp_path)
