"""The result records (results.jsonl) and arrays (results.npz) of the `augment` pipeline:
the coordinates of every cell, the records of a block, the arrays summary.md and the
figures read (isingjax/pipelines/augment_summary.py) and the look-ups and labels of their
columns."""

from __future__ import annotations

import jax
import numpy as np

from isingjax import inference, sweeps

COORDS = ("beta", "num_samples", "method", "generator", "arm", "ratio", "step", "seed")
BASE_EXTRA_ARMS = ("bootstrap", "oracle")  # observed + K extra spins, no generator
FIELDS = ("mse_all", "mse_w", "mse_b", "converged", "num_nonfinite")
RULE_FIELDS = ("chosen_step", "chosen_ratio")
# the names of arms and rule columns in summary.md and the figures (`label`)
LABELS = {
    "l2": "tuned L2 (plm)",
    "generated_l2": "+ tuned L2 (plm)",
    "heldout": "held-out rule",
    "hindsight": "hindsight best",
    "energy_variance": "energy variance K={r}M",
}


def steps_of(config, generator) -> list[int]:
    section = config[{"ddpm": "diffusion"}.get(generator, generator)]
    return list(range(section.checkpoint_every, section.train_steps + 1, section.checkpoint_every))


def base_columns(config) -> list[tuple[str, int]]:
    ratios = list(config.augment.ratios)
    return [("observed", 0)] + [(a, r) for a in BASE_EXTRA_ARMS for r in ratios] + [("l2", 0)]


def rule_columns(config) -> list[tuple[str, int]]:
    ratios = list(config.augment.ratios)
    cols = [("energy_variance", r) for r in ratios]
    if "heldout" in config.selection.rules:
        cols.append(("heldout", 0))
    return cols + [("hindsight", 0), ("generated_l2", max(ratios))]


def cells(config, beta, m):
    """The result coordinates of block (beta, M)."""
    seeds = range(config.num_seeds)
    for method in config.inference.methods:
        for arm, ratio in base_columns(config):
            if arm != "l2" or method == "plm":
                yield from ((beta, m, method, "", arm, ratio, 0, s) for s in seeds)
        for gen in config.generator.names:
            for step in steps_of(config, gen):
                for ratio in config.augment.ratios:
                    yield from ((beta, m, method, gen, "grid", ratio, step, s) for s in seeds)
            for arm, ratio in rule_columns(config):
                if arm != "generated_l2" or method == "plm":
                    yield from ((beta, m, method, gen, arm, ratio, 0, s) for s in seeds)


