"""Autoregressive generator with exact likelihood: MADE over n spins (Germain, Gregor,
Murray & Larochelle, ICML 2015).

    P(s) = prod_i P(s_i | s_<i),   P(s_i | s_<i) = sigmoid(2 s_i a_i(s_<i)),
    a_i = b_i + sum_{j<i} v_ij s_j + sum_k u_ik g(sum_{j: d_j <= m_k} r_kj s_j + c_k),

with input degrees d_j = j + 1 and hidden degrees m_k in 1..n-1, so a_i depends on s_<i
only. With `hidden = 0` it is the logistic autoregressive model, n(n+1)/2 parameters: the
exact form of any model whose conditionals P(s_i | s_<i) are logistic-linear (a chain
ordered along itself, the last spin of any pairwise model); for a general pairwise model
marginalizing s_>i adds higher-order terms that the hidden layer approximates.

`log_prob` is exact and `sample` draws exact i.i.d. samples (n ancestral steps), so the
model is the yardstick a diffusion generator must beat. Training is `make_train_fns`
(minibatch negative log-likelihood plus weight decay, on `diffusion.train.make_trainer`,
so chunked, checkpointed and resumable like the DDPM); early stopping is the choice of
the checkpoint with the lowest held-out NLL.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from isingjax.diffusion import train


class MADE(nn.Module):
    """Conditional logits a [..., n] of spins s [..., n] (a_i depends on s_<i only)."""

    n: int
    hidden: int = 0

    def masks(self):
        """(input -> hidden [n, H], input -> output [n, n], hidden -> output [H, n])."""
        degrees_in = np.arange(1, self.n + 1)
        degrees_hidden = 1 + np.arange(self.hidden) % max(self.n - 1, 1)
        to_hidden = degrees_in[:, None] <= degrees_hidden[None, :]
        direct = degrees_in[:, None] < degrees_in[None, :]
        from_hidden = degrees_hidden[:, None] < degrees_in[None, :]
        return (jnp.asarray(m, jnp.float32) for m in (to_hidden, direct, from_hidden))

    @nn.compact
    def __call__(self, s: jax.Array) -> jax.Array:
        to_hidden, direct, from_hidden = self.masks()
        zeros = nn.initializers.zeros
        v = self.param("direct", zeros, (self.n, self.n))
        b = self.param("bias", zeros, (self.n,))
        a = s @ (v * direct) + b
        if self.hidden:
            init = nn.initializers.lecun_normal()
            r = self.param("to_hidden", init, (self.n, self.hidden))
            c = self.param("hidden_bias", zeros, (self.hidden,))
            u = self.param("from_hidden", zeros, (self.hidden, self.n))
            a = a + nn.tanh(s @ (r * to_hidden) + c) @ (u * from_hidden)
        return a


def _log_prob(net: MADE, params, spins: jax.Array) -> jax.Array:
    """log P(s) = -sum_i softplus(-2 s_i a_i) for spins [..., n] -> [...]."""
    return -jnp.sum(jax.nn.softplus(-2.0 * spins * net.apply(params, spins)), axis=-1)


def _sample(key: jax.Array, net: MADE, params, num_samples: int) -> jax.Array:
    """Ancestral sampling: spin i from sigmoid(2 a_i(s_<i)), i = 0..n-1 [num_samples, n]."""
    u = jax.random.uniform(key, (net.n, num_samples))

    def step(s, i):
        p_up = jax.nn.sigmoid(2.0 * net.apply(params, s)[:, i])
        return s.at[:, i].set(jnp.where(u[i] < p_up, 1.0, -1.0)), None

    s, _ = lax.scan(step, jnp.zeros((num_samples, net.n), jnp.float32), jnp.arange(net.n))
    return s


_log_prob_jit = jax.jit(_log_prob, static_argnums=0)
_sample_jit = jax.jit(_sample, static_argnums=(1, 3))


def _check_net(net):
    if not isinstance(net, MADE):
        raise TypeError(f"net must be an autoregressive.MADE, got {type(net).__name__}.")


def log_prob(net: MADE, params, spins: jax.Array) -> jax.Array:
    """Exact log P(s) of spins [..., n] (±1) under the model; returns [...]."""
    _check_net(net)
    if jnp.shape(spins)[-1:] != (net.n,):
        raise ValueError(f"spins must have shape [..., {net.n}], got {jnp.shape(spins)}.")
    return _log_prob_jit(net, params, jnp.asarray(spins, jnp.float32))


def sample(key: jax.Array, net: MADE, params, num_samples: int) -> jax.Array:
    """Exact i.i.d. samples [num_samples, n] float32 ±1 (one compile per net and count)."""
    _check_net(net)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    return _sample_jit(key, net, params, num_samples)


def nll(net: MADE, params, spins: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Weighted mean negative log-likelihood (nats per sample) of spins [M, n]."""
    log_p = _log_prob(net, params, spins)
    if weights is None:
        return -jnp.mean(log_p)
    return -jnp.sum(weights * log_p) / jnp.sum(weights)


def make_train_fns(
    net: MADE,
    *,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
):
    """(init_fn(key, n), chunk_fn(state, data, weights, num_steps)) minimizing the minibatch
    NLL with AdamW (decoupled weight decay); see `diffusion.train.make_trainer`."""

    def init_params(key, n):
        return net.init(key, jnp.zeros((1, n), jnp.float32))

    def loss_fn(params, x0, keys):
        del keys  # the likelihood has no noise of its own
        return nll(net, params, x0)

    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
    return train.make_trainer(init_params, loss_fn, optimizer, batch_size=batch_size, ema_decay=0.0)
