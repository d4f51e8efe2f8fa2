import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import isingjax as ij
from isingjax import exact
from isingjax.diffusion import sampling, schedule, score_net, train

SCHEDULE = schedule.make_schedule("linear", 1000)


def small_setup(n, lr=1e-3):
    # lr 2e-3 with EMA decay 0.999 (22 % of the EMA still the initial parameters after
    # 1500 steps) learned three independent biases for one initial key in three; these
    # settings were within 0.09 of them for each of four keys
    net = score_net.ScoreNet(n=n, widths=(32, 64), time_dim=16)
    fns = train.make_train_fns(net, SCHEDULE, optax.adam(lr), batch_size=128, ema_decay=0.99)
    return net, fns


def generate(net, params, n, num=2000, key=7):
    eps_fn = lambda x, t: net.apply(params, x, t)  # noqa: E731
    x = sampling.ddim_sample(
        jax.random.key(key), eps_fn, SCHEDULE, num_samples=num, n=n, num_steps=50
    )
    return np.asarray(sampling.threshold(x))


def fit(n, data, steps=1500):
    net, (init_fn, chunk_fn) = small_setup(n)
    state = init_fn(jax.random.key(0), n)
    state = train.train(
        state, chunk_fn, data, jnp.ones(len(data)), num_steps=steps, chunk_steps=steps
    )
    return net, state


@pytest.mark.slow
def test_ddpm_learns_a_strongly_coupled_pair():
    # w = 2: aligned pairs have probability e^2 / (e^2 + e^-2) = 0.982; chance is 0.5.
    # After 1500 steps of a small network (EMA parameters) we require > 0.8, far above
    # chance; this run measures 0.88.
    params = ij.IsingParams(w=jnp.array([[0.0, 2.0], [2.0, 0.0]]), b=jnp.zeros(2))
    data = exact.sample(jax.random.key(1), params, 2000)
    net, state = fit(2, data)
    spins = generate(net, state.ema_params, 2)
    aligned = np.mean(spins[:, 0] == spins[:, 1])
    assert aligned > 0.8, aligned


@pytest.mark.slow
def test_ddpm_reproduces_independent_biases():
    b = jnp.array([0.8, -0.5, 0.0])
    params = ij.IsingParams(w=jnp.zeros((3, 3)), b=b)
    data = exact.sample(jax.random.key(2), params, 4000)
    net, state = fit(3, data)
    means = generate(net, state.ema_params, 3, num=4000).mean(0)
    np.testing.assert_allclose(means, np.tanh(b), atol=0.1)


def test_checkpoint_roundtrip_is_bitwise(tmp_path):
    net, (init_fn, chunk_fn) = small_setup(3)
    state = init_fn(jax.random.key(3), 3)
    data = jnp.ones((10, 3))
    state, _ = jax.jit(chunk_fn, static_argnums=3)(state, data, jnp.ones(10), 5)
    manager = train.checkpoint_manager(tmp_path / "ckpt")
    train.save(manager, state)
    restored = train.restore(
        train.checkpoint_manager(tmp_path / "ckpt"), init_fn(jax.random.key(9), 3)
    )
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resumed_training_equals_uninterrupted(tmp_path):
    net, (init_fn, chunk_fn) = small_setup(3)
    data = jnp.asarray(np.where(np.arange(60).reshape(20, 3) % 4, 1.0, -1.0))
    weights = jnp.linspace(0.0, 1.0, 20)
    init = init_fn(jax.random.key(4), 3)
    full = train.train(init, chunk_fn, data, weights, num_steps=30, chunk_steps=10)
    manager = train.checkpoint_manager(tmp_path / "ckpt")

    def stop_after_first_chunk(state, losses):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train(
            init,
            chunk_fn,
            data,
            weights,
            num_steps=30,
            chunk_steps=10,
            manager=manager,
            on_chunk=stop_after_first_chunk,
        )
    assert manager.latest_step() == 10
    resumed = train.train(
        init,
        chunk_fn,
        data,
        weights,
        num_steps=30,
        chunk_steps=10,
        manager=train.checkpoint_manager(tmp_path / "ckpt"),
    )
    assert int(resumed.step) == 30
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_rejects_uneven_chunks():
    net, (init_fn, chunk_fn) = small_setup(3)
    with pytest.raises(ValueError, match=r"num_steps \(25\) must be a multiple of chunk_steps"):
        train.train(
            init_fn(jax.random.key(0), 3),
            chunk_fn,
            jnp.ones((4, 3)),
            jnp.ones(4),
            num_steps=25,
            chunk_steps=10,
        )


def test_minibatch_rows_are_drawn_in_proportion_to_their_weights():
    weights = jnp.asarray([0.0, 1.0, 3.0, 0.0, 4.0, 0.0])
    idx = np.asarray(train.draw_rows(jax.random.key(0), jnp.cumsum(weights), 80_000))
    counts = np.bincount(idx, minlength=6)
    assert counts[[0, 3, 5]].sum() == 0  # zero weight: never drawn, also at either end
    expected = 80_000 * np.asarray(weights) / 8.0
    np.testing.assert_allclose(counts[[1, 2, 4]], expected[[1, 2, 4]], rtol=0.03)
    # the largest uniform lands on the last row of positive weight, not past it
    top = train.draw_rows(jax.random.key(1), jnp.cumsum(weights), 1)
    assert int(top[0]) in (1, 2, 4)


def test_zero_weight_rows_appended_leave_training_unchanged():
    # the augment pipeline pads every M to one row count (one compile for all M); rows of
    # weight 0 after the data must change no minibatch and so no parameter
    net, (init_fn, chunk_fn) = small_setup(3)
    data = jnp.asarray(np.where(np.arange(60).reshape(20, 3) % 4, 1.0, -1.0))
    weights = jnp.linspace(0.0, 1.0, 20)
    init = init_fn(jax.random.key(5), 3)
    plain = train.train(init, chunk_fn, data, weights, num_steps=20, chunk_steps=20)
    padded_data = jnp.concatenate([data, jnp.full((13, 3), 7.0)])  # never drawn
    padded_weights = jnp.concatenate([weights, jnp.zeros(13)])
    padded = train.train(init, chunk_fn, padded_data, padded_weights, num_steps=20, chunk_steps=20)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(padded), strict=True):
        np.testing.assert_array_equal(a, b)
