"""The default ConfigDict every configs/*.py derives from (changing only what differs)."""

from ml_collections import ConfigDict


def default() -> ConfigDict:
    config = ConfigDict()
    config.experiment = ""  # pipeline name, dispatched by experiments/main.py
    config.seed = 0  # root key jax.random.key(seed); seed i uses fold_in(root, i)
    config.num_seeds = 4  # independent SK instances (vmapped)
    config.distributed = False  # call jax.distributed.initialize() (multi-host clusters)

    config.model = ConfigDict()
    config.model.n = 20  # number of spins
    config.model.betas = (0.5, 1.0)  # SK coupling strengths: w_ij ~ N(0, beta^2 / n)
    config.model.bias_std = 0.1  # b_i ~ N(0, bias_std^2)

    config.sampler = ConfigDict()
    config.sampler.num_samples = 4096  # samples per instance (a multiple of num_chains)
    config.sampler.num_chains = 32  # chains per instance (128 records each: enough for the
    # autocorrelation-time estimate, which is biased low when a chain has few records)
    config.sampler.burn_in = 200  # sweeps discarded (1 sweep = n attempted flips per chain)
    config.sampler.thin = 5  # sweeps between recorded samples
    config.sampler.block_size = 64  # sites per blocked field update (<= 128)
    config.sampler.tempering_above = 1.5  # use parallel tempering when beta >= this
    config.sampler.num_temps = 8  # replicas per chain in parallel tempering
    config.sampler.beta_min = 0.2  # lowest inverse temperature of the geometric ladder
    return config


def add_diffusion(config: ConfigDict) -> ConfigDict:
    """Adds the DDPM (config.diffusion) and its checkpoint criterion (config.criterion)."""
    config.diffusion = ConfigDict()
    config.diffusion.widths = (64, 128, 256)  # the paper's network is (128, 256, 512)
    config.diffusion.time_dim = 64
    config.diffusion.schedule = "linear"  # or 'cosine'
    config.diffusion.num_steps = 1000  # T
    config.diffusion.learning_rate = 1e-3
    config.diffusion.batch_size = 256
    config.diffusion.ema_decay = 0.995
    config.diffusion.use_ema = True  # generate with the EMA parameters
    config.diffusion.train_steps = 4000
    config.diffusion.checkpoint_every = 500  # the criterion is measured at each checkpoint
    config.diffusion.sampler = "ddim"  # 'ddim' (ddim_steps steps) or 'ddpm' (all T steps)
    config.diffusion.ddim_steps = 50

    config.criterion = ConfigDict()
    config.criterion.method = "plm"  # estimator whose observed-data fit defines Var[E]
    config.criterion.num_samples = 1000  # generated per checkpoint
    # earliest checkpoint from which on |Var_gen - Var_obs| <= tol_se standard errors of
    # that difference (isingjax/diffusion/criterion.py)
    config.criterion.tol_se = 2.0
    return config


def paper_diffusion(config: ConfigDict) -> ConfigDict:
    """The paper's network and training length, and the ancestral sampler (accelerators)."""
    config.diffusion.widths = (128, 256, 512)
    config.diffusion.time_dim = 128
    config.diffusion.learning_rate = 1e-4
    config.diffusion.train_steps = 20000
    config.diffusion.checkpoint_every = 1000
    config.diffusion.sampler = "ddpm"
    return config


def add_generators(config: ConfigDict) -> ConfigDict:
    """Adds the generators beside the DDPM (config.generator, config.masked,
    config.autoregressive) and the truth-free choice of checkpoint and K
    (config.selection); see isingjax/pipelines/generator_stage.py."""
    config.generator = ConfigDict()
    config.generator.names = ("ddpm", "masked", "autoregressive")
    # spins generated per checkpoint beyond max(ratios) * M, for the generator checks
    # (exact KL, cross-entropy, copies): max(max(ratios) * M, check_samples) in all
    config.generator.check_samples = 10_000

    config.masked = ConfigDict()  # masked (absorbing-state) discrete diffusion
    config.masked.widths = (128, 128)
    config.masked.learning_rate = 1e-3
    config.masked.batch_size = 256
    config.masked.ema_decay = 0.995
    config.masked.train_steps = 2000
    config.masked.checkpoint_every = 500
    config.masked.elbo_draws = 16  # Monte Carlo draws of the ELBO per held-out sample

    config.autoregressive = ConfigDict()  # MADE; hidden = 0: logistic autoregressive
    config.autoregressive.hidden = 0
    config.autoregressive.learning_rate = 1e-2
    config.autoregressive.weight_decay = 1e-4
    config.autoregressive.batch_size = 256
    config.autoregressive.train_steps = 2000
    config.autoregressive.checkpoint_every = 500

    config.selection = ConfigDict()
    # 'energy_variance' (the paper's checkpoint, K = every augment.ratios) and 'heldout'
    # (checkpoint and K in {0} + ratios by a held-out score over K folds)
    config.selection.rules = ("energy_variance", "heldout")
    config.selection.num_folds = 2
    # the held-out fold's score: 'parameter_distance' (every estimator by the distance of its
    # parameters to plm fitted on the held-out fold), 'own' (each estimator's own
    # objective: screening for the erasure machine, pseudo-likelihood for the others; the
    # default before 'parameter_distance') or one of 'pseudo_likelihood',
    # 'interaction_screening', 'screening' for every estimator; see
    # isingjax/generators/selection.py and the README
    config.selection.score = "parameter_distance"
    # the held-out rule keeps K = 0 unless the best K's held-out gain over it exceeds this
    # many standard errors of the gain (the one-standard-error rule; 0: best mean)
    config.selection.margin_se = 1.0
    # ... and unless every fold confirms it: the (checkpoint, K) the other folds' scores
    # pick must gain on the fold by more than this many of its standard errors (0: off;
    # guards against the winner's curse of picking the best of many cells; 2 with 'own')
    config.selection.confirm_se = 1.0
    return config


def add_evasion(config: ConfigDict, num_test: int) -> ConfigDict:
    """Adds the evasion attacks of isingjax/attacks.py (config.evasion): FGSM / PGD at
    L-inf budgets eps on the relaxation, the exact fewest flips k* and the multi-output
    flip attacks at flip budgets k, on num_test test patterns per seed."""
    config.evasion = ConfigDict()
    config.evasion.num_test = num_test  # attacked test patterns per seed
    config.evasion.eps = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)  # L-inf budgets of FGSM / PGD
    config.evasion.flips = (0, 1, 2, 4, 8)  # flip budgets k (<= n)
    config.evasion.pgd_steps = 10  # PGD steps (single-target PGD and PGD-then-round)
    config.evasion.pgd_restarts = 4  # random starts of each PGD
    return config
