"""Runs one isingjax experiment: python experiments/main.py --config=configs/<name>.py[:quick]."""

import datetime
import os
import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from isingjax import runtime
from isingjax.pipelines import adversarial, augment, common, guided, inverse, retina, sample

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
    except KeyboardInterrupt:
        sys.exit(f"interrupted: what had finished is in {workdir}; the same command resumes.")
    print(f"summary: {workdir}/summary.md\nfigures: {workdir}/figures/")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=runtime.parse_flags)
