"""Evasion attacks on an inferred Ising model used as a predictor of one spin from the
others (the neural-decoding use), and its certified robustness to spin flips.

For target spin i of a pattern s, the model predicts sign(h_i) with the conditional field
h_i(x) = b_i + sum_{j != i} w_ij x_j, P(s_i | rest) = sigmoid(2 s_i h_i), and the loss is
softplus(-2 s_i h_i). The prediction is correct when the margin s_i h_i > 0.

* Continuous budget: the other spins are relaxed to x in [-1, 1]^n within an L-infinity
  ball of radius eps around s (x_i = s_i is never perturbed). h_i is linear in x, so the
  worst case has a closed form, x_j = clip(s_j - eps s_i sign(w_ij), -1, 1)
  (`worst_case_linf`); FGSM (one signed gradient step, projected) reaches it exactly, and
  PGD (random starts, projected signed steps) is the general-purpose attack that the
  closed form checks.
* Discrete budget: flipping spin j changes the margin by -2 c_j with c_j = s_i w_ij s_j,
  so the fewest flips that change the prediction, k*, flip the largest positive c_j first
  (`min_flips`, exact). Certified robust accuracy at k is the fraction of patterns whose
  prediction is correct and needs more than k flips to change.

Image-classifier attack libraries (Foolbox, CleverHans, ART) assume softmax heads over
continuous pixels; here the predictor is a conditional of a pairwise model over ±1
spins, so the attacks are written on `jax.grad` and the exact structure of h_i.
Every function takes one pattern [n] and one target; vmap over patterns and targets.
Budgets are traced scalars, so a budget sweep is one vmapped call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from isingjax.models import IsingParams


def margin(params: IsingParams, x: jax.Array, target, s_target) -> jax.Array:
    """s_i h_i(x) for pattern x [n] (the diagonal of w is zero, so x_i does not enter)."""
    return s_target * (params.w[target] @ x + params.b[target])


def loss(params: IsingParams, x: jax.Array, target, s_target) -> jax.Array:
    """Log-loss softplus(-2 s_i h_i(x)) of the prediction of spin `target`."""
    return jax.nn.softplus(-2.0 * margin(params, x, target, s_target))


def _project(x, spins, target, eps):
    """Onto {|x - s|_inf <= eps} ∩ [-1, 1]^n with x_target = s_target."""
    x = optax.projections.projection_box(x, spins - eps, spins + eps)
    x = optax.projections.projection_box(x, -1.0, 1.0)
    return x.at[target].set(spins[target])


def worst_case_linf(params: IsingParams, spins: jax.Array, target, eps) -> jax.Array:
    """The exact minimizer of the margin over the L-inf ball ∩ [-1, 1]^n: [n]."""
    x = spins - eps * spins[target] * jnp.sign(params.w[target])
    return _project(x, spins, target, eps)


def fgsm(params: IsingParams, spins: jax.Array, target, eps) -> jax.Array:
    """One signed gradient step of the loss of size eps, projected: [n]."""
    grad = jax.grad(loss, argnums=1)(params, spins, target, spins[target])
    return _project(spins + eps * jnp.sign(grad), spins, target, eps)


def pgd(
    key: jax.Array,
    params: IsingParams,
    spins: jax.Array,
    target,
    eps,
    *,
    num_steps: int = 10,
    num_restarts: int = 4,
) -> jax.Array:
    """Projected gradient ascent on the loss from num_restarts uniform random starts in
    the ball, steps of 2.5 eps / num_steps; returns the strongest end point [n]."""
    step = 2.5 * eps / num_steps
    grad_fn = jax.grad(loss, argnums=1)

    def run(start_key):
        start = spins + eps * jax.random.uniform(start_key, spins.shape, minval=-1, maxval=1)
        x = _project(start, spins, target, eps)

        def body(x, _):
            g = grad_fn(params, x, target, spins[target])
            return _project(x + step * jnp.sign(g), spins, target, eps), None

        x, _ = jax.lax.scan(body, x, length=num_steps)
        return x

    ends = jax.vmap(run)(jax.random.split(key, num_restarts))
    losses = jax.vmap(lambda x: loss(params, x, target, spins[target]))(ends)
    return ends[jnp.argmax(losses)]


def min_flips(params: IsingParams, spins: jax.Array, target) -> jax.Array:
    """k*: the fewest spin flips (never the target's) that make the prediction of `target`
    wrong (margin <= 0); 0 if it is wrong already, n if no set of flips can do it. []"""
    n = spins.shape[0]
    s_i = spins[target]
    contrib = s_i * params.w[target] * spins  # c_j; c_target = 0 (zero diagonal)
    gains = jnp.sort(jnp.where(contrib > 0, contrib, 0.0))[::-1]
    after = margin(params, spins, target, s_i) - 2.0 * jnp.cumsum(gains)  # margin after k flips
    reachable = (after <= 0) & (gains > 0)
    first = jnp.argmax(reachable) + 1
    k_star = jnp.where(jnp.any(reachable), first, n)
    return jnp.where(margin(params, spins, target, s_i) <= 0, 0, k_star)


def success_rate(clean_margins: jax.Array, attacked_margins: jax.Array) -> jax.Array:
    """Fraction of originally correct predictions (margin > 0) that the attack makes wrong
    (margin <= 0); NaN when none was correct."""
    correct = clean_margins > 0
    broken = correct & (attacked_margins <= 0)
    return jnp.sum(broken) / jnp.sum(correct)


def certified_accuracy(k_star: jax.Array, budgets) -> jax.Array:
    """Fraction of predictions that stay correct under every attack of at most k flips,
    for each k of budgets [K]: mean(k* > k) over the given k* [...]. -> [K]"""
    k = jnp.asarray(budgets)
    return jnp.mean(k_star.reshape(-1)[None, :] > k[:, None], axis=1)
