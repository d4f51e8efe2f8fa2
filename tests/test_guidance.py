import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import isingjax as ij
from isingjax import exact, guidance, metrics
from isingjax.diffusion import schedule, score_net, train
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
