"""The work the Python showcase hands to workers (importable, so it travels by reference)."""

from __future__ import annotations

import os
import zlib


def primes_below(lo: int, hi: int) -> int:
    count = 0
    for n in range(max(lo, 2), hi):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


def count_words(lines: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        for w in line.split():
            counts[w] = counts.get(w, 0) + 1
    return counts


def compress_block(i: int) -> int:
    return len(zlib.compress(bytes(range(256)) * i * 40))


class Shard:
    """An account (total) and a word-count shard."""

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self._counts: dict[str, int] = {}

    def add_counts(self, lines: list[str]) -> int:
        for w, c in count_words(lines).items():
            self._counts[w] = self._counts.get(w, 0) + c
        return len(lines)

    def counts(self) -> dict[str, int]:
        return self._counts

    def ping(self) -> int:
        return os.getpid()


def bump_shared(heap, n: int, seed: int) -> int:  # type: ignore[no-untyped-def]
    import random

    counts = heap.root("counts")
    rng = random.Random(seed)
    for _ in range(n):
        counts.increment(rng.randrange(1000))
    return n


def bump_manager(d, lock, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(seed)
    for _ in range(n):
        k = rng.randrange(1000)
        with lock:
            d[k] = d.get(k, 0) + 1


def drain_queue(q) -> int:  # type: ignore[no-untyped-def]
    total = 0
    while (item := q.get(timeout=30)) is not None:
        total += item
    return total
