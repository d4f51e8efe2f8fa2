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

* Multi-output (one pattern against all n conditionals at once, each still predicting
  the pattern's own s_i): `greedy_flips` (coordinate ascent of the total log-loss over
  k flips, each step the exact best single flip) and `pgd_round` (PGD on the relaxed box,
  then the k spins that moved furthest flipped); both report the best attack of at most
  k flips for every k.
* `evasion_core` runs every attack on a batch of test patterns and budgets (what a
  pipeline vmaps over seeds); `evaluate` is its public entry point, checked and jitted
  once per shape.

Image-classifier attack libraries (Foolbox, CleverHans, ART) assume softmax heads over
continuous pixels; here the predictor is a conditional of a pairwise model over ±1
spins, so the attacks are written on `jax.grad` and the exact structure of h_i.
The single-target functions take one pattern [n] and one target; vmap over patterns and
targets.
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


# Multi-output attacks: one perturbed pattern x against all n conditionals at once, each
# conditional i still predicting the pattern's own spin s_i from x_{-i}.


def total_loss(params: IsingParams, x: jax.Array, spins: jax.Array) -> jax.Array:
    """Sum over the n conditionals of softplus(-2 s_i h_i(x)): []."""
    return jnp.sum(jax.nn.softplus(-2.0 * spins * (params.w @ x + params.b)))


def margins(params: IsingParams, x: jax.Array, spins: jax.Array) -> jax.Array:
    """s_i h_i(x) of every conditional i: [n]."""
    return spins * (params.w @ x + params.b)


def _best_prefix(losses, margins_k):
    """Attacks of at most k flips: for every k, the prefix j <= k of largest loss (the
    first one that reaches it)."""
    best = jax.lax.associative_scan(jnp.maximum, losses)
    at = jnp.argmax(losses[None, :] >= best[:, None], axis=1)
    return best, margins_k[at]


def greedy_flips(params: IsingParams, spins: jax.Array, *, num_flips: int):
    """Greedy coordinate ascent of total_loss over spin flips: at each of num_flips steps
    the flip of largest exact total loss among the spins not flipped yet.

    Returns (loss [num_flips + 1], margins [num_flips + 1, n]): for k = 0..num_flips, the
    total loss and the margins s_i h_i of the best attack of at most k flips."""
    n = spins.shape[0]

    def candidates(x):
        fields = params.w @ x + params.b  # [n]: h_i(x)
        # flipping j moves h_i by -2 w_ij x_j (w symmetric): rows j, columns i
        moved = fields[None, :] - 2.0 * x[:, None] * params.w
        return jnp.sum(jax.nn.softplus(-2.0 * spins[None, :] * moved), axis=1)

    def body(carry, _):
        x, flipped = carry
        j = jnp.argmax(jnp.where(flipped, -jnp.inf, candidates(x)))
        x, flipped = x.at[j].multiply(-1.0), flipped.at[j].set(True)
        return (x, flipped), x

    _, xs = jax.lax.scan(body, (spins, jnp.zeros(n, bool)), length=num_flips)
    return _prefix_attacks(params, jnp.concatenate([spins[None], xs]), spins)


def _prefix_attacks(params, xs, spins):
    """Patterns xs [k + 1, n] after 0..k flips -> `_best_prefix` of their losses."""
    losses = jax.vmap(lambda x: total_loss(params, x, spins))(xs)
    return _best_prefix(losses, jax.vmap(lambda x: margins(params, x, spins))(xs))


def pgd_round(
    key: jax.Array,
    params: IsingParams,
    spins: jax.Array,
    *,
    num_flips: int,
    num_steps: int = 20,
    num_restarts: int = 4,
):
    """PGD on total_loss over the relaxed box x in [-1, 1]^n (random starts, signed steps
    of 5 / num_steps), then rounding: the attack of k flips flips the k spins the relaxed
    optimum moved furthest from s (rank mask, so k may be traced). Same returns as
    `greedy_flips`."""
    grad_fn = jax.grad(total_loss, argnums=1)

    def run(start_key):
        x = jnp.clip(spins + jax.random.uniform(start_key, spins.shape, minval=-1, maxval=1), -1, 1)

        def body(x, _):
            g = grad_fn(params, x, spins)
            return jnp.clip(x + 5.0 / num_steps * jnp.sign(g), -1.0, 1.0), None

        return jax.lax.scan(body, x, length=num_steps)[0]

    ends = jax.vmap(run)(jax.random.split(key, num_restarts))
    best = ends[jnp.argmax(jax.vmap(lambda x: total_loss(params, x, spins))(ends))]
    moved = 1.0 - spins * best  # in [0, 2]; > 1 where the relaxed spin crossed zero
    rank = jnp.argsort(jnp.argsort(-moved))
    flips = rank[None, :] < jnp.arange(num_flips + 1)[:, None]  # [k, n]
    return _prefix_attacks(params, jnp.where(flips, -spins, spins), spins)


# Every attack on a batch of test patterns: what a pipeline stage vmaps over seeds, and
# (jitted, cached per shape) the public entry point `evaluate`.

