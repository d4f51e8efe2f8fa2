import json
import math

import numpy as np
import pytest

from configs import augment as augment_config
from configs import inverse as inverse_config
from isingjax.pipelines import common


def test_mean_se_matches_hand_computed_values():
    # 1, 2, 3, 6: mean 3, squared deviations 4 + 1 + 0 + 9 = 14, s.e. sqrt(14 / 3) / 2.
    mean, se = common.mean_se([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(se, [math.sqrt(14 / 3) / 2, 0.0])
    mean, se = common.mean_se([[2.5]])  # one seed: no spread to estimate, s.e. 0
    np.testing.assert_allclose(mean, [2.5])
    np.testing.assert_allclose(se, [0.0])


@pytest.mark.parametrize(
    "method, name, value, match",
    [
        ("plm", "l2_per_sample", -1.0, "plm.l2_per_sample must be finite and >= 0, got -1.0"),
        ("plm", "l2_per_sample", float("nan"), "plm.l2_per_sample must be finite and >= 0"),
        ("exact_ml", "l2", float("inf"), "exact_ml.l2 must be finite and >= 0"),
        ("plm", "max_iter", 0, "plm.max_iter must be an integer >= 1, got 0"),
        ("plm", "tol", 0.0, "plm.tol must be finite and > 0, got 0.0"),
        ("nmf", "ridge", -0.1, "nmf.ridge must be finite and >= 0"),
        ("erasure", "eps_grid", (0.5, float("nan")), "erasure.eps_grid must be finite and > 0"),
    ],
)
def test_check_options_validates_numbers_as_infer_does(method, name, value, match):
    config = inverse_config.get_config()
    config.inference.options[method] = {name: value}
    with pytest.raises(common.ConfigError, match=match):
        common.check_options(config, [method])
    config.inference.options[method] = {"ridge": 0.0} if method == "nmf" else {}
    common.check_options(config, [method])  # allowed values pass


def test_write_summary_records_config_and_wall_time(tmp_path):
    config = augment_config.get_config("quick")
    text = common.write_summary(tmp_path, "augment", [("Caption", "| a |\n")], config, 12.0)
    assert "Caption:\n\n| a |" in text
    assert "12.0 s this invocation; 12.0 s over 1 invocation(s)" in text
    text = common.write_summary(tmp_path, "augment", [], config, 3.5)
    assert "3.5 s this invocation; 15.5 s over 2 invocation(s)" in text
    config_json = text.split("```json\n")[1].split("```")[0]
    assert json.loads(config_json)["experiment"] == "augment"
    assert (tmp_path / "summary.md").read_text() == text
