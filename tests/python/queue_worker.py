"""A producer or consumer process for the queue kill tests.

    python queue_worker.py QUEUE produce ID N
    python queue_worker.py QUEUE consume ID

Each put and each get is recorded in the ledger dict of the queue's heap in
the same transaction as the put or get itself, so after any kill the ledger
says exactly which items the queue accepted and which it delivered.
"""

from __future__ import annotations

import os
import sys

import troupe
import troupe.shm as shm


def take_one(q: troupe.Queue, ledger: shm.Dict) -> bool:
    """Takes one item and records it, in one transaction; False when empty."""

    def get() -> bool:
        data = q._q.try_get()
        if data is None:
            return False
        ledger.increment(("got", data.decode()))
        return True

    return bool(q.heap.atomically(get))


def main() -> None:
    name, role, ident = sys.argv[1], sys.argv[2], sys.argv[3]
    q = troupe.Queue(name)
    heap = q.heap
    ledger = heap.root("ledger", shm.Dict)
    heap.root("ready", shm.Dict)[os.getpid()] = True  # the test kills only processes at work
    if role == "produce":
        n = int(sys.argv[4])
        for i in range(n):
            item = f"{ident}:{i}"

            def put() -> bool:
                if not q._q.try_put(item.encode()):
                    return False
                ledger[("put", item)] = 1
                return True

            while not heap.atomically(put):
                q._q.wait(True, 0.1)
    else:
        while True:
            if not take_one(q, ledger):
                if q.closed():
                    return
                q._q.wait(False, 0.1)


if __name__ == "__main__":
    main()
