"""troupe's Python showcase: every part of the package on real work, each
timed beside the plain Python way of doing it.

Run by ./scripts/showcase.sh after the C++ showcase (or: .venv/bin/python
examples/showcase.py). Prints what it did and how fast; exits non-zero if a
result is wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import signal
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import troupe  # noqa: E402
from showcase_work import Shard, compress_block, count_words, primes_below  # noqa: E402


def section(title: str) -> None:
    print(f"\n== {title}")


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    r = fn(*args)
    return r, time.perf_counter() - t


def check(ok: bool, what: str) -> None:
    if not ok:
        print(f"WRONG: {what}")
        sys.exit(1)


def cpu_bound(ex: troupe.Executor) -> None:
    section("1. CPU-bound pure Python: count primes in 32 ranges")
    ranges = [(i * 40_000, (i + 1) * 40_000) for i in range(32)]
    seq, t_seq = timed(lambda: [primes_below(a, b) for a, b in ranges])
    thr, t_thr = timed(lambda: list(ex.map(primes_below, *zip(*ranges))))
    iso, t_iso = timed(lambda: list(ex.map(troupe.isolated(primes_below), *zip(*ranges), chunksize=2)))
    check(seq == thr == iso, "prime counts differ")
    print(f"   {sum(seq)} primes below {ranges[-1][1]}")
    print(f"   plain loop, one thread      {t_seq:6.2f} s")
    print(f"   threads (one GIL)           {t_thr:6.2f} s   {t_seq / t_thr:4.2f}x")
    print(f"   troupe isolated workers     {t_iso:6.2f} s   {t_seq / t_iso:4.2f}x  on {os.cpu_count()} cores")


def bank() -> None:
    section("2. Actors and atomic multi-actor `when`: 200 accounts, 20 000 random transfers")
    rng = random.Random(1)
    accounts = [troupe.actor(Shard(1_000)) for _ in range(200)]

    def move(a: Shard, b: Shard, n: int = 0) -> None:
        a.total -= n
        b.total += n

    t = time.perf_counter()
    futures = []
    audits = []
    for i in range(20_000):
        x, y = rng.sample(accounts, 2)
        n = rng.randrange(50)
        futures.append(troupe.when(x, y)(lambda a, b, n=n: move(a, b, n)))
        if i % 2_000 == 0:
            audits.append(troupe.when(*accounts)(lambda *s: sum(a.total for a in s)))
    for f in futures:
        f.result()
    dt = time.perf_counter() - t
    seen = [a.result() for a in audits]
    check(all(s == 200_000 for s in seen), f"an audit saw money appear or vanish: {seen}")
    final = troupe.when(*accounts)(lambda *s: sum(a.total for a in s)).result()
    check(final == 200_000, "total not conserved")
    print(f"   {len(futures)} transfers in {dt:.2f} s ({len(futures) / dt:,.0f}/s), {len(audits)} audits over all 200 accounts during them: total always 200 000")


def pipeline() -> None:
    section("3. Remote actors: word counts sharded over 2 worker processes")
    rng = random.Random(2)
    words = ["actor", "when", "promise", "worker", "ring", "heap", "cown", "queue", "loop", "fork"]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(20_000)]
    plain, t_plain = timed(lambda: count_words(lines))
    shards = [troupe.spawn(Shard, 0) for _ in range(2)]
    t = time.perf_counter()
    batch = 1_000
    futures = [shards[i % 2].add_counts(lines[i * batch : (i + 1) * batch]) for i in range(len(lines) // batch)]
    for f in futures:
        f.result()
    merged: dict[str, int] = {}
    for s in shards:
        for w, c in s.counts().result().items():
            merged[w] = merged.get(w, 0) + c
    t_actor = time.perf_counter() - t
    check(merged == plain, "sharded counts differ from the plain count")
    print(f"   {sum(plain.values())} words; pids {[troupe.worker_of(s) for s in shards]}")
    print(f"   plain loop {t_plain:.3f} s; 2 remote shards {t_actor:.3f} s (batches of {batch} lines per call)")
    rt = shards[0]
    n = 2_000
    t = time.perf_counter()
    for _ in range(n):
        rt.ping().result()
    print(f"   one call to a remote actor, round trip: {(time.perf_counter() - t) / n * 1e6:.0f} µs")


def faults(ex: troupe.Executor) -> None:
    section("4. A worker killed mid-run: only its call fails")

    def victim() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    fs = [ex.submit(troupe.isolated(compress_block), i) for i in range(8)]
    bad = ex.submit(troupe.isolated(victim))
    try:
        bad.result()
        check(False, "the killed call succeeded")
    except troupe.WorkerLost as e:
        print(f"   WorkerLost: {e}")
    ok = sum(1 for f in fs if not f.exception())
    lost = len(fs) - ok
    after = ex.submit(troupe.isolated(compress_block), 99).result()
    check(after == len(zlib.compress(bytes(range(256)) * 99 * 40)), "wrong result after the kill")
    print(f"   {ok} of 8 neighbouring calls completed, {lost} shared the dead worker; the executor goes on: {troupe.stats()}")


def asyncio_part() -> None:
    section("5. asyncio: 2 000 isolated calls awaited together")

    async def main() -> list[int]:
        return await asyncio.gather(*(troupe.isolated(pow).submit(i, 2) for i in range(2_000)))

    r, dt = timed(asyncio.run, main())
    check(r == [i * i for i in range(2_000)], "gather results")
    print(f"   {len(r)} results in {dt:.2f} s ({len(r) / dt:,.0f}/s)")


def arrays() -> None:
    section("6. A 100 MB numpy array to a worker and back")
    try:
        import numpy as np
    except ImportError:
        print("   (numpy not installed: skipped)")
        return
    a = np.arange(12_500_000, dtype=np.float64)
    echo = np.asarray  # importable, and the identity on an array: the time is the transfer
    troupe.isolated(echo)(a[:10])
    b, t_troupe = timed(troupe.isolated(echo), a)
    check(bool(np.array_equal(a, b)), "array result")
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        pool.submit(abs, 1).result()
        c, t_pool = timed(lambda: pool.submit(echo, a).result())
    check(bool(np.array_equal(a, c)), "array result (ProcessPoolExecutor)")
    print(f"   troupe (memfd, mapped) {t_troupe * 1e3:6.1f} ms; ProcessPoolExecutor (pickled through a pipe) {t_pool * 1e3:6.1f} ms: {t_pool / t_troupe:.1f}x")


def shared() -> None:
    section("7. Shared objects: counters in a shared dict, incremented from 2 worker processes")
    import multiprocessing
    import uuid

    import troupe.shm as shm
    from showcase_work import bump_manager, bump_shared

    name = f"showcase-{uuid.uuid4().hex[:8]}"
    heap = shm.Heap.create(name, size=64 << 20)
    try:
        heap.root("counts", shm.Dict)
        n = 20_000
        troupe.isolated(bump_shared)(heap, 10, 9)  # both sides start warm: workers exist
        heap.root("counts").clear()
        (_, t_shm) = timed(lambda: [f.result() for f in [troupe.isolated(bump_shared).submit(heap, n, s) for s in range(2)]])
        counts = heap.root("counts")
        check(sum(counts.values()) == 2 * n, "shared counters lost an increment")
        with multiprocessing.Manager() as m:
            d, lock = m.dict(), m.Lock()
            ctx = multiprocessing.get_context("spawn")
            m_n = 2_000
            ps = [ctx.Process(target=bump_manager, args=(d, lock, m_n, s)) for s in range(2)]
            t = time.perf_counter()
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            t_mgr = time.perf_counter() - t
            check(sum(d.values()) == 2 * m_n, "Manager counters lost an increment")
        print(f"   troupe.shm: {2 * n} increments in {t_shm:.2f} s ({2 * n / t_shm:,.0f}/s), none lost")
        print(f"   multiprocessing.Manager dict + Lock: {2 * m_n} in {t_mgr:.2f} s ({2 * m_n / t_mgr:,.0f}/s, process start included)")

        section("8. troupe.Queue: 20 000 items from this process to a worker")
        q = troupe.Queue(f"showcase-{uuid.uuid4().hex[:8]}", maxsize=1024)
        from showcase_work import drain_queue

        consumer = troupe.isolated(drain_queue).submit(q)
        t = time.perf_counter()
        for i in range(20_000):
            q.put(i)
        q.put(None)
        total = consumer.result()
        dt = time.perf_counter() - t
        check(total == sum(range(20_000)), "queue items lost")
        print(f"   20 000 items through the queue in {dt:.2f} s ({20_000 / dt:,.0f}/s), sum checked")
        troupe.Queue.remove(q.name, missing_ok=True)
    finally:
        heap.close()
        shm.Heap.remove(name, missing_ok=True)


def main() -> None:
    t0 = time.perf_counter()
    with troupe.Executor() as ex:
        first, dt = timed(troupe.isolated(abs), -1)
        print(f"troupe {troupe.__version__}: first isolated call (worker start) {dt * 1e3:.0f} ms")
        cpu_bound(ex)
        bank()
        pipeline()
        faults(ex)
        asyncio_part()
        arrays()
        shared()
    print(f"\nPython showcase done in {time.perf_counter() - t0:.1f} s; worker processes: {troupe.stats()}")


if __name__ == "__main__":
    main()
