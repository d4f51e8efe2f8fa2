"""Entry-point set-up: the compilation cache, the console filter, progress lines."""

import logging as std_logging
import threading
import time
from pathlib import Path

import jax
import pytest

from isingjax import runtime


def _record(pathname, level=std_logging.INFO, msg="x"):
    return std_logging.LogRecord("absl", level, pathname, 1, msg, None, None)


def test_console_filter_passes_project_lines_and_warnings_only():
    keep = runtime._ProjectOnly("experiments/main.py")
    own = f"{runtime.PACKAGE_DIR}/pipelines/augment.py"
    assert keep.filter(_record(own))
    assert keep.filter(_record(str(Path("experiments/main.py").resolve())))
    assert not keep.filter(_record("/site-packages/orbax/checkpoint/checkpoint_manager.py"))
    assert keep.filter(_record("/site-packages/orbax/x.py", level=std_logging.WARNING))


def test_progress_lines_count_steps_and_estimate_time_left(monkeypatch):
    clock = iter([100.0, 110.0, 130.0, 160.0])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    lines = []
    monkeypatch.setattr(runtime.logging, "info", lambda fmt, *a: lines.append(fmt % a))
    progress = runtime.Progress("augment: beta=1 M=100", total=3)
    progress.step("plm")  # 10 s for 1 step: 20 s left
    progress.step()  # 30 s for 2 steps: 15 s left
    progress.step()  # done: no estimate
    assert lines == [
        "augment: beta=1 M=100 1/3 plm (10s elapsed, ~20s left)",
        "augment: beta=1 M=100 2/3 (30s elapsed, ~15s left)",
        "augment: beta=1 M=100 3/3 (1m00s elapsed)",
    ]


def test_compilation_cache_directory_and_off(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.default_cache_dir() == tmp_path / "xdg" / "isingjax" / "jax"
    updates = {}
    # Recorded, not applied: this test process keeps compiling without a cache.
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.update({name: value}))
    assert runtime.enable_compilation_cache("") is None
    assert updates == {}
    path = runtime.enable_compilation_cache()
    assert path == runtime.default_cache_dir() and path.is_dir()
    assert updates["jax_compilation_cache_dir"] == str(path)
    assert updates["jax_persistent_cache_min_compile_time_secs"] == 0.0


@pytest.mark.parametrize("seconds, text", [(5.2, "5s"), (65, "1m05s"), (3725, "1h02m")])
def test_durations_read_as_a_person_reads_them(seconds, text):
    assert runtime._duration(seconds) == text


def test_progress_of_a_resumed_loop_counts_from_where_it_resumed(monkeypatch):
    clock = iter([0.0, 30.0, 50.0])
    monkeypatch.setattr(runtime.time, "monotonic", lambda: next(clock))
    lines = []
    monkeypatch.setattr(runtime.logging, "info", lambda fmt, *a: lines.append(fmt % a))
    progress = runtime.Progress("chunks", total=8)
    progress.step(at=6)  # resumed after 5 chunks: one chunk in 30 s, 2 left
    progress.step(at=7)
    assert lines == ["chunks 6/8 (30s elapsed, ~1m00s left)", "chunks 7/8 (50s elapsed, ~25s left)"]


def test_tasks_run_side_by_side_and_the_first_error_comes_after_all_have_finished():
    # Each task waits for the other at a barrier: one after another, the first would
    # wait forever (the timeout turns that into BrokenBarrierError).
    barrier, finished = threading.Barrier(2, timeout=10), []

    def task(name):
        barrier.wait()
        finished.append(name)

    runtime.run_concurrently([lambda: task("a"), lambda: task("b")])
    assert sorted(finished) == ["a", "b"]

    def failing():
        raise ValueError("task failed")

    def slow():
        time.sleep(0.2)
        finished.append("slow")

    with pytest.raises(ValueError, match="task failed"):
        runtime.run_concurrently([failing, slow])
    assert finished[-1] == "slow"  # the other task ran to its end
    runtime.run_concurrently([])  # nothing to do
