"""Inverse Ising estimators behind one entry point: ij.infer(spins, method, weights=..., ...).

Every method is a pure function of (spins [M, n], weights [M]) that jits and vmaps over
datasets of equal shape; weights are multiplicities (zero = the sample is absent), so
sample-size sweeps are masks over one array. When called with concrete arrays (not under
jit/vmap), `infer` validates the inputs and turns data problems into errors or warnings.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from isingjax import io
from isingjax.inference import erasure, exact_ml, mean_field, plm
from isingjax.models import IsingParams

METHODS = {
    "plm": plm.fit,
    "erasure": erasure.fit,
    "nmf": mean_field.fit_nmf,
    "tap": mean_field.fit_tap,
    "exact_ml": exact_ml.fit,
}
PENALTIES = {"l2", "l2_per_sample", "l2_bias"}  # options that must be >= 0
NOT_CONVERGED = {  # what converged = False means, per method
    None: "the solver stopped before reaching its tolerance.",
    "nmf": "the correlation matrix needed a ridge beyond the requested one (ill-conditioned) "
    "or the parameters are not finite.",
}
NOT_CONVERGED["tap"] = NOT_CONVERGED["nmf"]
# Options that set shapes or Python control flow: compiled in, one compile per value. Every
# other option given as a number or an array is traced, so a loop over penalty strengths,
# step sizes or tolerances reuses one compiled fit.
STATIC_OPTIONS = {
    "symmetric",
    "solver",
    "max_iter",
    "eps_grid",
    "num_iters",
    "memory",
    "init_scale",
}


def options_of(method: str) -> list[str]:
    """The keyword options a method accepts."""
    params = inspect.signature(METHODS[method]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _concrete(x):
    """x as a NumPy array, or None when x is traced (inside jit / vmap)."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_inputs(spins, method, weights, options):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}.")
    unknown = sorted(set(options) - set(options_of(method)))
    if unknown:
        raise ValueError(
            f"method {method!r} got unknown option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(options_of(method))}."
        )
    for name in PENALTIES & set(options):
        value = _concrete(options[name])
        if value is not None and value.size == 1 and not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{method}: {name} must be finite and >= 0, got {value.item()}.")
    concrete = _concrete(spins)
    if concrete is not None:
        spins = jnp.asarray(io.validate_spins(concrete, source="spins"))
    elif jnp.ndim(spins) != 2:
        raise ValueError(f"spins must have shape [num_samples, n], got {jnp.shape(spins)}.")
    if weights is None:
        return spins, None
    if jnp.shape(weights) != (spins.shape[0],):
        raise ValueError(
            f"weights must have shape [num_samples] = [{spins.shape[0]}], got {jnp.shape(weights)}."
        )
    w = _concrete(weights)
    if w is not None:
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if bad.size:
            raise ValueError(f"weights must be finite and >= 0; weights[{bad[0]}] = {w[bad[0]]}.")
        if w.sum() <= 0:
            raise ValueError("all weights are zero: there is no sample to infer from.")
    return spins, jnp.asarray(weights, jnp.float32)


def _hashable(value):
    """A static option as a hashable value (a list or array of numbers -> a tuple)."""
    if isinstance(value, list | np.ndarray):
        return tuple(float(x) for x in np.ravel(value))
    return value


def _as_float(value):
    """Python numbers as float32 arrays: 1 and 1.0 then share one compiled fit."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return np.float32(value) if is_number else value


@functools.partial(jax.jit, static_argnames=("method", "static"))
def _fit(spins, weights, dynamic, *, method, static):
    """The compiled fit: one compile per (method, shapes, static options)."""
    return METHODS[method](spins, weights, **dynamic, **dict(static))


def infer_with_info(spins, method: str, *, weights=None, **options) -> tuple[IsingParams, dict]:
    """Infers Ising parameters and returns (IsingParams, info dict of diagnostics).

    Args:
      spins: [M, n] ±1 samples.
      method: one of 'plm', 'erasure', 'nmf', 'tap', 'exact_ml'.
      weights: optional [M] non-negative sample weights.
      **options: method options (see `options_of(method)` and each module's docstring).
    """
    spins, weights = _check_inputs(spins, method, weights, options)
    static = {k: v for k, v in options.items() if k in STATIC_OPTIONS or v is None}
    dynamic = {k: _as_float(v) for k, v in options.items() if k not in static}
    static = tuple(sorted((k, _hashable(v)) for k, v in static.items()))
    params, info = _fit(spins, weights, dynamic, method=method, static=static)
    constant = _concrete(info["constant_spins"])
    if constant is not None and constant > 0:
        warnings.warn(
            f"{method}: {int(constant)} spin(s) never change in the data; their biases are "
            "set by the regularization or clipping alone.",
            stacklevel=2,
        )
    converged = _concrete(info.get("converged", True))
    if converged is not None and not bool(converged):
        warnings.warn(f"{method}: {NOT_CONVERGED.get(method, NOT_CONVERGED[None])}", stacklevel=2)
    return params, info


def infer(spins, method: str, *, weights=None, **options) -> IsingParams:
    """Infers Ising parameters (see `infer_with_info`)."""
    return infer_with_info(spins, method, weights=weights, **options)[0]
