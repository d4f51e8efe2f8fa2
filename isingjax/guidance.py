"""Low-probability samplers composed onto a trained epsilon network.

Training stays standard DDPM; only sampling changes. Every sampler wraps the network's
eps_fn(x [B, n], t [B]) (and, for Langevin, adds a corrector, see
isingjax.diffusion.sampling) and leaves the DDPM/DDIM update itself untouched. Each has
a strength `gamma`, a traced scalar (vmap over a grid of them); gamma = 0 gives the
unguided sampler's samples bit for bit. With sigma_t = sqrt(1 - abar_t) the score of
the noisy density is s(x_t, t) = -eps(x_t, t) / sigma_t, and adding a guidance gradient
g to the score means eps' = eps - gamma sigma_t g.

  baseline     the unguided sampler.
  langevin     reverse-score Langevin: before each reverse step whose t lies in
               `t_window` (fractions of T), `langevin_steps` steps
                   x <- x - gamma eta sigma_t^2 s(x, t) + sqrt(2 gamma eta) sigma_t z,
               i.e. Langevin dynamics with the drift reversed (toward lower density).
  entropy      entropy-maximizing guidance: g = -grad log p_hat(x_i), p_hat a Gaussian
               kernel density estimate of the batch itself at x_t (bandwidth by the
               median heuristic h^2 = median_ij |x_i - x_j|^2 / (2 log B)), so
               g_i = sum_j softmax_j(-|x_i - x_j|^2 / 2h^2) (x_i - x_j) / h^2: each
               sample is pushed away from where the batch is dense, raising the batch's
               entropy (the repulsion of particle guidance, Corso et al., ICLR 2024).
  classifier   negative classifier guidance: g = grad log c(low | x_t, t), c a
               noise-conditional classifier trained on the observed spins to tell
               high-energy ("low"-probability) from low-energy configurations.
  rejection    unguided samples kept with probability exp(alpha (E(x) - E_max)) ∝
               p_hat(x)^(-alpha) under the Ising model inferred from the observed data
               (gamma = alpha); the first K accepted of a pool of `pool_factor` K are
               returned, with weight 0 where fewer than K were accepted.
  temperature  temperature-scaled score: eps' = (1 - gamma) eps, the score of
               p_t^(1/T) with T = 1 / (1 - gamma) > 1 (exact at t = 0 only: scaling the
               score of p_t is not the score of the diffused p^(1/T)).
  minority     self-guided minority guidance (Um & Ye, ECCV 2024; minority score of Um et
               al., ICLR 2024): g = grad_x |x0_hat(x_t) - x0_hat(x_m)|^2, where x_m
               re-noises x0_hat(x_t) to step t_m = `minority_t` T with fixed noise: the
               sample moves to where the model reconstructs its own prediction poorly.

Every guidance term is bounded: the displacement it adds to eps (gamma times sigma_t g,
or for Langevin the score step's eps) is clipped per sample to the Euclidean norm
`max_norm` sqrt(n) (sqrt(n) is the typical norm of eps ~ N(0, I)), so no gamma can send
the reverse process out of the finite range. Minority guidance needs it most: its x0_hat
divides by sqrt(abar_t) (about 1/160 at t = T), so its raw gradient is huge at large t.

Each sampler returns (spins [K, n] of ±1, weights [K]); weights are 1 except for
rejection. `sample_counted` also returns how many samples were non-finite before
thresholding (isingjax.diffusion.sampling.num_nonfinite).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from isingjax.diffusion import sampling
from isingjax.diffusion.schedule import Schedule, q_sample
from isingjax.diffusion.score_net import sinusoidal_embedding
from isingjax.models import IsingParams, energy

SAMPLERS = ("baseline", "langevin", "entropy", "classifier", "rejection", "temperature", "minority")
DEFAULT_MAX_NORM = 3.0  # clip of a guidance term, in multiples of sqrt(n)


def clip_norm(v, max_norm) -> jax.Array:
    """v [B, n] with each row's Euclidean norm clipped to max_norm sqrt(n)."""
    limit = max_norm * jnp.sqrt(v.shape[-1])
    norm = jnp.sqrt(jnp.sum(v**2, axis=-1, keepdims=True))
    return v * jnp.minimum(1.0, limit / jnp.maximum(norm, 1e-30))


def _sigma(schedule: Schedule, t) -> jax.Array:
    return jnp.sqrt(1.0 - schedule.alpha_bars[t - 1])


def temperature_eps(eps_fn, gamma):
    return lambda x, t: eps_fn(x, t) * (1.0 - gamma)


