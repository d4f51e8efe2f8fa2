"""The salamander retina study (Tkačik et al. 2014 data; the real-data part of Lim, Lee &
Jo, PRE 111, 045302, 2025): how good a pairwise Ising model of 40 retinal ganglion cells
is, and whether diffusion augmentation helps it reconstruct hidden (missing) neurons.

The raster is not part of the repository: config.data.path, or $ISINGJAX_DATA/
bint_fishmovie32_100.mat (isingjax/io.py says where to download it and how to cite it).

Variants: '' (40 neurons, M_train in (100, 400, 1600, 8000), 5 seeds: 497.5 s on 2 idle
CPU cores, runs/retina-v4 in the README) and 'quick' (16 neurons, M_train in (100, 800)).
The DDPM trains 1500 steps (augment's default 2000) and the default offers K = M
generated patterns only (K = 0 or M by validation) to save time: every plm fit at
M = 8000 runs over the distinct patterns of M + K, and the tuned-L2 arms fit once per
grid value.
"""

from ml_collections import ConfigDict

from isingjax import base_config


def get_config(arg: str | None = None):
    config = base_config.default()
    config.experiment = "retina"
    config.num_seeds = 5  # seeds of the repeat split, the neuron and the pattern selection
    config.model.n = 40  # neurons selected (the spins of the model)

    config.data = ConfigDict()
    config.data.path = ""  # raster file; '' = $ISINGJAX_DATA/bint_fishmovie32_100.mat
    config.data.variable = ""  # .mat/.npz variable; '' = 'bint' when present, else the only one
    config.data.bins_per_repeat = 1  # 2-D [samples, neurons] rasters: samples per repeat
    config.data.neurons = "random"  # 'random' (seeded), 'top_rate' or 'indices'
    config.data.indices = ()  # the neuron indices when neurons == 'indices' (model.n of them)
    config.data.validation_fraction = 0.1  # of the repeats; chooses K of the diffusion arm
    config.data.test_fraction = 0.2  # of the repeats; every reported number is scored on them

    config.sweep = ConfigDict()
    config.sweep.sample_sizes = (100, 400, 1600, 8000)  # training patterns M (training repeats)

    config.augment = ConfigDict()
    config.augment.ratios = (1,)  # K / M offered to the diffusion arm (K = 0 always offered)
    config.augment.allow_nonfinite = False  # non-finite generated values are an error
    config.inference = ConfigDict()
    config.inference.options = ConfigDict()  # per-method keyword options of ij.infer
    config.inference.options.plm = ConfigDict({"l2_per_sample": 1.0})
    config.inference.options.erasure = ConfigDict({"num_iters": 500})
    config.inference.options.exact_ml = ConfigDict({"max_iter": 300, "l2_per_sample": 1.0})

    config.fit = ConfigDict()  # "is the Ising model any good": fits on the largest M
    config.fit.methods = ("plm", "erasure")  # exact_ml only allowed when model.n <= 20
    config.fit.num_samples = 16384  # Metropolis samples per fitted model
    config.fit.tempering_above = 10.0  # parallel tempering when the autocorrelation time of
    # a Metropolis run exceeds this many records (slow mixing), or when
    config.fit.init_gap_tol = 0.1  # the mean energies of data- and randomly-started chains
    # differ by more than this many energy standard deviations (a trapping mode)

    config.reconstruct = ConfigDict()
    config.reconstruct.hidden = (1, 2, 4, 8, 16)  # k neurons hidden per test pattern (<= 20)
    config.reconstruct.num_patterns = 400  # test patterns per seed
    config.reconstruct.inpaint_samples = 8  # DDPM inpaintings per pattern (0: no such arm)
    config.reconstruct.min_rate = 0.0  # hidden neurons drawn among those firing more often
    # than this in the training patterns (0: every neuron that fires at least once)

    base_config.add_diffusion(config)
    config.diffusion.train_steps = 1500
    config.diffusion.checkpoint_every = 500

    config.baselines = ConfigDict()
    config.baselines.l2_grid = (1.0, 10.0, 100.0, 1000.0)  # plm l2_per_sample
    config.baselines.holdout_fraction = 0.2  # of the training patterns, to score the grid

    # the decoder under attack (isingjax/attacks.py): every neuron predicted from the other
    # n - 1 (the k = 1 reconstruction) of the first num_test reconstruction patterns
    base_config.add_evasion(config, num_test=100)

    config.plots = ConfigDict()
    config.plots.hidden = 4  # k of the metrics-vs-M figure

    if arg == "quick":
        config.model.n = 16  # exact_ml enumerates 2^n states per iteration
        config.sweep.sample_sizes = (100, 800)
        config.fit.methods = ("plm", "erasure", "exact_ml")
        config.fit.num_samples = 8192
        config.reconstruct.hidden = (1, 4, 8)
        config.reconstruct.num_patterns = 200
        config.diffusion.widths = (32, 64)
        config.diffusion.train_steps = 600
        config.diffusion.checkpoint_every = 200
        config.criterion.num_samples = 500
        config.augment.ratios = (1, 4)
        config.baselines.l2_grid = (0.3, 3.0, 30.0)
        config.evasion.num_test = 50
    elif arg not in (None, ""):
        raise ValueError(f"configs/retina.py: unknown variant {arg!r}; use '' or 'quick'.")
    return config
