"""Naive mean field and TAP inversions (Kappen & Rodríguez 1998; Tanaka 1998;
Roudi, Tyrcha & Hertz, PRE 79, 051915, 2009).

With m the means and C the connected correlation matrix of the data,
  nMF:  w_ij = -(C^-1)_ij,                 b_i = atanh(m_i) - sum_j w_ij m_j;
  TAP:  (C^-1)_ij = -w_ij - 2 w_ij^2 m_i m_j, solved for the root continuous at m -> 0,
        w_ij = (sqrt(1 - 8 (C^-1)_ij m_i m_j) - 1) / (4 m_i m_j),
        b_i = atanh(m_i) - sum_j w_ij m_j + m_i sum_j w_ij^2 (1 - m_j^2).
C is inverted with a ridge: C + ridge * mean(diag C) * I, where ridge is `ridge` or, if
C is ill-conditioned (condition number above `max_condition`), the smallest value that
brings it to max_condition; the ridge used and the condition number are reported.
info['converged'] (these are closed forms: there is no iteration to converge) says the
estimate is trustworthy: every parameter is finite and the requested ridge alone kept
C + ridge * mean(diag C) * I at a condition number <= max_condition, i.e. no extra
ridge was needed; False flags a singular or ill-conditioned C (e.g. M < n samples or a
constant spin), whose estimate rests on the added ridge.
Means are clipped to |m| <= 1 - 1e-6 so constant spins give finite (large) biases, and
TAP pairs without a real root (negative discriminant) fall back to the nMF value; both
are counted in the info.
"""

from __future__ import annotations

import jax.numpy as jnp

from isingjax.inference import common
from isingjax.models import IsingParams

M_CLIP = 1.0 - 1e-6


def _inverse_correlations(spins, p, ridge, max_condition):
    moments = common.data_moments(spins, p)
    m = jnp.clip(moments.means, -M_CLIP, M_CLIP)
    c = moments.correlations - jnp.outer(moments.means, moments.means)
    eigs = jnp.linalg.eigvalsh(c)
    scale = jnp.maximum(jnp.mean(jnp.diag(c)), 1e-12)
    condition = eigs[-1] / jnp.maximum(eigs[0], 1e-30)
    needed = jnp.maximum((eigs[-1] - max_condition * eigs[0]) / (max_condition - 1.0), 0.0)
    ridge_used = jnp.maximum(ridge * scale, needed)
    c_inv = jnp.linalg.inv(c + ridge_used * jnp.eye(c.shape[0], dtype=c.dtype))
    well_conditioned = jnp.isfinite(condition) & (needed <= ridge * scale)
    info = {"condition_number": condition, "ridge": ridge_used / scale}
    info["well_conditioned"] = well_conditioned
    return m, c_inv, info


def _converged(w, b, info):
    """All parameters finite and no ridge beyond the requested one (module docstring)."""
    finite = jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(b))
    return finite & info.pop("well_conditioned")


def fit_nmf(spins, weights=None, *, ridge: float = 0.0, max_condition: float = 1e6):
    """Naive mean-field estimate from spins [M, n]; returns (IsingParams, info)."""
    p, total = common.normalized_weights(spins, weights)
    m, c_inv, info = _inverse_correlations(spins, p, ridge, max_condition)
    w = -c_inv * (1.0 - jnp.eye(spins.shape[1], dtype=spins.dtype))
    b = jnp.arctanh(m) - w @ m
    info["converged"] = _converged(w, b, info)
    return IsingParams(w=w, b=b), info | common.data_diagnostics(spins, p, total)


def fit_tap(spins, weights=None, *, ridge: float = 0.0, max_condition: float = 1e6):
    """TAP estimate from spins [M, n]; returns (IsingParams, info)."""
    p, total = common.normalized_weights(spins, weights)
    m, c_inv, info = _inverse_correlations(spins, p, ridge, max_condition)
    off = 1.0 - jnp.eye(spins.shape[1], dtype=spins.dtype)
    mm = jnp.outer(m, m)
    disc = 1.0 - 8.0 * c_inv * mm
    small = jnp.abs(mm) < 1e-6  # the root's m -> 0 limit is the nMF value -C^-1
    safe_mm = jnp.where(small, 1.0, mm)
    root = (jnp.sqrt(jnp.maximum(disc, 0.0)) - 1.0) / (4.0 * safe_mm)
    w = jnp.where(small | (disc < 0), -c_inv, root) * off
    b = jnp.arctanh(m) - w @ m + m * ((w**2) @ (1.0 - m**2))
    info |= {"tap_fallback_pairs": jnp.sum((disc < 0) & (off > 0)) // 2}
    info["converged"] = _converged(w, b, info)
    return IsingParams(w=w, b=b), info | common.data_diagnostics(spins, p, total)
