"""Adversarial robustness of inverse Ising inference with and without diffusion
augmentation: evasion attacks on the inferred conditionals and poisoning of the training
data (directly, and through the generator).

Variants: '' (n = 20, both betas, M in (100, 400), 8 seeds, plm and nmf, a DDPM of
1000 steps with the criterion every 250: 694.9 s on 2 idle CPU cores, runs/adversarial-v2
in the README), 'quick' (n = 12, 4 seeds, M = 100, a 500-step DDPM: 272 s on 2 CPU cores
shared with other jobs) and 'paper' (16 seeds, every estimator, M up to 1600, K = 4 M,
the paper's DDPM, longer attacks: for accelerators).
"""

from ml_collections import ConfigDict

from configs import augment
from isingjax import base_config


def get_config(arg: str | None = None):
    # The model, estimators, DDPM, criterion and tuned-L2 baseline of `augment`
    # (n = 20, betas (0.5, 1), bias std beta / sqrt(n), 8 seeds), with what differs here.
    config = augment.get_config()
    config.experiment = "adversarial"
    config.sweep.sample_sizes = (100, 400)  # observed samples M
    config.augment.ratios = (2,)  # one K / M: generated (diffusion) or true (oracle) extras
    config.inference.methods = ("plm", "nmf")  # any of plm, erasure, nmf, tap, exact_ml
    # base_config's DDPM network, not augment's halved one (augment's run time; the
    # README's adversarial runs used this one)
    network = base_config.add_diffusion(ConfigDict()).diffusion
    config.diffusion.widths, config.diffusion.time_dim = network.widths, network.time_dim
    config.diffusion.train_steps = 1000  # small, to fit the CPU budget
    config.diffusion.checkpoint_every = 250  # the criterion is measured at each checkpoint
    config.diffusion.ddim_steps = 50
    # one generator (the DDPM with the energy-variance criterion) and no held-out rule
    for name in ("generator", "masked", "autoregressive", "selection"):
        del config[name]

    base_config.add_evasion(config, num_test=200)  # fresh exact test patterns per seed

    config.poison = ConfigDict()
    config.poison.rhos = (0.0, 0.01, 0.05, 0.1)  # poison patterns / training patterns
    config.poison.num_steps = 5  # signed gradient steps of pgd_poison
    config.poison.step_size = 0.5
    config.poison.num_heldout = 200  # the proxy attacker's clean spins
    config.poison.generator_rho = 0.1  # poison / observed before the generator is trained
    config.poison.generator_kinds = ("worst", "random")  # crafted (plm, knows the truth), control

    if arg == "quick":
        config.num_seeds = 4
        config.model.n = 12
        config.sweep.sample_sizes = (100,)
        config.diffusion.train_steps = 500
        config.evasion.num_test = 100
    elif arg == "paper":
        config.num_seeds = 16
        config.sweep.sample_sizes = (100, 400, 1600)
        config.augment.ratios = (4,)
        config.inference.methods = ("plm", "erasure", "nmf", "tap", "exact_ml")
        config.evasion.num_test = 1000
        config.evasion.pgd_steps = 50
        config.poison.num_steps = 20
        base_config.paper_diffusion(config)
    elif arg not in (None, ""):
        raise ValueError(
            f"configs/adversarial.py: unknown variant {arg!r}; use '', 'quick' or 'paper'."
        )
    return config
