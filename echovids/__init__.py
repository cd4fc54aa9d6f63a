"""Echovids: audio-by-example search. Shared code that every service imports."""

import os

__version__ = "0.1.0"

# Each service scales by processes (one per core) and runs its heavy work in LiteRT, ScaNN and numpy threads
# of its own. A BLAS thread pool per process on top only contends for the same cores: its threads spin after
# each call (a 1M-frame query's p50: 136-151 ms with the default pools, 106-136 ms with one thread;
# docs/benchmarks.md).
# Set before numpy is first imported; an explicit setting in the environment wins.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
