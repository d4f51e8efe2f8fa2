"""Wall time and accuracy of the estimators beside plain references, measured in one run.

    python benchmarks/bench_inference.py [--quick]

For SK models (beta = 0.5, bias std 0.1), n in {20, 100}, M in {1000, 10000}:
  * plm (asymmetric, the same penalty l2 = 1/M on the couplings) beside the SciPy
    reference written here: per-node L2 logistic regression with L-BFGS-B in float64,
    couplings averaged (and scikit-learn's LogisticRegression per node when installed);
  * erasure beside a straightforward NumPy implementation of the same update rule (same
    eps grid, alpha and iteration count: the plain update, 200 iterations);
  * the erasure machine's Anderson solver beside the plain update (n = 20, M = 800 and
    n = 100, M = 10^4; 21 eps): time, iterations, residual and the largest parameter
    difference from the plain update run to a residual of 1e-6;
  * ij.infer(spins, 'plm') called as a user calls it, in new processes: first and second
    call with the persistent compilation cache cold, then warm;
and for n = 20, M = 1000: 8 seeds in one vmapped call beside a Python loop over the seeds.
Times exclude compilation (each jitted function runs once before it is timed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import isingjax as ij
from isingjax import exact, runtime
from isingjax.inference import erasure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reference import scipy_asymmetric_plm  # noqa: E402

BETA, BIAS_STD = 0.5, 0.1
EPS_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
ERASURE_ITERS = 200


def timed(fn, repeats=2):
    fn()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def draw(n, m, seed=0):
    truth = ij.sk_model(jax.random.key(seed), n, beta=BETA, bias_std=BIAS_STD)
    if n <= exact.MAX_N:
        return truth, np.asarray(exact.sample(jax.random.key(100 + seed), truth, m))
    chains = 500
    samples, _ = jax.jit(
        lambda k: ij.metropolis(
            k, truth, num_samples=-(-m // chains) * chains, num_chains=chains, burn_in=500, thin=10
        )
    )(jax.random.key(100 + seed))
    return truth, np.asarray(samples[:m])


def scipy_plm(spins, l2):
    """The SciPy per-node reference of the tests (float64 L-BFGS-B at SciPy's default
    ftol and gtol = 1e-6, a tolerance that gives the same MSE), as IsingParams."""
    w, b = scipy_asymmetric_plm(spins, l2, gtol=1e-6, ftol=2.2e-9)
    return ij.IsingParams(w=jnp.asarray(w, jnp.float32), b=jnp.asarray(b, jnp.float32))


def sklearn_plm(spins, l2):
    from sklearn.linear_model import LogisticRegression

    m, n = spins.shape
    a, b = np.zeros((n, n)), np.zeros(n)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        # sklearn minimizes C * sum_mu loss + |coef|^2 / 2 with logit 2 h; coef = 2 a.
        clf = LogisticRegression(C=4.0 / (l2 * m), tol=1e-6, max_iter=1000)
        clf.fit(spins[:, others], spins[:, i])
        b[i], a[i, others] = clf.intercept_[0] / 2, clf.coef_[0] / 2
    return ij.IsingParams(w=jnp.asarray((a + a.T) / 2, jnp.float32), b=jnp.asarray(b, jnp.float32))


def numpy_erasure(spins):
    """The erasure machine's update rule in NumPy, one eps after another."""
    m, n = spins.shape
    s = spins.astype(np.float32)
    off = 1 - np.eye(n, dtype=np.float32)
    best, best_energy = None, -np.inf
    for eps in EPS_GRID:
        w, b = np.zeros((n, n), np.float32), np.zeros(n, np.float32)
        for _ in range(ERASURE_ITERS):
            e = 0.5 * np.sum((s @ w) * s, axis=1) + s @ b
            logits = -(1 - eps) * e
            rho = np.exp(logits - logits.max())
            rho /= rho.sum()
            w = w + 0.1 * ((s * rho[:, None]).T @ s - eps * w) * off
            b = b + 0.1 * (rho @ s - eps * b)
        energy = -np.mean(0.5 * np.sum((s @ w) * s, axis=1) + s @ b)
        if energy > best_energy:
            best, best_energy = ij.IsingParams(w=jnp.asarray(w), b=jnp.asarray(b)), energy
    return best


def mse_w(est, truth):
    return float(ij.metrics.param_mse(est, truth)["w"])


def bench_cell(n, m):
    truth, spins = draw(n, m)
    l2 = 1.0 / m
    plm = jax.jit(lambda s: ij.infer(s, "plm", symmetric=False, l2=l2, tol=1e-5))
    em = jax.jit(
        lambda s: erasure.fit(
            s, eps_grid=EPS_GRID, num_iters=ERASURE_ITERS, solver="plain", tol=0.0
        )[0]
    )
    spins_j = jnp.asarray(spins)
    rows = []
    est = plm(spins_j)
    t = timed(lambda: jax.block_until_ready(plm(spins_j)))
    rows.append(("plm (isingjax)", t, mse_w(est, truth)))
    t_ref = timed(lambda: scipy_plm(spins, l2), repeats=1)
    rows.append(("plm (scipy reference)", t_ref, mse_w(scipy_plm(spins, l2), truth)))
    try:
        t_sk = timed(lambda: sklearn_plm(spins, l2), repeats=1)
        rows.append(("plm (scikit-learn)", t_sk, mse_w(sklearn_plm(spins, l2), truth)))
    except ImportError:
        rows.append(("plm (scikit-learn)", float("nan"), float("nan")))
    est = em(spins_j)
    rows.append(
        ("erasure (isingjax)", timed(lambda: jax.block_until_ready(em(spins_j))), mse_w(est, truth))
    )
    t_np = timed(lambda: numpy_erasure(spins), repeats=1)
    rows.append(("erasure (numpy loop)", t_np, mse_w(numpy_erasure(spins), truth)))
    return rows


