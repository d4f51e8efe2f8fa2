"""Single-spin-flip Metropolis and parallel tempering, many chains at once.

The sweep, its random numbers and the blocked field updates are in
`isingjax.mcmc_kernels`.

Parallel tempering (Swendsen & Wang 1986; Geyer 1991; Hukushima & Nemoto 1996)
runs R replicas per chain at inverse temperatures beta_1 < ... < beta_R = 1
(each samples P^beta). After every sweep, neighbouring temperatures (even or odd
pairs, alternating) exchange with probability min(1, exp((b_k - b_{k+1})(E_k - E_{k+1}))).
Exchanges swap the temperature labels of the two replicas rather than their
configurations.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from isingjax.mcmc_kernels import (
    FIELD_PRODUCTS,
    default_field_product,
    exponential_thresholds,
    init_state,
    make_blocks,
    pad_thresholds,
    state_energy,
    state_from_sites,
    sweep,
    uniform_spins,
)
from isingjax.models import IsingParams, check_params
from isingjax.runtime import run_concurrently

MAX_BLOCK_SIZE = 256  # the sites of a block are unrolled into the compiled sweep
MIN_GROUP_CHAINS = 256  # `chain_groups`: fewer chains per group are not split further


def default_block_size(n: int) -> int:
    """Block size used when the caller gives none: min(n, 64).

    Larger blocks make the field update's products [n, B] @ [B, C] more efficient but
    the in-block pass longer (B sites unrolled, B / 4 - 1 products inside the block)
    and slower to compile. On the 2-core CPU with 4096 chains (benchmarks/bench_metropolis.py,
    README): at n = 256, 64 is faster than 32 and as fast as 128; at n = 1024, 128 is 10 %
    faster than 64 but compiles 1.7 s longer, which a user who samples once pays in full.
    """
    return min(n, 64)


class SamplerInfo(NamedTuple):
    """Diagnostics of a run (sampling phase, after burn-in).

    Attributes:
      acceptance_rate: fraction of accepted flips at beta = 1 [].
      energy_trace: energy of each recorded sample [samples_per_chain, num_chains].
      autocorr_time: integrated autocorrelation time of the energy, in recorded
        samples (units of `thin` sweeps) [].
      swap_rates: acceptance of exchanges between neighbouring temperatures [R - 1]
        (empty for plain Metropolis).
    """

    acceptance_rate: jax.Array
    energy_trace: jax.Array
    autocorr_time: jax.Array
    swap_rates: jax.Array


def integrated_autocorr_time(x: jax.Array, c: float = 5.0) -> jax.Array:
    """Integrated autocorrelation time of a trace x [T, C] (chains averaged).

    tau = 1 + 2 sum_{t=1}^{W} rho(t), with the autocorrelation rho from an FFT and
    Sokal's automatic window: the smallest W with W >= c tau(W).
    Returns a scalar in units of the trace's time step (1 for independent draws). Each
    chain is centred on its own mean, which biases tau low by O(W / T): chains need
    many more than 5 tau records (T) for a trustworthy value.
    """
    num_steps = x.shape[0]
    x = x - x.mean(axis=0)
    f = jnp.fft.rfft(x, n=2 * num_steps, axis=0)
    acf = jnp.fft.irfft(f * jnp.conj(f), axis=0)[:num_steps].mean(axis=1)
    rho = acf / jnp.where(acf[0] > 0, acf[0], 1.0)
    taus = 2.0 * jnp.cumsum(rho) - 1.0
    window = jnp.argmax(jnp.arange(num_steps) >= c * taus)
    window = jnp.where(jnp.any(jnp.arange(num_steps) >= c * taus), window, num_steps - 1)
    return jnp.where(acf[0] > 0, taus[window], 1.0)


def _swap(key, state_e, labels, betas, parity, chains, num_chains):
    """Replica exchange between temperature pairs (k, k+1) with k % 2 == parity.

    labels [R, C]: temperature index of each replica; state_e [R, C] energies of the
    chains `chains` [C] among num_chains (their columns of the whole run's uniforms).
    Returns the new labels and accepted swaps [R - 1, C].
    """
    num_temps = betas.shape[0]
    pos = jnp.argsort(labels, axis=0)  # pos[k, c]: replica at temperature k
    e = jnp.take_along_axis(state_e, pos, axis=0)
    log_ratio = (betas[:-1, None] - betas[1:, None]) * (e[:-1] - e[1:])
    pair = (jnp.arange(num_temps - 1) % 2 == parity)[:, None]
    log_u = jnp.log(jax.random.uniform(key, (num_temps - 1, num_chains))[:, chains])
    accept = pair & (log_u < log_ratio)  # [R - 1, C]
    no = jnp.zeros((1,) + accept.shape[1:], bool)
    down, up = jnp.concatenate([accept, no]), jnp.concatenate([no, accept])
    new_pos = jnp.where(
        down, jnp.roll(pos, -1, axis=0), jnp.where(up, jnp.roll(pos, 1, axis=0), pos)
    )
    return jnp.argsort(new_pos, axis=0), accept


def _check_run_args(fn, num_samples, num_chains, burn_in, thin, block_size, chain_groups):
    optional = (("block_size", block_size, 1), ("chain_groups", chain_groups, 1))
    for name, value, low in (
        ("num_samples", num_samples, 1),
        ("num_chains", num_chains, 1),
        ("burn_in", burn_in, 0),
        ("thin", thin, 1),
    ) + tuple(x for x in optional if x[1] is not None):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}.")
    if block_size is not None and block_size > MAX_BLOCK_SIZE:
        raise ValueError(
            f"{fn}: block_size must be <= {MAX_BLOCK_SIZE} (the sites of a block are unrolled "
            f"into the compiled sweep), got {block_size}."
        )
    if num_samples % num_chains:
        raise ValueError(
            f"{fn}: each chain contributes num_samples / num_chains samples, so num_samples "
            f"({num_samples}) must be a multiple of num_chains ({num_chains})."
        )
    if chain_groups is not None and num_chains % chain_groups:
        raise ValueError(
            f"{fn}: the chains run as chain_groups equal groups, so chain_groups must divide "
            f"num_chains ({num_chains}), got {chain_groups}."
        )


def _check_betas(betas) -> np.ndarray:
    betas = np.asarray(betas, dtype=np.float64)
    if (
        betas.ndim != 1
        or betas.size < 1
        or not np.all(np.isfinite(betas))
        or np.any(betas <= 0)
        or np.any(np.diff(betas) <= 0)
        or betas[-1] != 1.0
    ):
        raise ValueError(
            "parallel_tempering: betas must be a strictly increasing sequence of inverse "
            f"temperatures in (0, 1] ending at exactly 1.0 (the target), got {betas.tolist()}."
        )
    return betas


def geometric_betas(num_temps: int, beta_min: float = 0.2) -> tuple[float, ...]:
    """Inverse temperatures beta_min * (1 / beta_min)^(k / (R - 1)), k = 0..R-1, last = 1."""
    if num_temps < 2 or not 0 < beta_min < 1:
        raise ValueError(
            "geometric_betas: need num_temps >= 2 and 0 < beta_min < 1, "
            f"got num_temps={num_temps}, beta_min={beta_min}."
        )
    ladder = beta_min ** (1.0 - np.arange(num_temps) / (num_temps - 1))
    return tuple(float(b) for b in ladder[:-1]) + (1.0,)


def chain_groups(num_chains: int) -> int:
    """How many groups of chains a call runs side by side when the caller gives none.

    On a CPU, XLA runs a sweep's ~120 kernels per block one after another, most of them
    small (one site's values over the chains), so one program leaves the cores partly idle;
    two programs on half the chains each, in threads of their own, overlap. On a 2-core
    CPU, n = 256 and 4096 chains, two groups ran the 21-sweep call 1.4x faster than one
    (benchmarks/bench_metropolis.py, README). So: one group per CPU core the process may
    use, as many as divide num_chains into groups of at least MIN_GROUP_CHAINS chains;
    a single group on GPUs and TPUs, whose one program already fills the device.
    """
    if jax.default_backend() != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    fits = [g for g in range(2, cores + 1) if not num_chains % g]
    return max([g for g in fits if num_chains // g >= MIN_GROUP_CHAINS], default=1)


def _run(fn, key, params, betas, init_spins, *, block_size, field_product, groups, **sizes):
    """Validates the arguments in Python (naming `fn` in errors), then runs the compiled core:
    `groups` groups of chains side by side (threads; None: `chain_groups`), or one when
    called under a JAX transformation (jit, vmap)."""
    n = check_params(params)
    _check_run_args(fn, block_size=block_size, chain_groups=groups, **sizes)
    if field_product is not None and field_product not in FIELD_PRODUCTS:
        raise ValueError(
            f"{fn}: field_product must be None or one of {FIELD_PRODUCTS}, got {field_product!r}."
        )
    _check_init(fn, init_spins, sizes["num_chains"], n)
    block_size = min(int(block_size or default_block_size(n)), n)
    if init_spins is not None:
        init_spins = jnp.asarray(init_spins, jnp.float32)
    sizes = {k: int(v) for k, v in sizes.items()}
    num_chains = sizes["num_chains"]
    static = dict(betas=betas, block_size=block_size, **sizes)
    static["field_product"] = field_product or default_field_product()
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, params, init_spins)))
    groups = 1 if traced else int(groups or chain_groups(num_chains))
    chains = np.arange(num_chains, dtype=np.int32).reshape(groups, -1)

    def group(g):
        start = None if init_spins is None else init_spins[chains[g, 0] : chains[g, -1] + 1]
        out = _sample(key, params, start, jnp.asarray(chains[g]), **static)
        return out if groups == 1 else jax.block_until_ready(out)  # ends in its own thread

    if groups == 1:
        outs = [group(0)]
    else:
        outs = run_concurrently([functools.partial(group, g) for g in range(groups)])
    num_sweeps = sizes["num_samples"] // num_chains * sizes["thin"]
    return _combine(tuple(outs), num_temps=len(betas), num_sweeps=num_sweeps)


@functools.partial(jax.jit, static_argnames=("num_temps", "num_sweeps"))
def _combine(outs, *, num_temps, num_sweeps):
    """The samples and SamplerInfo of a run from its groups' `_sample` outputs."""
    spins = jnp.concatenate([o[0] for o in outs], axis=1)  # [per_chain, num_chains, n]
    energies = jnp.concatenate([o[1] for o in outs], axis=1)
    accepted, swaps = sum(o[2] for o in outs), sum(o[3] for o in outs)
    num_chains, n = spins.shape[1:]
    parity = np.arange(num_temps - 1) % 2  # pair k is proposed on sweeps with i % 2 == k % 2
    pairs_tried = np.maximum((num_sweeps + 1 - parity) // 2, 1)
    info = SamplerInfo(
        acceptance_rate=accepted / (num_sweeps * n * num_chains),
        energy_trace=energies,
        autocorr_time=integrated_autocorr_time(energies),
        swap_rates=swaps / (pairs_tried * num_chains),
    )
    return spins.reshape(-1, n), info


@functools.partial(
    jax.jit,
    static_argnames=(
        "betas",
        "num_samples",
        "num_chains",
        "burn_in",
        "thin",
        "block_size",
        "field_product",
    ),
)
def _sample(
    key,
    params,
    init_spins,
    chains,
    *,
    betas,
    num_samples,
    num_chains,
    burn_in,
    thin,
    block_size,
    field_product,
):
    """The sampler for a group of chains, compiled once per shape and static option.

    chains: int32 [G], the group's chains among the num_chains (init_spins, if given, are
    theirs, [G, n]). Every random draw of a chain is its column of the whole run's draw, so
    a chain does not depend on the grouping. Returns the group's records: spins
    [per_chain, G, n], energies [per_chain, G], flips accepted at beta = 1 [] and
    exchanges accepted per temperature pair [R - 1].
    """
    n = params.b.shape[0]
    blocks = make_blocks(params, block_size, field_product)
    num_temps, per_chain, group = len(betas), num_samples // num_chains, chains.shape[0]
    num_cols, n_pad = num_temps * num_chains, blocks.b.shape[0]  # the whole run's columns
    columns = (jnp.arange(num_temps)[:, None] * num_chains + chains).reshape(-1)
    beta_arr = jnp.asarray(betas, jnp.float32)
    init_key, burn_key, sample_key = jax.random.split(key, 3)
    if init_spins is None:  # generated site-major, as the state is stored
        state = state_from_sites(blocks, uniform_spins(init_key, n, num_cols, columns))
    else:
        state = init_state(blocks, jnp.tile(init_spins, (num_temps, 1)))
    labels = jnp.broadcast_to(jnp.arange(num_temps)[:, None], (num_temps, group))

    def one_sweep(phase_key, carry, i):
        state, labels = carry
        t_key, swap_key = jax.random.split(jax.random.fold_in(phase_key, i))
        t = exponential_thresholds(t_key, n, num_cols, columns)
        if num_temps > 1:
            t = t / beta_arr[labels].reshape(-1)
        t = pad_thresholds(t, n_pad)
        at_target = (labels == num_temps - 1).reshape(-1)
        state, flips = sweep(blocks, state, t)
        accepted = jnp.sum(jnp.where(at_target, flips, 0))
        swaps = jnp.zeros((0, group), bool)
        if num_temps > 1:
            e = state_energy(blocks, state).reshape(num_temps, group)
            labels, swaps = _swap(swap_key, e, labels, beta_arr, i % 2, chains, num_chains)
        return (state, labels), (accepted, swaps)

    carry = (state, labels)
    carry, _ = lax.scan(lambda c, i: one_sweep(burn_key, c, i), carry, jnp.arange(burn_in))

    def record(carry, j):
        carry, (accepted, swaps) = lax.scan(
            lambda c, i: one_sweep(sample_key, c, i), carry, j * thin + jnp.arange(thin)
        )
        state, labels = carry
        col = jnp.argmax(labels == num_temps - 1, axis=0) * group + jnp.arange(group)
        energies = state_energy(blocks, state)[col]
        return carry, (state.spins[:n, col].T, energies, accepted.sum(), swaps.sum(0))

    _, (spins, energies, accepted, swaps) = lax.scan(record, carry, jnp.arange(per_chain))
    return spins, energies, accepted.sum(), swaps.sum(axis=(0, 2))


def _check_init(fn, init_spins, num_chains, n):
    if init_spins is None:
        return
    shape = jnp.shape(init_spins)
    if shape != (num_chains, n):
        raise ValueError(
            f"{fn}: init_spins must have shape [num_chains, n] = [{num_chains}, {n}], got {shape}."
        )


def metropolis(
    key: jax.Array,
    params: IsingParams,
    *,
    num_samples: int,
    num_chains: int,
    burn_in: int,
    thin: int = 1,
    block_size: int | None = None,
    init_spins: jax.Array | None = None,
    field_product: str | None = None,
    chain_groups: int | None = None,
) -> tuple[jax.Array, SamplerInfo]:
    """Samples P(s) ∝ exp(-E(s)) with single-spin-flip Metropolis.

    Args:
      key: PRNG key.
      params: IsingParams (w [n, n], b [n]).
      num_samples: total samples; each of the num_chains chains contributes
        num_samples / num_chains (must divide evenly).
      num_chains: independent chains run in parallel (the batch axis).
      burn_in: sweeps discarded before the first sample (1 sweep = n attempted flips).
      thin: sweeps between recorded samples.
      block_size: sites per block of the field update (the chain does not depend on it);
        None: `default_block_size(n)`.
      init_spins: optional [num_chains, n] starting configurations (default: uniform).
      field_product: form of the blocks' field-update product, 'float32' or 'bfloat16x3'
        (exact bfloat16 parts; fast with bfloat16 matrix units); the chain does not depend
        on it beyond float32 summation order. None: `mcmc_kernels.default_field_product()`.
      chain_groups: the chains run as this many equal groups side by side, each compiled
        program in a thread of its own (a divisor of num_chains; each chain's states do not
        depend on it). None: `chain_groups(num_chains)`, one group per CPU core when there
        are enough chains. Under jit or vmap the call is one group.

    Returns:
      samples [num_samples, n] float32 ±1, ordered step-major (samples t*num_chains .. are
      the t-th records of every chain), and SamplerInfo diagnostics.
    """
    return _run(
        "metropolis",
        key,
        params,
        (1.0,),
        init_spins,
        num_samples=num_samples,
        num_chains=num_chains,
        burn_in=burn_in,
        thin=thin,
        block_size=block_size,
        field_product=field_product,
        groups=chain_groups,
    )


def parallel_tempering(
    key: jax.Array,
    params: IsingParams,
    *,
    betas: tuple[float, ...],
    num_samples: int,
    num_chains: int,
    burn_in: int,
    thin: int = 1,
    block_size: int | None = None,
    init_spins: jax.Array | None = None,
    field_product: str | None = None,
    chain_groups: int | None = None,
) -> tuple[jax.Array, SamplerInfo]:
    """Parallel tempering: R = len(betas) Metropolis replicas per chain at P^beta, with swaps.

    Same arguments and returns as `metropolis`, plus `betas`: strictly increasing inverse
    temperatures in (0, 1] ending at 1.0; samples are those of the beta = 1 replica.
    `init_spins` starts every replica of a chain from the same configuration.
    """
    betas = tuple(_check_betas(betas).tolist())
    return _run(
        "parallel_tempering",
        key,
        params,
        betas,
        init_spins,
        num_samples=num_samples,
        num_chains=num_chains,
        burn_in=burn_in,
        thin=thin,
        block_size=block_size,
        field_product=field_product,
        groups=chain_groups,
    )
