"""Process set-up for the entry points: flag parsing with one-line errors, the persistent
compilation cache, a console a person can follow (the project's progress lines; library
chatter only when asked for), the benchmarks' common start, and independent tasks of a
pipeline run side by side (`run_concurrently`).

Nothing here is used by the library's functions; `experiments/main.py` and the benchmarks
call it once at start-up, the pipelines for their progress lines and their tasks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging as std_logging
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags, logging

PACKAGE_DIR = str(Path(__file__).resolve().parent)


def parse_flags(argv):
    """Parses absl flags; a bad --config or --config.<field> override exits with one line."""
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
        other_flag = text.startswith("flag --") and not text.startswith("flag --config.")
        hint = (
            "\nEvery --config.<field>=value must name a field the config file defines, "
            "with a value of its type (see config.json of any run)."
        )
        sys.exit(f"error: {what}{hint if overrides and not other_flag else ''}")


def start_benchmark(doc: str, quick_help: str, *, cache: bool = True):
    """A benchmark's start: parses --quick, turns on the compilation cache (unless the
    benchmark measures compilation itself) and prints the machine line. Returns the args."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args()
    if cache:
        enable_compilation_cache()
    print(
        f"machine: {platform.processor() or platform.machine()}, {jax.device_count()} JAX "
        f"device(s) {jax.devices()[0].device_kind}, jax {jax.__version__}, "
        f"numpy {np.__version__}"
    )
    return args


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/isingjax/jax (default ~/.cache/isingjax/jax)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "isingjax" / "jax"


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache, so a new process reuses compiled code.

    Args:
      directory: where compiled executables are kept; None = `default_cache_dir()`; ''
        turns the cache off.

    Returns:
      the directory used, or None when off. Every compilation is cached (no minimum
      compile time): a run's many mid-sized programs are what a restart pays for.
    """
    if directory == "":
        return None
    path = Path(directory) if directory is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


class _ProjectOnly(std_logging.Filter):
    """Passes isingjax's own records (the package and its entry point) and any warning;
    drops other libraries' INFO lines."""

    def __init__(self, entry_point: str | None = None):
        super().__init__()
        self.entry_point = str(Path(entry_point).resolve()) if entry_point else None

    def filter(self, record: std_logging.LogRecord) -> bool:
        own = record.pathname.startswith(PACKAGE_DIR) or record.pathname == self.entry_point
        return record.levelno >= std_logging.WARNING or own


def configure_console(*, verbose: bool, entry_point: str | None = None) -> None:
    """Short 'HH:MM:SS message' lines, INFO lines of code outside the package and
    `entry_point` (the script's __file__) hidden; with `verbose` (the user gave absl's
    --verbosity) everything is left as absl sets it.

    Checkpoint libraries (Orbax) log every save at INFO through absl; a run of the main
    job printed ~300 such lines around its ~20 lines of progress.
    """
    if verbose:
        return  # absl's --verbosity flag decides
    handler = logging.get_absl_handler()
    handler.addFilter(_ProjectOnly(entry_point))
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.set_verbosity(logging.INFO)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Logs one line per finished step: what, step x / total, time elapsed and left.

    `done` steps were finished before (a resumed run); the estimate of the time left is
    the mean time per step this process ran times the steps left.
    """

    def __init__(self, what: str, total: int, done: int = 0):
        self.what, self.total = what, max(int(total), 1)
        self.done = self.first = int(done)
        self.start = time.monotonic()

    def step(self, note: str = "", *, at: int | None = None) -> None:
        """One more step done (or, with `at`, steps 1..at done: a resumed loop's first
        step tells where it resumed)."""
        if at is not None and self.done == self.first:
            self.done = self.first = at - 1
        self.done += 1
        elapsed = time.monotonic() - self.start
        left = elapsed / (self.done - self.first) * (self.total - self.done)
        eta = f", ~{_duration(left)} left" if self.done < self.total else ""
        logging.info(
            "%s %d/%d%s (%s elapsed%s)",
            self.what,
            self.done,
            self.total,
            f" {note}" if note else "",
            _duration(elapsed),
            eta,
        )


def run_concurrently(tasks) -> list:
    """Runs independent tasks (callables without arguments) in threads of their own and
    returns their results, in order, when all have finished; the first task's error, if
    any, is raised then.

    XLA releases the GIL while it computes, and a small computation (a minibatch step of a
    small network, one fit at n = 20) keeps ~1.5 of 2 CPU cores busy, so tasks overlap:
    the `augment` run's three generators per (beta, M) block together use ~190 % of 2 cores
    instead of ~150 % one after another. Results do not depend on it (each computation is
    deterministic; only the order of the lines that tasks append to a jsonl file does).
    """
    with concurrent.futures.ThreadPoolExecutor(max(1, len(tasks))) as pool:
        return [future.result() for future in [pool.submit(task) for task in tasks]]
