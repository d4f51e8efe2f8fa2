"""Brute-force NumPy references for the tests, independent of isingjax."""

import itertools

import numpy as np


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
