"""Throughput of the evasion attacks and cost of the implicit poisoning gradient, each
beside a reference measured in the same run.

    python benchmarks/bench_attacks.py [--quick]

* PGD (single target, attacks.pgd vmapped over patterns and targets, 4 restarts) on an
  SK model of n = 20: attacked (pattern, target) pairs x PGD steps per second, beside the
  same projected signed-gradient ascent written in vectorized NumPy (float64; the gradient
  of the margin's log-loss in closed form); the ratio is JAX / NumPy.
* One poisoning gradient d MSE(theta*(D ∪ P)) / d P for plm (n = 20, M = 400, 20 poison
  patterns): implicit differentiation (poisoning.refit_plm: L-BFGS forward, conjugate
  gradients on Hessian-vector products backward) beside unrolled differentiation through
  30 Newton steps of the same objective (jax.hessian, float32); time of each, their ratio
  and the agreement of the two gradients (cosine, largest relative difference).
Times exclude compilation (each jitted function runs once before it is timed).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import isingjax as ij
from isingjax import attacks, exact, poisoning, runtime


def timed(fn, repeats=3):
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def numpy_pgd(w, b, spins, eps, starts, num_steps):
    """Single-target PGD over every (pattern, target): x [R, T, n (target), n]."""
    n = spins.shape[1]
    s = spins[None, :, None, :]
    s_t = spins[None, :, :, None]  # the target's own spin
    eye = np.eye(n, dtype=bool)[None, None]
    step = 2.5 * eps / num_steps
    x = np.clip(np.clip(s + eps * starts, s - eps, s + eps), -1, 1)
    x = np.where(eye, s, x)
    for _ in range(num_steps):
        m = s_t[..., 0] * (np.einsum("rtij,ij->rti", x, w) + b)
        g = (-2.0 * s_t[..., 0] / (1.0 + np.exp(2.0 * m)))[..., None] * w[None, None]
        x = np.clip(np.clip(x + step * np.sign(g), s - eps, s + eps), -1, 1)
        x = np.where(eye, s, x)
    return x


def report_pgd(quick):
    n, num, eps, steps, restarts = 20, 50 if quick else 200, 0.2, 10, 4
    truth = ij.sk_model(jax.random.key(0), n, beta=1.0, bias_std=0.2)
    spins = exact.sample(jax.random.key(1), truth, num)
    targets = jnp.arange(n)
    keys = jax.random.split(jax.random.key(2), num * n).reshape(num, n)

    @jax.jit
    def run(keys, spins):
        def one(k, s, i):
            return attacks.pgd(k, truth, s, i, eps, num_steps=steps, num_restarts=restarts)

        return jax.vmap(lambda kk, s: jax.vmap(lambda k, i: one(k, s, i))(kk, targets))(keys, spins)

    seconds = timed(lambda: run(keys, spins))
    w, b, s = (np.asarray(x, np.float64) for x in (truth.w, truth.b, spins))
    starts = np.asarray(jax.random.uniform(jax.random.key(3), (restarts, num, n, n), minval=-1))
    ref = timed(lambda: numpy_pgd(w, b, s, eps, starts, steps), repeats=1)
    work = num * n * restarts * steps
    print(f"\nsingle-target PGD, n = {n}, {num} patterns x {n} targets, {restarts} restarts")
    print(f"  jax   {work / seconds:12.3e} (pattern, target, restart) x steps / s")
    print(f"  numpy {work / ref:12.3e} (pattern, target, restart) x steps / s")
    print(f"  ratio jax / numpy: {ref / seconds:.1f}x")


def newton_refit(spins, weights, *, l2_per_sample=1.0, num_steps=30):
    """The symmetric penalized PLM fit by num_steps unrolled Newton steps."""

    def objective(t):
        return poisoning._plm_objective(t, spins, weights, l2_per_sample / jnp.sum(weights))

    def step(t, _):
        g, h = jax.grad(objective)(t), jax.hessian(objective)(t)
        return t - jnp.linalg.solve(h, g), None

    n = spins.shape[1]
    theta0 = jnp.zeros(n * (n + 1) // 2, spins.dtype)
    return jax.lax.scan(step, theta0, length=num_steps)[0]


def report_poisoning_gradient(quick):
    n, m, k = (12, 200, 10) if quick else (20, 400, 20)
    truth = ij.sk_model(jax.random.key(4), n, beta=1.0, bias_std=0.2)
    spins = exact.sample(jax.random.key(5), truth, m)
    poison = jax.random.uniform(jax.random.key(6), (k, n), minval=-1, maxval=1)
    objective = functools.partial(poisoning.mse_objective, truth=truth)
    grads = {
        name: jax.jit(jax.grad(lambda p, r=refit: poisoning._attack_value(r, objective, spins, p)))
        for name, refit in (("implicit", poisoning.refit_plm), ("unrolled", newton_refit))
    }
    times = {name: timed(lambda g=g: g(poison)) for name, g in grads.items()}
    values = {name: np.asarray(g(poison), np.float64).ravel() for name, g in grads.items()}
    a, b = values["implicit"], values["unrolled"]
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    rel = np.max(np.abs(a - b)) / np.max(np.abs(b))
    fits = {
        "implicit": poisoning.refit_plm(spins, jnp.ones(m)),
        "unrolled": newton_refit(spins, jnp.ones(m)),
    }
    gap = float(jnp.max(jnp.abs(fits["implicit"] - fits["unrolled"])))
    print(f"\npoisoning gradient (plm, n = {n}, M = {m}, {k} poison patterns)")
    for name, seconds in times.items():
        print(f"  {name:<9} {seconds * 1e3:9.1f} ms")
    print(f"  ratio unrolled / implicit: {times['unrolled'] / times['implicit']:.2f}x")
    print(f"  agreement: cosine {cosine:.6f}, max |diff| / max |grad| {rel:.2e}")
    print(f"  forward fits: max |theta_implicit - theta_newton| {gap:.2e}")


def main():
    args = runtime.start_benchmark(__doc__, "smaller problems")
    report_pgd(args.quick)
    report_poisoning_gradient(args.quick)


if __name__ == "__main__":
    main()
