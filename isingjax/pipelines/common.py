"""What every pipeline does the same way: config checks, the workdir, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from isingjax import inference, io


class ConfigError(ValueError):
    """A config or workdir a pipeline refuses (a value out of range, an unknown option, a
    workdir of another config); the entry points in experiments/ print it as one line."""


def check_fields(checks) -> None:
    """checks: (config field name, value, ok, what is allowed); raises on the first failure."""
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"config.{name} must be {allowed}, got {value!r}.")


NONNEGATIVE_OPTIONS = {"ridge", "init_scale"}  # besides inference.PENALTIES: 0 allowed
COUNT_OPTIONS = {"max_iter", "num_iters"}  # integers >= 1


def check_options(config, methods) -> None:
    """Validates config.inference.options.<method> as `ij.infer` validates its options:
    unknown keys are errors; penalties (inference.PENALTIES), `ridge` and `init_scale`
    must be finite and >= 0; iteration counts integers >= 1; every other number (tol,
    learning_rate, alpha, max_condition, grid entries) finite and > 0."""
    for method in methods:
        options = config.inference.options.get(method, {})
        unknown = set(options) - set(inference.options_of(method))
        if unknown:
            raise ConfigError(
                f"config.inference.options.{method} has unknown option(s) {sorted(unknown)}; "
                f"allowed: {inference.options_of(method)}."
            )
        for name, value in options.items():
            field = f"config.inference.options.{method}.{name}"
            values = list(value) if isinstance(value, tuple | list) else [value]
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if not numbers:
                continue  # e.g. solver names, flags and keys; ij.infer checks those
            if name in COUNT_OPTIONS:
                ok, allowed = all(is_int(v, 1) for v in numbers), "an integer >= 1"
            elif name in inference.PENALTIES | NONNEGATIVE_OPTIONS:
                ok, allowed = all(math.isfinite(v) and v >= 0 for v in numbers), "finite and >= 0"
            else:
                ok, allowed = all(math.isfinite(v) and v > 0 for v in numbers), "finite and > 0"
            if not ok:
                raise ConfigError(f"{field} must be {allowed}, got {value!r}.")


def is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_positive(value, allow_zero: bool = False) -> bool:
    """A finite real number > 0 (>= 0 with allow_zero)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0


def model_checks(config) -> list:
    m = config.model
    betas_ok = (
        isinstance(m.betas, tuple | list)
        and len(m.betas) >= 1
        and all(isinstance(b, int | float) and math.isfinite(b) and b >= 0 for b in m.betas)
    )
    return [
        ("model.n", m.n, is_int(m.n, 2), "an integer >= 2"),
        ("num_seeds", config.num_seeds, is_int(config.num_seeds, 1), "an integer >= 1"),
        ("model.betas", m.betas, betas_ok, "a non-empty tuple of finite values >= 0"),
        (
            "model.bias_std",
            m.bias_std,
            math.isfinite(m.bias_std) and m.bias_std >= 0,
            "finite and >= 0",
        ),
    ]


def evasion_checks(config) -> list:
    """Checks of config.evasion (base_config.add_evasion)."""
    e, n = config.evasion, config.model.n
    return [
        (
            "evasion.eps",
            e.eps,
            len(e.eps) >= 1 and all(is_positive(v, allow_zero=True) for v in e.eps),
            "a non-empty tuple of finite values >= 0",
        ),
        (
            "evasion.flips",
            e.flips,
            len(e.flips) >= 1 and all(is_int(k, 0) and k <= n for k in e.flips),
            f"a non-empty tuple of integers in [0, model.n = {n}]",
        ),
    ] + [
        (f"evasion.{name}", e[name], is_int(e[name], 1), "an integer >= 1")
        for name in ("num_test", "pgd_steps", "pgd_restarts")
    ]


BIAS_SCALINGS = ("none", "beta/sqrt(n)")


def bias_std(config, beta):
    """The SK bias std of a run: model.bias_std, times beta / sqrt(n) when
    model.bias_scaling is 'beta/sqrt(n)' (beta may be traced)."""
    scaled = config.model.bias_scaling != "none"
    return config.model.bias_std * (beta / math.sqrt(config.model.n) if scaled else 1.0)


def bias_scaling_check(config) -> tuple:
    scaling = config.model.bias_scaling
    return ("model.bias_scaling", scaling, scaling in BIAS_SCALINGS, f"one of {BIAS_SCALINGS}")


def prepare_workdir(config, workdir, selection=()) -> tuple[Path, Path]:
    """Creates workdir, writes config.json; returns (workdir, results.jsonl path).

    A workdir that already holds a config.json is resumed only when the new config differs
    from it in nothing but the `selection` fields (those that choose which cells a run
    computes, e.g. model.betas): any other change would mix the finished results of two
    configs, so it raises ConfigError naming the changed fields.
    """
    check_prng()
    workdir = Path(workdir)
    old_path = workdir / "config.json"
    if old_path.exists():
        old = _flatten(json.loads(old_path.read_text()))
        new = _flatten(json.loads(config.to_json_best_effort()))
        changed = sorted(
            key
            for key in old.keys() | new.keys()
            if old.get(key, _ABSENT) != new.get(key, _ABSENT)
            and not any(key == f or key.startswith(f + ".") for f in selection)
        )
        if changed:
            listed = "; ".join(
                f"{k}: {old.get(k, _ABSENT)!r} -> {new.get(k, _ABSENT)!r}" for k in changed[:5]
            ) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
            allowed = ", ".join(selection) or "nothing"
            raise ConfigError(
                f"{workdir} holds the results of another config ({listed}). A rerun there "
                f"resumes only the same config (it may change {allowed}); use a new --workdir."
            )
    workdir.mkdir(parents=True, exist_ok=True)
    io.write_config(workdir, config)
    return workdir, workdir / "results.jsonl"


