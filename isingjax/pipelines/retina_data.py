"""The data stage of the `retina` pipeline: the raster, the split by movie repeat, the
neurons and the patterns of each seed.

Per seed (a pure function of its key, vmapped over seeds):
* the repeats are permuted and cut into test (the first round(test_fraction R)),
  validation (the next round(validation_fraction R)) and training repeats (the rest), so
  no repeat, and no bin of a repeat, lies in two splits;
* model.n neurons are selected: seeded at random, the top-n by firing rate in the
  training repeats, or the config's explicit indices;
* the training patterns are max(sweep.sample_sizes) bins drawn without replacement from
  the training repeats (every M is a prefix: nested sample sizes); the validation and
  test patterns are every bin of their repeats;
* the reconstruction patterns are reconstruct.num_patterns test bins drawn without
  replacement, each with a random order of the neurons that fire in the training
  patterns (rate > reconstruct.min_rate): the first k of it are hidden (nested in k).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from isingjax import io, sweeps
from isingjax.pipelines import common

NEURON_RULES = ("random", "top_rate", "indices")


def load(config) -> np.ndarray:
    """The config's raster as ±1 spins [repeats, bins, neurons] (int8)."""
    path = io.retina_path(config.data.path)
    return io.load_raster(
        path,
        name=config.data.variable or None,
        bins_per_repeat=config.data.bins_per_repeat,
    )


def split_sizes(config, num_repeats: int) -> tuple[int, int, int]:
    """(test, validation, training) repeat counts."""
    num_test = max(1, round(config.data.test_fraction * num_repeats))
    num_val = max(1, round(config.data.validation_fraction * num_repeats))
    return num_test, num_val, num_repeats - num_test - num_val


def check_data(config, raster_shape) -> None:
    """ConfigErrors for a config the raster cannot serve (too few neurons, repeats or bins)."""
    num_repeats, num_bins, num_neurons = raster_shape
    num_test, num_val, num_train = split_sizes(config, num_repeats)
    m_max = max(config.sweep.sample_sizes)
    indices = tuple(config.data.indices)
    common.check_fields(
        [
            (
                "model.n",
                config.model.n,
                config.model.n <= num_neurons,
                f"<= the raster's {num_neurons} neurons",
            ),
            (
                "data.indices",
                indices,
                config.data.neurons != "indices" or all(0 <= i < num_neurons for i in indices),
                f"indices in [0, {num_neurons})",
            ),
            (
                "data.test_fraction",
                config.data.test_fraction,
                num_train >= 1,
                f"small enough to leave training repeats (raster: {num_repeats} repeats; "
                f"test {num_test}, validation {num_val})",
            ),
            (
                "sweep.sample_sizes",
                config.sweep.sample_sizes,
                m_max <= num_train * num_bins,
                f"at most the {num_train * num_bins} bins of the {num_train} training repeats",
            ),
            (
                "reconstruct.num_patterns",
                config.reconstruct.num_patterns,
                config.reconstruct.num_patterns <= num_test * num_bins,
                f"at most the {num_test * num_bins} bins of the {num_test} test repeats",
            ),
        ]
    )


def keys(root, seed) -> dict:
    names = ("split", "neurons", "train", "recon", "hidden", "mcmc", "independent")
    names += ("diffusion", "criterion", "generate", "l2", "attack", "inpaint")
    return dict(zip(names, jax.random.split(sweeps.seed_key(root, seed), len(names)), strict=True))


def make_select_fn(config, raster_shape):
    """jit(vmap over seeds): fn(raster [R, T, N] int8, seeds [S], root) -> per-seed dict of
    repeats, neurons and patterns (float32 ±1), as in the module docstring."""
    num_repeats, num_bins, num_neurons = raster_shape
    num_test, num_val, num_train = split_sizes(config, num_repeats)
    n, m_max, k_max = config.model.n, max(config.sweep.sample_sizes), max(config.reconstruct.hidden)
    num_patterns = config.reconstruct.num_patterns

    def one_seed(raster, seed, root):
        k = keys(root, seed)
        repeats = jax.random.permutation(k["split"], num_repeats)
        test_rep, val_rep = repeats[:num_test], repeats[num_test : num_test + num_val]
        train_rep = repeats[num_test + num_val :]
        if config.data.neurons == "random":
            neurons = jnp.sort(jax.random.permutation(k["neurons"], num_neurons)[:n])
        elif config.data.neurons == "top_rate":
            counts = jnp.sum(raster[train_rep] > 0, axis=(0, 1), dtype=jnp.int32)
            neurons = jnp.sort(jnp.argsort(-counts, stable=True)[:n])
        else:
            neurons = jnp.asarray(config.data.indices, jnp.int32)
        sub = raster[:, :, neurons].astype(jnp.float32)  # [R, T, n]
        pool = sub[train_rep].reshape(num_train * num_bins, n)
        train = pool[jax.random.permutation(k["train"], pool.shape[0])[:m_max]]
        test = sub[test_rep].reshape(num_test * num_bins, n)
        recon = test[jax.random.permutation(k["recon"], test.shape[0])[:num_patterns]]
        rates = jnp.mean(train > 0, axis=0)
        eligible = rates > config.reconstruct.min_rate
        scores = jax.random.uniform(k["hidden"], (num_patterns, n))
        order = jnp.argsort(jnp.where(eligible, -scores, 1.0), axis=1)[:, :k_max]
        return {
            "train_repeats": jnp.sort(train_rep),
            "validation_repeats": jnp.sort(val_rep),
            "test_repeats": jnp.sort(test_rep),
            "neurons": neurons,
            "train": train,
            "validation": sub[val_rep].reshape(num_val * num_bins, n),
            "test": test,
            "recon": recon,
            "hidden": order,
            "num_eligible": jnp.sum(eligible),
        }

    return jax.jit(jax.vmap(one_seed, in_axes=(None, 0, None)))


def select(config, raster, root) -> dict:
    """Every seed's selection (NumPy arrays, leading axis seeds); raises when a seed has
    fewer firing neurons than the largest k to hide."""
    check_data(config, raster.shape)
    fn = make_select_fn(config, raster.shape)
    seeds = jnp.arange(config.num_seeds, dtype=jnp.int32)
    out = jax.device_get(fn(jnp.asarray(raster), seeds, root))
    k_max = max(config.reconstruct.hidden)
    short = np.flatnonzero(out["num_eligible"] < k_max)
    if short.size:
        raise common.ConfigError(
            f"seed {int(short[0])} has {int(out['num_eligible'][short[0]])} neurons firing "
            f"more often than reconstruct.min_rate in its training patterns, fewer than the "
            f"largest k to hide ({k_max}); lower reconstruct.hidden or min_rate."
        )
    return out
