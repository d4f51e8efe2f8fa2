"""Pieces shared by the estimators: weights, sufficient statistics, data diagnostics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax.models import IsingParams, Moments


def normalized_weights(spins: jax.Array, weights: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Returns (p [M], total weight []), p = weights / total (all zeros if the total is 0)."""
    if weights is None:
        w = jnp.ones(spins.shape[0], spins.dtype)
    else:
        w = jnp.asarray(weights, spins.dtype)
    total = jnp.sum(w)
    return w / jnp.where(total > 0, total, 1.0), total


def data_moments(spins: jax.Array, p: jax.Array) -> Moments:
    """Weighted means [n] and correlations [n, n] of spins [M, n] with weights p [M] (sum 1)."""
    return Moments(means=p @ spins, correlations=(spins * p[:, None]).T @ spins)


def data_diagnostics(spins: jax.Array, p: jax.Array, total: jax.Array) -> dict[str, jax.Array]:
    """Number of spins that never change in the (weighted) data, and whether it is empty."""
    means = p @ spins
    return {
        "constant_spins": jnp.sum(1.0 - jnp.abs(means) < 1e-6),
        "no_data": total <= 0,
    }


def params_from_matrix(a: jax.Array, b: jax.Array) -> IsingParams:
    """IsingParams from a coupling matrix a [n, n]: (a + a^T) / 2 with a zero diagonal."""
    w = 0.5 * (a + a.T)
    return IsingParams(w=w * (1.0 - jnp.eye(a.shape[0], dtype=a.dtype)), b=b)
