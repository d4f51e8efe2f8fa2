"""Ising models over spins s in {-1, +1}^n.

    P(s) = exp(sum_{i<j} w_ij s_i s_j + sum_i b_i s_i) / Z,
    E(s) = -(1/2 s^T w s + b^T s),   so P(s) ∝ exp(-E(s)).

Temperature is absorbed into the parameters. A Sherrington–Kirkpatrick (SK)
instance (Sherrington & Kirkpatrick, PRL 35, 1792, 1975) draws
w_ij ~ Normal(0, beta^2 / n) for i < j and b_i ~ Normal(0, bias_std^2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class IsingParams(NamedTuple):
    """Parameters of an Ising model (a pytree).

    Attributes:
      w: couplings [n, n], symmetric with zero diagonal.
      b: biases (fields) [n].
    """

    w: jax.Array  # [n, n]
    b: jax.Array  # [n]

    @property
    def n(self) -> int:
        return self.b.shape[-1]


class Moments(NamedTuple):
    """First and second moments of a spin distribution.

    Attributes:
      means: <s_i> [n].
      correlations: <s_i s_j> [n, n] (not connected; the diagonal is 1).
    """

    means: jax.Array  # [n]
    correlations: jax.Array  # [n, n]


def check_params(params: IsingParams, *, name: str = "params") -> int:
    """Checks the shapes of `params` (Python-level, static); returns n."""
    if not isinstance(params, IsingParams):
        raise TypeError(f"{name} must be an IsingParams(w, b), got {type(params).__name__}.")
    w_shape, b_shape = jnp.shape(params.w), jnp.shape(params.b)
    if len(b_shape) != 1 or b_shape[0] < 2:
        raise ValueError(f"{name}.b must have shape [n] with n >= 2, got shape {b_shape}.")
    n = b_shape[0]
    if w_shape != (n, n):
        raise ValueError(f"{name}.w must have shape [n, n] = [{n}, {n}], got shape {w_shape}.")
    return n


def energy(params: IsingParams, spins: jax.Array) -> jax.Array:
    """Energy E(s) = -(1/2 s^T w s + b^T s).

    Args:
      params: IsingParams with w [n, n], b [n].
      spins: [..., n] spins (±1), any leading batch shape.

    Returns:
      [...] energies.
    """
    spins = jnp.asarray(spins, dtype=params.w.dtype)
    pair = jnp.einsum("...i,ij,...j->...", spins, params.w, spins)
    return -(0.5 * pair + spins @ params.b)


def symmetrize(w: jax.Array) -> jax.Array:
    """Returns (w + w^T) / 2 with the diagonal set to zero. w: [n, n]."""
    w = 0.5 * (w + jnp.swapaxes(w, -1, -2))
    return w * (1.0 - jnp.eye(w.shape[-1], dtype=w.dtype))


def sk_model(
    key: jax.Array, n: int, beta: float | jax.Array = 1.0, bias_std: float | jax.Array = 0.0
) -> IsingParams:
    """Draws a Sherrington–Kirkpatrick instance.

    w_ij = w_ji ~ Normal(0, beta^2 / n) for i < j, w_ii = 0; b_i ~ Normal(0, bias_std^2).

    Args:
      key: PRNG key.
      n: number of spins (static, >= 2).
      beta: coupling strength (the "g" of the literature); may be traced.
      bias_std: standard deviation of the biases; may be traced.

    Returns:
      IsingParams with float32 w [n, n] and b [n].
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"sk_model: n must be an integer >= 2, got {n!r}.")
    for name, value in (("beta", beta), ("bias_std", bias_std)):
        if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"sk_model: {name} must be finite and >= 0, got {value!r}.")
    w_key, b_key = jax.random.split(key)
    upper = jnp.triu(jax.random.normal(w_key, (n, n)), k=1)
    w = (upper + upper.T) * (beta / jnp.sqrt(n))
    b = bias_std * jax.random.normal(b_key, (n,))
    return IsingParams(w=w.astype(jnp.float32), b=b.astype(jnp.float32))


def flatten_params(params: IsingParams) -> jax.Array:
    """Flattens to the vector (b_1..b_n, w_ij for i < j in row-major order) [n + n(n-1)/2]."""
    n = params.b.shape[-1]
    rows, cols = jnp.triu_indices(n, k=1)
    return jnp.concatenate([params.b, params.w[..., rows, cols]], axis=-1)


def unflatten_params(theta: jax.Array, n: int) -> IsingParams:
    """Inverse of `flatten_params`: theta [n + n(n-1)/2] -> IsingParams."""
    expected = n + n * (n - 1) // 2
    if theta.shape[-1] != expected:
        raise ValueError(
            f"unflatten_params: a model with n={n} spins has {expected} parameters, "
            f"got a vector of length {theta.shape[-1]}."
        )
    rows, cols = jnp.triu_indices(n, k=1)
    w = jnp.zeros((n, n), theta.dtype).at[rows, cols].set(theta[n:])
    return IsingParams(w=w + w.T, b=theta[:n])
