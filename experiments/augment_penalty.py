"""Splits the gain of an augment run into generated samples vs weaker penalty:
python experiments/augment_penalty.py --workdir=<augment run> [--sample_size=M]."""

import sys
from pathlib import Path

from absl import app, flags, logging

from isingjax.pipelines import augment_penalty
from isingjax.pipelines.common import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", None, "The workdir of a finished augment run.")
_SAMPLE_SIZE = flags.DEFINE_integer("sample_size", None, "Observed M (default: the smallest).")
_GENERATOR = flags.DEFINE_string("generator", "ddpm", "Whose generated spins to refit with.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        augment_penalty.run(_WORKDIR.value, _SAMPLE_SIZE.value, _GENERATOR.value)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    logging.info("\n%s", (Path(_WORKDIR.value) / "penalty_split.md").read_text())


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
