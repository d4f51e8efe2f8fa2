"""Kernels of the Metropolis sampler: one blocked sweep, its random numbers, the chain state.

A sweep visits the sites in order 0..n-1 and proposes to flip each; the flip of
site i changes the energy by dE = 2 s_i h_i with the cached local field
h = w s + b, and is accepted with probability min(1, exp(-dE)). We draw
t ~ Exponential(1) / 2 per attempt and accept iff s_i h_i < t / beta, which is the
same test (P(Exp(1) > x) = exp(-x)) with one transcendental per attempt, computed
for a whole sweep at once outside the sequential loop. The uniforms behind t are
23-bit mantissas of threefry-2x32 words (Salmon et al. 2011), the generator of
jax.random, keyed per sweep by the caller's key; `threefry2x32` is that function
written out with constant rotations, which XLA fuses into one vectorized loop
(bit-identical to `jax.extend.random.threefry_2x32`, and several times faster
on CPU than the generic lowering).

Blocked updates: sites are processed in blocks of `block_size` (B). Inside a block the
sites are split recursively in halves (on multiples of `sub_block_size`, b = 4): the
first half is processed, then the second half's fields receive its flips as one product
w[second, first] @ delta[first], then the second half; a range of at most b sites is
visited one by one, each site adding the earlier flips of its range as b scalar-times-vector
terms. After the block, every field receives the block's flips as one product
h += w[:, block] @ delta, computed in bfloat16 with float32 accumulation on an exact
three-part split of w (hi + mid + lo, see `column_product`). This is the same Markov chain
as updating all n fields after every flip (block_size=1): the blocking only regroups the
sums that make up each field.

Chains are the batch axis. Internally states are stored site-major
([n, num_chains]) so a site's values over chains are contiguous.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from isingjax.models import IsingParams

SUB_BLOCK_SIZE = 4  # sites visited one by one (4 was faster than 2 and 8 on CPU at n = 256)
FIELD_PRODUCTS = ("float32", "bfloat16x3")  # forms of the field-update product


@functools.cache
def default_field_product() -> str:
    """The form of the field-update product h += w[:, block] @ delta for this machine.

    'bfloat16x3' (three exact bfloat16 parts of w, float32 accumulation: 3x the flops of
    'float32') on GPUs and TPUs and on CPUs with bfloat16 matrix units (AMX, Linux flag
    amx_bf16), where it ran several times faster than a float32 product; 'float32'
    elsewhere: on a 2-core AVX2 CPU without them, ij.metropolis at n = 256 with 4096
    chains ran 2.4x faster with 'float32' (benchmarks/bench_metropolis.py, README).
    """
    if jax.default_backend() != "cpu":
        return "bfloat16x3"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "float32"
    return "bfloat16x3" if "amx_bf16" in flags else "float32"


class ChainState(NamedTuple):
    """State of num_chains * R Markov chains, site-major."""

    spins: jax.Array  # [n_pad, num_columns] ±1
    fields: jax.Array  # [n_pad, num_columns] local fields h = w s + b


class Blocks(NamedTuple):
    # w[:, block]: [num_blocks, n_pad, B] float32, or [num_blocks, n_pad, 3 B] bfloat16
    # (its hi | mid | lo parts) for the 'bfloat16x3' product
    cols: jax.Array
    inner: jax.Array  # [num_blocks, B, B]: w[block, block]
    b: jax.Array  # [n_pad]


def split_bfloat16(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """float32 x as three bfloat16 parts hi + mid + lo == x (exact for normal floats).

    hi has the leading 8 significant bits of x, mid the next 8, lo the rest (at most 8),
    so each part is exact in bfloat16 and their float32 sum restores x bit for bit.
    """
    hi = x.astype(jnp.bfloat16)
    rest = x - hi.astype(jnp.float32)
    mid = rest.astype(jnp.bfloat16)
    return hi, mid, (rest - mid.astype(jnp.float32)).astype(jnp.bfloat16)


def column_product(cols: jax.Array, delta: jax.Array) -> jax.Array:
    """w[:, block] @ delta [n_pad, C] for flips delta in {-2, 0, 2} [B, C].

    float32 cols: one float32 product (full precision on every backend). bfloat16 cols
    (the 'bfloat16x3' form): one bfloat16 product [n_pad, 3B] @ [3B, C] of the parts of w
    against delta repeated three times, accumulated in float32: every term w_part * delta
    is exact, so this too is the float32 sum of the terms w_iq delta_q (in another order).
    """
    if cols.dtype == jnp.float32:
        return jnp.dot(cols, delta, precision=lax.Precision.HIGHEST)
    d = delta.astype(jnp.bfloat16)  # exact: delta is 0 or +-2
    return jnp.dot(cols, jnp.concatenate([d, d, d]), preferred_element_type=jnp.float32)


def make_blocks(params: IsingParams, block_size: int, field_product: str = "float32") -> Blocks:
    """Splits w into column blocks (float32, or bfloat16 parts for field_product
    'bfloat16x3') and their diagonal blocks."""
    n = params.b.shape[0]
    num_blocks = -(-n // block_size)
    n_pad = num_blocks * block_size
    w = jnp.pad(params.w.astype(jnp.float32), ((0, n_pad - n), (0, n_pad - n)))
    cols = w.reshape(n_pad, num_blocks, block_size).transpose(1, 0, 2)
    idx = jnp.arange(num_blocks)[:, None] * block_size + jnp.arange(block_size)
    inner = jax.vmap(lambda c, i: c[i])(cols, idx)
    if field_product == "bfloat16x3":
        cols = jnp.concatenate(split_bfloat16(cols), axis=2)
    elif field_product != "float32":
        raise ValueError(f"field_product must be one of {FIELD_PRODUCTS}, got {field_product!r}.")
    return Blocks(cols, inner, jnp.pad(params.b.astype(jnp.float32), (0, n_pad - n)))


def block_weights(blocks: Blocks) -> jax.Array:
    """w [n_pad, n_pad] float32 from the blocks (the bfloat16 parts' sum is exact)."""
    num_blocks, n_pad = blocks.cols.shape[:2]
    cols = blocks.cols
    if cols.dtype != jnp.float32:
        parts = cols.reshape(num_blocks, n_pad, 3, n_pad // num_blocks).astype(jnp.float32)
        cols = parts[:, :, 0] + parts[:, :, 1] + parts[:, :, 2]
    return cols.transpose(1, 0, 2).reshape(n_pad, n_pad)


def init_state(blocks: Blocks, spins: jax.Array) -> ChainState:
    """Chain state from spins [num_columns, n] (padding sites are +1 and uncoupled)."""
    return state_from_sites(blocks, spins.T)


def state_from_sites(blocks: Blocks, spins: jax.Array) -> ChainState:
    """Chain state from site-major spins [n, num_columns]."""
    n_pad = blocks.b.shape[0]
    s = jnp.pad(spins.astype(jnp.float32), ((0, n_pad - spins.shape[0]), (0, 0)), constant_values=1)
    fields = jnp.dot(block_weights(blocks), s, precision=lax.Precision.HIGHEST)
    return ChainState(s, fields + blocks.b[:, None])


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key_words: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011) on counter pairs (x0, x1).

    Args:
      key_words: [2] uint32 key.
      x0, x1: uint32 counters of one shape.

    Returns:
      Two uint32 arrays of that shape; `concatenate` of them equals
      `jax.extend.random.threefry_2x32(key_words, concatenate([x0, x1]))`.
    """
    k0, k1 = key_words[0], key_words[1]
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for r in range(5):
        for rot in _ROTATIONS[r % 2]:
            x0 = x0 + x1
            x1 = ((x1 << jnp.uint32(rot)) | (x1 >> jnp.uint32(32 - rot))) ^ x0
        x0 = x0 + ks[(r + 1) % 3]
        x1 = x1 + ks[(r + 2) % 3] + jnp.uint32(r + 1)
    return x0, x1


def random_words(
    key: jax.Array, num_rows: int, num_cols: int, what: str, columns: jax.Array | None = None
) -> jax.Array:
    """uint32 words [num_rows, num_cols]: word k of threefry_2x32(bits(key), 0, 1, 2, ...).

    Row-major order; the first half of the rows are the first outputs of the counter
    pairs, the rest the second outputs. `what` names the caller in the size error.
    columns: int32 [C'] (optional): only these columns of the [num_rows, num_cols] words,
    [num_rows, C'] (a group of chains draws its own columns of the same words).
    """
    if num_rows * num_cols > 2**32:  # uint32 counters: beyond this the stream would repeat
        raise ValueError(
            f"{what}: at most 2^32 random words per sweep (n * chains * temperatures), got "
            f"{num_rows} x {num_cols}."
        )
    half = -(-num_rows // 2)
    if columns is None:
        cols = lax.broadcasted_iota(jnp.uint32, (half, num_cols), 1)
    else:
        cols = jnp.broadcast_to(columns.astype(jnp.uint32), (half, columns.shape[0]))
    counters = lax.broadcasted_iota(jnp.uint32, cols.shape, 0) * jnp.uint32(num_cols) + cols
    key_words = jax.random.bits(key, (2,), jnp.uint32)
    hi, lo = threefry2x32(key_words, counters, counters + jnp.uint32(half * num_cols))
    return jnp.concatenate([hi, lo])[:num_rows]


def exponential_thresholds(
    key: jax.Array, num_rows: int, num_cols: int, columns: jax.Array | None = None
) -> jax.Array:
    """Exponential(1) / 2 variates [num_rows, num_cols] from one key (one sweep's thresholds;
    with `columns`, only those columns, as in `random_words`).

    Word k of `random_words` gives the uniform u = (k >> 9) / 2^23 in [0, 1) and
    t = -log(1 - u) / 2, so P(t > x) = exp(-2x) up to the 2^-23 resolution of u (the
    resolution of jax.random.uniform).
    """
    bits = random_words(key, num_rows, num_cols, "exponential_thresholds", columns)
    one_to_two = lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32)
    return -0.5 * jnp.log(2.0 - one_to_two)  # 2 - [1, 2) = 1 - u, exact in float32


def pad_thresholds(thresholds: jax.Array, n_pad: int) -> jax.Array:
    """One sweep's thresholds [n, C] as `sweep` takes them, [n_pad, C]: -inf on the
    padding sites, so they never flip (the thresholds do not depend on the block size)."""
    n = thresholds.shape[0]
    if n_pad == n:
        return thresholds
    return jnp.pad(thresholds, ((0, n_pad - n), (0, 0)), constant_values=-jnp.inf)


def uniform_spins(
    key: jax.Array, num_rows: int, num_cols: int, columns: jax.Array | None = None
) -> jax.Array:
    """Independent uniform ±1 float32 [num_rows, num_cols] (with `columns`, only those
    columns): the top bits of `random_words`."""
    bits = random_words(key, num_rows, num_cols, "uniform_spins", columns)
    return jnp.where(bits >> 31 == 1, 1.0, -1.0).astype(jnp.float32)


def _split_point(j0: int, j1: int, sub_block_size: int) -> int:
    """Where the in-block pass splits sites [j0, j1): about halfway, on a multiple of b."""
    return j0 + max(sub_block_size, (j1 - j0) // 2 // sub_block_size * sub_block_size)


def _in_block_flips(inner, s_old, h, t, j0, j1, sub_block_size, deltas):
    """Sequential flips of sites [j0, j1) of a block, appended to `deltas` ([C] rows).

    h [j1 - j0, C]: fields of these sites including every earlier flip. A range of at most
    b sites is visited one by one (site i adds w_iq delta_q for its earlier sites q); a
    longer range is split in two: the first part recursively, then the second part's fields
    receive its flips as one product w[second, first] @ delta[first], then the second part.
    """
    if j1 - j0 <= sub_block_size:
        for i in range(j0, j1):
            h_i = h[i - j0]
            for q in range(j0, i):
                h_i = h_i + inner[i, q] * deltas[q]
            s_i = s_old[i]
            deltas.append(jnp.where(s_i * h_i < t[i], -2.0 * s_i, 0.0))
        return
    m = _split_point(j0, j1, sub_block_size)
    _in_block_flips(inner, s_old, h[: m - j0], t, j0, m, sub_block_size, deltas)
    h_rest = h[m - j0 :] + inner[m:j1, j0:m] @ jnp.stack(deltas[j0:m])
    _in_block_flips(inner, s_old, h_rest, t, m, j1, sub_block_size, deltas)


def _block_pass(inner, s_old, h_blk, t, sub_block_size):
    """Sequential flips of one block [B, C]: returns delta = s_new - s_old [B, C]."""
    deltas = []
    _in_block_flips(inner, s_old, h_blk, t, 0, s_old.shape[0], sub_block_size, deltas)
    return jnp.stack(deltas)


def sweep(
    blocks: Blocks,
    state: ChainState,
    thresholds: jax.Array,
    *,
    sub_block_size: int = SUB_BLOCK_SIZE,
) -> tuple[ChainState, jax.Array]:
    """One sequential sweep over all sites; site i flips iff s_i h_i < thresholds[i].

    Args:
      blocks: coupling blocks from `make_blocks`.
      state: ChainState with [n_pad, C] arrays.
      thresholds: [n_pad, C] (-inf on padding sites, so they never flip).
      sub_block_size: sites per sub-block (static; the chain does not depend on it).

    Returns:
      (new state, number of flips per column [C]).
    """
    num_blocks, bsz = blocks.inner.shape[:2]

    def block_step(carry, xs):
        spins, fields, flips = carry
        k, cols, inner, t = xs
        s_old = lax.dynamic_slice_in_dim(spins, k * bsz, bsz)
        h_blk = lax.dynamic_slice_in_dim(fields, k * bsz, bsz)
        delta = _block_pass(inner, s_old, h_blk, t, sub_block_size)
        fields = fields + column_product(cols, delta)
        flips = flips + jnp.sum(delta != 0, axis=0)  # counted here: the old spins can be
        spins = lax.dynamic_update_slice_in_dim(spins, s_old + delta, k * bsz, 0)  # overwritten
        return (spins, fields, flips), None

    t = thresholds.reshape(num_blocks, bsz, -1)
    xs = (jnp.arange(num_blocks), blocks.cols, blocks.inner, t)
    flips = jnp.zeros(state.spins.shape[1:], jnp.int32)
    (spins, fields, flips), _ = lax.scan(block_step, (state.spins, state.fields, flips), xs)
    return ChainState(spins, fields), flips


def column_sums(x: jax.Array) -> jax.Array:
    """Sums [C] over the rows of x [R, C] by halving the rows, so each column's additions
    come in the same order whatever C is (a reduction's order may depend on it): a chain's
    energy does not depend on which other chains share its program (`mcmc.chain_groups`)."""
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        head = x[:half] + x[half : 2 * half]
        x = jnp.concatenate([head, x[2 * half :]]) if x.shape[0] % 2 else head
    return x[0]


def state_energy(blocks: Blocks, state: ChainState) -> jax.Array:
    """E = -1/2 sum_i s_i (h_i + b_i) for each column [C] (uses the cached fields)."""
    return -0.5 * column_sums(state.spins * (state.fields + blocks.b[:, None]))
