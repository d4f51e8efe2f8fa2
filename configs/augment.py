"""Data augmentation for inverse Ising inference (Lim, Lee & Jo, PRE 111, 045302, 2025)
with three generators (DDPM, masked diffusion, autoregressive), two rules that pick
the checkpoint and K (energy variance; held-out, by the fits' distance to plm on the
held-out fold), and parametric-bootstrap, tuned-L2 and oracle baselines.

Variants: '' (n = 20, both betas, M in (100, 400, 1600), 8 seeds), 'quick' (a few
minutes on 2 CPU cores) and 'paper' (the full grid, for accelerators; shrink it with
--config.* overrides to run it on a CPU).
"""

from ml_collections import ConfigDict

from isingjax import base_config


def get_config(arg: str | None = None):
    config = base_config.default()
    config.experiment = "augment"
    config.num_seeds = 8
    config.model.n = 20
    config.model.betas = (0.5, 1.0)
    config.model.bias_std = 1.0
    config.model.bias_scaling = "beta/sqrt(n)"  # b_i ~ N(0, (bias_std beta / sqrt(n))^2)
    config.sweep = ConfigDict()
    config.sweep.sample_sizes = (100, 400, 1600)  # observed samples M
    config.augment = ConfigDict()
    config.augment.ratios = (1, 4, 16)  # K / M: extra samples per observed sample
    config.augment.allow_nonfinite = False  # non-finite generated values are an error
    config.inference = ConfigDict()
    # exact_ml (n <= 20) is selectable; its fits over the checkpoint grid and the folds
    # cost hours on a CPU, so the default leaves it out
    config.inference.methods = ("erasure", "plm")
    config.inference.options = ConfigDict()  # per-method keyword options of ij.infer
    config.inference.options.erasure = ConfigDict({"num_iters": 500})
    config.inference.options.plm = ConfigDict({"l2_per_sample": 1.0})
    config.inference.options.exact_ml = ConfigDict({"max_iter": 300, "l2_per_sample": 1.0})

    base_config.add_diffusion(config)
    # half the widths of base_config's DDPM, and checkpoints every 1000 steps for every
    # generator (the grid fits, fold scores and reverse processes run per checkpoint):
    # 23.6 min on 2 AVX2 cores instead of ~47 (14.9 min since the generators run side by
    # side), the DDPM's KL to the truth higher (README)
    config.diffusion.widths = (32, 64, 128)
    config.diffusion.time_dim = 32
    config.diffusion.train_steps = 2000
    # 20 DDIM steps: every checkpoint generates max(16 M, 10^4) spins per seed, plus the
    # fold generators'
    config.diffusion.ddim_steps = 20
    base_config.add_generators(config)
    for name in ("diffusion", "masked", "autoregressive"):
        config[name].checkpoint_every = 1000

    config.baselines = ConfigDict()
    config.baselines.l2_grid = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # plm l2_per_sample
    config.baselines.holdout_fraction = 0.2  # of the observed spins, to score the grid

    if arg == "quick":
        config.num_seeds = 4
        config.model.n = 12
        config.sweep.sample_sizes = (100, 400)
        # half the default minibatch: the DDPM's training is most of the run's compute
        # (measured cold on 2 cores: 331 s instead of 399 s; its KL a little higher)
        config.diffusion.batch_size = 128
        for name in ("diffusion", "masked", "autoregressive"):
            config[name].train_steps = 1000
            config[name].checkpoint_every = 500  # two checkpoints, as in the default
    elif arg == "paper":
        config.num_seeds = 16
        config.sweep.sample_sizes = (100, 200, 400, 800, 1600)
        config.inference.methods = ("erasure", "plm", "exact_ml")
        # more folds: each fold generator and fit sees 80 % of the spins instead of half
        config.selection.num_folds = 5
        base_config.paper_diffusion(config)
        for name in ("masked", "autoregressive"):
            config[name].train_steps = 8000
            config[name].checkpoint_every = 1000
    elif arg not in (None, ""):
        raise ValueError(
            f"configs/augment.py: unknown variant {arg!r}; use '', 'quick' or 'paper'."
        )
    return config
