"""The suite's XLA settings.

Most tests build and run a new small XLA program once, so the suite's time is mostly
XLA's compilation. The suite turns LLVM's optimizations down, which changes how fast the
programs run and their float rounding, not what they compute: the tests' tiny `guided`
and `augment` pipelines draw the same samples and make the same choices with and without
these flags and their measurements agree to a relative 5e-5; the compile-bound tests take
a quarter to a third less time (the full suite: 840 s against 1118 s on the 2-core
development machine). The pipelines, the benchmarks and the users' programs keep XLA's
defaults. Flags a user sets in XLA_FLAGS come last and win.
"""

import os

SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

os.environ["XLA_FLAGS"] = f"{SUITE_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
