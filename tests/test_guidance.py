import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import isingjax as ij
from configs import guided as guided_config
from isingjax import exact, guidance, metrics
from isingjax.diffusion import sampling, schedule, score_net, train
from isingjax.diffusion.schedule import q_sample
from isingjax.inference import plm

N = 6
SCHEDULE = schedule.make_schedule("linear", 1000)
OPTIONS = dict(
    langevin_step_size=0.1,
    langevin_steps=2,
    langevin_t_window=(0.05, 0.5),
    pool_factor=3,
    minority_t=0.3,
)
# A positive strength per sampler at which its samples should move toward the tail.
STRONG = {
    "langevin": 1.0,
    "entropy": 3.0,
    "classifier": 100.0,
    "rejection": 1.0,
    "temperature": 0.4,
    "minority": 0.3,
}


@pytest.fixture(scope="module")
def setup():
    """A DDPM and a classifier trained on 1000 exact samples of a 6-spin SK model."""
    truth = ij.sk_model(jax.random.key(0), N, 1.0, 0.3)
    data = exact.sample(jax.random.key(1), truth, 1000)
    net = score_net.ScoreNet(n=N, widths=(32, 64), time_dim=16)
    init_fn, chunk_fn = train.make_train_fns(
        net, SCHEDULE, optax.adam(2e-3), batch_size=128, ema_decay=0.995
    )
    state = train.train(
        init_fn(jax.random.key(2), N),
        chunk_fn,
        data,
        jnp.ones(len(data)),
        num_steps=1500,
        chunk_steps=1500,
    )
    inferred = plm.fit(data)[0]
    classifier = guidance.NoisyClassifier((32, 32), 16)
    labels = guidance.energy_labels(inferred, data, 0.5)
    class_params = guidance.train_classifier(
        jax.random.key(3), classifier, SCHEDULE, data, labels, num_steps=800
    )
    context = guidance.Context(inferred, lambda x, t: classifier.apply(class_params, x, t), OPTIONS)
    eps_fn = lambda x, t: net.apply(state.ema_params, x, t)  # noqa: E731
    return truth, inferred, eps_fn, context, classifier, class_params


def draw(setup, name, gammas, num=400):
    _, _, eps_fn, context, _, _ = setup
    fn = jax.jit(
        jax.vmap(
            lambda g: guidance.sample(
                name, jax.random.key(5), g, eps_fn, SCHEDULE, context, num_samples=num, n=N
            )
        )
    )
    return fn(jnp.asarray(gammas, jnp.float32))


@pytest.mark.slow
@pytest.mark.parametrize("name", guidance.SAMPLERS[1:])
def test_gamma_zero_is_the_baseline_bit_for_bit(setup, name):
    base_spins, base_weights = draw(setup, "baseline", [0.0, 0.0])
    spins, weights = draw(setup, name, [0.0, STRONG[name]])
    np.testing.assert_array_equal(np.asarray(spins[0]), np.asarray(base_spins[0]))
    np.testing.assert_array_equal(np.asarray(weights[0]), 1.0)
    # Unbatched (one gamma) too.
    _, _, eps_fn, context, _, _ = setup
    single, _ = guidance.sample(
        name, jax.random.key(5), 0.0, eps_fn, SCHEDULE, context, num_samples=400, n=N
    )
    single_base, _ = guidance.sample(
        "baseline", jax.random.key(5), 0.0, eps_fn, SCHEDULE, context, num_samples=400, n=N
    )
    np.testing.assert_array_equal(np.asarray(single), np.asarray(single_base))


@pytest.mark.slow
@pytest.mark.parametrize("name", guidance.SAMPLERS[1:])
def test_positive_gamma_lowers_the_exact_log_probability(setup, name):
    truth = setup[0]
    spins, weights = draw(setup, name, [0.0, STRONG[name]])
    unguided = metrics.tail_stats(spins[0], truth, weights[0])
    guided = metrics.tail_stats(spins[1], truth, weights[1])
    # The unguided sampler is close to the model (mean log P of exact samples: -E[-log P]).
    exact_mean = float(jnp.sum(jnp.exp(exact.all_log_probs(truth)) * exact.all_log_probs(truth)))
    assert abs(float(unguided["mean_log_prob"]) - exact_mean) < 0.5
    assert float(guided["mean_log_prob"]) < float(unguided["mean_log_prob"]) - 0.1
    assert float(guided["tail_fraction"]) > float(unguided["tail_fraction"])


