"""DDPM forward process (Ho, Jain & Abbeel, NeurIPS 2020; cosine schedule: Nichol &
Dhariwal, ICML 2021).

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s<=t} (1 - beta_s),

with steps t = 1..T stored at index t - 1. The posterior q(x_{t-1} | x_t, x_0) has mean
c0_t x_0 + ct_t x_t and variance beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


class Schedule(NamedTuple):
    """Per-step coefficients, each [T] (index t - 1 holds step t)."""

    betas: jax.Array
    alphas: jax.Array  # 1 - beta_t
    alpha_bars: jax.Array  # prod_{s<=t} alpha_s
    posterior_variance: jax.Array  # beta_tilde_t
    posterior_coef_x0: jax.Array  # c0_t
    posterior_coef_xt: jax.Array  # ct_t

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def make_schedule(
    kind: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Schedule:
    """Linear betas beta_start..beta_end over num_steps, or the cosine schedule (s = 0.008)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}.")
    if kind == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}.")
        betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    else:
        s = 0.008
        f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    prev = np.concatenate([[1.0], alpha_bars[:-1]])
    as32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return Schedule(
        betas=as32(betas),
        alphas=as32(alphas),
        alpha_bars=as32(alpha_bars),
        posterior_variance=as32(betas * (1 - prev) / (1 - alpha_bars)),
        posterior_coef_x0=as32(np.sqrt(prev) * betas / (1 - alpha_bars)),
        posterior_coef_xt=as32(np.sqrt(alphas) * (1 - prev) / (1 - alpha_bars)),
    )


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise [..., n], t [...] in 1..T."""
    abar = schedule.alpha_bars[t - 1][..., None]
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise
