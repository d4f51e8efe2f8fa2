"""The diffusion stage shared by the `augment` and `guided` pipelines: one DDPM per seed
(vmapped over seeds), trained with Orbax checkpoints, and at every checkpoint the
energy-variance criterion (isingjax/diffusion/criterion.py), whose chosen checkpoint
supplies the generator.

Config fields read: model.n, num_seeds, diffusion.*, criterion.*, inference.options.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from isingjax import exact, inference, io, metrics, runtime
from isingjax.diffusion import criterion, sampling, schedule, score_net, train
from isingjax.models import energy
from isingjax.pipelines import common


def config_checks(config) -> list:
    """check_fields entries of the diffusion.* and criterion.* fields."""
    d, c = config.diffusion, config.criterion
    return [
        (f"diffusion.{k}", d[k], common.is_int(d[k], 1), "an integer >= 1")
        for k in ("train_steps", "checkpoint_every", "batch_size", "num_steps", "time_dim")
    ] + [
        (
            "diffusion.train_steps",
            d.train_steps,
            d.train_steps % d.checkpoint_every == 0,
            f"a multiple of diffusion.checkpoint_every ({d.checkpoint_every})",
        ),
        (
            "diffusion.schedule",
            d.schedule,
            d.schedule in schedule.SCHEDULES,
            f"one of {schedule.SCHEDULES}",
        ),
        (
            "diffusion.sampler",
            d.sampler,
            d.sampler in sampling.SAMPLERS,
            f"one of {sampling.SAMPLERS}",
        ),
        (
            "diffusion.ddim_steps",
            d.ddim_steps,
            common.is_int(d.ddim_steps, 1) and d.ddim_steps <= d.num_steps,
            f"an integer in [1, diffusion.num_steps = {d.num_steps}]",
        ),
        (
            "diffusion.widths",
            d.widths,
            len(d.widths) >= 1 and all(common.is_int(w, 1) for w in d.widths),
            "a non-empty tuple of integers >= 1",
        ),
        (
            "criterion.method",
            c.method,
            c.method in inference.METHODS,
            f"one of {tuple(inference.METHODS)}",
        ),
        ("criterion.num_samples", c.num_samples, common.is_int(c.num_samples, 2), ">= 2"),
        (
            "criterion.tol_se",
            c.tol_se,
            isinstance(c.tol_se, int | float) and math.isfinite(c.tol_se) and c.tol_se > 0,
            "finite and > 0 (standard errors)",
        ),
    ]


def fit_fn(config, method: str):
    """spins [M, n], weights [M] | None -> IsingParams, with the config's options."""
    options = dict(config.inference.options.get(method, {}))
    return lambda spins, weights=None: inference.METHODS[method](spins, weights, **options)[0]


def fit_with_converged_fn(config, method: str):
    """spins [M, n], weights [M] | None -> (IsingParams, converged: bool scalar), with the
    config's options; converged is the estimator's info['converged'] (True when it
    reports none)."""
    options = dict(config.inference.options.get(method, {}))

    def fit(spins, weights=None):
        estimate, info = inference.METHODS[method](spins, weights, **options)
        return estimate, jnp.asarray(info.get("converged", jnp.asarray(True)), bool)

    return fit


class Diffusion:
    """The network, schedule and sampler of a config."""

    def __init__(self, config):
        d = config.diffusion
        self.config = config
        self.net = score_net.ScoreNet(config.model.n, tuple(d.widths), d.time_dim)
        self.schedule = schedule.make_schedule(d.schedule, d.num_steps)
        self.init_fn, self.chunk_fn = train.make_train_fns(
            self.net,
            self.schedule,
            optax.adam(d.learning_rate),
            batch_size=d.batch_size,
            ema_decay=d.ema_decay,
        )
        # Jitted once per run, so blocks of equal shapes share their compiles (the
        # initialization too: run eagerly, every parameter's initializer compiled apart).
        self.init_seeds = jax.jit(jax.vmap(lambda key: self.init_fn(key, config.model.n)))
        self.train_chunk = jax.jit(self.vmapped_chunk, static_argnums=3)
        self.generate_seeds = jax.jit(
            jax.vmap(self.generate, in_axes=(0, 0, None)), static_argnums=2
        )
        self.generate_raw_seeds = jax.jit(
            jax.vmap(self.generate_raw, in_axes=(0, 0, None)), static_argnums=2
        )
        self.inpaint_seeds = jax.jit(jax.vmap(self.inpaint))
        self.infer_observed = jax.jit(jax.vmap(fit_fn(config, config.criterion.method)))
        self.criterion = _criterion_fn(config, self)

    def sampling_params(self, state: train.TrainState):
        return state.ema_params if self.config.diffusion.use_ema else state.params

    def eps_fn(self, params):
        return lambda x, t: self.net.apply(params, x, t)

    def generate(self, params, key, num_samples: int):
        """num_samples spins (±1) from the network with parameters params."""
        return sampling.threshold(self.generate_raw(params, key, num_samples))

    def generate_raw(self, params, key, num_samples: int):
        """The reverse process's continuous output x_0 [num_samples, n] before
        thresholding (`generate` thresholds it); a non-finite entry would be
        thresholded to -1 silently, so callers count them on this."""
        d = self.config.diffusion
        return sampling.sample_continuous(
            key,
            self.eps_fn(params),
            self.schedule,
            num_samples=num_samples,
            n=self.config.model.n,
            sampler=d.sampler,
            num_steps=d.ddim_steps,
        )

    def inpaint(self, params, key, known, mask):
        """The reverse process's continuous x_0 [B, n] with the coordinates where mask
        [B, n] is True held to known [B, n] (sampling.inpainting_corrector): the others
        filled in by the network, conditioned on them."""
        d = self.config.diffusion
        return sampling.sample_continuous(
            key,
            self.eps_fn(params),
            self.schedule,
            num_samples=known.shape[0],
            n=self.config.model.n,
            sampler=d.sampler,
            num_steps=d.ddim_steps,
            corrector=sampling.inpainting_corrector(self.schedule, known, mask),
        )

    def vmapped_chunk(self, state, data, weights, num_steps: int):
        return jax.vmap(lambda s, x, w: self.chunk_fn(s, x, w, num_steps))(state, data, weights)