_ABSENT = "<absent>"


def check_prng() -> None:
    """Refuses jax_threefry_partitionable = False (the default before jax 0.5.0, which
    pyproject no longer allows, but a user may still set it): with it,
    uniform(key, (100,)) is not a prefix of uniform(key, (1600,)), so a rerun that widens
    sweep.sample_sizes would silently change the observed spins of finished cells."""
    import jax

    if not jax.config.jax_threefry_partitionable:
        raise ConfigError(
            "jax_threefry_partitionable is False; the pipelines draw every sample size as a "
            "prefix of one dataset, which holds only with it True (jax >= 0.5.0's default): "
            "unset JAX_THREEFRY_PARTITIONABLE or call "
            "jax.config.update('jax_threefry_partitionable', True)."
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {'a.b.c': value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unique_rows(spins, weights) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows [U, n] of spins [K, n] and the summed weights [U, C] of each row's
    copies (weights [K, C]). A weighted pseudo-likelihood over these U rows is the one over
    all K rows: binary patterns of sparse activity (retinal spikes) repeat so often that
    U is a fraction of K."""
    rows, inverse = np.unique(np.asarray(spins), axis=0, return_inverse=True)
    summed = np.zeros((len(rows), weights.shape[1]), np.float32)
    np.add.at(summed, inverse.reshape(-1), np.asarray(weights, np.float32))
    return rows.astype(np.float32), summed


def stack_padded(groups) -> tuple[np.ndarray, np.ndarray]:
    """Stacks (rows [U_i, n], weights [U_i, C]) pairs into [G, max U_i, n] and
    [G, max U_i, C], padding with all -1 rows of weight 0 (which add nothing to a fit)."""
    size = max(len(rows) for rows, _ in groups)
    n, c = groups[0][0].shape[1], groups[0][1].shape[1]
    rows = np.full((len(groups), size, n), -1.0, np.float32)
    weights = np.zeros((len(groups), size, c), np.float32)
    for i, (r, w) in enumerate(groups):
        rows[i, : len(r)], weights[i, : len(w)] = r, w
    return rows, weights


def record_wall_time(workdir, seconds: float) -> tuple[float, int]:
    """Appends this invocation's wall time to workdir/wall_time.jsonl; returns (total
    seconds over every invocation in the workdir, number of invocations)."""
    path = Path(workdir) / "wall_time.jsonl"
    io.append_jsonl(path, {"seconds": float(seconds)})
    times = [r["seconds"] for r in io.read_jsonl(path)]
    return float(sum(times)), len(times)


def write_summary(workdir, experiment: str, sections, config, seconds: float) -> str:
    """Writes workdir/summary.md: the sections [(caption, markdown table)], the wall time
    (this invocation, and the total over every invocation that worked in the workdir: a
    resumed run's cells were computed by earlier ones) and the config that made it;
    returns the text."""
    total, count = record_wall_time(workdir, seconds)
    parts = [f"# {experiment}: {Path(workdir).name}\n"]
    parts += [f"{caption}:\n\n{table}" for caption, table in sections]
    parts.append(
        f"Wall time: {seconds:.1f} s this invocation; {total:.1f} s over {count} "
        f"invocation(s) in this workdir.\n"
    )
    parts.append("Config (config.json):\n\n```json\n" + config.to_json_best_effort(indent=2))
    text = "\n".join(parts) + "\n```\n"
    (Path(workdir) / "summary.md").write_text(text)
    return text


def mean_se(values) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the last axis (seeds); the error is 0 for one seed."""
    values = np.asarray(values, np.float64)
    num = values.shape[-1]
    se = values.std(axis=-1, ddof=1) / np.sqrt(num) if num > 1 else np.zeros(values.shape[:-1])
    return values.mean(axis=-1), se


def paired_delta(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over seeds (last axis) of the per-seed difference a - b."""
    return mean_se(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def worse_by(a, b, num_se: float = 1.0) -> bool:
    """Whether a [seeds] is larger than b by more than num_se s.e. of the paired difference.

    A difference at one seed only has a mean equal to its s.e. (t = 1) whatever its size;
    equal up to floating-point rounding counts as not more, so rounding does not decide.
    """
    mu, e = paired_delta(a, b)
    return bool(mu > num_se * e and not np.isclose(mu, num_se * e, rtol=1e-9, atol=0.0))


def new_figure(nrows: int, ncols: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_exact_energies(ax, truth, bins=None, num_bins: int = 50):
    """Histogram (density) of E(s) under the exact distribution of truth (n <= 20), as a
    black step line on ax; returns the bins (default: the full energy range)."""
    import jax.numpy as jnp
    import numpy as np

    from isingjax import exact
    from isingjax.models import energy

    n = truth.b.shape[0]
    e_all = np.asarray(energy(truth, exact.index_to_spins(jnp.arange(2**n, dtype=jnp.int32), n)))
    p_all = np.exp(np.asarray(exact.all_log_probs(truth), np.float64))
    bins = np.linspace(e_all.min(), e_all.max(), num_bins) if bins is None else bins
    ax.hist(
        e_all,
        bins=bins,
        weights=p_all,
        density=True,
        histtype="step",
        color="black",
        lw=1.5,
        label="exact",
    )
    return bins
