"""Spin-flip attempts per second of ij.metropolis beside a NumPy reference and the matmul bound.

    python benchmarks/bench_metropolis.py [--quick]

For n in {64, 256, 1024} x chains in {256, 4096} (float32) it prints:
  * isingjax: attempts/s of the jitted sampler (block_size 1 = a rank-1 field update
    after every site; 32; and the default 64);
  * numpy: a plain NumPy sampler written here, the same algorithm (vectorized chains,
    rank-1 field update per site);
  * bound: the best float32 matrix-product throughput of this machine (the faster of
    NumPy and JAX on 2048 x 2048) divided by the 2 n flops one attempted flip needs,
    and the fraction of it reached;
and for 4096 chains a profile of one sweep: random numbers alone, the sweep with fixed
thresholds (no random numbers), and the whole sweep.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import isingjax as ij
from isingjax import mcmc


def best_time(fn, repeats=3):
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(size=2048):
    a_np = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a_jax = jnp.asarray(a_np)
    mm = jax.jit(lambda x: x @ x)
    t_np = best_time(lambda: a_np @ a_np)
    t_jax = best_time(lambda: mm(a_jax).block_until_ready())
    flops = 2 * size**3
    return flops / t_np / 1e9, flops / t_jax / 1e9


def numpy_sweep(rng, w, b, spins):
    """One sequential Metropolis sweep, chains vectorized, fields updated by rank-1 steps.

    spins: [n, chains] float32 (modified in place); returns the number of flips.
    """
    fields = w @ spins + b[:, None]
    flips = 0
    thresholds = 0.5 * rng.standard_exponential(spins.shape, dtype=np.float32)
    for i in range(spins.shape[0]):
        accept = spins[i] * fields[i] < thresholds[i]
        delta = np.where(accept, -2.0 * spins[i], 0.0).astype(np.float32)
        spins[i] += delta
        fields += np.outer(w[:, i], delta)
        flips += int(accept.sum())
    return flips


def isingjax_rate(params, chains, block_size, sweeps):
    n = params.b.shape[0]
    run = jax.jit(
        lambda key: ij.metropolis(
            key,
            params,
            num_samples=chains,
            num_chains=chains,
            burn_in=0,
            thin=sweeps,
            block_size=block_size,
        )[0]
    )
    keys = iter(jax.random.split(jax.random.key(1), 8))
    seconds = best_time(lambda: run(next(keys)).block_until_ready(), repeats=2)
    return sweeps * n * chains / seconds


def numpy_rate(params, chains):
    n = params.b.shape[0]
    rng = np.random.default_rng(0)
    w, b = np.asarray(params.w), np.asarray(params.b)
    spins = rng.choice(np.float32([-1, 1]), size=(n, chains))
    seconds = best_time(lambda: numpy_sweep(rng, w, b, spins), repeats=1)
    return n * chains / seconds


def profile_sweep(params, chains, block_size, sweeps=4):
    """Seconds per sweep for: random numbers only, the sweep alone, both."""
    n = params.b.shape[0]
    blocks = mcmc.make_blocks(params, block_size)
    state = mcmc.init_state(blocks, jax.random.rademacher(jax.random.key(2), (chains, n)))
    fixed = 0.5 * jax.random.exponential(jax.random.key(3), (n, chains))

    def thresholds(key, i):
        return 0.5 * jax.random.exponential(jax.random.fold_in(key, i), (n, chains))

    @jax.jit
    def rng_only(key):
        return jax.lax.scan(
            lambda c, i: (c + thresholds(key, i)[0, 0], None), 0.0, jnp.arange(sweeps)
        )[0]

    @jax.jit
    def sweep_only(key):
        body = lambda s, i: (mcmc.sweep(blocks, s, fixed + 0 * i)[0], None)  # noqa: E731
        return jax.lax.scan(body, state, jnp.arange(sweeps))[0].spins

    @jax.jit
    def both(key):
        body = lambda s, i: (mcmc.sweep(blocks, s, thresholds(key, i))[0], None)  # noqa: E731
        return jax.lax.scan(body, state, jnp.arange(sweeps))[0].spins

    key = jax.random.key(4)
    return {
        name: best_time(lambda f=f: f(key).block_until_ready()) / sweeps
        for name, f in (
            ("random numbers", rng_only),
            ("sweep, fixed thresholds", sweep_only),
            ("whole sweep", both),
        )
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=64 and 256 only")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} JAX device(s) {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, numpy {np.__version__}"
    )
    gf_np, gf_jax = matmul_gflops()
    best = max(gf_np, gf_jax)
    print(f"float32 matmul 2048^2: numpy {gf_np:.0f} GFLOP/s, jax {gf_jax:.0f} GFLOP/s")
    sizes = (64, 256) if args.quick else (64, 256, 1024)
    header = (
        f"{'n':>5} {'chains':>6} | {'jax B=1':>9} {'jax B=32':>9} {'jax B=64':>9} | "
        f"{'numpy':>9} | {'bound':>9} {'best/bound':>10} {'best/numpy':>10}"
    )
    print("attempted flips per second\n" + header + "\n" + "-" * len(header))
    for n in sizes:
        params = ij.sk_model(jax.random.key(0), n, beta=1.0, bias_std=0.1)
        for chains in (256, 4096):
            sweeps = max(2, int(4e7 // (n * chains)))
            # block_size 1 is ~10x slower: fewer sweeps keep the run short.
            rates = [
                isingjax_rate(params, chains, bs, sweeps if bs > 1 else max(2, sweeps // 8))
                for bs in (1, 16, 32)
            ]
            ref = numpy_rate(params, chains)
            bound = best * 1e9 / (2 * n)
            print(
                f"{n:>5} {chains:>6} | "
                + " ".join(f"{r:9.3g}" for r in rates)
                + f" | {ref:9.3g} | {bound:9.3g} {max(rates) / bound:10.1%}"
                f" {max(rates) / ref:10.1f}",
                flush=True,
            )
    print("\nprofile of one sweep, 4096 chains, block_size 64 (seconds per sweep)")
    for n in sizes[1:]:
        params = ij.sk_model(jax.random.key(0), n, beta=1.0, bias_std=0.1)
        prof = profile_sweep(params, 4096, 64)
        flips = n * 4096
        print(
            f"  n={n}: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms ({flips / v:.3g}/s)" for k, v in prof.items())
        )


if __name__ == "__main__":
    main()
