"""A bank process for the Python crash test: 2 threads of random transfers
between the accounts of a shared dict, and audits in read-only transactions.

    python bank_worker.py HEAP ACCOUNTS TOTAL SEED

Exits with status 3 (and says why) if an audit ever sees the total changed.
Runs until killed.
"""

from __future__ import annotations

import os
import random
import sys
import threading

import troupe.shm as shm


def main() -> None:
    name, accounts, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    heap = shm.Heap.open(name)
    bank = heap.root("bank", shm.Dict)

    def work(k: int) -> None:
        rng = random.Random(seed * 10 + k)
        n = 0
        while True:
            a, b = rng.sample(range(accounts), 2)
            amount = rng.randrange(1, 20)

            def move() -> None:
                bank[a] = bank[a] - amount
                bank[b] = bank[b] + amount

            heap.atomically(move)
            n += 1
            if n % 50 == 0:
                seen = heap.atomically(lambda: sum(bank[i] for i in range(accounts)))
                if seen != total:
                    print(f"audit saw {seen}, not {total}", file=sys.stderr, flush=True)
                    os._exit(3)

    for k in range(2):
        threading.Thread(target=work, args=(k,), daemon=True).start()
    # The test kills only processes at work; the marks live in a heap of
    # their own, so that the bank's bytes are only the bank's.
    shm.Heap.open(name + "-ready").root("ready", shm.Dict)[os.getpid()] = True
    threading.Event().wait()


if __name__ == "__main__":
    main()
