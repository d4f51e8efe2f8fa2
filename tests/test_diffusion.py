import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isingjax.diffusion import sampling, schedule, score_net

MU = jnp.array([1.0, -0.5, 0.0])
SIGMA = 0.3


def gaussian_eps_fn(sched):
    """The exact epsilon of data x0 ~ N(MU, SIGMA^2 I): E[eps | x_t], in closed form."""

    def eps_fn(x, t):
        abar = sched.alpha_bars[t - 1][:, None]
        return jnp.sqrt(1 - abar) * (x - jnp.sqrt(abar) * MU) / (abar * SIGMA**2 + 1 - abar)

    return eps_fn


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_alpha_bar_decreasing_and_posterior(kind):
    s = schedule.make_schedule(kind, 1000)
    abar = np.asarray(s.alpha_bars, np.float64)
    assert np.all(np.diff(abar) < 0) and 0 < abar[-1] < abar[0] < 1
    prev = np.concatenate([[1.0], abar[:-1]])
    betas = np.asarray(s.betas, np.float64)
    np.testing.assert_allclose(s.posterior_variance, betas * (1 - prev) / (1 - abar), rtol=1e-3)
    # The posterior mean coefficients reproduce x0 exactly when x_t carries no noise.
    x0 = 0.7
    np.testing.assert_allclose(
        s.posterior_coef_x0 * x0 + s.posterior_coef_xt * np.sqrt(abar) * x0,
        np.sqrt(prev) * x0,
        rtol=1e-4,
        atol=1e-6,
    )


def test_linear_schedule_endpoints():
    s = schedule.make_schedule("linear", 1000)
    np.testing.assert_allclose([s.betas[0], s.betas[-1]], [1e-4, 0.02], rtol=1e-6)


@pytest.mark.parametrize("t", [1, 250, 1000])
def test_forward_marginal_matches_closed_form(t):
    s = schedule.make_schedule("linear", 1000)
    x0 = jnp.array([1.0, -1.0, 1.0])
    noise = jax.random.normal(jax.random.key(0), (100_000, 3))
    xt = np.asarray(schedule.q_sample(s, x0, jnp.full(100_000, t), noise))
    abar = float(s.alpha_bars[t - 1])
    se = np.sqrt((1 - abar) / 100_000)
    np.testing.assert_array_less(np.abs(xt.mean(0) - np.sqrt(abar) * x0), 5 * se)
    np.testing.assert_allclose(xt.var(0), 1 - abar, rtol=0.02)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(kind="sigmoid"), "unknown schedule 'sigmoid'"),
        (dict(num_steps=0), "num_steps must be an integer >= 1"),
        (dict(beta_start=0.1, beta_end=0.01), "need 0 < beta_start <= beta_end < 1"),
    ],
)
def test_schedule_rejects_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        schedule.make_schedule(**bad)


def test_ddpm_with_the_exact_eps_reproduces_the_data_distribution():
    s = schedule.make_schedule("linear", 1000)
    x = sampling.ddpm_sample(jax.random.key(1), gaussian_eps_fn(s), s, num_samples=8000, n=3)
    np.testing.assert_allclose(x.mean(0), MU, atol=0.02)
    np.testing.assert_allclose(x.std(0), SIGMA, rtol=0.05)


def test_ddim_with_the_exact_eps_approaches_the_data_distribution_as_steps_grow():
    # DDIM discretizes the probability-flow ODE to first order: with the exact eps of
    # Gaussian data it under-disperses at few steps (std 0.24 at 20 steps, 0.275 at 50)
    # and converges to the data's std as the step count grows.
    s = schedule.make_schedule("linear", 1000)
    stds = []
    for steps in (20, 50, 250):
        x = sampling.ddim_sample(
            jax.random.key(2), gaussian_eps_fn(s), s, num_samples=8000, n=3, num_steps=steps
        )
        np.testing.assert_allclose(x.mean(0), MU, atol=0.02)
        stds.append(float(x.std(0).mean()))
    assert stds[0] < stds[1] < stds[2]
    np.testing.assert_allclose(stds[-1], SIGMA, rtol=0.03)