def write_npz(path, records, config) -> dict:
    """results.npz: FIELDS [beta, M, method, column, seed] of the arms without a generator,
    gen_<FIELDS and RULE_FIELDS> [beta, M, method, generator, column, seed] of the rules,
    grid_mse_all [beta, M, method, generator, checkpoint, ratio, seed] (NaN where absent)
    + the axes (grid_steps [generator, checkpoint], 0 past a generator's last).

    The axes are those of the config joined with those of the records, so a run resumed
    with a narrower selection still summarizes every finished cell of the workdir."""
    betas = sorted({float(b) for b in config.model.betas} | {r["beta"] for r in records})
    sizes = sorted(set(config.sweep.sample_sizes) | {r["num_samples"] for r in records})
    known = set(config.inference.methods) | {r["method"] for r in records}
    methods = [m for m in inference.METHODS if m in known]
    gens = list(config.generator.names)
    gens += sorted({r["generator"] for r in records} - set(gens) - {""})
    base, rules = base_columns(config), rule_columns(config)
    ratios, seeds = list(config.augment.ratios), range(config.num_seeds)
    steps = {
        g: sorted(
            set(steps_of(config, g) if g in config.generator.names else [])
            | {r["step"] for r in records if r["generator"] == g and r["step"]}
        )
        for g in gens
    }
    c_max = max([len(v) for v in steps.values()] + [1])
    head = (len(betas), len(sizes), len(methods))
    arrays = {name: np.full((*head, len(base), config.num_seeds), np.nan) for name in FIELDS}
    gen_arrays = {
        name: np.full((*head, len(gens), len(rules), config.num_seeds), np.nan)
        for name in FIELDS + RULE_FIELDS
    }
    grid = {"mse_all": np.full((*head, len(gens), c_max, len(ratios), config.num_seeds), np.nan)}
    at = [
        (i, b, j, m, k, x)
        for i, b in enumerate(betas)
        for j, m in enumerate(sizes)
        for k, x in enumerate(methods)
    ]
    sweeps.fill_cells(
        arrays,
        {
            (b, m, x, "", a, r, 0, s): (i, j, k, c, s)
            for i, b, j, m, k, x in at
            for c, (a, r) in enumerate(base)
            for s in seeds
        },
        records,
        COORDS,
    )
    sweeps.fill_cells(
        gen_arrays,
        {
            (b, m, x, g, a, r, 0, s): (i, j, k, h, c, s)
            for i, b, j, m, k, x in at
            for h, g in enumerate(gens)
            for c, (a, r) in enumerate(rules)
            for s in seeds
        },
        records,
        COORDS,
    )
    sweeps.fill_cells(
        grid,
        {
            (b, m, x, g, "grid", r, st, s): (i, j, k, h, c, q, s)
            for i, b, j, m, k, x in at
            for h, g in enumerate(gens)
            for c, st in enumerate(steps[g])
            for q, r in enumerate(ratios)
            for s in seeds
        },
        records,
        COORDS,
    )
    arrays |= {f"gen_{k}": v for k, v in gen_arrays.items()}
    arrays["grid_mse_all"] = grid["mse_all"]
    arrays |= {
        "betas": np.asarray(betas),
        "sample_sizes": np.asarray(sizes),
        "methods": np.asarray(methods),
        "generators": np.asarray(gens),
        "arms": np.asarray([a for a, _ in base]),
        "ratios": np.asarray([r for _, r in base]),
        "rule_arms": np.asarray([a for a, _ in rules]),
        "rule_ratios": np.asarray([r for _, r in rules]),
        "grid_ratios": np.asarray(ratios),
        "grid_steps": np.asarray([steps[g] + [0] * (c_max - len(steps[g])) for g in gens]),
        "seeds": np.arange(config.num_seeds),
    }
    np.savez(path, **arrays)
    return arrays


def _record(beta, m, method, generator, arm, ratio, step, seed, mse, converged, **fields):
    record = {
        "beta": float(beta),
        "num_samples": m,
        "method": method,
        "generator": generator,
        "arm": arm,
        "ratio": int(ratio),
        "step": int(step),
        "seed": seed,
    }
    record |= {f"mse_{part}": float(mse[part]) for part in ("all", "w", "b")}
    return record | {"converged": bool(converged)} | fields


def _pick(tree, *index):
    return {k: v[index] for k, v in tree.items()}


def base_records(out, beta, m, method, config):
    ratios = config.augment.ratios
    for seed in range(config.num_seeds):
        w = {"w_true": np.asarray(out["w_true"][seed]).tolist()} if seed == 0 else {}
        cells = [("observed", 0, out["observed"], out["converged_observed"], out["w_observed"])]
        for a, arm in enumerate(BASE_EXTRA_ARMS):
            for k, ratio in enumerate(ratios):
                mse = jax.tree.map(lambda v, a=a, k=k: v[:, a, k], out["extra"])
                conv, w_est = out["converged_extra"][:, a, k], out["w_extra"][:, a, k]
                cells.append((arm, ratio, mse, conv, w_est))
        if "l2" in out:
            cells.append(("l2", 0, out["l2"], out["converged_l2"], out["w_l2"]))
        for arm, ratio, mse, conv, w_est in cells:
            fields = dict(w)
            if arm == "l2":
                fields["l2_per_sample"] = float(out["l2_per_sample_l2"][seed])
            if seed == 0:
                fields["w_est"] = np.asarray(w_est[seed]).tolist()
            yield _record(
                beta, m, method, "", arm, ratio, 0, seed, _pick(mse, seed), conv[seed], **fields
            )


