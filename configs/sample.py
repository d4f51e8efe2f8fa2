"""Sample SK instances with Metropolis / parallel tempering and check them against exact
enumeration. `--config=configs/sample.py:quick` is a small CPU run."""

from isingjax import base_config


def get_config(arg: str | None = None):
    config = base_config.default()
    config.experiment = "sample"
    config.model.betas = (0.5, 1.0, 1.5)  # 1.5 uses parallel tempering
    if arg == "quick":
        config.num_seeds = 2
        config.model.n = 12
        config.sampler.num_samples = 1024
        config.sampler.num_chains = 32
        config.sampler.burn_in = 50
        config.sampler.thin = 2
    elif arg not in (None, ""):
        raise ValueError(f"configs/sample.py: unknown variant {arg!r}; use '' or 'quick'.")
    return config
