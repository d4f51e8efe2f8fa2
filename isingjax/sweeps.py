"""Sweep machinery: per-seed keys, sample-size masks, seed sharding over devices, resume.

* Seed i always uses jax.random.fold_in(root, i), so a seed is the same run whatever
  the number of seeds, the batch it is computed in, or the device it lands on.
* Sample sizes are nested prefixes of one dataset per seed: weights[k] = (arange(m_max) <
  sizes[k]), so one compile serves every size.
* With several devices, the seed axis is sharded over a 1-D Mesh of all devices (padded
  to a multiple of the device count); jit propagates the sharding through the stage.
  On a multi-host cluster, call jax.distributed.initialize() first (the entry point does
  when config.distributed is set): every process builds the same seed array and
  jax.devices() spans all hosts.
* `map_solver` maps a stage over seeds (or any batch) the way its backend runs iterative
  solvers fastest: vmap on accelerators, one after another (lax.map) on a CPU.
* Results are appended to results.jsonl a cell at a time; `finished` tells which cells a
  rerun can skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from isingjax import io

SEED_AXIS = "seeds"


def seed_key(root: jax.Array, seed) -> jax.Array:
    """The key of seed `seed` (traced or static): fold_in(root, seed)."""
    return jax.random.fold_in(root, seed)


def prefix_weights(sample_sizes: Sequence[int], m_max: int) -> jax.Array:
    """Masks [len(sample_sizes), m_max]: row k selects the first sample_sizes[k] samples."""
    sizes = np.asarray(sample_sizes)
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 1) or np.any(sizes > m_max):
        raise ValueError(
            f"sample sizes must be a non-empty sequence of integers in [1, {m_max}], "
            f"got {list(sample_sizes)}."
        )
    return (np.arange(m_max)[None, :] < sizes[:, None]).astype(np.float32)


def map_solver(fn: Callable, in_axes=0) -> Callable:
    """fn mapped over the leading axis of the arguments with in_axes 0 (the others, None,
    are passed whole), for fn whose cost is an iterative solver's (L-BFGS, fixed-point
    iterations in a while loop).

    Vmapped, a while loop runs every lane until the slowest lane has converged, so a batch
    of fits costs lanes x the largest iteration count; an accelerator hides that behind
    idle lanes, a CPU pays it (plm's fits of the `augment` grid and tuned-L2 arm at
    n = 20, M = 1600, 8 seeds: 75.8 s vmapped, 17.0 s one after another). So: jax.vmap on
    accelerators, lax.map (each element's solver runs to its own convergence) on a CPU.
    Same results to float rounding (which can tip a discrete choice, e.g. an estimator's
    grid point); in_axes is 0, None, or a tuple of them per positional argument.
    """
    if any(a not in (0, None) for a in (in_axes if isinstance(in_axes, tuple) else (in_axes,))):
        raise ValueError(f"map_solver: in_axes must be 0 or None per argument, got {in_axes}.")
    if jax.default_backend() != "cpu":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"map_solver: in_axes {in_axes} for {len(args)} arguments.")
        batched = tuple(x for x, a in zip(args, axes, strict=True) if a == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if a == 0 else x for x, a in zip(args, axes, strict=True)))

        return jax.lax.map(one, batched)

    return mapped


def run_over_seeds(stage_fn: Callable, seeds, *args):
    """Calls stage_fn(seeds, *args) with the seed axis sharded over all devices.

    seeds: the seed numbers [S], or a dict of per-seed arrays with leading axis S (e.g.
    {"seed": [S], "generated": [S, K, n]}). stage_fn must be jitted and map over that
    leading axis (vmap); the other arguments are replicated. Returns the outputs as NumPy
    arrays with the padding removed, identical (to float tolerance) to a single-device call.
    """
    if isinstance(seeds, dict):
        per_seed = jax.tree.map(np.asarray, seeds)
    else:
        per_seed = np.asarray(seeds, np.int32)
    num_seeds = len(jax.tree.leaves(per_seed)[0])
    num_devices = jax.device_count()
    if num_devices == 1:
        return jax.device_get(stage_fn(jax.tree.map(jnp.asarray, per_seed), *args))
    pad = (-num_seeds) % num_devices
    mesh = Mesh(np.asarray(jax.devices()), (SEED_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(SEED_AXIS))

    def shard(x):
        padded = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return jax.make_array_from_callback(padded.shape, sharding, lambda idx: padded[idx])

    out = stage_fn(jax.tree.map(shard, per_seed), *args)
    if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree.map(lambda x: np.asarray(x)[:num_seeds], out)


def cell_key(record: dict, coords: Iterable[str]) -> tuple:
    return tuple(record[c] for c in coords)


def fill_cells(arrays: dict, index: dict, records, coords: Iterable[str]) -> None:
    """Writes each record's fields into `arrays` (name -> array) at index[cell key]; records
    of cells outside `index` and fields a record lacks are left as they are (NaN)."""
    for record in records:
        at = index.get(cell_key(record, coords))
        if at is not None:
            for name, values in arrays.items():
                if name in record:
                    values[at] = record[name]


def finished(path, coords: Sequence[str]) -> set[tuple]:
    """The coordinates of the cells already in a results.jsonl."""
    return {cell_key(r, coords) for r in io.read_jsonl(path)}


def append_cells(path, records: Iterable[dict], done: set[tuple], coords: Sequence[str]) -> None:
    """Appends the records whose cell is not yet done (and marks them done)."""
    for record in records:
        key = cell_key(record, coords)
        if key not in done:
            io.append_jsonl(path, record)
            done.add(key)
