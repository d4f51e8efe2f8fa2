"""Training the epsilon network: L = E_{x0, t, eps} |eps_theta(x_t, t) - eps|^2.

The training run is a pure function of (key, data): every step draws its minibatch, its
steps t ~ Uniform{1..T} and its noise from fold_in(key, step), so a run split into chunks
(for logging and checkpoints between them), interrupted and resumed from a checkpoint
reaches bit for bit the same state as an uninterrupted one. Steps run inside lax.scan;
the chunk function vmaps over seeds.

Minibatches are drawn with replacement, with probability proportional to the sample
weights (zero weight = absent), so sample-size sweeps are weight masks here too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax import lax

from isingjax.diffusion.schedule import Schedule, q_sample


class TrainState(NamedTuple):
    step: jax.Array  # [] int32
    params: Any  # network parameters
    ema_params: Any  # exponential moving average of params
    opt_state: Any
    key_data: jax.Array  # [2] uint32: raw data of the run's key (checkpointable)


def draw_rows(key: jax.Array, cdf: jax.Array, num: int) -> jax.Array:
    """num row indices drawn with replacement, row i with probability proportional to
    weight i, from the cumulative weights cdf [M] (inverse CDF: O(num log M), where a
    categorical over M logits costs O(num M)). Rows of zero weight are never drawn."""
    total = cdf[-1]
    u = jnp.minimum(jax.random.uniform(key, (num,)) * total, jnp.nextafter(total, 0.0))
    return jnp.searchsorted(cdf, u, side="right")  # the first row with cdf > u


def make_trainer(
    init_params_fn: Callable[[jax.Array, int], Any],
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int = 256,
    ema_decay: float = 0.999,
):
    """Minibatch training of any generator: (init_fn(key, n), chunk_fn(state, data, weights,
    num_steps)).

    init_params_fn(key, n) -> network parameters; loss_fn(params, x0 [B, n], keys [2]) ->
    scalar loss of a minibatch (keys: two keys for the loss's own noise). Every step's key
    is fold_in(run key, step), split into the minibatch's key and the loss's two. chunk_fn
    runs num_steps (static) optimizer steps on data [M, n] with weights [M] and returns
    (state, losses [num_steps]).
    """

    def init_fn(key: jax.Array, n: int) -> TrainState:
        init_key, run_key = jax.random.split(key)
        params = init_params_fn(init_key, n)
        return TrainState(
            jnp.zeros((), jnp.int32),
            params,
            params,
            optimizer.init(params),
            jax.random.key_data(run_key),
        )

    def step_fn(state: TrainState, data, cdf):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key_data), state.step)
        batch_key, *loss_keys = jax.random.split(key, 3)
        idx = draw_rows(batch_key, cdf, batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, data[idx], loss_keys)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        return TrainState(state.step + 1, params, ema, opt_state, state.key_data), loss

    def chunk_fn(state: TrainState, data, weights, num_steps: int):
        cdf = jnp.cumsum(jnp.maximum(weights, 0.0))
        return lax.scan(lambda s, _: step_fn(s, data, cdf), state, length=num_steps)

    return init_fn, chunk_fn


def make_train_fns(
    net,
    schedule: Schedule,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int = 256,
    ema_decay: float = 0.999,
):
    """The DDPM's (init_fn(key, n), chunk_fn(state, data, weights, num_steps)): the
    epsilon-prediction loss at t ~ Uniform{1..T} with Gaussian noise (see `make_trainer`)."""

    def init_params(key, n):
        return net.init(key, jnp.zeros((1, n)), jnp.ones((1,), jnp.int32))

    def loss_fn(params, x0, keys):
        t_key, noise_key = keys
        t = jax.random.randint(t_key, (x0.shape[0],), 1, schedule.num_steps + 1)
        noise = jax.random.normal(noise_key, x0.shape)
        pred = net.apply(params, q_sample(schedule, x0, t, noise), t)
        return jnp.mean((pred - noise) ** 2)

    return make_trainer(init_params, loss_fn, optimizer, batch_size=batch_size, ema_decay=ema_decay)


def checkpoint_manager(directory: str | Path) -> ocp.CheckpointManager:
    """An Orbax manager keeping every checkpoint (the criterion picks among them)."""
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _step(state: TrainState) -> int:
    """The state's step (the largest one for a state stacked over seeds)."""
    return int(np.max(np.asarray(state.step)))


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
    manager.save(_step(state), args=ocp.args.StandardSave(state._asdict()))
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, like: TrainState, step: int | None = None):
    """The state at `step` (default: the latest), shaped like `like`; None if there is none."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like._asdict())
    return TrainState(**manager.restore(step, args=ocp.args.StandardRestore(abstract)))


def train(
    state: TrainState,
    chunk_fn: Callable,
    data,
    weights,
    *,
    num_steps: int,
    chunk_steps: int,
    manager: ocp.CheckpointManager | None = None,
    on_chunk: Callable[[TrainState, jax.Array], None] | None = None,
) -> TrainState:
    """Trains up to num_steps in chunks, saving a checkpoint after each chunk.

    With a manager that already holds checkpoints, training resumes from the latest one
    (its steps are not repeated). on_chunk(state, losses) is called after every chunk.
    A state stacked over seeds works the same with chunk_fn vmapped over seeds.
    """
    if num_steps % chunk_steps:
        raise ValueError(
            f"num_steps ({num_steps}) must be a multiple of chunk_steps ({chunk_steps})."
        )
    if manager is not None:
        state = restore(manager, state) or state
    # An already jitted chunk_fn (static num_steps) is reused, keeping its compile cache.
    chunk = chunk_fn if hasattr(chunk_fn, "lower") else jax.jit(chunk_fn, static_argnums=3)
    while _step(state) < num_steps:
        state, losses = chunk(state, data, weights, chunk_steps)
        if manager is not None:
            save(manager, state)
        if on_chunk is not None:
            on_chunk(state, losses)
    return state
