"""troupe.Queue: queue.Queue's interface between processes, futex wake-ups,
and no item lost or delivered twice when producers and consumers are killed."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import troupe
import troupe.shm as shm
from conftest import HERE
from queue_worker import take_one


@pytest.fixture
def q():
    name = f"t{uuid.uuid4().hex[:10]}"
    qu = troupe.Queue(name, maxsize=4)
    yield qu
    troupe.Queue.remove(name, missing_ok=True)


def test_queue_interface(q: troupe.Queue) -> None:
    q.put({"a": [1, 2]})
    q.put_nowait(b"bytes")
    assert q.qsize() == 2 and not q.empty() and not q.full()
    q.put(3)
    q.put(4)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(5)
    with pytest.raises(queue.Full):
        q.put(5, timeout=0.05)
    assert [q.get(), q.get(), q.get_nowait(), q.get(timeout=1)] == [{"a": [1, 2]}, b"bytes", 3, 4]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_blocked_get_is_woken_by_a_put_from_another_process(q: troupe.Queue) -> None:
    def later() -> None:
        time.sleep(0.2)
        troupe.isolated(_put_one)(q, "hello")

    t = threading.Thread(target=later)
    t.start()
    start = time.monotonic()
    assert q.get(timeout=10) == "hello"
    t.join()
    assert time.monotonic() - start < 5


def _put_one(qu: troupe.Queue, item: object) -> None:
    qu.put(item)


def test_bytes_are_read_in_place_and_freed_with_the_last_view(q: troupe.Queue) -> None:
    base = q.heap.used_bytes()
    big = bytes(range(256)) * 40
    q.put(big)
    q.put(memoryview(bytearray(b"from a view, more than 8 bytes")))
    q.put(b"short")
    q.put({"not": "bytes"})
    v = q.get_view()
    assert isinstance(v, memoryview) and v.readonly and v.nbytes == len(big)
    assert v == big
    with pytest.raises(TypeError):
        v[0] = 1  # read-only: other processes' bytes are immutable
    w = q.get_view()
    assert bytes(w) == b"from a view, more than 8 bytes"
    assert q.get_view() == b"short"  # 8 bytes or fewer live in the slot: a copy
    assert q.get_view() == {"not": "bytes"}
    for i in range(4):  # the slots are reused: the views keep their bytes
        q.put(bytes([i]) * 100)
    assert v == big and q.get() == bytes([0]) * 100
    assert q.heap.used_bytes() > base
    del w
    sub = v[10:20]  # a view of the view keeps the memory too
    v.release()
    assert bytes(sub) == big[10:20]
    del sub, v
    while q.qsize():
        q.get()
    assert q.heap.used_bytes() == base


def test_in_place_get_refuses_to_join_a_transaction(q: troupe.Queue) -> None:
    q.put(b"x" * 100)
    with pytest.raises(ValueError, match="in-place get"):
        q.heap.atomically(lambda: q.get_view())
    assert q.get() == b"x" * 100


def test_a_view_held_by_a_process_that_dies_is_reclaimed(q: troupe.Queue) -> None:
    base = q.heap.used_bytes()
    q.put(b"y" * 5000)
    code = (
        "import os, sys, troupe; q = troupe.Queue(sys.argv[1]); v = q.get_view();"
        "assert v == b'y' * 5000; os.kill(os.getpid(), 9)"
    )
    r = subprocess.run([sys.executable, "-c", code, q.name], timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert q.qsize() == 0
    q.heap._box.recover()
    assert q.heap.used_bytes() == base


def test_an_idle_get_sleeps(q: troupe.Queue) -> None:
    code = (
        "import queue, sys, time, troupe; q = troupe.Queue(sys.argv[1]); t = time.process_time()\n"
        "try:\n    q.get(timeout=1.0)\nexcept queue.Empty:\n    print(time.process_time() - t)"
    )
    r = subprocess.run([sys.executable, "-c", code, q.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 0.1  # a second of waiting: some 10 slices of at most 50 us of spinning


def test_close_drains_then_reports_empty(q: troupe.Queue) -> None:
    q.put(1)
    q.close()
    with pytest.raises(troupe.ShutdownError):
        q.put(2)
    assert q.get() == 1
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=10)  # closed and empty: at once
    assert time.monotonic() - start < 1


def test_asyncio_get_and_put(q: troupe.Queue) -> None:
    async def main() -> list[int]:
        async def produce() -> None:
            for i in range(10):
                await q.put_async(i)

        p = asyncio.ensure_future(produce())
        got = [await q.get_async(timeout=10) for _ in range(10)]
        await p
        return got

    assert asyncio.run(main()) == list(range(10))


def test_same_queue_by_name_in_an_unrelated_process(q: troupe.Queue) -> None:
    from conftest import run_script

    q.put("to the other process")
    r = run_script(f"import troupe\nq = troupe.Queue({q.name!r})\nprint(q.get(timeout=5))\nq.put('back')")
    assert r.stdout.strip() == "to the other process", r.stderr
    assert q.get(timeout=5) == "back"


FAULTS = ["tx.before_commit", "tx.mid_apply", "tx.after_some_locks", "queue.put.after_commit", "queue.get.after_commit"]


def _kill_loop(kills_wanted: int, seed: int) -> None:
    rng = random.Random(seed)
    name = f"k{uuid.uuid4().hex[:10]}"
    q = troupe.Queue(name, maxsize=32)
    heap = q.heap
    ledger = heap.root("ledger", shm.Dict)
    procs: list[subprocess.Popen[str]] = []
    born: dict[int, float] = {}
    ready = heap.root("ready", shm.Dict)  # pids of the workers at work (queue_worker.py)
    seen_ready: dict[int, float] = {}
    kills = 0
    serial = 0

    def start(role: str) -> subprocess.Popen[str]:
        nonlocal serial
        serial += 1
        env = dict(os.environ)
        if rng.random() < 0.5:
            env["TROUPE_SHM_FAULT"] = f"{rng.choice(FAULTS)}@{rng.randint(1, 40)}"
        args = [sys.executable, os.path.join(HERE, "queue_worker.py"), name, role, f"p{serial}"]
        if role == "produce":
            args.append(str(rng.randint(20, 200)))
        p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, text=True, cwd=HERE)
        born[p.pid] = time.monotonic()
        return p

    try:
        procs = [start("produce") for _ in range(2)] + [start("consume") for _ in range(2)]
        deadline = time.monotonic() + 600
        while kills < kills_wanted and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.03))
            for i, p in enumerate(procs):
                role = "produce" if i < 2 else "consume"
                if p.poll() is not None:  # finished, or killed by its fault point
                    if p.returncode == -signal.SIGKILL:
                        kills += 1
                    procs[i] = start(role)
            victim = rng.randrange(len(procs))
            # Only a process at work (past its imports, however slow) is killed,
            # a random while after it said so.
            pid = procs[victim].pid
            if pid in ready and pid not in seen_ready:
                seen_ready[pid] = time.monotonic()
            working = pid in seen_ready and time.monotonic() - seen_ready[pid] > rng.uniform(0.0, 0.3)
            if working and procs[victim].poll() is None:
                procs[victim].kill()
                procs[victim].wait()
                kills += 1
        assert kills >= kills_wanted, f"only {kills} kills in the time allowed"
    finally:
        for p in procs:
            p.kill()
            p.wait()
    # Drain what is left, through the ledger like the consumers.
    while take_one(q, ledger):
        pass
    book = ledger.to_python()
    puts = {k[1] for k in book if k[0] == "put"}
    gots = {k[1]: v for k, v in book.items() if k[0] == "got"}
    assert len(puts) >= kills_wanted, f"only {len(puts)} items went through"
    assert set(gots) == puts, f"lost {len(puts - set(gots))}, invented {len(set(gots) - puts)}"
    assert all(v == 1 for v in gots.values()), "an item was delivered twice"
    # A process killed inside a commit may hold a stripe no transaction has
    # touched since: recovery releases it (stuck_locks counts it until then).
    heap.recover()
    assert q.qsize() == 0 and heap.stuck_locks() == 0
    troupe.Queue.remove(name, missing_ok=True)


def test_killed_producers_and_consumers_lose_nothing() -> None:
    _kill_loop(30, seed=1)


@pytest.mark.stress
def test_five_hundred_kills_lose_nothing() -> None:
    _kill_loop(500, seed=2)


def test_a_queue_removed_and_created_again_is_the_new_one() -> None:
    from conftest import run_script

    name = f"again{uuid.uuid4().hex[:8]}"
    first = troupe.Queue(name)
    first.put("from the first queue")
    troupe.Queue.remove(name)
    first.heap.close()
    second = troupe.Queue(name)
    second.put("from the second queue")
    r = run_script(f"import troupe\nprint(troupe.Queue({name!r}).get(timeout=5))")
    assert r.stdout.strip() == "from the second queue", r.stderr
    troupe.Queue.remove(name, missing_ok=True)
