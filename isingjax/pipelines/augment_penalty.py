"""Is the gain of diffusion augmentation the generated samples' or the weaker penalty's?

The penalized estimators (`plm`, `exact_ml`) of an `augment` run use l2 = c / (M + K) on
observed + K generated spins: the penalty weakens 1 + K/M-fold with the extra samples.
For a finished run this refits, per seed, with the penalty of each side held fixed:

    observed,  l2 = c / M          (the run's observed arm)
    observed,  l2 = c / (M + K)    (the weaker penalty alone)
    augmented, l2 = c / (M + K)    (the run's energy-variance arm at K = max ratio * M)
    augmented, l2 = c / M          (the generated samples alone)

with c the method's l2_per_sample in the run's config (methods without a c > 0 are
skipped) and the generated spins of one generator of the run (the DDPM by default), and
writes penalty_split.md (mean ± s.e. of the parameter MSE over seeds) into
the run's workdir.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from isingjax import inference, io, metrics
from isingjax.pipelines import augment, common
from isingjax.pipelines.common import ConfigError

CASES = ("observed", "M"), ("observed", "(M+K)"), ("augmented", "(M+K)"), ("augmented", "M")


def run(workdir, sample_size: int | None = None, generator: str = "ddpm") -> list[dict]:
    """Refits the penalized estimators of the augment run in workdir (smallest M by
    default) on the spins of `generator` at its energy-variance checkpoint; returns one
    record per (beta, method, case) and writes penalty_split.md."""
    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise ConfigError(f"{workdir} holds no config.json: not the workdir of an augment run.")
    config = ConfigDict(json.loads((workdir / "config.json").read_text()))
    if config.experiment != "augment":
        raise ConfigError(f"{workdir} holds a {config.experiment!r} run, not an 'augment' one.")
    m = min(config.sweep.sample_sizes) if sample_size is None else sample_size
    if m not in config.sweep.sample_sizes:
        raise ConfigError(f"sample size {m} is not one of the run's {config.sweep.sample_sizes}.")
    if generator not in config.generator.names:
        raise ConfigError(
            f"generator {generator!r} is not one of the run's {config.generator.names}."
        )
    records_of_run = io.read_jsonl(workdir / "results.jsonl")
    methods = {x: _penalty_per_sample(config, x) for x in config.inference.methods}
    methods = {x: c for x, c in methods.items() if c}
    root, records = jax.random.key(config.seed), []
    for beta in config.model.betas:
        path = augment.generated_path(workdir, beta, m, generator)
        k = max(config.augment.ratios) * m
        chosen = {
            r["seed"]: r["chosen_step"]
            for r in records_of_run
            if (r["beta"], r["num_samples"], r["generator"], r["arm"], r["ratio"])
            == (float(beta), m, generator, "energy_variance", k // m)
        }
        if not path.exists() or len(chosen) < config.num_seeds:
            raise ConfigError(
                f"the run has not finished beta={beta:g}, M={m} with generator {generator!r} "
                f"({path.name} and its energy-variance cells)."
            )
        cached = np.load(path)
        steps = cached["steps"].tolist()
        generated = [
            cached["spins"][s, steps.index(chosen[s]), :k] for s in range(config.num_seeds)
        ]
        for method, c in methods.items():
            options = dict(config.inference.options.get(method, {}))
            options.pop("l2_per_sample", None)
            mse = {case: [] for case in CASES}
            for seed in range(config.num_seeds):
                truth, observed, _ = augment.truth_and_data(config, seed, root, beta, m)
                data = {"observed": observed}
                data["augmented"] = np.concatenate([observed, generated[seed]]).astype(np.float32)
                for spins, size in CASES:
                    l2 = c / (m if size == "M" else m + k)
                    est = inference.infer(data[spins], method, l2=l2, **options)
                    mse[spins, size].append(float(metrics.param_mse(est, truth)["all"]))
            for (spins, size), values in mse.items():
                mean, se = common.mean_se(values)
                records.append(
                    {
                        "beta": float(beta),
                        "num_samples": m,
                        "extra": k,
                        "generator": generator,
                        "method": method,
                        "data": spins,
                        "penalty": f"{c:g}/{size}",
                        "mse_all": float(mean),
                        "se": float(se),
                    }
                )
    lines = ["| β | M | K | method | data | l2 | MSE (all) |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['beta']:g} | {r['num_samples']} | {r['extra']} | {r['method']} | {r['data']} "
        f"| {r['penalty']} | {r['mse_all']:.2e} ± {r['se']:.0e} |"
        for r in records
    ]
    (workdir / "penalty_split.md").write_text("\n".join(lines) + "\n")
    return records


def _penalty_per_sample(config, method: str) -> float:
    """c of the run's penalty l2 = c / (total weight); 0 for methods without one or with a
    fixed l2 (nothing to split)."""
    options = config.inference.options.get(method, {})
    if "l2_per_sample" not in inference.options_of(method) or "l2" in options:
        return 0.0
    default = inspect.signature(inference.METHODS[method]).parameters["l2_per_sample"].default
    return float(options.get("l2_per_sample", default))
