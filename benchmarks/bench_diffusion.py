"""Speed of the DDPM pieces on this machine.

    python benchmarks/bench_diffusion.py

Prints training steps per second (n = 40, batch 256, the default network), samples per
second of the 1000-step ancestral sampler, and 8 seeds trained in one vmapped call beside
8 sequential calls (same steps each). Times exclude compilation.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import optax

from isingjax.diffusion import sampling, schedule, score_net, train

N, BATCH, STEPS, SEEDS = 40, 256, 200, 8


def timed(fn):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main():
    print(
        f"machine: {platform.machine()}, {jax.device_count()} JAX device(s) "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}"
    )
    sched = schedule.make_schedule("linear", 1000)
    net = score_net.ScoreNet(n=N)
    init_fn, chunk_fn = train.make_train_fns(net, sched, optax.adam(1e-4), batch_size=BATCH)
    data = jnp.sign(jax.random.normal(jax.random.key(0), (1000, N)))
    weights = jnp.ones(1000)
    chunk = jax.jit(chunk_fn, static_argnums=3)
    state = init_fn(jax.random.key(1), N)
    seconds = timed(lambda: chunk(state, data, weights, STEPS))
    print(f"training: {STEPS / seconds:.0f} steps/s (n = {N}, batch {BATCH}, default network)")

    states = jax.vmap(lambda k: init_fn(k, N))(jax.random.split(jax.random.key(2), SEEDS))
    vmapped = jax.jit(jax.vmap(lambda s: chunk_fn(s, data, weights, STEPS)))
    t_vmap = timed(lambda: vmapped(states))
    singles = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(SEEDS)]
    t_loop = timed(lambda: [chunk(s, data, weights, STEPS) for s in singles])
    print(
        f"{SEEDS} seeds x {STEPS} steps: sequential {t_loop:.2f} s, one vmapped call "
        f"{t_vmap:.2f} s ({t_loop / t_vmap:.2f}x)"
    )

    eps_fn = lambda x, t: net.apply(state.params, x, t)  # noqa: E731
    for num in (256, 1024):
        sample = jax.jit(
            lambda k, num=num: sampling.ddpm_sample(k, eps_fn, sched, num_samples=num, n=N)
        )
        seconds = timed(lambda sample=sample: sample(jax.random.key(3)))
        print(f"ancestral sampler, 1000 steps, batch {num}: {num / seconds:.0f} samples/s")


if __name__ == "__main__":
    main()
