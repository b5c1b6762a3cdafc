"""Importable work for the shared-objects tests (runs in workers and child processes)."""

from __future__ import annotations

import random
from typing import Any

import troupe.shm as shm


class Account(shm.Record):
    balance: int
    owner: str

    def deposit(self, n: int) -> int:
        self.balance += n
        return int(self.balance)


def add_many(heap: shm.Heap, root: str, key: str, n: int) -> int:
    d = heap.root(root, shm.Dict)
    for _ in range(n):
        d.increment(key)
    return n


def add_many_in_transactions(heap: shm.Heap, root: str, key: str, n: int) -> int:
    d = heap.root(root, shm.Dict)

    def body() -> None:
        d[key] = d.get(key, 0) + 1

    for _ in range(n):
        heap.atomically(body)
    return n


def transfers(heap: shm.Heap, n: int, seed: int, accounts: int) -> int:
    d = heap.root("bank", shm.Dict)
    rng = random.Random(seed)
    done = 0
    for _ in range(n):
        a, b = rng.sample(range(accounts), 2)
        amount = rng.randrange(10)

        def move() -> None:
            d[a] = d[a] - amount
            d[b] = d[b] + amount

        heap.atomically(move)
        done += 1
    return done


def audit(heap: shm.Heap, accounts: int) -> int:
    d = heap.root("bank", shm.Dict)
    return heap.atomically(lambda: sum(d[i] for i in range(accounts)))


def churn(heap: shm.Heap, n: int, tag: int) -> int:
    d = heap.root("churn", shm.Dict)
    for i in range(n):
        k = (tag, i % 16)
        d[k] = {"payload": [i, "x" * (i % 40), (i, -i)], "big": 10**30 + i}
        if i % 3 == 0:
            del d[k]
    for i in range(16):
        d.pop((tag, i), None)
    return n


def fill(buf: Any, value: int, start: int, stop: int) -> int:
    import numpy as np

    a = np.frombuffer(buf, dtype=np.uint8)
    a[start:stop] = value
    return stop - start
