"""The project's main job: guided diffusion toward the tails of an SK model (n = 20, so
every probability is exact), and whether tail samples make better augmentation.

Variants: '' (4 seeds; 778 s, ~13 minutes, measured on 2 CPU cores shared with other
jobs), 'quick' (n = 12, 2 seeds) and 'paper' (16 seeds, the paper's network, ancestral
sampling; for accelerators).
"""

from ml_collections import ConfigDict

from isingjax import base_config


def get_config(arg: str | None = None):
    config = base_config.default()
    config.experiment = "guided"
    config.num_seeds = 4
    config.model.n = 20
    config.model.betas = (1.0,)  # one coupling strength per run
    config.model.bias_std = 1.0
    config.model.bias_scaling = "beta/sqrt(n)"  # b_i ~ N(0, (bias_std beta / sqrt(n))^2)
    config.data = ConfigDict()
    config.data.num_observed = 400  # M: what the diffusion model and the estimators see
    config.data.num_heldout = 4000  # fresh true samples scoring the generalization error (test)
    config.data.num_validation = 4000  # other fresh true samples: choose gamma (never scored)
    config.augment = ConfigDict()
    config.augment.ratio = 1  # K = ratio * M samples per sampler and gamma
    config.inference = ConfigDict()
    config.inference.methods = ("plm", "erasure")
    config.inference.options = ConfigDict()
    config.inference.options.plm = ConfigDict({"l2_per_sample": 1.0})
    config.inference.options.erasure = ConfigDict({"num_iters": 500})

    base_config.add_diffusion(config)

    config.guidance = ConfigDict()
    config.guidance.samplers = (
        "baseline",
        "langevin",
        "entropy",
        "classifier",
        "rejection",
        "temperature",
        "minority",
    )
    config.guidance.inferred_method = "plm"  # the model of rejection and classifier labels
    config.guidance.allow_nonfinite = False  # a cell with non-finite samples is an error
    g = config.guidance.gammas = ConfigDict()  # strengths per sampler (0 = unguided)
    g.baseline = (0.0,)
    g.langevin = (0.0, 0.3, 1.0, 3.0)
    g.entropy = (0.0, 1.0, 3.0, 10.0)
    g.classifier = (0.0, 10.0, 30.0, 100.0)
    g.rejection = (0.0, 0.25, 0.5, 1.0)  # alpha of the acceptance exp(alpha (E - E_max))
    g.temperature = (0.0, 0.1, 0.2, 0.4)  # 1 - 1/T
    g.minority = (0.0, 0.1, 0.3, 1.0)
    o = config.guidance.options = ConfigDict()
    o.langevin_step_size = 0.1  # eta (times sigma_t^2)
    o.langevin_steps = 2  # corrector steps per reverse step in the window
    o.langevin_t_window = (0.05, 0.5)  # fractions of T where the corrector acts
    o.pool_factor = 4  # rejection draws pool_factor * K unguided samples
    o.minority_t = 0.3  # re-noising level of minority guidance (fraction of T)
    o.max_norm = 3.0  # clip of each guidance term's per-sample norm, in multiples of sqrt(n)

    config.classifier = ConfigDict()
    config.classifier.widths = (64, 64)
    config.classifier.time_dim = 32
    config.classifier.num_steps = 2000
    config.classifier.batch_size = 256
    config.classifier.learning_rate = 1e-3
    config.classifier.quantile = 0.5  # label 'low probability': E above this quantile
    config.classifier.holdout_fraction = 0.2  # observed spins kept to measure accuracy

    config.measure = ConfigDict()
    config.measure.tail_quantile = 0.05  # the true tail: log P below its 5 % quantile

    if arg == "quick":
        config.num_seeds = 2
        config.model.n = 12
        config.data.num_observed = 200
        config.data.num_heldout = 1000
        config.data.num_validation = 1000
        config.diffusion.train_steps = 1500
        config.classifier.num_steps = 500
    elif arg == "paper":
        config.num_seeds = 16
        base_config.paper_diffusion(config)
        config.augment.ratio = 4
    elif arg not in (None, ""):
        raise ValueError(f"configs/guided.py: unknown variant {arg!r}; use '', 'quick' or 'paper'.")
    return config