@pytest.mark.slow
def test_classifier_beats_chance_on_held_out_noisy_samples(setup):
    truth, inferred, _, _, classifier, params = setup
    held = exact.sample(jax.random.key(11), truth, 2000)
    labels = guidance.energy_labels(inferred, held, 0.5)
    t = jax.random.randint(jax.random.key(12), (2000,), 1, 301)
    x_t = q_sample(SCHEDULE, held, t, jax.random.normal(jax.random.key(13), held.shape))
    predicted = classifier.apply(params, x_t, t) > 0
    accuracy = float(jnp.mean(predicted == (labels > 0)))
    balance = float(jnp.mean(labels))
    assert accuracy > max(balance, 1 - balance) + 0.1, (accuracy, balance)


def test_rejection_acceptance_follows_its_formula():
    energies = jnp.asarray([-2.0, -1.0, 0.0, 0.5])
    alpha = 0.7
    draws = jax.vmap(lambda k: guidance.rejection_accept(k, energies, alpha))(
        jax.random.split(jax.random.key(0), 20000)
    )
    expected = np.exp(alpha * (np.asarray(energies) - 0.5))
    observed = np.asarray(draws).mean(axis=0)
    se = np.sqrt(expected * (1 - expected) / 20000) + 1e-9
    assert np.all(np.abs(observed - expected) < 5 * se + 1e-6), (observed, expected)
    # alpha = 0 keeps every sample.
    keep = guidance.rejection_accept(
        jax.random.key(1), jax.random.normal(jax.random.key(2), (500,)), 0.0
    )
    assert bool(jnp.all(keep))


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown guided sampler 'reverse'"):
        guidance.sample(
            "reverse",
            jax.random.key(0),
            0.0,
            lambda x, t: x,
            SCHEDULE,
            guidance.Context(None, None, OPTIONS),
            num_samples=4,
            n=3,
        )


def _log_kde(y, data, h2):
    """log of mean_j N(y; data_j, h2 I), written independently of isingjax.guidance."""
    n = data.shape[1]
    sq = jnp.sum((y[None, :] - data) ** 2, axis=1)
    log_norm = -0.5 * n * jnp.log(2 * jnp.pi * h2) - jnp.log(data.shape[0])
    return jax.scipy.special.logsumexp(-sq / (2 * h2)) + log_norm


def test_entropy_repulsion_is_minus_grad_log_kde():
    x = jax.random.normal(jax.random.key(0), (7, 4))
    xs = np.asarray(x, np.float64)
    d2 = ((xs[:, None, :] - xs[None, :, :]) ** 2).sum(-1)
    h2 = np.median(d2) / (2 * np.log(7))
    reference = -jax.vmap(jax.grad(_log_kde), in_axes=(0, None, None))(x, x, h2)
    np.testing.assert_allclose(guidance.kde_repulsion(x), reference, rtol=1e-4, atol=1e-5)
    # In entropy_eps: eps - gamma sigma_t (-grad log p_hat), unclipped at a huge max_norm.
    t = jnp.full(7, 400)
    sigma = np.sqrt(1 - float(SCHEDULE.alpha_bars[399]))
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    guided = guidance.entropy_eps(zero, SCHEDULE, 2.0, max_norm=1e9)(x, t)
    np.testing.assert_allclose(guided, -2.0 * sigma * reference, rtol=1e-4, atol=1e-5)


def test_guidance_terms_are_clipped_to_max_norm():
    x = 50.0 * jax.random.normal(jax.random.key(1), (5, 4))
    v = guidance.clip_norm(x, 0.5)
    norms = np.linalg.norm(np.asarray(v), axis=1)
    np.testing.assert_allclose(norms, 0.5 * 2.0, rtol=1e-5)  # sqrt(n) = 2, all rows clipped
    np.testing.assert_allclose(  # directions kept
        np.asarray(v) / norms[:, None],
        np.asarray(x) / np.linalg.norm(x, axis=1)[:, None],
        rtol=1e-5,
    )
    small = 0.01 * x
    np.testing.assert_array_equal(guidance.clip_norm(small, 1e3), small)  # below: unchanged


def test_classifier_term_follows_its_definition():
    # Logit a . x: grad log sigmoid(a . x) = a (1 - sigmoid(a . x)).
    a = jnp.asarray([1.0, -2.0, 0.5])
    x = jax.random.normal(jax.random.key(2), (6, 3))
    t = jnp.full(6, 300)
    sigma = np.sqrt(1 - float(SCHEDULE.alpha_bars[299]))
    eps_fn = lambda x, t: 0.3 * x  # noqa: E731
    guided = guidance.classifier_eps(eps_fn, SCHEDULE, lambda y, t: y @ a, 1.5, max_norm=1e9)
    grad = np.asarray(a)[None, :] * (1 - 1 / (1 + np.exp(-np.asarray(x @ a))))[:, None]
    np.testing.assert_allclose(guided(x, t), 0.3 * x - 1.5 * sigma * grad, rtol=1e-5, atol=1e-6)


