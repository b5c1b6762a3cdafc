"""What the two worker processes of bench_shared.py run.

Each worker is a ``multiprocessing`` process started with the "spawn" context
(the same kind of process for every side), once, at the start of the program.
It is handed, at its start, the objects that multiprocessing only shares by
inheritance (a Barrier, ``multiprocessing.Queue``\\ s, a Lock, faster-fifo
queues) and troupe's queues, then serves jobs from its end of a Pipe until it
reads None. A job opens (attaches to) the side's object untimed, warms it
up, meets the other worker at the barrier, runs its timed loop and answers
``("ok", result)``, or ``("error", traceback text)``. The timestamps are
``time.perf_counter()`` (CLOCK_MONOTONIC: one clock for every process of the
machine), so the parent takes a run's span from the earliest start to the
latest end.

Sides of the dict cases (``ref`` is what the parent made for the run):

  troupe     ref: a troupe.shm.Heap (pickled by name: arrives opened);
             ``d = heap.root("counts", shm.Dict)``, ``d.increment(k)``, ``d[k]``
  manager    ref: (``Manager().dict()`` proxy, ``Manager().Lock()`` proxy);
             ``with lock: md[k] = md[k] + 1``; reads ``md[k]``
  ultradict  ref: its name; ``UltraDict(name=...)`` attaches (shared_lock as
             created); ``with ud.lock: ud[k] = ud[k] + 1``; reads ``ud[k]``
  smd        ref: its name; ``SharedMemoryDict(name, size)``, with
             SHARED_MEMORY_USE_LOCK=1 (its documented locking);
             ``smd[k] = smd[k] + 1``; reads ``smd[k]``
  smd_lock   the same, with a ``multiprocessing.Lock`` (passed at the
             worker's start) around the read-modify-write
"""

from __future__ import annotations

import os
import random
import time
import traceback
from typing import Any, Callable

# shared-memory-dict reads this when it is imported: its documented locking
os.environ.setdefault("SHARED_MEMORY_USE_LOCK", "1")

BARRIER_TIMEOUT = 120.0
GET_TIMEOUT = 120.0


def keys(nkeys: int) -> list[str]:
    return [f"k{i}" for i in range(nkeys)]


def import_peers() -> None:
    """Imports the optional peers early, the same way in the parent and the
    workers. UltraDict, when imported, stops multiprocessing's resource
    tracker from tracking shared memory in that process (a work-around for
    CPython issue 38119 it applies to itself); importing it before any
    SharedMemory exists keeps the tracker's view the same in every process
    (the program removes every segment it made itself)."""
    for mod in ("UltraDict", "shared_memory_dict", "faster_fifo"):
        try:
            __import__(mod)
        except Exception:
            pass


# ---------------------------------------------------------------- the dict sides
def _open_dict(side: str, ref: Any, shared: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[str], Any],
                                                                       Callable[[], None]]:
    """(increment, read, close) for one side."""
    if side == "troupe":
        import troupe.shm as shm

        heap = ref
        d = heap.root("counts", shm.Dict)
        return d.increment, d.__getitem__, heap.close
    if side == "manager":
        md, lock = ref

        def inc_m(k: str) -> None:
            with lock:
                md[k] = md[k] + 1

        return inc_m, md.__getitem__, lambda: None
    if side == "ultradict":
        from UltraDict import UltraDict

        ud = UltraDict(name=ref)
        if not ud.shared_lock:
            raise RuntimeError("the UltraDict was not created with shared_lock=True")
        lock_u = ud.lock

        def inc_u(k: str) -> None:
            with lock_u:
                ud[k] = ud[k] + 1

        return inc_u, ud.__getitem__, ud.close
    if side in ("smd", "smd_lock"):
        from shared_memory_dict import SharedMemoryDict

        name, size = ref
        smd = SharedMemoryDict(name=name, size=size)
        if side == "smd":
            def inc_s(k: str) -> None:
                smd[k] = smd[k] + 1
        else:
            lock_s = shared["lock"]

            def inc_s(k: str) -> None:
                with lock_s:
                    smd[k] = smd[k] + 1

        return inc_s, smd.__getitem__, smd.cleanup
    raise ValueError(f"no dict side {side!r}")


