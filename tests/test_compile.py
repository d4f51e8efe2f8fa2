"""The public entry points compile once per shape: a second call runs compiled code."""

import contextlib
import logging

import jax
import numpy as np
import pytest

import isingjax as ij
from isingjax import exact


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.compiled = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.compiled.append(message.split(" with ")[0])


@contextlib.contextmanager
def compilations():
    """Collects the names of the functions XLA compiles inside the block."""
    handler = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler.compiled
    finally:
        logger.removeHandler(handler)


def _data(seed, n=8, m=200):
    params = ij.sk_model(jax.random.key(seed), n, beta=0.5, bias_std=0.1)
    return params, np.asarray(exact.sample(jax.random.key(seed + 100), params, m))


@pytest.mark.parametrize(
    "method, options",
    [
        ("plm", {"l2_per_sample": 1.0}),
        ("erasure", {"alpha": 0.1}),
        ("nmf", {"ridge": 0.0}),
        ("tap", {"ridge": 0.0}),
        ("exact_ml", {"l2_per_sample": 1.0}),
    ],
)
def test_infer_second_call_compiles_nothing(method, options):
    _, spins = _data(0)
    _, other = _data(1)
    with compilations() as first:
        ij.infer(spins, method, **options)
    assert first, "the first call must compile (else this test measures nothing)"
    # New data of the same shape, a new value (and Python type) of a traced option.
    changed = {k: v * 2 for k, v in options.items()}
    changed = {k: int(v) if k == "l2_per_sample" else v for k, v in changed.items()}
    weights = np.ones(spins.shape[0], np.float32)
    ij.infer(other, method, weights=weights, **changed)  # weights given: one more compile
    with compilations() as second:
        ij.infer(spins, method, **changed)
        ij.infer(other, method, weights=weights * 0.5, **options)
    assert second == []


def test_infer_recompiles_for_a_new_shape_or_static_option():
    _, spins = _data(0)
    ij.infer(spins, "plm")
    with compilations() as compiled:
        ij.infer(spins[:100], "plm")
    assert any("_fit" in name for name in compiled)
    with compilations() as compiled:
        ij.infer(spins, "plm", symmetric=False)
    assert any("_fit" in name for name in compiled)


def test_exact_second_call_compiles_nothing():
    params, spins = _data(0)
    other, other_spins = _data(1)

    def calls(p, s, key):
        exact.log_partition(p)
        exact.moments(p)
        exact.all_log_probs(p)
        exact.log_prob(p, s)
        exact.sample(key, p, 64)
        exact.kl_divergence(s, p)
        exact.empirical_log_probs(s)

    with compilations() as first:
        calls(params, spins, jax.random.key(0))
    assert first
    with compilations() as second:
        calls(other, other_spins, jax.random.key(1))
    assert second == []


def test_diffusion_sample_second_call_compiles_nothing():
    from isingjax.diffusion import generate, schedule, score_net

    net = score_net.ScoreNet(6, widths=(16, 32), time_dim=16)
    sched = schedule.make_schedule("linear", 100)
    x, t = np.zeros((1, 6), np.float32), np.ones(1, np.int32)
    params = [net.init(jax.random.key(i), x, t) for i in range(2)]
    with compilations() as first:
        spins = generate.sample(jax.random.key(0), net, params[0], sched, num_samples=32)
    assert first and spins.shape == (32, 6)
    assert set(np.unique(np.asarray(spins))) <= {-1.0, 1.0}
    with compilations() as second:
        generate.sample(jax.random.key(1), net, params[1], sched, num_samples=32)
    assert second == []
    with pytest.raises(ValueError, match="num_steps must be at most the schedule's 100"):
        generate.sample(jax.random.key(1), net, params[1], sched, num_samples=32, num_steps=500)


def test_metropolis_and_tempering_second_call_compiles_nothing():
    params, _ = _data(0)
    other, _ = _data(1)

    def calls(p, key):
        ij.metropolis(key, p, num_samples=64, num_chains=16, burn_in=3, thin=2)
        ij.parallel_tempering(
            key, p, betas=(0.5, 1.0), num_samples=64, num_chains=16, burn_in=3, thin=2
        )

    with compilations() as first:
        calls(params, jax.random.key(0))
    assert first
    with compilations() as second:
        calls(other, jax.random.key(1))
    assert second == []