def bench_erasure_solvers(n, m):
    """Anderson vs the plain update (default 21-value eps grid): iterations, time, residual.

    The reference is the plain update run until its residual is below 1e-6; 'plain, 500' is
    the fixed 500 iterations the erasure machine used before it had a stopping rule.
    """
    _, spins = draw(n, m)
    spins = jnp.asarray(spins)
    runs = {
        "plain to 1e-6 (reference)": dict(solver="plain", tol=1e-6, num_iters=100_000),
        "plain, 500 iterations": dict(solver="plain", tol=0.0, num_iters=500),
        "anderson (default)": {},
    }
    rows = {}
    for name, options in runs.items():
        fit = jax.jit(lambda s, options=options: erasure.fit(s, **options))
        seconds = timed(lambda fit=fit: jax.block_until_ready(fit(spins)), repeats=1)
        params, info = fit(spins)
        rows[name] = (seconds, int(info["iterations"]), float(info["stationarity"]), params)
    reference = ij.flatten_params(rows["plain to 1e-6 (reference)"][3])
    return {
        name: (t, it, res, float(jnp.max(jnp.abs(ij.flatten_params(p) - reference))))
        for name, (t, it, res, p) in rows.items()
    }


USER_CALL = """
import sys, time
t0 = time.perf_counter()
import jax, numpy as np
import isingjax as ij
from isingjax import runtime
runtime.enable_compilation_cache(sys.argv[1])
spins = np.load(sys.argv[2])
t1 = time.perf_counter()
jax.block_until_ready(ij.infer(spins, "plm"))
t2 = time.perf_counter()
jax.block_until_ready(ij.infer(spins, "plm"))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def bench_user_calls(n, m):
    """ij.infer(spins, 'plm') in new processes: first and second call, cache cold and warm."""
    import subprocess
    import tempfile

    _, spins = draw(n, m)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/spins.npy", spins)
        out = []
        for _ in ("cold", "warm"):
            args = [sys.executable, "-c", USER_CALL, f"{tmp}/cache", f"{tmp}/spins.npy"]
            line = subprocess.run(args, check=True, capture_output=True, text=True).stdout
            out.append([float(x) for x in line.split()])
    return out


def report_erasure_solvers(quick):
    print("\nerasure, 21 eps: Anderson vs the plain update (max |dtheta| vs the reference)")
    for n, m in ((20, 800),) if quick else ((20, 800), (100, 10000)):
        rows = bench_erasure_solvers(n, m)
        print(f"  n = {n}, M = {m}")
        for name, (t, it, res, diff) in rows.items():
            print(
                f"    {name:<26} {t:8.3f} s {it:6d} it  residual {res:.1e}  max|dtheta| {diff:.1e}"
            )
        fast = rows["anderson (default)"][0]
        print(
            f"    anderson: {rows['plain, 500 iterations'][0] / fast:.1f}x less time than 500 "
            f"plain steps, {rows['plain to 1e-6 (reference)'][0] / fast:.1f}x than plain to 1e-6"
        )


def report_user_calls(quick):
    print("\nij.infer(spins, 'plm') as a user calls it, in new processes")
    for n, m in ((20, 1000),) if quick else ((20, 1000), (100, 10000)):
        runs = zip(("cold", "warm"), bench_user_calls(n, m), strict=True)
        for cache, (imp, first, second) in runs:
            print(
                f"  n = {n}, M = {m}, compilation cache {cache}: import {imp:.1f} s, "
                f"first call {first:.2f} s, second call {second:.3f} s"
            )


def bench_seeds(n=20, m=1000, num_seeds=8):
    data = [draw(n, m, seed) for seed in range(num_seeds)]
    spins = jnp.asarray(np.stack([s for _, s in data]))
    results = {}
    for method in ("plm", "erasure"):
        single = jax.jit(lambda s, method=method: ij.infer(s, method))
        batched = jax.jit(jax.vmap(lambda s, method=method: ij.infer(s, method)))
        t_loop = timed(lambda single=single: [jax.block_until_ready(single(s)) for s in spins])
        t_vmap = timed(lambda batched=batched: jax.block_until_ready(batched(spins)))
        results[method] = (t_loop, t_vmap)
    return results


def main():
    args = runtime.start_benchmark(__doc__, "n = 20 only")
    for n in (20,) if args.quick else (20, 100):
        for m in (1000, 10000):
            rows = bench_cell(n, m)
            print(f"\nn = {n}, M = {m}")
            for name, seconds, err in rows:
                print(f"  {name:<24} {seconds:9.3f} s   MSE(w) {err:.4e}")
            plm_speedup = rows[1][1] / rows[0][1]
            mse_gap = rows[0][2] / rows[1][2] - 1
            print(
                f"  plm: {plm_speedup:.1f}x faster than scipy, MSE differs by {mse_gap:+.1%}; "
                f"erasure: {rows[4][1] / rows[3][1]:.1f}x faster than numpy"
            )
    report_erasure_solvers(args.quick)
    report_user_calls(args.quick)
    print("\n8 seeds, n = 20, M = 1000: Python loop vs one vmapped call")
    for method, (t_loop, t_vmap) in bench_seeds().items():
        print(f"  {method:<8} loop {t_loop:.3f} s, vmap {t_vmap:.3f} s: {t_loop / t_vmap:.1f}x")


if __name__ == "__main__":
    main()
