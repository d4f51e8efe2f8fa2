"""Minimizers shared by the estimators: optax L-BFGS (default) and Adam, fully jittable."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

SOLVERS = ("lbfgs", "adam")


def minimize(
    loss_fn: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    solver: str = "lbfgs",
    tol: float = 1e-5,
    max_iter: int = 500,
    learning_rate: float = 0.05,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Minimizes loss_fn over a flat parameter vector x0 [p].

    L-BFGS (optax, zoom line search) stops when the gradient norm falls below `tol`,
    when neither the loss decreased by more than its rounding (4 float eps, relative) nor
    the gradient norm fell below its best so far for STALL_ITERS iterations in a row
    ('stalled': a float32 loss reaches its precision limit before a gradient norm below
    what float32 resolves, e.g. PLM on 6800 samples stalls near gradient norm 2e-7 when
    asked for tol = 1e-8), or after `max_iter` iterations. The line search refines step
    sizes down to 1e-10 (optax's default 1e-5 stalls near gradient norm 1e-4 on float32
    losses). Adam runs `max_iter` steps of size `learning_rate`. Everything runs inside
    lax.while_loop / lax.scan, so the call jits and vmaps.

    Returns:
      (x, info) with info = {'iterations', 'loss', 'grad_norm', 'stalled', 'converged'};
      converged = finite loss and (gradient norm < tol or stalled).
    """
    if solver == "lbfgs":
        x, iterations, stalled = _lbfgs(loss_fn, x0, tol, max_iter)
    elif solver == "adam":
        x, iterations = _adam(loss_fn, x0, max_iter, learning_rate)
        stalled = jnp.asarray(False)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}.")
    loss, grad = jax.value_and_grad(loss_fn)(x)
    grad_norm = jnp.linalg.norm(grad)
    info = {
        "iterations": iterations,
        "loss": loss,
        "grad_norm": grad_norm,
        "stalled": stalled,
        "converged": jnp.isfinite(loss) & ((grad_norm < tol) | stalled),
    }
    return x, info


STALL_ITERS = 20


def _lbfgs(loss_fn, x0, tol, max_iter):
    linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=20, stepsize_precision=1e-10)
    opt = optax.lbfgs(linesearch=linesearch)
    value_and_grad = optax.value_and_grad_from_state(loss_fn)
    rounding = 4 * jnp.finfo(x0.dtype).eps

    def step(carry):
        x, state, stalls, best_grad = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=loss_fn)
        new_value = optax.tree.get(state, "value")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        progress = (value - new_value > rounding * jnp.maximum(jnp.abs(value), 1.0)) | (
            grad_norm < 0.999 * best_grad
        )
        stalls = jnp.where(progress, 0, stalls + 1)
        return optax.apply_updates(x, updates), state, stalls, jnp.minimum(best_grad, grad_norm)

    def keep_going(carry):
        _, state, stalls, _ = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        running = (count < max_iter) & (grad_norm >= tol) & jnp.isfinite(grad_norm)
        return (count == 0) | (running & (stalls < STALL_ITERS))

    init = (x0, opt.init(x0), jnp.asarray(0), jnp.asarray(jnp.inf, x0.dtype))
    x, state, stalls, _ = lax.while_loop(keep_going, step, init)
    return x, optax.tree.get(state, "count"), stalls >= STALL_ITERS


def _adam(loss_fn, x0, num_steps, learning_rate):
    opt = optax.adam(learning_rate)

    def step(carry, _):
        x, state = carry
        updates, state = opt.update(jax.grad(loss_fn)(x), state, x)
        return (optax.apply_updates(x, updates), state), None

    (x, _), _ = lax.scan(step, (x0, opt.init(x0)), length=num_steps)
    return x, jnp.asarray(num_steps)
