"""Runs one isingjax experiment: python experiments/main.py --config=configs/<name>.py[:quick]."""

import datetime
import importlib.metadata
import os
import sys
from pathlib import Path

CPU_OPT_LEVEL = 1  # default of --cpu_opt_level


def set_cpu_opt_level(argv) -> bool:
    """Puts --xla_backend_optimization_level=<--cpu_opt_level> in XLA_FLAGS when JAX will run
    on the CPU only; returns whether it did. XLA reads XLA_FLAGS once, when JAX is
    imported, so this runs before that and reads the flag from argv itself (absl checks
    its value later). Not set: when XLA_FLAGS already names a level, at level 3 (XLA's
    default) or when an accelerator may be used (JAX_PLATFORMS other than 'cpu', or a
    CUDA / ROCm / TPU plugin installed and JAX_PLATFORMS unset).

    On a 2-core CPU, XLA compilation was about half of the `augment` run at its ':quick'
    size. At level 1 the estimators' programs compiled ~40 % faster and the run gave the
    same results up to float rounding (README); training ran at about the same speed, its
    matrix products being library calls that the level does not touch.
    """
    level = str(CPU_OPT_LEVEL)
    for i, arg in enumerate(argv):
        if arg.startswith("--cpu_opt_level="):
            level = arg.split("=", 1)[1]
        elif arg == "--cpu_opt_level" and i + 1 < len(argv):
            level = argv[i + 1]
    current = os.environ.get("XLA_FLAGS", "")
    if level not in ("0", "1", "2") or "xla_backend_optimization_level" in current:
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        cpu_only = {p.strip().lower() for p in platforms.split(",")} == {"cpu"}
    else:
        names = ((d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions())
        accelerators = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")
        cpu_only = not any(x.startswith(accelerators) for x in names)
    if cpu_only:
        os.environ["XLA_FLAGS"] = f"{current} --xla_backend_optimization_level={level}".strip()
    return cpu_only


if __name__ == "__main__":
    set_cpu_opt_level(sys.argv)

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from isingjax import runtime  # noqa: E402
from isingjax.pipelines import (  # noqa: E402
    adversarial,
    augment,
    common,
    guided,
    inverse,
    retina,
    sample,
)

# configs/*.py may build on each other (configs/adversarial.py imports configs/augment.py):
# the repository root, where the configs package lives, goes on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIPELINES = {
    "adversarial": adversarial.run,
    "augment": augment.run,
    "guided": guided.run,
    "inverse": inverse.run,
    "retina": retina.run,
    "sample": sample.run,
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file; append ':quick' for its small variant.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Output directory; a rerun with the same one resumes. "
    "Default: runs/<experiment>/<UTC timestamp>.",
)
_CACHE = flags.DEFINE_string(
    "compilation_cache",
    None,
    f"Compiled-code cache ('' = off); default {runtime.default_cache_dir()}",
)
flags.DEFINE_integer(
    "cpu_opt_level",
    CPU_OPT_LEVEL,
    "LLVM optimization level of XLA's CPU code, 0-3 (3: XLA's default). 1 compiles the "
    "pipelines' programs ~40 % faster at about the same speed. Not applied on GPUs/TPUs or "
    "when XLA_FLAGS sets --xla_backend_optimization_level.",
    lower_bound=0,
    upper_bound=3,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.experiment not in PIPELINES:
        raise app.UsageError(
            f"Unknown experiment {config.experiment!r}; known: {', '.join(sorted(PIPELINES))}."
        )
    runtime.configure_console(verbose=flags.FLAGS["verbosity"].present, entry_point=__file__)
    runtime.enable_compilation_cache(_CACHE.value)
    if config.distributed:
        jax.distributed.initialize()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment, stamp)
    logging.info("%s -> %s on %s", config.experiment, workdir, jax.devices())
    try:
        PIPELINES[config.experiment](config, workdir)
    except common.ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"summary: {workdir}/summary.md\nfigures: {workdir}/figures/")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=runtime.parse_flags)
