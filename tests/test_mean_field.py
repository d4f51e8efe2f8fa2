import jax
import numpy as np

import isingjax as ij
from isingjax import exact


def test_mean_field_converged_flags_an_ill_conditioned_correlation_matrix():
    truth = ij.sk_model(jax.random.key(0), 8, beta=0.5, bias_std=0.2)
    spins = exact.sample(jax.random.key(1), truth, 400)
    few = spins[:5]  # M = 5 < n = 8: C has rank <= 4, so a ridge had to be added
    for method in ("nmf", "tap"):
        _, info = ij.infer_with_info(spins, method)
        assert bool(info["converged"]) and float(info["ridge"]) == 0.0, method
        _, info = ij.inference.METHODS[method](few)
        assert not bool(info["converged"]) and float(info["ridge"]) > 0.0, method
        # A requested ridge that alone brings C below max_condition: converged again.
        _, info = ij.inference.METHODS[method](few, ridge=1.0)
        assert bool(info["converged"]) and np.isclose(float(info["ridge"]), 1.0), method
