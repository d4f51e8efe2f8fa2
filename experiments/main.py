"""Runs one isingjax experiment: python experiments/main.py --config=configs/<name>.py[:quick]."""

import datetime
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from isingjax.pipelines import augment, common, guided, inverse, sample

PIPELINES = {
    "augment": augment.run,
    "guided": guided.run,
    "inverse": inverse.run,
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


def parse_flags(argv):
    """Parses flags; a bad --config or --config.<field> override exits with one clear line."""
    for arg in argv[1:]:
        path = arg.removeprefix("--config=").split(":")[0]
        if arg.startswith("--config=") and not os.path.isfile(path):
            sys.exit(f"error: config file {path!r} does not exist (try configs/sample.py).")
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        cause = e.args[0] if e.args else e
        text = str(cause.args[0] if isinstance(cause, KeyError) else cause).strip("'\"")
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        culprit = [a for a in overrides if f".{text}=" in a or f".{text}." in a]
        what = f"unknown config field {text!r} in {culprit[0]}" if culprit else text
        sys.exit(
            f"error: {what}\nEvery --config.<field>=value must name a field the config "
            "file defines, with a value of its type (see config.json of any run)."
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config.experiment not in PIPELINES:
        raise app.UsageError(
            f"Unknown experiment {config.experiment!r}; known: {', '.join(sorted(PIPELINES))}."
        )
    if config.distributed:
        jax.distributed.initialize()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = _WORKDIR.value or os.path.join("runs", config.experiment, stamp)
    logging.info("experiment %s -> %s on %s", config.experiment, workdir, jax.devices())
    try:
        PIPELINES[config.experiment](config, workdir)
    except common.ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
