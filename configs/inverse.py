"""The classic inverse-Ising learning curve: parameter error vs sample size M for every
estimator on SK models. `--config=configs/inverse.py:quick` finishes in ~1-2 minutes on
2 CPU cores."""

from ml_collections import ConfigDict

from isingjax import base_config


def get_config(arg: str | None = None):
    config = base_config.default()
    config.experiment = "inverse"
    config.num_seeds = 8
    config.model.betas = (0.5, 1.0)
    config.data = ConfigDict()
    config.data.sampler = "exact"  # 'exact' (n <= 20) or 'metropolis' (uses config.sampler)
    config.sweep = ConfigDict()
    config.sweep.sample_sizes = (50, 100, 200, 400, 800, 1600, 3200)  # M, nested prefixes
    config.inference = ConfigDict()
    config.inference.methods = ("plm", "erasure", "nmf", "tap", "exact_ml")
    config.inference.options = ConfigDict()  # per-method keyword options of ij.infer
    config.inference.options.plm = ConfigDict({"l2_per_sample": 1.0})
    config.inference.options.erasure = ConfigDict({"num_iters": 500})
    config.inference.options.nmf = ConfigDict({"ridge": 0.0})
    config.inference.options.tap = ConfigDict({"ridge": 0.0})
    config.inference.options.exact_ml = ConfigDict({"max_iter": 200})
    config.plots = ConfigDict()
    config.plots.scatter_size = 400  # M of the true-vs-inferred scatter (seed 0, last beta)
    if arg == "quick":
        config.num_seeds = 4
        config.model.n = 12
        config.sweep.sample_sizes = (50, 200, 800, 3200)
    elif arg not in (None, ""):
        raise ValueError(f"configs/inverse.py: unknown variant {arg!r}; use '' or 'quick'.")
    return config
