"""The generators of the `augment` pipeline behind one interface, and their training
with a checkpoint grid.

A `Generator` is built by name from the config ('ddpm': the Gaussian DDPM of
config.diffusion thresholded to ±1; 'masked': the masked discrete diffusion of
config.masked; 'autoregressive': the MADE of config.autoregressive, `hidden = 0` being the
logistic autoregressive model). All three train with `diffusion.train.make_trainer`
(vmapped over seeds, Orbax checkpoints every `checkpoint_every` steps, resumable) and
generate per seed with `generate_raw_seeds` (raw values: the DDPM's continuous reverse
process output, which `diffusion.sampling.threshold` turns into spins; ±1 already for
the other two). `log_likelihood_seeds` is the exact log P(s) of the autoregressive model,
a Monte Carlo ELBO (a lower bound) for the masked model and absent (None) for the DDPM.

Config fields read: model.n, generator.names, diffusion.* (ddpm), masked.*,
autoregressive.*.
"""

from __future__ import annotations

import jax

from isingjax import io
from isingjax.diffusion import train
from isingjax.generators import autoregressive, masked
from isingjax.pipelines import common, diffusion_stage

NAMES = ("ddpm", "masked", "autoregressive")
SECTIONS = {"ddpm": "diffusion", "masked": "masked", "autoregressive": "autoregressive"}


def config_checks(config) -> list:
    """check_fields entries of generator.names and the masked.* / autoregressive.* fields
    (the ddpm's diffusion.* are diffusion_stage.config_checks)."""
    names = config.generator.names
    checks = [
        (
            "generator.names",
            names,
            len(names) >= 1 and len(set(names)) == len(names) and set(names) <= set(NAMES),
            f"a non-empty tuple of distinct names from {NAMES}",
        )
    ]
    for name in ("masked", "autoregressive"):
        section = config[name]
        checks += [
            (f"{name}.{k}", section[k], common.is_int(section[k], 1), "an integer >= 1")
            for k in ("train_steps", "checkpoint_every", "batch_size")
        ]
        checks.append(
            (
                f"{name}.train_steps",
                section.train_steps,
                section.train_steps % section.checkpoint_every == 0,
                f"a multiple of {name}.checkpoint_every ({section.checkpoint_every})",
            )
        )
        checks.append(
            (
                f"{name}.learning_rate",
                section.learning_rate,
                common.is_positive(section.learning_rate),
                "finite and > 0",
            )
        )
    checks += [
        (
            "masked.widths",
            config.masked.widths,
            len(config.masked.widths) >= 1
            and all(common.is_int(w, 1) for w in config.masked.widths),
            "a non-empty tuple of integers >= 1",
        ),
        (
            "masked.elbo_draws",
            config.masked.elbo_draws,
            common.is_int(config.masked.elbo_draws, 1),
            "an integer >= 1",
        ),
        (
            "autoregressive.hidden",
            config.autoregressive.hidden,
            common.is_int(config.autoregressive.hidden, 0),
            "an integer >= 0 (0 = the logistic autoregressive model)",
        ),
        (
            "autoregressive.weight_decay",
            config.autoregressive.weight_decay,
            common.is_positive(config.autoregressive.weight_decay, allow_zero=True),
            "finite and >= 0",
        ),
    ]
    return checks


class Generator:
    """One generator of the config: training, generation and likelihood per seed."""

    def __init__(self, name: str, config):
        n, self.name = config.model.n, name
        section = config[SECTIONS[name]]
        self.train_steps, self.checkpoint_every = section.train_steps, section.checkpoint_every
        loglik = None
        if name == "ddpm":
            diffusion = diffusion_stage.Diffusion(config)
            self.init_seeds, self.train_chunk = diffusion.init_seeds, diffusion.train_chunk
            self.use_ema = config.diffusion.use_ema
            raw = diffusion.generate_raw
        elif name == "masked":
            net = masked.Denoiser(n, tuple(section.widths))
            init_fn, chunk_fn = masked.make_train_fns(
                net,
                learning_rate=section.learning_rate,
                batch_size=section.batch_size,
                ema_decay=section.ema_decay,
            )
            self.use_ema = True
            raw = lambda params, key, num: masked.sample(key, net, params, num)  # noqa: E731

            def loglik(params, key, spins):
                return masked.elbo(key, net, params, spins, num_draws=section.elbo_draws)

        elif name == "autoregressive":
            net = autoregressive.MADE(n, hidden=section.hidden)
            init_fn, chunk_fn = autoregressive.make_train_fns(
                net,
                learning_rate=section.learning_rate,
                weight_decay=section.weight_decay,
                batch_size=section.batch_size,
            )
            self.use_ema = False
            raw = lambda params, key, num: autoregressive.sample(key, net, params, num)  # noqa: E731

            def loglik(params, key, spins):
                del key  # exact
                return autoregressive.log_prob(net, params, spins)

        else:
            raise ValueError(f"unknown generator {name!r}; known: {NAMES}.")
        if name != "ddpm":  # jitted once, as the DDPM's are (diffusion_stage.Diffusion)
            self.init_seeds = jax.jit(jax.vmap(lambda key: init_fn(key, n)))
            self.train_chunk = jax.jit(
                jax.vmap(lambda s, x, w, k: chunk_fn(s, x, w, k), in_axes=(0, 0, 0, None)),
                static_argnums=3,
            )
        self.generate_raw_seeds = jax.jit(jax.vmap(raw, in_axes=(0, 0, None)), static_argnums=2)
        self.log_likelihood_seeds = jax.jit(jax.vmap(loglik)) if loglik else None

    def sampling_params(self, state: train.TrainState):
        return state.ema_params if self.use_ema else state.params

    def train(self, workdir, tag: str, meta: dict, keys, data, weights):
        """Trains one copy per row of data [S, M, n] with weights [S, M] (resumable, see
        diffusion_stage.train_checkpoints); returns (step -> sampling parameters [S, ...]
        at that checkpoint, the checkpoint steps)."""
        restore, steps = diffusion_stage.train_checkpoints(
            workdir,
            tag,
            meta | {"generator": self.name},
            keys,
            data,
            weights,
            init_seeds=self.init_seeds,
            train_chunk=self.train_chunk,
            train_steps=self.train_steps,
            every=self.checkpoint_every,
        )
        return (lambda step: self.sampling_params(restore(step))), steps


def train_seconds(workdir, meta: dict) -> float:
    """Total wall seconds of the training chunks recorded with `meta` (over resumes)."""
    rows = io.read_jsonl(workdir / "metrics.jsonl")
    return float(
        sum(
            r.get("seconds", 0.0)
            for r in rows
            if r.get("kind") == "train" and all(r.get(k) == v for k, v in meta.items())
        )
    )