def test_ddim_with_all_steps_equals_its_definition():
    s = schedule.make_schedule("linear", 100)
    eps_fn = gaussian_eps_fn(s)
    key = jax.random.key(3)
    got = np.asarray(sampling.ddim_sample(key, eps_fn, s, num_samples=5, n=3, num_steps=100))
    x = np.asarray(jax.random.normal(key, (5, 3)), np.float64)
    abar = np.asarray(s.alpha_bars, np.float64)
    for t in range(100, 0, -1):
        eps = np.asarray(eps_fn(jnp.asarray(x, jnp.float32), jnp.full(5, t)), np.float64)
        x0 = (x - np.sqrt(1 - abar[t - 1]) * eps) / np.sqrt(abar[t - 1])
        prev = abar[t - 2] if t > 1 else 1.0
        x = np.sqrt(prev) * x0 + np.sqrt(1 - prev) * eps
    np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-4)


def test_samplers_are_deterministic_and_threshold_is_pm1():
    s = schedule.make_schedule("linear", 50)
    eps_fn = gaussian_eps_fn(s)
    a = sampling.ddpm_sample(jax.random.key(4), eps_fn, s, num_samples=16, n=3)
    b = sampling.ddpm_sample(jax.random.key(4), eps_fn, s, num_samples=16, n=3)
    c = sampling.ddpm_sample(jax.random.key(5), eps_fn, s, num_samples=16, n=3)
    chex.assert_shape(a, (16, 3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    spins = sampling.threshold(a)
    assert spins.dtype == jnp.float32 and set(np.unique(spins)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(sampling.threshold(jnp.array([0.0, 1e-9, -2.0])), [-1, 1, -1])


def test_ddim_rejects_bad_step_count():
    s = schedule.make_schedule("linear", 10)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 10\]"):
        sampling.ddim_sample(
            jax.random.key(0), gaussian_eps_fn(s), s, num_samples=2, n=3, num_steps=11
        )


def test_score_net_shapes_and_time_dependence():
    net = score_net.ScoreNet(n=7, widths=(16, 32), time_dim=8)
    x = jnp.ones((5, 7))
    params = net.init(jax.random.key(0), x, jnp.ones(5, jnp.int32))
    out = net.apply(params, x, jnp.full(5, 3))
    chex.assert_shape(out, (5, 7))
    assert not np.allclose(out, net.apply(params, x, jnp.full(5, 900)))
    np.testing.assert_allclose(net.apply(params, x, 3), out, rtol=1e-6)  # scalar t broadcasts
    default = score_net.ScoreNet(n=20)
    shapes = jax.tree.map(jnp.shape, default.init(jax.random.key(0), jnp.ones((1, 20)), 1))
    dense_out = [v["kernel"][1] for k, v in sorted(shapes["params"].items()) if "kernel" in v]
    assert sorted(dense_out) == sorted([128, 256, 512, 512, 256, 128] * 2 + [20])


def two_point_eps_fn(s):
    """The exact eps of data at ±(1, ..., 1) with probability 1/2 each (all spins equal):
    E[x0 | x_t] = v tanh(sqrt(abar) x_t . v / (1 - abar)), v = (1, ..., 1)."""

    def eps_fn(x, t):
        abar = s.alpha_bars[t - 1][:, None]
        x0 = jnp.tanh(jnp.sqrt(abar) * jnp.sum(x, axis=1, keepdims=True) / (1.0 - abar))
        return (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)

    return eps_fn


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_inpainting_conditions_the_hidden_spins_on_the_known_ones(sampler):
    # every spin equals the others in the data: the two filled-in spins must follow the
    # four known ones, while unconditioned samples are split half and half. (The
    # replacement method is approximate: with one known spin of three the filled ones
    # agree only 0.88 (ddpm) and 0.78 (ddim, 50 steps) of the time.)
    s = schedule.make_schedule("linear", 1000)
    num, n = 2000, 6
    sign = jnp.where(jnp.arange(num) % 2 == 0, 1.0, -1.0)[:, None]
    known, mask = jnp.tile(sign, (1, n)), jnp.zeros((num, n), bool).at[:, :4].set(True)
    kwargs = dict(num_samples=num, n=n, sampler=sampler, num_steps=50)
    corrector = sampling.inpainting_corrector(s, known.at[:, 4:].set(0.0), mask)
    key = jax.random.key(4)
    filled = sampling.threshold(
        sampling.sample_continuous(key, two_point_eps_fn(s), s, corrector=corrector, **kwargs)
    )
    free = sampling.threshold(sampling.sample_continuous(key, two_point_eps_fn(s), s, **kwargs))
    assert np.mean(np.asarray(filled[:, 4:]) == np.asarray(sign)) > 0.99
    assert np.all(np.asarray(free) == np.asarray(free[:, :1]))  # the data: all spins equal
    assert abs(np.mean(np.asarray(free[:, :1]) == np.asarray(sign)) - 0.5) < 0.05
