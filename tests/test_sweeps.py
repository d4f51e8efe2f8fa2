import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import isingjax as ij
from configs import inverse as inverse_config
from isingjax import exact, sweeps
from isingjax.pipelines import inverse

ROOT = Path(__file__).resolve().parents[1]


def tiny_config():
    config = inverse_config.get_config("quick")
    config.model.n = 6
    config.num_seeds = 3
    config.sweep.sample_sizes = (20, 80)
    config.inference.methods = ("plm", "nmf", "erasure")
    config.inference.options.erasure.num_iters = 100
    config.plots.scatter_size = 80
    return config


def test_seed_keys_do_not_depend_on_the_batch():
    root = jax.random.key(0)
    batch = jax.vmap(lambda s: sweeps.seed_key(root, s))(np.arange(5))
    np.testing.assert_array_equal(
        jax.random.key_data(batch[3]), jax.random.key_data(sweeps.seed_key(root, 3))
    )


def test_prefix_weights_and_errors():
    w = sweeps.prefix_weights((2, 4), 5)
    np.testing.assert_array_equal(w, [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    with pytest.raises(ValueError, match=r"integers in \[1, 5\]"):
        sweeps.prefix_weights((0, 4), 5)
    with pytest.raises(ValueError, match=r"integers in \[1, 5\]"):
        sweeps.prefix_weights((6,), 5)


def _newton_sqrt(a, tol):
    """sqrt(a) by Newton's iteration in a while loop, with its iteration count."""

    def step(carry):
        x, i = carry
        return 0.5 * (x + a / x), i + 1

    return jax.lax.while_loop(lambda c: jnp.abs(c[0] ** 2 - a) > tol * a, step, (a + 1.0, 0))


def test_map_solver_maps_like_vmap_with_each_solver_to_its_own_count():
    a = jnp.asarray([0.5, 4.0, 1e6, 2.0], jnp.float32)
    mapped = jax.jit(sweeps.map_solver(_newton_sqrt, in_axes=(0, None)))(a, 1e-6)
    np.testing.assert_allclose(mapped[0], np.sqrt(np.asarray(a, np.float64)), rtol=1e-6)
    counts = [int(_newton_sqrt(x, 1e-6)[1]) for x in a]
    np.testing.assert_array_equal(mapped[1], counts)  # each element its own iterations
    assert len(set(counts)) > 1
    pytree = sweeps.map_solver(lambda d: _newton_sqrt(d["a"], 1e-6)[0])({"a": a})
    np.testing.assert_allclose(pytree, mapped[0], rtol=1e-6)
    with pytest.raises(ValueError, match="in_axes must be 0 or None per argument"):
        sweeps.map_solver(_newton_sqrt, in_axes=(1, None))(a, 1e-6)


def test_one_compile_serves_every_sample_size():
    spins = exact.sample(jax.random.key(1), ij.sk_model(jax.random.key(2), 6), 64)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fit(weights):
        return ij.infer(spins, "plm", weights=weights)

    for weights in sweeps.prefix_weights((8, 16, 32, 64), 64):
        fit(weights)


def test_stage_compiles_once_per_method_across_betas_and_sizes():
    config = tiny_config()
    stage = inverse.make_stage_fn(config, "nmf")
    for beta in (0.5, 1.0, 1.5):
        sweeps.run_over_seeds(stage, [0, 1, 2], jax.random.key(0), beta)
    assert stage._cache_size() == 1


SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from tests.test_sweeps import tiny_config
    from isingjax import sweeps
    from isingjax.pipelines import inverse
    assert jax.device_count() == 4, jax.devices()
    stage = inverse.make_stage_fn(tiny_config(), "plm")
    out = sweeps.run_over_seeds(stage, [0, 1, 2, 3, 4, 5], jax.random.key(0), 1.0)
    np.save({path!r}, out["mse"]["all"])
    per_seed = jax.jit(jax.vmap(lambda d, c: d["x"].sum() * c + d["seed"], in_axes=(0, None)))
    x = np.arange(18.0).reshape(6, 3)
    dict_out = sweeps.run_over_seeds(per_seed, {{"seed": np.arange(6), "x": x}}, 2.0)
    np.save({path!r} + ".dict.npy", dict_out)
""")


def test_sharded_over_four_devices_equals_single_device(tmp_path):
    path = str(tmp_path / "sharded.npy")
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    script = SHARDED_SCRIPT.format(root=str(ROOT), path=path)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stage = inverse.make_stage_fn(tiny_config(), "plm")
    single = sweeps.run_over_seeds(stage, [0, 1, 2, 3, 4, 5], jax.random.key(0), 1.0)
    np.testing.assert_allclose(np.load(path), single["mse"]["all"], rtol=1e-4, atol=1e-7)
    # Per-seed arrays given as a dict are sharded along their leading axis.
    x = np.arange(18.0).reshape(6, 3)
    np.testing.assert_allclose(np.load(path + ".dict.npy"), x.sum(axis=1) * 2.0 + np.arange(6))


def _numeric_cells(path):
    cells = {}
    for r in map(json.loads, Path(path).read_text().splitlines()):
        key = tuple(r[c] for c in inverse.COORDS)
        assert key not in cells, f"cell {key} written twice"
        cells[key] = {k: v for k, v in r.items() if isinstance(v, float)}
    return cells


def _main_command(workdir):
    overrides = [
        "--config.model.n=6",
        "--config.num_seeds=3",
        "--config.sweep.sample_sizes=(20,80)",
        "--config.inference.methods=('plm','nmf','erasure')",
        "--config.inference.options.erasure.num_iters=100",
        "--config.plots.scatter_size=80",
    ]
    return [
        sys.executable,
        str(ROOT / "experiments" / "main.py"),
        "--config=configs/inverse.py:quick",
        f"--workdir={workdir}",
        *overrides,
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_main_command(full), cwd=ROOT, check=True, capture_output=True, timeout=600)
    expected = _numeric_cells(full / "results.jsonl")
    assert len(expected) == 3 * 2 * 2 * 3  # methods x betas x sizes x seeds

    proc = subprocess.Popen(
        _main_command(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    results = killed / "results.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(results.read_text().splitlines())
    assert 12 <= written < len(expected)

    subprocess.run(_main_command(killed), cwd=ROOT, check=True, capture_output=True, timeout=600)
    resumed = _numeric_cells(results)
    assert resumed.keys() == expected.keys()
    for key, values in expected.items():
        for name, value in values.items():
            np.testing.assert_allclose(
                resumed[key][name], value, rtol=1e-4, atol=1e-7, err_msg=f"{key} {name}"
            )
    assert (killed / "figures" / "mse_vs_m.png").exists()


def test_exact_draws_are_prefixes_only_with_partitionable_threefry():
    truth = ij.sk_model(jax.random.key(3), 6, beta=1.0)
    key = jax.random.key(4)
    np.testing.assert_array_equal(
        exact.sample(key, truth, 1600)[:100], exact.sample(key, truth, 100)
    )
    with jax.threefry_partitionable(False):  # jax < 0.5.0's default: not a prefix
        assert not np.array_equal(
            exact.sample(key, truth, 1600)[:100], exact.sample(key, truth, 100)
        )


def test_pipelines_refuse_non_partitionable_threefry(tmp_path):
    with jax.threefry_partitionable(False), pytest.raises(ValueError, match="partitionable"):
        inverse.run(tiny_config(), tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.slow
def test_a_resume_with_a_larger_max_m_reproduces_the_finished_cells(tmp_path):
    config = tiny_config()
    config.model.betas = (1.0,)
    config.inference.methods = ("plm",)
    config.sweep.sample_sizes = (20,)
    first = inverse.run(config, tmp_path / "resumed")
    config.sweep.sample_sizes = (20, 80)
    resumed = inverse.run(config, tmp_path / "resumed")
    fresh = inverse.run(config, tmp_path / "fresh")
    assert resumed[: len(first)] == first  # the finished cells were kept, not recomputed
    # ... and they are what a run with max(M) = 80 from the start computes: the first 20
    # of 80 observed spins are the 20 spins of the first run.
    small = {r["seed"]: r for r in first}
    for r in (r for r in fresh if r["num_samples"] == 20):
        for name in ("mse_all", "mse_w", "mse_b", "w_est"):  # w_est: seed 0 only
            if name in r:
                np.testing.assert_allclose(r[name], small[r["seed"]][name], rtol=1e-4, atol=1e-6)
    # With Metropolis data a larger max(M) is another dataset: the sizes are then fixed.
    config.data.sampler = "metropolis"
    config.sweep.sample_sizes = (20,)
    inverse.run(config, tmp_path / "mcmc")
    config.sweep.sample_sizes = (20, 80)
    with pytest.raises(ValueError, match="sweep.sample_sizes"):
        inverse.run(config, tmp_path / "mcmc")