def kde_repulsion(x) -> jax.Array:
    """-grad_x log p_hat(x_i) for each row of x [B, n], p_hat(y) = mean_j N(y; x_j, h^2 I)
    the batch's Gaussian kernel density estimate, h^2 = median_ij |x_i - x_j|^2 / (2 log B)
    (held fixed: not differentiated)."""
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    h2 = jnp.median(d2) / (2.0 * jnp.log(x.shape[0])) + 1e-12
    w = jax.nn.softmax(-d2 / (2.0 * h2), axis=1)
    return (x - w @ x) / h2


def entropy_eps(eps_fn, schedule: Schedule, gamma, max_norm=DEFAULT_MAX_NORM):
    def guided(x, t):
        term = clip_norm(_sigma(schedule, t)[:, None] * kde_repulsion(x), max_norm)
        return eps_fn(x, t) - gamma * term

    return guided


def classifier_eps(eps_fn, schedule: Schedule, logit_fn, gamma, max_norm=DEFAULT_MAX_NORM):
    """logit_fn(x, t) -> logit of c(low | x_t, t) per sample."""

    def guided(x, t):
        grad = jax.grad(lambda y: jnp.sum(jax.nn.log_sigmoid(logit_fn(y, t))))(x)
        return eps_fn(x, t) - gamma * clip_norm(_sigma(schedule, t)[:, None] * grad, max_norm)

    return guided


def minority_score(eps_fn, schedule: Schedule, key, t_m: int):
    """g(x, t) = grad_x |x0_hat(x, t) - x0_hat(x_m, t_m)|^2 per sample (the minority score),
    x_m = sqrt(abar_m) x0_hat(x, t) + sqrt(1 - abar_m) z, z ~ N(0, I) fixed per step t[0]."""
    abar_m = schedule.alpha_bars[t_m - 1]

    def x0_hat(x, t, eps):
        return (x - jnp.sqrt(1.0 - schedule.alpha_bars[t - 1])[:, None] * eps) / jnp.sqrt(
            schedule.alpha_bars[t - 1]
        )[:, None]

    def score(x, t):
        noise = jax.random.normal(jax.random.fold_in(key, t[0]), x.shape)
        t_mm = jnp.full_like(t, t_m)

        def loss(y):
            x0 = x0_hat(y, t, eps_fn(y, t))
            x_m = jnp.sqrt(abar_m) * x0 + jnp.sqrt(1.0 - abar_m) * noise
            return jnp.sum((x0 - x0_hat(x_m, t_mm, eps_fn(x_m, t_mm))) ** 2)

        return jax.grad(loss)(x)

    return score


def minority_eps(eps_fn, schedule: Schedule, gamma, key, t_m: int, max_norm=DEFAULT_MAX_NORM):
    score = minority_score(eps_fn, schedule, key, t_m)

    def guided(x, t):
        term = clip_norm(_sigma(schedule, t)[:, None] * score(x, t), max_norm)
        return eps_fn(x, t) - gamma * term

    return guided


def langevin_corrector(
    eps_fn, schedule: Schedule, gamma, *, step_size, num_steps, t_window, max_norm=DEFAULT_MAX_NORM
):
    """corrector(key, x, t): `num_steps` steps x <- x + g eta sigma_t clip(eps(x, t))
    + sqrt(2 g eta) sigma_t z (= x - g eta sigma_t^2 s(x, t) + ..., reversed Langevin),
    with g = gamma inside t_window (fractions of T) and 0 outside."""
    lo, hi = (round(f * schedule.num_steps) for f in t_window)

    def corrector(key, x, t):
        sigma = _sigma(schedule, t)
        g = jnp.where((t >= lo) & (t <= hi), gamma, 0.0)

        def one(x, k):
            eps = clip_norm(eps_fn(x, jnp.full(x.shape[:1], t)), max_norm)  # score = -eps/sigma
            noise = jax.random.normal(k, x.shape)
            move = g * step_size * sigma * eps + jnp.sqrt(2.0 * g * step_size) * sigma * noise
            return x + move, None

        return lax.scan(one, x, jax.random.split(key, num_steps))[0]

    return corrector


def rejection_accept(key, energies, alpha) -> jax.Array:
    """Accept mask: u < exp(alpha (E - max E)) with u ~ U[0, 1); alpha = 0 accepts all."""
    prob = jnp.exp(alpha * (energies - jnp.max(energies)))
    return jax.random.uniform(key, energies.shape) < prob


class NoisyClassifier(nn.Module):
    """Logit of c(low | x_t, t) for noisy spins x_t [..., n] at steps t [...]."""

    widths: tuple[int, ...] = (64, 64)
    time_dim: int = 32

    @nn.compact
    def __call__(self, x, t):
        emb = sinusoidal_embedding(jnp.broadcast_to(t, x.shape[:-1]), self.time_dim)
        h = x
        for width in self.widths:
            h = nn.gelu(nn.Dense(width)(h) + nn.Dense(width)(emb))
        return nn.Dense(1)(h)[..., 0]


