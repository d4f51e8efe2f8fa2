"""Poisoning of an estimator's training data, with gradients through the refitted model.

The attacker adds K poison patterns P [K, n] to the M training patterns and the estimator
refits; the attack maximizes an objective of the refitted parameters theta*(P), either
the parameter error against the truth (the worst case: the attacker knows the truth) or
a truth-free proxy, the refitted model's negative pseudo-log-likelihood on clean
held-out spins. The poison is relaxed to P in [-1, 1]^{K x n} for the gradient and
rounded to ±1 before every reported refit.

Gradient through the solver. Penalized pseudo-likelihood has no closed form:
theta*(P) solves grad_theta L(theta; D ∪ P) = 0, and `refit_plm` gives the L-BFGS fit a
`jax.custom_vjp`: the cotangent comes from the implicit function theorem,
-(d grad L/dP)^T H^{-1} g, with H^{-1} g solved by conjugate gradients on Hessian-vector
products (H is positive definite: the penalty l2 > 0 on every coupling). The fit is
never unrolled. Mean field (`refit_nmf`) is a closed form, differentiated directly.
Parameters are theta = (b, w_{i<j}) (`models.flatten_params`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from isingjax.inference import mean_field, optim, plm
from isingjax.models import IsingParams, flatten_params, unflatten_params


def _plm_objective(theta, spins, weights, l2):
    n = spins.shape[1]
    p = weights / jnp.sum(weights)
    return plm.loss(unflatten_params(theta, n), spins, p, l2=l2, l2_bias=0.0)


@jax.custom_vjp
def _plm_root(spins, weights, l2):
    theta0 = jnp.zeros(spins.shape[1] * (spins.shape[1] + 1) // 2, spins.dtype)
    objective = lambda t: _plm_objective(t, spins, weights, l2)  # noqa: E731
    return optim.minimize(objective, theta0, tol=1e-6, max_iter=1000)[0]


def _plm_root_fwd(spins, weights, l2):
    theta = _plm_root(spins, weights, l2)
    return theta, (theta, spins, weights, l2)


def _plm_root_bwd(residuals, cotangent):
    # Implicit function theorem at grad_theta L(theta*, x) = 0:
    # d theta*/dx = -H^{-1} d(grad_theta L)/dx, so x's cotangent is -(d grad L/dx)^T v
    # with H v = cotangent (H symmetric), solved by conjugate gradients on H-vector products.
    theta, spins, weights, l2 = residuals

    def grad_theta(t, x, w, lam):
        return jax.grad(_plm_objective)(t, x, w, lam)

    def hvp(v):
        return jax.jvp(lambda t: grad_theta(t, spins, weights, l2), (theta,), (v,))[1]

    v, _ = jax.scipy.sparse.linalg.cg(hvp, cotangent, tol=1e-10, maxiter=1000)
    _, vjp = jax.vjp(lambda x, w, lam: grad_theta(theta, x, w, lam), spins, weights, l2)
    return tuple(-g for g in vjp(v))


_plm_root.defvjp(_plm_root_fwd, _plm_root_bwd)


def refit_plm(spins: jax.Array, weights: jax.Array, *, l2_per_sample: float = 1.0) -> jax.Array:
    """Symmetric penalized PLM fit theta* [n(n+1)/2] of spins [N, n] (entries may be
    relaxed to [-1, 1]) with weights [N], l2 = l2_per_sample / sum(weights);
    reverse-mode differentiable in spins and weights by implicit differentiation."""
    return _plm_root(spins, weights, l2_per_sample / jnp.sum(weights))


def refit_nmf(spins: jax.Array, weights: jax.Array) -> jax.Array:
    """Naive mean-field fit theta* of weighted spins (closed form, differentiable)."""
    return flatten_params(mean_field.fit_nmf(spins, weights)[0])


def mse_objective(theta: jax.Array, truth: IsingParams) -> jax.Array:
    """Mean squared error of theta against the truth (all b and w_{i<j})."""
    return jnp.mean((theta - flatten_params(truth)) ** 2)


def proxy_objective(theta: jax.Array, heldout: jax.Array) -> jax.Array:
    """Negative pseudo-log-likelihood per pattern of clean held-out spins [H, n]."""
    n = heldout.shape[1]
    p = jnp.full(heldout.shape[0], 1.0 / heldout.shape[0])
    return plm.loss(unflatten_params(theta, n), heldout, p, l2=0.0, l2_bias=0.0)


def _concat(spins, poison, weights, poison_weights):
    """D ∪ P with weights: missing weights are ones (a zero weight: the row is absent)."""
    ones = lambda x: jnp.ones(x.shape[0], spins.dtype)  # noqa: E731
    w = ones(spins) if weights is None else weights
    pw = ones(poison) if poison_weights is None else poison_weights
    return jnp.concatenate([spins, poison]), jnp.concatenate([w, pw])


def _attack_value(refit_fn, objective_fn, spins, poison, weights=None, poison_weights=None):
    return objective_fn(refit_fn(*_concat(spins, poison, weights, poison_weights)))


def pgd_poison(
    refit_fn,
    objective_fn,
    spins,
    start,
    *,
    num_steps: int,
    step_size: float,
    weights=None,
    poison_weights=None,
):
    """Projected signed gradient ascent of objective_fn(refit_fn(D ∪ P)) over
    P in [-1, 1]^{K x n}, from `start` [K, n]; num_steps = 1 with step_size 2 is FGSM
    (one signed step from the start, which then sits at a corner). weights [M] of D and
    poison_weights [K] of P (default ones; a zero weight masks a row out, so one compile
    serves every budget). Returns P rounded to ±1 (ties to +1)."""

    def value(p):
        return _attack_value(refit_fn, objective_fn, spins, p, weights, poison_weights)

    grad_fn = jax.grad(value)

    def body(p, _):
        return jnp.clip(p + step_size * jnp.sign(grad_fn(p)), -1.0, 1.0), None

    poison, _ = jax.lax.scan(body, start, length=num_steps)
    return jnp.where(poison >= 0, 1.0, -1.0).astype(spins.dtype)


def attack_effect(
    refit_fn, truth: IsingParams, spins, poison, weights=None, poison_weights=None
) -> dict[str, jax.Array]:
    """Change of the refitted model from clean (D) to poisoned (D ∪ P) data: 'delta_mse',
    relative norms of the coupling and bias changes, the fraction of couplings whose
    sign flips, the clean MSE and dw [n, n]. The clean fit is of the same rows with the
    poison weights set to zero; a zero budget changes nothing, bit for bit."""
    n = spins.shape[1]
    data, w = _concat(spins, poison, weights, poison_weights)
    clean = refit_fn(data, w.at[spins.shape[0] :].set(0.0))
    # No poison row with weight: the poisoned fit is the clean one (a second solver run
    # on the same data would differ from it by float noise of ~1e-9).
    dirty = jnp.where(jnp.any(w[spins.shape[0] :] > 0), refit_fn(data, w), clean)
    c, d = unflatten_params(clean, n), unflatten_params(dirty, n)
    target = flatten_params(truth)
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    return {
        # the difference taken before the mean: exactly 0 where the fits agree
        "delta_mse": jnp.mean((dirty - target) ** 2 - (clean - target) ** 2),
        "rel_dw": jnp.linalg.norm(d.w - c.w) / jnp.linalg.norm(c.w),
        "rel_db": jnp.linalg.norm(d.b - c.b) / jnp.maximum(jnp.linalg.norm(c.b), 1e-12),
        "sign_flips": jnp.sum(upper & (jnp.sign(d.w) != jnp.sign(c.w))) / jnp.sum(upper),
        "mse_clean": mse_objective(clean, truth),
        "dw": d.w - c.w,
    }