def _criterion_fn(config, diffusion):
    """jit(vmap over seeds): the criterion's measurements at one checkpoint."""
    fit = fit_fn(config, config.criterion.method)

    def one_seed(params, key, observed, truth, inferred):
        raw = diffusion.generate_raw(params, key, config.criterion.num_samples)
        x = sampling.threshold(raw)
        e_gen, e_obs = energy(inferred, x), energy(inferred, observed)
        out = {
            "var_gen_inferred": jnp.var(e_gen),
            "var_obs_inferred": jnp.var(e_obs),
            "var_gen_se": criterion.variance_se(e_gen),
            "var_obs_se": criterion.variance_se(e_obs),
            "num_nonfinite": jnp.sum(~jnp.isfinite(raw)),
            "copy_fraction": metrics.copy_fraction(x, observed),
            "unique_fraction": metrics.unique_fraction(x),
        }
        if truth is None:  # real data: no true model to score against
            return out
        return out | {
            "var_gen_true": jnp.var(energy(truth, x)),
            "var_obs_true": jnp.var(energy(truth, observed)),
            "mean_gen_true": jnp.mean(energy(truth, x)),
            "mse_augmented": metrics.param_mse(fit(jnp.concatenate([observed, x])), truth)["all"],
            "mse_observed": metrics.param_mse(inferred, truth)["all"],
        }

    return jax.jit(jax.vmap(one_seed))