def _eps(x, t):
    """A smooth nonlinear stand-in for the network."""
    scale = 1.0 + t[:, None] / 1000.0
    return jnp.tanh(x @ jnp.asarray([[1.0, 0.5, 0.0], [-0.3, 1.0, 0.2], [0.1, 0.0, 1.0]])) * scale


def test_minority_term_follows_its_definition():
    key, t_m, gamma = jax.random.key(3), 300, 0.7
    x = jax.random.normal(jax.random.key(4), (5, 3))
    t = jnp.full(5, 800)
    abar, abar_m = float(SCHEDULE.alpha_bars[799]), float(SCHEDULE.alpha_bars[t_m - 1])
    noise = jax.random.normal(jax.random.fold_in(key, 800), x.shape)  # fixed per step

    def loss(y):  # |x0_hat(y, t) - x0_hat(x_m, t_m)|^2, x_m the re-noised x0_hat(y, t)
        x0 = (y - np.sqrt(1 - abar) * _eps(y, t)) / np.sqrt(abar)
        x_m = np.sqrt(abar_m) * x0 + np.sqrt(1 - abar_m) * noise
        tm = jnp.full(5, t_m)
        return jnp.sum((x0 - (x_m - np.sqrt(1 - abar_m) * _eps(x_m, tm)) / np.sqrt(abar_m)) ** 2)

    g = jax.grad(loss)(x)
    guided = guidance.minority_eps(_eps, SCHEDULE, gamma, key, t_m, max_norm=1e9)(x, t)
    expected = _eps(x, t) - gamma * np.sqrt(1 - abar) * g
    np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-4)
    # Clipped: the term's norm per sample is at most max_norm sqrt(n).
    clipped = guidance.minority_eps(_eps, SCHEDULE, 1.0, key, t_m, max_norm=0.1)(x, t)
    assert np.all(np.linalg.norm(np.asarray(clipped - _eps(x, t)), axis=1) <= 0.1 * 3**0.5 + 1e-5)


def test_langevin_corrector_follows_its_definition():
    key, gamma, eta = jax.random.key(5), 0.8, 0.1
    x = jax.random.normal(jax.random.key(6), (4, 3))
    corrector = guidance.langevin_corrector(
        _eps, SCHEDULE, gamma, step_size=eta, num_steps=2, t_window=(0.05, 0.5), max_norm=1e9
    )
    t = 300
    sigma = np.sqrt(1 - float(SCHEDULE.alpha_bars[t - 1]))
    expected = x
    for k in jax.random.split(key, 2):  # x <- x - gamma eta sigma^2 s + sqrt(2 gamma eta) sigma z
        score = -_eps(expected, jnp.full(4, t)) / sigma
        z = jax.random.normal(k, x.shape)
        expected = expected - gamma * eta * sigma**2 * score + np.sqrt(2 * gamma * eta) * sigma * z
    np.testing.assert_allclose(corrector(key, x, t), expected, rtol=1e-5, atol=1e-5)
    # Outside the window (t > 0.5 T) it is the identity.
    np.testing.assert_array_equal(corrector(key, x, 700), x)


def test_num_nonfinite_counts_samples_before_thresholding():
    x = jnp.asarray([[0.5, -1.0], [jnp.nan, 1.0], [jnp.inf, -jnp.inf], [2.0, 3.0]])
    assert int(sampling.num_nonfinite(x)) == 2
    np.testing.assert_array_equal(sampling.threshold(x)[1], [-1.0, 1.0])  # NaN -> -1: silent


@pytest.mark.slow
@pytest.mark.parametrize("name", guidance.SAMPLERS[1:])
def test_largest_default_gamma_gives_finite_samples(setup, name):
    config = guided_config.get_config()
    gamma = config.guidance.gammas[name][-1]
    _, inferred, eps_fn, context, _, _ = setup
    context = context._replace(options=dict(config.guidance.options))
    _, _, bad = guidance.sample_counted(
        name, jax.random.key(7), gamma, eps_fn, SCHEDULE, context, num_samples=400, n=N
    )
    assert int(bad) == 0, (name, gamma, int(bad))
