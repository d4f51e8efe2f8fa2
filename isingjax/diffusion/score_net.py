"""The epsilon-prediction network for vectors of n spins (Flax linen).

Default architecture (Lim, Lee & Jo, PRE 111, 045302, 2025): a 128-d sinusoidal
embedding of the step t, an encoder Linear -> 128 -> 256 -> 512 and a decoder
512 -> 512 -> 256 -> 128 with additive skip connections from the encoder level of the
same width, GELU activations, and a final Linear -> n. Each hidden layer also receives
a linear projection of the time embedding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Transformer-style embedding of steps t [...] -> [..., dim] (cos half, sin half)."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class ScoreNet(nn.Module):
    """eps_theta(x_t, t): x [..., n] float, t [...] steps in 1..T -> [..., n]."""

    n: int
    widths: tuple[int, ...] = (128, 256, 512)
    time_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        emb = sinusoidal_embedding(jnp.broadcast_to(t, x.shape[:-1]), self.time_dim)
        h, skips = x, []
        for width in self.widths:
            h = nn.gelu(nn.Dense(width)(h) + nn.Dense(width)(emb))
            skips.append(h)
        for width, skip in zip(reversed(self.widths), reversed(skips), strict=True):
            h = nn.gelu(nn.Dense(width)(h) + nn.Dense(width)(emb)) + skip
        return nn.Dense(self.n)(h)
