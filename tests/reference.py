"""Brute-force NumPy references for the tests, independent of isingjax."""

import itertools

import numpy as np
from scipy import optimize


def all_states(n: int) -> np.ndarray:
    """Every configuration of n ±1 spins [2^n, n], float64 (itertools order)."""
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)))


def brute_force(w: np.ndarray, b: np.ndarray):
    """log Z, probabilities [2^n], states [2^n, n] by a plain NumPy loop over states."""
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    states = all_states(len(b))
    log_weights = np.array([0.5 * s @ w @ s + b @ s for s in states])
    shift = log_weights.max()
    log_z = shift + np.log(np.sum(np.exp(log_weights - shift)))
    return log_z, np.exp(log_weights - log_z), states


def scipy_asymmetric_plm(spins, l2, l2_bias=0.0, gtol=1e-10, ftol=1e-14):
    """Per-node L2-penalized logistic regression in float64 with scipy, couplings averaged."""
    spins = np.asarray(spins, np.float64)
    m, n = spins.shape
    a, b = np.zeros((n, n)), np.zeros(n)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        x, y = spins[:, others], spins[:, i]

        def objective(theta, x=x, y=y):
            margin = 2 * y * (theta[0] + x @ theta[1:])
            loss = np.mean(np.logaddexp(0, -margin))
            sig = -2 * y * np.exp(-np.logaddexp(0, margin))  # d loss_mu / d h
            grad = np.concatenate([[np.mean(sig)], x.T @ sig / m])
            grad += np.concatenate([[l2_bias * theta[0]], l2 * theta[1:]])
            return loss + 0.5 * l2_bias * theta[0] ** 2 + 0.5 * l2 * theta[1:] @ theta[1:], grad

        res = optimize.minimize(
            objective,
            np.zeros(n),
            jac=True,
            method="L-BFGS-B",
            options=dict(gtol=1e-10, ftol=1e-14, maxiter=10_000),
        )
        b[i], a[i, others] = res.x[0], res.x[1:]
    return (a + a.T) / 2, b