EVASION_FIELDS = (
    "clean_accuracy",  # []
    *(f"{a}_{m}" for a in ("fgsm", "pgd") for m in ("success", "accuracy", "dloss")),  # [E]
    "certified_accuracy",  # [K]
    "k_star_hist",  # [n + 1]: fractions of predictions with k* = 0..n
    "k_star_mean",  # []: mean k* of the originally correct predictions
    *(f"{a}_{m}" for a in ("greedy", "pgdround") for m in ("success", "accuracy")),  # [K]
)


def evasion_core(
    key, params, spins, eps, budgets, *, num_steps: int, num_restarts: int, max_flips: int
) -> dict:
    """All attacks on test patterns spins [T, n] at L-inf budgets eps [E] (every target)
    and flip budgets budgets [K] (ints <= max_flips): a dict of EVASION_FIELDS. Success:
    fraction of originally correct predictions made wrong; accuracy: fraction correct
    under the attack; dloss: mean log-loss increase; multi-output attacks (greedy,
    pgdround) perturb one pattern against all n conditionals."""
    num, n = spins.shape
    targets = jnp.arange(n)
    pgd_key, round_key = jax.random.split(key)

    def per_target(fn):  # fn(pattern, target, eps) -> x; over eps, patterns, targets
        over = jax.vmap(jax.vmap(fn, in_axes=(None, 0, None)), in_axes=(0, None, None))
        return jax.vmap(lambda e: over(spins, targets, e))(eps)  # [E, T, n, n]

    def scores(x):  # margins and losses [E, T, n] of attacked patterns x [E, T, n (target), n]
        m = jnp.einsum("etij,ij->eti", x, params.w) + params.b
        m = spins[None] * m
        return m, jax.nn.softplus(-2.0 * m)

    clean = spins * (spins @ params.w.T + params.b)  # [T, n]
    out = {"clean_accuracy": jnp.mean(clean > 0)}
    pgd_keys = jax.random.split(pgd_key, num * n).reshape(num, n)
    attacked = {
        "fgsm": per_target(lambda s, i, e: fgsm(params, s, i, e)),
        "pgd": jax.vmap(
            lambda e: jax.vmap(
                lambda k, s: jax.vmap(
                    lambda kk, i: pgd(
                        kk, params, s, i, e, num_steps=num_steps, num_restarts=num_restarts
                    )
                )(k, targets)
            )(pgd_keys, spins)
        )(eps),
    }
    for name, x in attacked.items():
        m, losses = scores(x)
        out[f"{name}_success"] = jax.vmap(lambda a: success_rate(clean, a))(m)
        out[f"{name}_accuracy"] = jnp.mean(m > 0, axis=(1, 2))
        out[f"{name}_dloss"] = jnp.mean(losses - jax.nn.softplus(-2.0 * clean)[None], axis=(1, 2))
    k_star = jax.vmap(lambda s: jax.vmap(lambda i: min_flips(params, s, i))(targets))(spins)
    out["certified_accuracy"] = certified_accuracy(k_star, budgets)
    out["k_star_hist"] = jnp.mean(k_star.reshape(-1)[:, None] == jnp.arange(n + 1), axis=0)
    correct = clean > 0
    out["k_star_mean"] = jnp.sum(jnp.where(correct, k_star, 0)) / jnp.sum(correct)
    multi = {
        "greedy": jax.vmap(lambda s: greedy_flips(params, s, num_flips=max_flips)[1])(spins),
        "pgdround": jax.vmap(
            lambda k, s: pgd_round(
                k, params, s, num_flips=max_flips, num_steps=num_steps, num_restarts=num_restarts
            )[1]
        )(jax.random.split(round_key, num), spins),
    }
    for name, m in multi.items():  # m: [T, max_flips + 1, n]
        m = m[:, jnp.asarray(budgets)]  # [T, K, n]
        out[f"{name}_success"] = jax.vmap(lambda a: success_rate(clean, a), in_axes=1)(m)
        out[f"{name}_accuracy"] = jnp.mean(m > 0, axis=(0, 2))
    return out


_evaluate = jax.jit(evasion_core, static_argnames=("num_steps", "num_restarts", "max_flips"))


def evaluate(
    key, params: IsingParams, spins, eps, budgets, *, num_steps=10, num_restarts=4
) -> dict:
    """`evasion_core` with its inputs checked, jitted once per shape (eps and budgets are
    traced: a new budget grid of the same length compiles nothing)."""
    spins, eps, budgets = jnp.asarray(spins), jnp.asarray(eps), jnp.asarray(budgets)
    n = params.b.shape[0]
    if spins.ndim != 2 or spins.shape[1] != n:
        raise ValueError(f"attacks.evaluate: spins must be [T, {n}], got {spins.shape}.")
    if not bool(jnp.all(jnp.abs(spins) == 1)):
        raise ValueError("attacks.evaluate: spins must be ±1.")
    if eps.ndim != 1 or not bool(jnp.all(jnp.isfinite(eps) & (eps >= 0))):
        raise ValueError(
            f"attacks.evaluate: eps must be a 1-D array of finite values >= 0, got {eps}."
        )
    if budgets.ndim != 1 or not bool(jnp.all((budgets >= 0) & (budgets <= n))):
        raise ValueError(
            f"attacks.evaluate: budgets must be a 1-D array of ints in [0, {n}], got {budgets}."
        )
    return _evaluate(
        key,
        params,
        spins,
        eps,
        budgets,
        num_steps=int(num_steps),
        num_restarts=int(num_restarts),
        max_flips=n,
    )