def energy_labels(params: IsingParams, spins, quantile) -> jax.Array:
    """1.0 ("low probability") where E(s) under params is at or above its `quantile`."""
    e = energy(params, spins)
    return (e >= jnp.quantile(e, quantile)).astype(jnp.float32)


def train_classifier(
    key,
    net: NoisyClassifier,
    schedule: Schedule,
    spins,
    labels,
    *,
    num_steps: int,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
):
    """Trains `net` on noisy versions q(x_t | x_0) of spins [M, n] with labels [M] (binary
    cross-entropy, classes weighted to equal total weight); returns its parameters."""
    init_key, run_key = jax.random.split(key)
    params = net.init(init_key, spins[:1], jnp.ones((1,), jnp.int32))
    optimizer = optax.adam(learning_rate)
    positive = jnp.mean(labels)
    class_weight = jnp.where(labels > 0, 0.5 / positive, 0.5 / (1.0 - positive))

    def loss_fn(params, x, t, y, w):
        logits = net.apply(params, x, t)
        return jnp.mean(w * optax.sigmoid_binary_cross_entropy(logits, y))

    def step(carry, k):
        params, opt_state = carry
        idx_key, t_key, noise_key = jax.random.split(k, 3)
        idx = jax.random.randint(idx_key, (batch_size,), 0, spins.shape[0])
        t = jax.random.randint(t_key, (batch_size,), 1, schedule.num_steps + 1)
        x = q_sample(schedule, spins[idx], t, jax.random.normal(noise_key, spins[idx].shape))
        loss, grads = jax.value_and_grad(loss_fn)(params, x, t, labels[idx], class_weight[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    carry = (params, optimizer.init(params))
    (params, _), _ = lax.scan(step, carry, jax.random.split(run_key, num_steps))
    return params


class Context(NamedTuple):
    """What the samplers need besides the network: the model inferred from the observed
    data (rejection), the classifier's logit function (classifier) and the options."""

    inferred: IsingParams
    logit_fn: Callable | None
    options: Any  # a mapping of sampler options (see configs/guided.py)


def sample(name: str, key, gamma, eps_fn, schedule: Schedule, context: Context, **kwargs):
    """Samples of guided sampler `name` at strength gamma: (spins [K, n], weights [K]);
    arguments as `sample_counted`."""
    spins, weights, _ = sample_counted(name, key, gamma, eps_fn, schedule, context, **kwargs)
    return spins, weights


def sample_counted(
    name: str,
    key,
    gamma,
    eps_fn,
    schedule: Schedule,
    context: Context,
    *,
    num_samples: int,
    n: int,
    sampler: str = "ddim",
    num_steps: int = 50,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(spins [K, n], weights [K], number of non-finite samples before thresholding
    (int32 []; for rejection, over the whole pool)) of guided sampler `name` at gamma."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown guided sampler {name!r}; choose one of {SAMPLERS}.")
    opts = context.options
    max_norm = opts.get("max_norm", DEFAULT_MAX_NORM)
    guided, corrector = eps_fn, None
    if name == "temperature":
        guided = temperature_eps(eps_fn, gamma)
    elif name == "entropy":
        guided = entropy_eps(eps_fn, schedule, gamma, max_norm)
    elif name == "classifier":
        guided = classifier_eps(eps_fn, schedule, context.logit_fn, gamma, max_norm)
    elif name == "minority":
        t_m = max(1, round(opts["minority_t"] * schedule.num_steps))
        minority_key = jax.random.fold_in(key, 1)
        guided = minority_eps(eps_fn, schedule, gamma, minority_key, t_m, max_norm)
    elif name == "langevin":
        corrector = langevin_corrector(
            eps_fn,
            schedule,
            gamma,
            step_size=opts["langevin_step_size"],
            num_steps=opts["langevin_steps"],
            t_window=tuple(opts["langevin_t_window"]),
            max_norm=max_norm,
        )

    def draw(k, size):
        return sampling.sample_spins_counted(
            k,
            guided,
            schedule,
            num_samples=size,
            n=n,
            sampler=sampler,
            num_steps=num_steps,
            corrector=corrector,
        )

    if name != "rejection":
        spins, bad = draw(key, num_samples)
        return spins, jnp.ones(num_samples, spins.dtype), bad
    pool_factor = opts["pool_factor"]
    batch_keys = [key] + [jax.random.fold_in(key, 2 + b) for b in range(pool_factor - 1)]
    batches = [draw(k, num_samples) for k in batch_keys]
    pool = jnp.concatenate([b[0] for b in batches])
    bad = sum(b[1] for b in batches)
    accept = rejection_accept(jax.random.fold_in(key, 0), energy(context.inferred, pool), gamma)
    order = jnp.argsort(~accept, stable=True)[:num_samples]  # accepted first, in pool order
    return pool[order], accept[order].astype(pool.dtype), bad
