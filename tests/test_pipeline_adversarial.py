"""The adversarial pipeline end to end on a tiny config, and its config checks."""

import numpy as np
import pytest

from configs import adversarial as adversarial_config
from isingjax import io
from isingjax.pipelines import adversarial
from tests.test_pipeline_augment import tiny_config as augment_tiny_config


def tiny_config():
    """augment's tiny model, data and DDPM (n = 6, beta = 1, M = 40, 200 steps), 2 seeds."""
    config = adversarial_config.get_config("quick")
    tiny = augment_tiny_config()
    for section in ("model", "sweep", "diffusion", "criterion"):
        config[section] = tiny[section]
    config.diffusion.train_steps = 200
    config.diffusion.checkpoint_every = 100
    config.num_seeds = 2
    config.inference.methods = ("plm", "nmf")
    config.evasion.num_test = 30
    config.evasion.flips = (0, 1, 2, 4)
    config.poison.num_steps = 3
    config.poison.num_heldout = 50
    return config


@pytest.mark.slow
def test_adversarial_pipeline_end_to_end_and_resume(tmp_path):
    config = tiny_config()
    records = adversarial.run(config, tmp_path)
    assert len(records) == (4 + 3) * 2  # plm: 4 arms, nmf: 3 (no tuned L2); 2 seeds
    data = np.load(tmp_path / "results.npz")
    assert data["pgd_success"].shape == (1, 1, 2, 4, 2, 6)  # beta, M, method, arm, seed, eps
    assert np.isnan(data["pgd_success"][0, 0, 1, 3]).all()  # nmf has no tuned-L2 arm
    # Zero budgets: nothing is broken and nothing moves, exactly.
    for name in ("fgsm_success", "pgd_success", "greedy_success", "pgdround_success"):
        assert np.all(data[name][0, 0, 0, :, :, 0] == 0.0)
        assert np.all(data[name][0, 0, :, :3, :, -1] > 0.0)  # the largest budget breaks some
    for kind in ("worst", "proxy", "random"):
        assert np.all(data[f"{kind}_delta_mse"][0, 0, 0, :, :, 0] == 0.0)
        assert np.all(data[f"{kind}_rel_dw"][0, 0, :, :3, :, 0] == 0.0)
    # plm's crafted poison (implicit gradients) beats the random control at the largest
    # budget on the observed arm, in every seed.
    observed = list(data["arms"]).index("observed")
    worst = data["worst_delta_mse"][0, 0, 0, observed, :, -1]
    control = data["random_delta_mse"][0, 0, 0, observed, :, -1]
    assert np.all(worst > control) and np.all(worst > 0)
    # Certified accuracy at k = 0 is the clean accuracy and falls with k.
    cert = data["certified_accuracy"][0, 0, :, :3]
    np.testing.assert_allclose(cert[..., 0], data["clean_accuracy"][0, 0, :, :3], atol=1e-6)
    assert np.all(np.diff(cert, axis=-1) <= 0)
    gen = data["gen_dmse_orig"][0, 0, :, list(data["arms"]).index("diffusion")]
    assert np.isfinite(gen).all() and gen.shape == (2, 2, 2)  # method, seed, kind
    for name in ("robust_accuracy_eps", "robust_accuracy_k", "dmse_rho", "dw_heatmap"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    summary = (tmp_path / "summary.md").read_text()
    assert "| 1 | 40 | plm | observed + generated − observed |" in summary
    assert "amplification" in summary and "Wall time:" in summary
    for kind in ("worst", "random"):  # the poisoned generators were trained and selected
        gens = io.read_jsonl(tmp_path / f"generator_{kind}" / "metrics.jsonl")
        assert sum(r["kind"] == "generator" for r in gens) == 2

    # A rerun in the same workdir recomputes nothing.
    before = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    adversarial.run(config, tmp_path)
    after = (tmp_path / "results.jsonl").read_text(), (tmp_path / "metrics.jsonl").read_text()
    assert after == before
    assert "over 2 invocation(s)" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("inference.methods", ("plm", "mle"), "config.inference.methods must be"),
        ("model.n", 21, "config.model.n must be <= 20"),
        ("augment.ratios", (1, 2), "config.augment.ratios must be a tuple of one integer"),
        ("evasion.flips", (0, 7), r"config.evasion.flips must be .* \[0, model.n = 6\]"),
        ("evasion.eps", (0.1, -1.0), "config.evasion.eps must be"),
        ("evasion.num_test", 0, "config.evasion.num_test must be an integer >= 1"),
        ("poison.rhos", (0.0, 1.5), r"config.poison.rhos must be in \[0, 1\]"),
        ("poison.generator_kinds", ("worst", "noise"), "config.poison.generator_kinds must"),
        ("diffusion.train_steps", 250, "must be a multiple of diffusion.checkpoint_every"),
    ],
)
def test_adversarial_rejects_bad_config(tmp_path, field, value, match):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        adversarial.run(config, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["erasure", "tap", "exact_ml"])
def test_adversarial_stage_of_the_other_estimators(method):
    """One (beta, M) stage of erasure, tap and exact_ml on stand-in generated spins (no
    DDPM): the observed arm reports the method's own fit, zero budgets change nothing and
    certified accuracy at k = 0 is the clean accuracy."""
    import jax
    import jax.numpy as jnp

    import isingjax as ij
    from isingjax import poisoning
    from isingjax.pipelines import augment

    config = tiny_config()
    config.inference.methods = (method,)
    config.evasion.eps, config.evasion.flips, config.poison.rhos = (0.0, 0.5), (0, 2), (0.0, 0.1)
    adversarial.validate_config(config)
    m, beta, seeds = config.sweep.sample_sizes[0], 1.0, np.arange(config.num_seeds)
    k, root = config.augment.ratios[0] * m, jax.random.key(config.seed)
    kinds, extra = len(config.poison.generator_kinds), round(config.poison.generator_rho * m)
    draw = lambda key, shape: jax.random.rademacher(key, shape, jnp.float32)  # noqa: E731
    keys = jax.random.split(jax.random.key(5), 3)
    inputs = {
        "seed": seeds.astype(np.int32),
        "generated": draw(keys[0], (len(seeds), k, 6)),
        "gen_poisoned": draw(keys[1], (len(seeds), kinds, m + extra, 6)),
        "gen_generated": draw(keys[2], (len(seeds), kinds, k, 6)),
    }
    out = adversarial.make_stage_fn(config, method, m)(inputs, root, beta)
    observed = list(adversarial.summary.ARMS).index("observed")
    for s in seeds:
        truth, spins, _ = augment.truth_and_data(config, int(s), root, beta, m)
        options = dict(config.inference.options.get(method, {}))
        own = ij.infer(spins, method, **options)
        want = poisoning.mse_objective(poisoning.flatten_params(own), truth)
        np.testing.assert_allclose(out["mse_clean"][s, observed], want, rtol=1e-3, atol=1e-6)
    for attack in ("fgsm", "pgd", "greedy", "pgdround"):
        assert np.all(np.asarray(out[f"{attack}_success"])[..., 0] == 0.0)
    for kind in ("worst", "proxy", "random"):
        assert np.all(np.asarray(out[f"{kind}_delta_mse"])[..., 0] == 0.0)
    np.testing.assert_allclose(
        np.asarray(out["certified_accuracy"])[..., 0], out["clean_accuracy"], atol=1e-6
    )
    assert np.all(np.isfinite(np.asarray(out["worst_delta_mse"])))
