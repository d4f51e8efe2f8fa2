"""Training and sampling speed of every generator, beside the DDPM, in one run.

    python benchmarks/bench_generators.py [--quick]

For n in {20, 40, 100} (--quick: 20 only), batch 256: training steps per second of
  * ddpm: the paper's epsilon network (128-256-512), 1000-step schedule;
  * masked: masked discrete diffusion (Denoiser, two hidden layers of 128);
  * made: the autoregressive MADE (hidden 4n) and logistic AR (hidden 0);
and samples per second of their samplers at batch 256 (ddpm: 1000-step ancestral and
50-step DDIM; masked and AR: n network calls, exact). The ratio to the DDPM is printed
beside each. Times exclude compilation (each function runs once before it is timed).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import optax

from isingjax import runtime
from isingjax.diffusion import generate, schedule, score_net, train
from isingjax.generators import autoregressive, masked

BATCH, STEPS = 256, 100


def timed(fn):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def generators(n):
    """name -> (init_fn, chunk_fn, sample_fn(key, params))."""
    sched = schedule.make_schedule("linear", 1000)
    ddpm = score_net.ScoreNet(n=n)
    ddpm_fns = train.make_train_fns(ddpm, sched, optax.adam(1e-4), batch_size=BATCH)
    mdm = masked.Denoiser(n, (128, 128))
    out = {
        "ddpm (ancestral)": ddpm_fns
        + (lambda k, p: generate.sample(k, ddpm, p, sched, num_samples=BATCH, sampler="ddpm"),),
        "ddpm (ddim 50)": ddpm_fns
        + (lambda k, p: generate.sample(k, ddpm, p, sched, num_samples=BATCH, num_steps=50),),
        "masked": masked.make_train_fns(mdm, batch_size=BATCH)
        + (lambda k, p: masked.sample(k, mdm, p, BATCH),),
    }
    for hidden in (4 * n, 0):
        made = autoregressive.MADE(n, hidden)
        name = f"made (hidden {hidden})" if hidden else "logistic ar"
        out[name] = autoregressive.make_train_fns(made, batch_size=BATCH) + (
            lambda k, p, made=made: autoregressive.sample(k, made, p, BATCH),
        )
    return out


def main():
    args = runtime.start_benchmark(__doc__, "n = 20 only")
    for n in (20,) if args.quick else (20, 40, 100):
        data = jnp.sign(jax.random.normal(jax.random.key(0), (1000, n)))
        weights = jnp.ones(1000)
        rows, reference = [], None
        for name, (init_fn, chunk_fn, sample_fn) in generators(n).items():
            state = init_fn(jax.random.key(1), n)
            chunk = jax.jit(chunk_fn, static_argnums=3)
            train_fn = functools.partial(chunk, state, data, weights, STEPS)
            steps = STEPS / timed(train_fn)
            samples = BATCH / timed(lambda f=sample_fn, p=state.params: f(jax.random.key(2), p))
            reference = reference or (steps, samples)
            rows.append((name, steps, samples))
        print(f"\nn = {n}, batch {BATCH}")
        header = ("generator", "train steps/s", "x ddpm", "samples/s", "x ddpm")
        print("  {:<20} {:>14} {:>7} {:>11} {:>7}".format(*header))
        for name, steps, samples in rows:
            print(
                f"  {name:<20} {steps:14.0f} {steps / reference[0]:7.1f} "
                f"{samples:11.0f} {samples / reference[1]:7.1f}"
            )


if __name__ == "__main__":
    main()
