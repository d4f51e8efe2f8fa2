"""Spin-flip attempts per second of ij.metropolis as a user calls it, against the matmul bound.

    python benchmarks/bench_metropolis.py [--quick]

The bound is the best float32 matrix-product throughput of this machine (the faster of
NumPy and JAX on 2048 x 2048, measured at the start and at the end of the run, best
kept) divided by the 2 n flops one attempted flip needs (its share of the field
update h += w delta). It prints:
  * headline: n in {256, 1024} (--quick: 256), 4096 chains, the README's call
    `ij.metropolis(key, params, num_samples=4096, num_chains=4096, burn_in=20)`
    (21 sweeps), called directly: the first call (compilation included) and five
    further calls with a new key and new params of the same shape each (timed with
    block_until_ready); the best one's attempts/s and fraction of the run's best bound,
    and the fraction of each call against a matmul measured just before it (the
    machine is shared: pairing keeps a change of load from favouring either side);
  * a table over n in {64, 256, 1024} (--quick: 64, 256) x chains in {256, 4096}: the
    same direct-call rate beside a plain NumPy sampler written here (the same algorithm,
    vectorized chains, rank-1 field update after every site);
  * the headline call at block sizes 32, 64 and 128 (first call and best of three later
    ones, against the run's best bound), with its chains in 1 and 2 groups run side by side
    (`chain_groups`; the machine's default marked), and with each form of the field-update product
    (float32; bfloat16x3, the exact three-part bfloat16 product) at the default block
    size, the machine's default (`mcmc_kernels.default_field_product`) marked;
  * where a sweep's time goes (4096 chains, default block size), from the XLA CPU
    runtime's trace of the kernels it runs (`kernel_profile`): ms per sweep by kind of
    kernel (the field-update product, other whole-array updates, the in-block products,
    the per-site vector steps, random numbers, data movement).
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import isingjax as ij
from isingjax import mcmc, mcmc_kernels, runtime

HEADLINE_CHAINS, BURN_IN = 4096, 20


def best_time(fn, repeats=3):
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(size=2048, repeats=5):
    """Best float32 GFLOP/s of NumPy and of JAX on a [size, size] product."""
    a_np = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a_jax = jnp.asarray(a_np)
    mm = jax.jit(lambda x: x @ x)
    t_np = best_time(lambda: a_np @ a_np, repeats)
    t_jax = best_time(lambda: mm(a_jax).block_until_ready(), repeats)
    flops = 2 * size**3
    return flops / t_np / 1e9, flops / t_jax / 1e9


def direct_call(n, chains, burn_in=BURN_IN, repeats=3, paired=False, **options):
    """Times ij.metropolis called directly: first call, then `repeats` calls, same shapes.

    Every call gets a new key and new params; `options` (block_size, field_product,
    chain_groups) go to ij.metropolis (none given: its defaults). Returns
    (first-call seconds, best later seconds, best attempts/s, fractions of the bound):
    with paired=True each later call comes right after a matmul measurement, and its
    fraction uses that bound, so a change of the machine's load during the run does not
    favour either side.
    """
    keys = jax.random.split(jax.random.key(1), 2 * (repeats + 1))
    attempts = (burn_in + 1) * n * chains
    times, fractions = [], []
    for r in range(repeats + 1):
        gflops = max(matmul_gflops(repeats=2)) if paired and r else None
        params = ij.sk_model(keys[2 * r], n, beta=1.0, bias_std=0.1)  # new arrays every call
        params = jax.block_until_ready(params)
        start = time.perf_counter()
        samples, _ = ij.metropolis(
            keys[2 * r + 1],
            params,
            num_samples=chains,
            num_chains=chains,
            burn_in=burn_in,
            **options,
        )
        samples.block_until_ready()
        times.append(time.perf_counter() - start)
        if gflops:
            fractions.append(attempts / times[-1] / (gflops * 1e9 / (2 * n)))
    return times[0], min(times[1:]), attempts / min(times[1:]), fractions


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


def numpy_rate(n, chains):
    params = ij.sk_model(jax.random.key(0), n, beta=1.0, bias_std=0.1)
    rng = np.random.default_rng(0)
    w, b = np.asarray(params.w), np.asarray(params.b)
    spins = rng.choice(np.float32([-1, 1]), size=(n, chains))
    seconds = best_time(lambda: numpy_sweep(rng, w, b, spins), repeats=1)
    return n * chains / seconds


KINDS = {
    "field": "field update h += w[:, block] @ delta",
    "full": "other whole-array updates (fields, spins)",
    "inner": "in-block products",
    "site": "per-site vector steps",
    "rng": "random numbers",
    "move": "stacks, concatenations, slices, copies",
}


def _kernel_kinds(hlo_text, n_pad, chains):
    """Name -> kind (a key of KINDS) of every instruction of an optimized HLO module: a
    fusion or op with a dot is a product (the field update when its output is
    [n_pad, chains]), one with an xor is threefry, a fusion with at most `chains` outputs
    is a per-site step, other [n_pad, chains] outputs are whole-array updates."""
    bodies, name = {}, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) \(", line)
        if head:
            name = head.group(1)
            bodies[name] = []
        elif name is not None:
            bodies[name].append(line)
    inst = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]\S* ([\w-]+)\((.*)")
    kinds = {}
    for lines in bodies.values():
        for line in lines:
            m = inst.match(line)
            if not m:
                continue
            iname, dims, op, rest = m.groups()
            called = re.search(r"calls=%([\w.\-]+)", rest)
            text = line + "\n".join(bodies.get(called.group(1), []) if called else [])
            shape = tuple(int(d) for d in dims.split(",") if d)
            if " dot(" in text:
                kinds[iname] = "field" if shape == (n_pad, chains) else "inner"
            elif " xor(" in text:
                kinds[iname] = "rng"
            elif shape == (n_pad, chains):
                kinds[iname] = "full"
            elif op == "fusion" and int(np.prod(shape)) <= chains:
                kinds[iname] = "site"
            else:
                kinds[iname] = "move"
    return kinds


def kernel_profile(n, chains, gflops, sweeps=4, calls=3):
    """Where a sweep's time goes, from the XLA CPU runtime's own trace of its kernels.

    Runs `calls` times a jitted scan of `sweeps` whole sweeps (thresholds drawn inside, as in
    ij.metropolis) under jax.profiler and sums each kernel's duration by kind
    (`_kernel_kinds`); prints the untraced wall time per sweep (best of `calls`), the
    kernels per sweep, their time by kind and the time during which some kernel ran.
    """
    params = ij.sk_model(jax.random.key(0), n, beta=1.0, bias_std=0.1)
    blocks = mcmc_kernels.make_blocks(
        params, mcmc.default_block_size(n), mcmc_kernels.default_field_product()
    )
    n_pad = blocks.b.shape[0]
    state = mcmc_kernels.init_state(blocks, jax.random.rademacher(jax.random.key(2), (chains, n)))

    def sweeps_fn(key, blocks, state):
        def body(s, i):
            t = mcmc_kernels.exponential_thresholds(jax.random.fold_in(key, i), n, chains)
            return mcmc_kernels.sweep(blocks, s, mcmc_kernels.pad_thresholds(t, n_pad))[0], None

        return lax.scan(body, state, jnp.arange(sweeps))[0].spins

    key = jax.random.key(4)
    compiled = jax.jit(sweeps_fn).lower(key, blocks, state).compile()
    kinds = _kernel_kinds(compiled.as_text(), n_pad, chains)
    wall = best_time(lambda: compiled(key, blocks, state).block_until_ready(), calls)
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir, create_perfetto_trace=True):
            for _ in range(calls):
                compiled(key, blocks, state).block_until_ready()
        (trace,) = Path(log_dir).rglob("perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    kernels = [e for e in events if e.get("ph") == "X" and e.get("name") in kinds]
    if not kernels:
        raise RuntimeError("the profiler's trace has no events of the sweep's kernels")
    per_sweep = 1e-3 / (sweeps * calls)  # trace durations are in microseconds
    busy = dict.fromkeys(KINDS, 0.0)
    for e in kernels:
        busy[kinds[e["name"]]] += e["dur"] * per_sweep
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels)
    covered, end = 0.0, -np.inf
    for lo, hi in spans:  # the union of the kernels' intervals
        covered += max(0.0, hi - max(lo, end))
        end = max(end, hi)
    bound_ms = 2 * n * n * chains / (gflops * 1e6)
    print(
        f"  n={n}, B={mcmc.default_block_size(n)}, {mcmc_kernels.default_field_product()} "
        f"product: whole sweep {wall * 1e3 / sweeps:.2f} ms "
        f"(untraced, best of {calls}), {len(kernels) / (sweeps * calls):.0f} kernels; traced: "
        + ", ".join(f"{KINDS[k]} {v:.2f}" for k, v in busy.items())
        + f"; sum {sum(busy.values()):.2f}, some kernel running {covered * per_sweep:.2f}; "
        f"the field-update flops at the bound {bound_ms:.2f}",
        flush=True,
    )


def main():
    # No compilation cache: the first call's time is the compile a new user pays.
    args = runtime.start_benchmark(__doc__, "headline n=256; table n=64, 256", cache=False)
    gf_start = matmul_gflops()
    headline_sizes = (256,) if args.quick else (256, 1024)
    headline = {n: direct_call(n, HEADLINE_CHAINS, repeats=5, paired=True) for n in headline_sizes}
    gf_end = matmul_gflops()
    gf = max(gf_start + gf_end)
    print(
        "float32 matmul 2048^2 (GFLOP/s), numpy / jax: "
        f"start {gf_start[0]:.0f} / {gf_start[1]:.0f}, end {gf_end[0]:.0f} / {gf_end[1]:.0f}; "
        f"bound uses the best, {gf:.0f}"
    )
    print(
        f"\nheadline: ij.metropolis(key, params, num_samples={HEADLINE_CHAINS}, "
        f"num_chains={HEADLINE_CHAINS}, burn_in={BURN_IN}) called directly"
    )
    for n, (first, later, rate, fractions) in headline.items():
        bound = gf * 1e9 / (2 * n)
        print(
            f"  n={n:>4}: first call {first:.2f} s (with compilation), best later call "
            f"{later:.3f} s -> {rate:.3g} attempts/s = {rate / bound:.1%} of the run's best "
            f"bound {bound:.3g}/s; each call against a matmul measured just before it: "
            f"median {np.median(fractions):.1%} (" + ", ".join(f"{f:.0%}" for f in fractions) + ")"
        )
    sizes = (64, 256) if args.quick else (64, 256, 1024)
    header = (
        f"{'n':>5} {'chains':>6} | {'isingjax':>9} {'numpy':>9} {'x numpy':>8} | "
        f"{'bound':>9} {'of bound':>8}"
    )
    print("\nattempted flips per second, direct calls\n" + header + "\n" + "-" * len(header))
    for n in sizes:
        for chains in (256, 4096):
            if chains == HEADLINE_CHAINS and n in headline:
                rate = headline[n][2]
            else:
                burn_in = max(1, int(4e7 // (n * chains)) - 1)
                rate = direct_call(n, chains, burn_in=burn_in)[2]
            ref = numpy_rate(n, chains)
            bound = gf * 1e9 / (2 * n)
            print(
                f"{n:>5} {chains:>6} | {rate:9.3g} {ref:9.3g} {rate / ref:8.1f} | "
                f"{bound:9.3g} {rate / bound:8.1%}",
                flush=True,
            )
    print(f"\nblock size, the headline call (default B = {mcmc.default_block_size(256)})")
    for n in headline_sizes:
        for block_size in (32, 64, 128):
            first, later, rate, _ = direct_call(n, HEADLINE_CHAINS, block_size=block_size)
            print(
                f"  n={n:>4}, B={block_size:>3}: first call {first:.2f} s, best later call "
                f"{later:.3f} s = {rate / (gf * 1e9 / (2 * n)):.1%} of the bound",
                flush=True,
            )
    groups = mcmc.chain_groups(HEADLINE_CHAINS)
    print(f"\nchain groups run side by side, the headline call (this machine's default: {groups})")
    for n in headline_sizes:
        for g in sorted({1, 2, groups}):
            first, later, rate, _ = direct_call(n, HEADLINE_CHAINS, chain_groups=g)
            print(
                f"  n={n:>4}, {g} group(s): first call {first:.2f} s, best later call "
                f"{later:.3f} s = {rate / (gf * 1e9 / (2 * n)):.1%} of the bound",
                flush=True,
            )
    default_product = mcmc_kernels.default_field_product()
    print(f"\nfield-update product, the headline call (this machine's default: {default_product})")
    for n in headline_sizes:
        for product in mcmc_kernels.FIELD_PRODUCTS:
            first, later, rate, _ = direct_call(n, HEADLINE_CHAINS, field_product=product)
            print(
                f"  n={n:>4}, {product:>10}: first call {first:.2f} s, best later call "
                f"{later:.3f} s = {rate / (gf * 1e9 / (2 * n)):.1%} of the bound",
                flush=True,
            )
    print(
        "\nprofile of a sweep, 4096 chains, default block size, from the XLA CPU runtime's "
        "trace of its kernels (ms per sweep)"
    )
    for n in headline_sizes:
        kernel_profile(n, HEADLINE_CHAINS, gf)


if __name__ == "__main__":
    main()
