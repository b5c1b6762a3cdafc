"""The bank under kill -9 from Python: 4 processes x 2 threads transferring
between 1000 shared accounts by transactions, killed at random; every audit
sees the total conserved, and afterwards no lock is stuck and no byte leaked."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid

import pytest

import troupe.shm as shm
from conftest import HERE

ACCOUNTS = 1000
TOTAL = ACCOUNTS * 100


def _bank(kills_wanted: int, seed: int) -> None:
    rng = random.Random(seed)
    name = f"bank-{uuid.uuid4().hex[:10]}"
    heap = shm.Heap.create(name, size=64 << 20)
    bank = heap.root("bank", shm.Dict)
    heap.atomically(lambda: [bank.__setitem__(i, TOTAL // ACCOUNTS) for i in range(ACCOUNTS)])
    baseline = heap.used_bytes()
    procs: list[subprocess.Popen[str]] = []
    born: dict[int, float] = {}
    marks = shm.Heap.create(name + "-ready", size=4 << 20)
    ready = marks.root("ready", shm.Dict)  # pids of the workers at work (bank_worker.py)
    seen_ready: dict[int, float] = {}
    serial = 0

    def start() -> subprocess.Popen[str]:
        nonlocal serial
        serial += 1
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "bank_worker.py"), name, str(ACCOUNTS), str(TOTAL), str(seed * 1000 + serial)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=HERE,
        )
        born[p.pid] = time.monotonic()
        return p

    kills = 0
    try:
        procs = [start() for _ in range(4)]
        deadline = time.monotonic() + 900
        while kills < kills_wanted and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.01, 0.05))
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    _, err = p.communicate()
                    assert p.returncode != 3, f"an audit failed: {err}"
                    procs[i] = start()
            i = rng.randrange(4)
            pid = procs[i].pid
            if pid in ready and pid not in seen_ready:
                seen_ready[pid] = time.monotonic()
            if pid in seen_ready and time.monotonic() - seen_ready[pid] > rng.uniform(0.0, 0.3):
                procs[i].kill()
                procs[i].wait()
                kills += 1
                procs[i] = start()
            # An audit from here too, while they run.
            assert heap.atomically(lambda: sum(bank[j] for j in range(ACCOUNTS))) == TOTAL
        assert kills >= kills_wanted
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sum(bank.values()) == TOTAL
    heap.recover()  # the dead processes' slots, now
    assert heap.stuck_locks() == 0
    assert heap.used_bytes() == baseline, "bytes leaked"
    assert heap.verify() == []
    heap.close()
    shm.Heap.remove(name, missing_ok=True)
    marks.close()
    shm.Heap.remove(name + "-ready", missing_ok=True)


def test_bank_survives_kills() -> None:
    _bank(12, seed=1)


@pytest.mark.stress
def test_bank_survives_three_hundred_kills() -> None:
    _bank(300, seed=2)