def dict_job(side: str, ref: Any, nkeys: int, nops: int, write_frac: float, seed: int,
             shared: dict[str, Any]) -> tuple[float, float, int, int]:
    """nops operations on random keys (a write, an increment, with
    probability write_frac; else a read): (t0, t1, writes, sum of the reads)."""
    rng = random.Random(seed)
    ks = keys(nkeys)
    chosen = rng.choices(ks, k=nops)
    if write_frac >= 1.0:
        writes = [True] * nops
    else:
        writes = [rng.random() < write_frac for _ in range(nops)]
    inc, read, close = _open_dict(side, ref, shared)
    try:
        for k in ks[:: max(1, nkeys // 100)]:  # warm-up: reads only (the sum stays exact)
            read(k)
        shared["barrier"].wait(BARRIER_TIMEOUT)
        total = 0
        if write_frac >= 1.0:
            t0 = time.perf_counter()
            for k in chosen:
                inc(k)
            t1 = time.perf_counter()
        else:
            t0 = time.perf_counter()
            for k, w in zip(chosen, writes):
                if w:
                    inc(k)
                else:
                    total += read(k)
            t1 = time.perf_counter()
        return t0, t1, sum(writes), total
    finally:
        close()


# ---------------------------------------------------------------- the queue sides
def _queues(side: str, shared: dict[str, Any]) -> tuple[Any, Any, Callable[[Any], None], Callable[[Any], Any]]:
    """(queue a, queue b, put(q, x), get(q)) of one side."""
    if side == "troupe":
        a, b = shared["tq"]
        return a, b, (lambda q, x: q.put(x)), (lambda q: q.get(timeout=GET_TIMEOUT))
    if side == "mp":
        a, b = shared["mpq"]
        return a, b, (lambda q, x: q.put(x)), (lambda q: q.get(timeout=GET_TIMEOUT))
    if side in ("ff", "ff_many"):
        a, b = shared["ffq"]
        return a, b, (lambda q, x: q.put(x, timeout=GET_TIMEOUT)), (lambda q: q.get(timeout=GET_TIMEOUT))
    raise ValueError(f"no queue side {side!r}")


def produce_job(side: str, n: int, shared: dict[str, Any]) -> float:
    """Puts 0..n-1 on queue a: the time of the first put."""
    a, _, _, _ = _queues(side, shared)
    put = a.put
    shared["barrier"].wait(BARRIER_TIMEOUT)
    t0 = time.perf_counter()
    if side in ("ff", "ff_many"):
        for i in range(n):
            put(i, timeout=GET_TIMEOUT)
    else:
        for i in range(n):
            put(i)
    return t0


def consume_job(side: str, n: int, shared: dict[str, Any]) -> tuple[float, bool]:
    """Gets n items from queue a, checking each is the next int: (time of
    the last get, all in order)."""
    a, _, _, _ = _queues(side, shared)
    ok = True
    shared["barrier"].wait(BARRIER_TIMEOUT)
    if side == "ff_many":
        got = 0
        while got < n:
            for x in a.get_many(timeout=GET_TIMEOUT, max_messages_to_get=1000):
                ok = ok and x == got
                got += 1
        ok = ok and got == n
    else:
        get = a.get
        for i in range(n):
            if get(timeout=GET_TIMEOUT) != i:
                ok = False
    return time.perf_counter(), ok


def ping_job(side: str, n: int, warm: int, shared: dict[str, Any]) -> tuple[list[float], bool]:
    """n round trips: put i on a, wait for it back on b; each one's seconds."""
    a, b, put, get = _queues(side, shared)
    ok = True
    shared["barrier"].wait(BARRIER_TIMEOUT)
    for i in range(warm):
        put(a, -1 - i)
        ok = ok and get(b) == -1 - i
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        put(a, i)
        x = get(b)
        lat.append(time.perf_counter() - t0)
        ok = ok and x == i
    return lat, ok


def pong_job(side: str, n: int, warm: int, shared: dict[str, Any]) -> int:
    """Sends every item of a back on b."""
    a, b, put, get = _queues(side, shared)
    shared["barrier"].wait(BARRIER_TIMEOUT)
    for _ in range(n + warm):
        put(b, get(a))
    return n + warm


JOBS: dict[str, Callable[..., Any]] = {
    "dict": dict_job,
    "produce": produce_job,
    "consume": consume_job,
    "ping": ping_job,
    "pong": pong_job,
}


def serve(conn: Any, shared: dict[str, Any]) -> None:
    """A worker's loop: (job name, args) in, ("ok", result) or ("error", text) out."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends us (Ctrl-C goes to it)
    import_peers()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        name, args = msg
        try:
            res = ("ok", JOBS[name](*args, shared))
        except BaseException:
            try:
                shared["barrier"].abort()  # the other worker must not wait for us
            except Exception:
                pass
            res = ("error", f"worker {os.getpid()}: {traceback.format_exc()}")
        conn.send(res)
    conn.close()