def train_checkpoints(
    workdir,
    tag: str,
    meta: dict,
    keys,
    data,
    weights,
    *,
    init_seeds,
    train_chunk,
    train_steps,
    every,
):
    """Trains one network per row of data [S, M, n] with weights [S, M] (init_seeds(keys [S])
    -> TrainState stacked over rows, train_chunk vmapped over rows; both jitted once by the
    caller, so blocks of equal shapes share their compiles), resuming from checkpoints/<tag>
    and saving one every `every` steps; appends a {"kind": "train"} | meta record per chunk
    to metrics.jsonl (step, mean loss per row, wall seconds of the chunk). Returns
    (restore(step) -> the TrainState at that checkpoint, the checkpoint steps)."""
    state = init_seeds(keys)
    manager = train.checkpoint_manager(workdir / "checkpoints" / tag)
    progress = runtime.Progress(f"{tag}: training chunks", train_steps // every)
    clock = [time.time()]

    def on_chunk(state, losses):
        step = int(np.max(state.step))
        record = {"kind": "train"} | meta | {"step": step, "seconds": time.time() - clock[0]}
        losses = np.asarray(losses)
        io.append_jsonl(workdir / "metrics.jsonl", record | {"loss": losses.mean(axis=1).tolist()})
        progress.step(f"(step {step}, loss {losses.mean():.4f})", at=step // every)
        clock[0] = time.time()

    state = train.train(
        state,
        train_chunk,
        data,
        weights,
        num_steps=train_steps,
        chunk_steps=every,
        manager=manager,
        on_chunk=on_chunk,
    )
    return (lambda step: train.restore(manager, state, step)), list(manager.all_steps())


def train_and_select(
    config, diffusion, workdir, meta: dict, *, tag, train_keys, criterion_keys, observed, truth
):
    """Trains one DDPM per seed on observed [S, M, n] (resuming from checkpoints/<tag>),
    measures the criterion at every checkpoint (records {"kind": "criterion"} | meta in
    metrics.jsonl, skipping recorded ones; truth may be None for real data, which leaves
    out the measurements against a true model) and returns (sampling parameters of each
    seed's chosen checkpoint, stacked over seeds; the chosen steps)."""
    d, path = config.diffusion, workdir / "metrics.jsonl"
    num_seeds = observed.shape[0]
    restore, steps = train_checkpoints(
        workdir,
        tag,
        meta,
        train_keys,
        observed,
        jnp.ones(observed.shape[:2]),
        init_seeds=diffusion.init_seeds,
        train_chunk=diffusion.train_chunk,
        train_steps=d.train_steps,
        every=d.checkpoint_every,
    )

    def recorded():
        return {
            (r["step"], r["seed"]): r
            for r in io.read_jsonl(path)
            if r.get("kind") == "criterion" and all(r.get(k) == v for k, v in meta.items())
        }

    have = recorded()
    todo = [s for s in steps if any((s, i) not in have for i in range(num_seeds))]
    if todo:
        inferred = diffusion.infer_observed(observed)
        for step in todo:
            params = diffusion.sampling_params(restore(step))
            out = diffusion.criterion(params, criterion_keys, observed, truth, inferred)
            out = jax.device_get(out)
            for i in range(num_seeds):
                record = {"kind": "criterion"} | meta | {"step": step, "seed": i}
                io.append_jsonl(path, record | {k: float(v[i]) for k, v in out.items()})
        have = recorded()
    chosen = []
    for i in range(num_seeds):
        rows = [have[(s, i)] for s in steps]
        var_gen = [r["var_gen_inferred"] for r in rows]
        se = [math.hypot(r["var_gen_se"], r["var_obs_se"]) for r in rows]
        var_obs = rows[0]["var_obs_inferred"]
        chosen.append(criterion.select(steps, var_gen, var_obs, se, tol=config.criterion.tol_se))
    restored = {s: diffusion.sampling_params(restore(s)) for s in set(chosen)}
    params = jax.tree.map(
        lambda *leaves: jnp.stack(leaves),
        *[jax.tree.map(lambda x, i=i: x[i], restored[s]) for i, s in enumerate(chosen)],
    )
    return params, chosen


def generate_selected(
    config, diffusion, workdir, meta: dict, *, path, keys: dict, observed, truth, num_samples
):
    """The DDPM stage of one block, cached: trains one DDPM per seed on observed [S, M, n]
    (`train_and_select`, checkpoints/<path stem>), generates num_samples spins per seed at
    the chosen checkpoint and returns (spins [S, num_samples, n] float32, non-finite
    values [S] of the raw reverse-process output they were thresholded from); the spins go
    to `path` (.npz, reused by a rerun) and the chosen checkpoint's generator checks
    (`generator_checks`) to metrics.jsonl ({"kind": "generator"} | meta).

    keys: {"train", "criterion", "generate"} -> [S] keys. Non-finite values are counted,
    not judged: callers decide whether they are an error."""
    if path.exists():
        cached = np.load(path)
        return cached["spins"].astype(np.float32), cached["num_nonfinite"]
    params, chosen = train_and_select(
        config,
        diffusion,
        workdir,
        meta,
        tag=path.stem,
        train_keys=keys["train"],
        criterion_keys=keys["criterion"],
        observed=observed,
        truth=truth,
    )
    raw = diffusion.generate_raw_seeds(params, keys["generate"], num_samples)
    nonfinite = np.asarray(jnp.sum(~jnp.isfinite(raw), axis=(1, 2)))
    spins = sampling.threshold(raw)
    checks = _generator_checks_seeds(spins, observed, truth)
    for i, step in enumerate(chosen):
        record = {"kind": "generator"} | meta | {"seed": i}
        record |= {"chosen_step": step, "num_nonfinite": int(nonfinite[i])}
        record |= {k: float(v[i]) for k, v in checks.items()}
        io.append_jsonl(workdir / "metrics.jsonl", record)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        spins=np.asarray(spins, np.int8),
        chosen_steps=np.asarray(chosen),
        num_nonfinite=nonfinite,
    )
    return np.asarray(spins), nonfinite


def generator_checks(generated, observed, truth):
    """Generated spins [K, n] against the truth (n <= 20) and the observed spins: exact KL,
    copies of observed states and their expected fraction for exact samples, uniqueness,
    diversity, energy variances and moment errors."""
    exact_moments = exact.moments(truth)
    return {
        "kl_generated": exact.kl_divergence(generated, truth),
        "copy_fraction": metrics.copy_fraction(generated, observed),
        "expected_copy_fraction": metrics.expected_copy_fraction(truth, observed),
        "unique_fraction": metrics.unique_fraction(generated),
        "mean_hamming": metrics.mean_hamming_distance(generated),
        "energy_var_generated": jnp.var(energy(truth, generated)),
        "energy_var_observed": jnp.var(energy(truth, observed)),
        "energy_var_exact": _exact_energy_var(truth),
    } | {
        f"generated_{k}": v
        for k, v in metrics.moment_errors(metrics.sample_moments(generated), exact_moments).items()
    }


_generator_checks_seeds = jax.jit(jax.vmap(generator_checks))


def _exact_energy_var(truth):
    n = truth.b.shape[0]
    p = jnp.exp(exact.all_log_probs(truth))
    e = energy(truth, exact.index_to_spins(jnp.arange(2**n, dtype=jnp.int32), n))
    mean = p @ e
    return p @ (e - mean) ** 2