def grid_records(out, beta, m, method, gen_name, steps, choices, observed, config, nonfinite):
    """The grid's records and those of the rules picked from it. choices: rule ->
    [(step, ratio)] per seed (ratio 0 = observed only, whose record is observed[seed])."""
    ratios = list(config.augment.ratios)
    for seed in range(config.num_seeds):
        cell = {}  # (step, ratio) -> (mse, converged, w_est)
        for c, step in enumerate(steps):
            for k, ratio in enumerate(ratios):
                mse = {p: out["grid"][p][seed, c, k] for p in ("all", "w", "b")}
                w_est = out["w_grid"][seed, c, k]
                cell[step, ratio] = mse, out["converged_grid"][seed, c, k], w_est
                fields = {"num_nonfinite": int(nonfinite[seed, c])}
                yield _record(
                    beta,
                    m,
                    method,
                    gen_name,
                    "grid",
                    ratio,
                    step,
                    seed,
                    mse,
                    cell[step, ratio][1],
                    **fields,
                )
        base = observed[seed]
        cell[0, 0] = (
            {p: base[f"mse_{p}"] for p in ("all", "w", "b")},
            base["converged"],
            None,
        )
        for rule, picks in choices.items():
            if rule == "energy_variance":
                rule_cells = [(rule, ratio, picks[seed][0], ratio) for ratio in ratios]
            else:
                rule_cells = [(rule, 0, *picks[seed])]
            for arm, ratio, step, chosen_ratio in rule_cells:
                key = (step, chosen_ratio) if chosen_ratio else (0, 0)
                mse, conv, w_est = cell[key]
                fields = {"chosen_step": int(step) if chosen_ratio else 0}
                fields["chosen_ratio"] = int(chosen_ratio)
                if chosen_ratio:
                    fields["num_nonfinite"] = int(nonfinite[seed, steps.index(step)])
                if seed == 0 and w_est is not None:
                    fields["w_est"] = np.asarray(w_est).tolist()
                yield _record(beta, m, method, gen_name, arm, ratio, 0, seed, mse, conv, **fields)
        if "generated_l2" in out:
            mse = _pick(out["generated_l2"], seed)
            fields = {"l2_per_sample": float(out["l2_per_sample_generated_l2"][seed])}
            fields["chosen_step"] = int(choices["energy_variance"][seed][0])
            fields["num_nonfinite"] = int(nonfinite[seed, steps.index(fields["chosen_step"])])
            if seed == 0:
                fields["w_est"] = np.asarray(out["w_generated_l2"][seed]).tolist()
            yield _record(
                beta,
                m,
                method,
                gen_name,
                "generated_l2",
                max(ratios),
                0,
                seed,
                mse,
                out["converged_generated_l2"][seed],
                **fields,
            )


def label(arm, ratio) -> str:
    """The name of an arm or rule column in summary.md and the figures."""
    if arm in LABELS:
        return LABELS[arm].format(r=ratio)
    return f"{arm} K={ratio}M" if ratio else arm


def base_values(arrays, at, arm, ratio, field="mse_all"):
    """Per seed, `field` of the arm (arm, ratio) without a generator at index at = (beta,
    M, method) of the arrays of `write_npz`."""
    cols = list(zip(arrays["arms"].tolist(), arrays["ratios"].tolist(), strict=True))
    return arrays[field][(*at, cols.index((arm, ratio)))]


def rule_values(arrays, at, gen, arm, ratio, field="mse_all"):
    """Per seed, `field` of generator gen's rule column (arm, ratio) at index at = (beta,
    M, method) of the arrays of `write_npz`; NaN where the run has no such column."""
    cols = list(zip(arrays["rule_arms"].tolist(), arrays["rule_ratios"].tolist(), strict=True))
    if (arm, ratio) not in cols:
        return np.full(len(arrays["seeds"]), np.nan)
    h = arrays["generators"].tolist().index(gen)
    return arrays["gen_" + field][(*at, h, cols.index((arm, ratio)))]
