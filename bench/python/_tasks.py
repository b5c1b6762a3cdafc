"""Functions and classes every side of bench_executor.py runs in its workers.

They live in a module (not in ``__main__``) so that each peer sends them by
reference, the way their documentation asks: ProcessPoolExecutor,
multiprocessing.Pool and loky import them by name in the worker, Ray and
troupe too. Nothing here imports numpy at import time: an idle worker's RSS
is measured after it ran ``inc`` only.
"""

from __future__ import annotations

import os
import time


def inc(x: int) -> int:
    """The trivial task."""
    return x + 1


def pid(_: object = None) -> int:
    """The worker's process id."""
    return os.getpid()


def nap(seconds: float) -> int:
    """Holds a worker for a while (warm-up: every worker of a pool starts)."""
    time.sleep(seconds)
    return os.getpid()


def nap_numpy(seconds: float) -> int:
    """nap, after importing numpy (the warm-up of the array case: numpy is
    imported in every worker before the timed runs)."""
    import numpy  # noqa: F401

    return nap(seconds)


def spin(n: int) -> int:
    """Pure-Python CPU work: n loop iterations, holding the GIL throughout."""
    s = 0
    for i in range(n):
        s = (s + i * i) % 1_000_003
    return s


def echo(a: object) -> object:
    """Returns its argument (the array round trip)."""
    return a


class Counter:
    """The actor of the round-trip case."""

    def __init__(self) -> None:
        self.n = 0

    def incr(self, k: int) -> int:
        self.n += k
        return self.n

    def pid(self) -> int:
        return os.getpid()
