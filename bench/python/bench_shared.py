#!/usr/bin/env python3
"""troupe's shared objects (troupe.shm.Dict, troupe.Queue) beside
multiprocessing's Manager and Queue, UltraDict, shared-memory-dict and
faster-fifo: one program, one markdown table per case.

Every side of a case runs in this one invocation, the sides alternating run
by run (the order rotates each run), each run checking its results; a table
gives the median (and the range) of ``--runs`` runs, the goal and the ratio.
The work is done by two worker processes that every side shares: started
once with multiprocessing's "spawn" context (the same processes, the same
interpreter state for every side; the parent only prepares, waits and
checks). A run's time is from the moment both workers leave a barrier to the
last one's end (time.perf_counter is one clock for all processes). Each peer
is used the way its documentation says is correct under concurrency:

  troupe               shm.Heap.create(...), heap.root("counts", shm.Dict);
                       ``d.increment(k)`` (one atomic operation); reads d[k].
                       troupe.Queue(name) put/get (a Queue pickles by name)
  multiprocessing      Manager().dict() with a Manager().Lock() around the
                       read-modify-write; multiprocessing.Queue put/get
  UltraDict            UltraDict(..., shared_lock=True) (its README: needed
                       for writes from independent processes), ``with
                       ud.lock: ud[k] = ud[k] + 1``; buffer_size large enough
                       that no full dump happens during a run (its best case)
  shared-memory-dict   SHARED_MEMORY_USE_LOCK=1 (its README's only locking,
                       around each write): ``smd[k] = smd[k] + 1`` is not
                       atomic, so that row is reported, and marked, with the
                       increments it lost; a second row adds a
                       multiprocessing.Lock around the read-modify-write
  faster-fifo          faster_fifo.Queue(max_size_bytes=1 MB) put/get; also
                       get_many on the consumer (its batch API; no goal)

Usage: bench_shared.py [--case NAME]... [--runs N] [--quick]
Cases: incr read_mostly queue. Markdown goes to stdout, progress to stderr.
Every shared-memory segment and process this program makes is removed or
ended before it exits (also after Ctrl-C); it says so, or what it removed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import multiprocessing
import os
import pickle
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _shared_tasks  # noqa: E402  (sets SHARED_MEMORY_USE_LOCK=1 before shared-memory-dict is imported)
import psutil  # noqa: E402
from _report import (  # noqa: E402
    CpuMeter,
    end_on_signals,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    goal,
    parse_args,
    run_header,
    table,
    troupe_source,
)

CASES = ["incr", "read_mostly", "queue"]
NCPU = os.cpu_count() or 1
NKEYS = 10_000
PREFIX = f"bsh{os.getpid()}"  # every segment this program makes starts with it
WORKER_TIMEOUT = 300.0
SERIAL = 0  # numbers every dict made, so that no name is used twice


def log(msg: str) -> None:
    print(f"[bench-shared] {msg}", file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- machine state
METER = CpuMeter()


# ---------------------------------------------------------------- the workers
class Workers:
    """Two spawned worker processes (bench/python/_shared_tasks.py serve()),
    plus everything that multiprocessing only shares by inheritance, made
    here before they start: the barrier, two multiprocessing.Queues, a Lock,
    two faster-fifo queues; and troupe's two queues and the Manager."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.shared: dict[str, Any] = {}
        self.manager: Any = None
        self.mlock: Any = None
        self.tq_names: list[str] = []
        self.skip: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    def start(self) -> None:
        import troupe

        self.versions["troupe"] = troupe.__version__
        ctx = self.ctx
        _shared_tasks.import_peers()
        self.shared["barrier"] = ctx.Barrier(2)
        self.shared["lock"] = ctx.Lock()
        self.shared["mpq"] = (ctx.Queue(), ctx.Queue())
        self.tq_names = [f"{PREFIX}-qa", f"{PREFIX}-qb"]
        self.shared["tq"] = tuple(troupe.Queue(n, maxsize=1024) for n in self.tq_names)
        for mod, dist in (("UltraDict", "UltraDict"), ("shared_memory_dict", "shared-memory-dict"),
                          ("faster_fifo", "faster-fifo"), ("atomics", "atomics")):
            try:
                __import__(mod)
                from importlib.metadata import version

                self.versions[dist] = version(dist)
            except Exception as e:
                self.skip[dist] = f"not importable ({type(e).__name__}: {e})"
        if "faster-fifo" not in self.skip:
            import faster_fifo

            self.shared["ffq"] = (faster_fifo.Queue(max_size_bytes=1_000_000),
                                  faster_fifo.Queue(max_size_bytes=1_000_000))
        if "UltraDict" not in self.skip and "atomics" in self.skip:
            self.skip["UltraDict"] = f"shared_lock=True needs `atomics`, which is {self.skip['atomics']}"
        log("starting the Manager and 2 spawned workers")
        self.manager = ctx.Manager()
        self.mlock = self.manager.Lock()
        for _ in range(2):
            here, there = ctx.Pipe()
            p = ctx.Process(target=_shared_tasks.serve, args=(there, self.shared), daemon=True)
            p.start()
            there.close()
            self.procs.append(p)
            self.conns.append(here)

    def call(self, jobs: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, Any]]:
        """Job i to worker i; their answers (("ok", r) or ("error", text))."""
        for c, j in zip(self.conns, jobs):
            c.send(j)
        res = []
        for c in self.conns[: len(jobs)]:
            if not c.poll(WORKER_TIMEOUT):
                raise SystemExit(f"a worker did not answer in {WORKER_TIMEOUT:.0f} s")
            res.append(c.recv())
        if any(r[0] == "error" for r in res):
            self.shared["barrier"].reset()
        return res

    def call_ok(self, jobs: list[tuple[str, tuple[Any, ...]]], what: str) -> list[Any]:
        res = self.call(jobs)
        errs = [r[1] for r in res if r[0] == "error"]
        if errs:
            raise SystemExit(f"{what} failed:\n" + "\n".join(errs))
        return [r[1] for r in res]

    def stop(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except Exception:
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                log(f"killing worker {p.pid}")
                p.kill()
                p.join(timeout=5)
        self.procs, self.conns = [], []
        for q in self.shared.get("mpq", ()):
            q.close()
            q.join_thread()
        if self.manager is not None:
            self.mlock = None
            self.manager.shutdown()
            self.manager = None
        tq = self.shared.pop("tq", ())
        for q, n in zip(tq, self.tq_names):
            try:
                import troupe

                troupe.Queue.remove(n)
            except Exception as e:
                log(f"troupe.Queue.remove({n!r}): {type(e).__name__}: {e}")
            q.heap.close()
        self.shared.clear()


def leftover_segments() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/dev/shm") if PREFIX in n)
    except OSError:
        return []


def kill_leftovers(when: str) -> None:
    """Kills (by pid) processes this program started that are still there
    (multiprocessing's resource tracker ends with this process)."""
    procs = []
    for q in psutil.Process().children(recursive=True):
        try:
            if q.status() != psutil.STATUS_ZOMBIE and not any("resource_tracker" in a for a in q.cmdline()):
                procs.append(q)
        except psutil.Error:
            pass
    if not procs:
        return
    log(f"killing {len(procs)} leftover process(es) {when}: " + ", ".join(str(q.pid) for q in procs))
    for q in procs:
        try:
            q.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


# ---------------------------------------------------------------- the harness
@dataclass
class Side:
    name: str
    run: Callable[[], float]  # one timed run: returns its measure
    warm: Callable[[], Any] | None = None
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per-run problems (wrong results, errors)

    @property
    def median(self) -> float:
        vals = [v for v in self.values if not math.isnan(v)]
        return statistics.median(vals) if vals else math.nan

    def spread(self, f: Callable[[float], str]) -> str:
        vals = [v for v in self.values if not math.isnan(v)]
        return f"{f(min(vals))} – {f(max(vals))}" if vals else "–"


def alternate(case: str, sides: list[Side], runs: int, fmt: Callable[[float], str]) -> None:
    """Runs each side runs times; the order rotates run by run."""
    for r in range(runs):
        k = r % len(sides)
        for s in sides[k:] + sides[:k]:
            if s.warm is not None:
                s.warm()
            gc.collect()
            v = s.run()
            s.values.append(v)
            log(f"{case} run {r + 1}/{runs}: {s.name}: {'error' if math.isnan(v) else fmt(v)}")


# ---------------------------------------------------------------- dict cases
class DictSide:
    """One peer of the dict cases: makes a fresh 10 000-key dict of zeros
    (untimed) for each run, has both workers run their ops on it, checks that
    its values add up to the increments made, and removes it."""

    def __init__(self, key: str, w: Workers, nops: int, write_frac: float, exact: bool) -> None:
        self.key, self.w, self.nops, self.write_frac, self.exact = key, w, nops, write_frac, exact
        self.init = {k: 0 for k in _shared_tasks.keys(NKEYS)}
        self.n = 0
        self.lost: list[int] = []  # increments lost, per run
        self.errors: list[str] = []

    # -- each peer's fresh dict, its sum, its removal
    def make(self) -> tuple[Any, Callable[[], int], Callable[[], None]]:
        global SERIAL
        self.n += 1
        SERIAL += 1
        # a name never used before in this program: troupe caches a heap's
        # root cells by (address, heap name) in each process, also after the
        # heap is closed, so a heap re-created under a name a process used
        # before can show that process another root than the others see
        name = f"{PREFIX}-{self.key}-{SERIAL}"
        if self.key == "troupe":
            import troupe.shm as shm

            heap = shm.Heap.create(name, size=64 << 20)
            d = heap.root("counts", shm.Dict)
            d.update(self.init)

            def drop_t() -> None:
                heap.close()  # the last handle: the segment goes
                if os.path.exists(f"/dev/shm/troupe.{name}"):
                    shm.Heap.remove(name)

            return heap, (lambda: sum(d.values())), drop_t
        if self.key == "manager":
            md = self.w.manager.dict(self.init)
            return (md, self.w.mlock), (lambda: sum(md.values())), (lambda: None)
        if self.key == "ultradict":
            from UltraDict import UltraDict

            # stream buffer: the initial 10 000 keys and every write of the run
            # fit (~30 bytes each), so no full dump happens (its fastest mode)
            writes = int(2 * self.nops * self.write_frac) + 2 * NKEYS + 1000
            ud = UltraDict(self.init, name=name, create=True, shared_lock=True, buffer_size=max(1 << 20, 40 * writes))
            return name, (lambda: sum(ud.values())), ud.unlink
        if self.key in ("smd", "smd_lock"):
            from shared_memory_dict import SharedMemoryDict

            size = -(-len(pickle.dumps(self.init)) * 3 // 2 // 4096) * 4096
            smd = SharedMemoryDict(name=name, size=size)
            smd.update(self.init)

            def drop_s() -> None:
                smd.shm.unlink()
                smd.cleanup()

            return (name, size), (lambda: sum(smd.values())), drop_s
        raise ValueError(self.key)

    def run(self) -> float:
        ref, total, drop = self.make()
        try:
            seed = 1000 * self.n  # the same seeds for every side
            res = self.w.call([("dict", (self.key, ref, NKEYS, self.nops, self.write_frac, seed + i)) for i in range(2)])
            errs = [r[1] for r in res if r[0] == "error"]
            if errs:
                if self.exact:
                    raise SystemExit(f"{self.key} failed:\n" + "\n".join(errs))
                last = errs[0].strip().splitlines()[-1]
                self.errors.append(last)
                log(f"{self.key}: a worker failed: {last}")
                return math.nan
            t0 = min(r[1][0] for r in res)
            t1 = max(r[1][1] for r in res)
            writes = sum(r[1][2] for r in res)
            try:
                got = total()
            except Exception as e:
                if self.exact:
                    raise
                self.errors.append(f"the dict could not be read afterwards: {type(e).__name__}: {e}")
                return math.nan
            if got != writes:
                if self.exact:
                    raise SystemExit(f"wrong result from {self.key}: the values add up to {got}, "
                                     f"{writes} increments were made")
                self.lost.append(writes - got)
            else:
                self.lost.append(0)
            return 2 * self.nops / (t1 - t0)
        finally:
            drop()

    def correctness(self) -> str:
        parts = []
        if self.lost:
            made = int(2 * self.nops * self.write_frac)
            bad = [x for x in self.lost if x]
            if not bad:
                parts.append("exact in every run")
            else:
                parts.append(f"**WRONG** in {len(bad)} of {len(self.lost)} runs: lost "
                             f"{min(bad):,}–{max(bad):,} of ~{made:,} increments")
        if self.errors:
            parts.append(f"**{len(self.errors)} run(s) failed**: `{self.errors[0]}`")
        return "; ".join(parts) or "–"


DICT_NAMES = {
    "troupe": "troupe `d.increment(k)` (reads `d[k]`)",
    "manager": "`Manager().dict()` + `Manager().Lock()` around read-modify-write",
    "ultradict": "UltraDict `shared_lock=True`, `with ud.lock: ud[k] = ud[k] + 1`",
    "smd": "shared-memory-dict, `SHARED_MEMORY_USE_LOCK=1`, `smd[k] = smd[k] + 1`",
    "smd_lock": "shared-memory-dict + a `multiprocessing.Lock` around read-modify-write",
}


def dict_case(w: Workers, a: argparse.Namespace, case: str, write_frac: float) -> None:
    q = a.quick
    if write_frac >= 1.0:
        nops = {"troupe": 40_000 if q else 400_000, "manager": 300 if q else 2_000,
                "ultradict": 2_000 if q else 20_000, "smd": 50 if q else 200, "smd_lock": 50 if q else 200}
    else:
        nops = {"troupe": 40_000 if q else 400_000, "manager": 500 if q else 4_000,
                "ultradict": 10_000 if q else 100_000, "smd": 100 if q else 400, "smd_lock": 100 if q else 400}
    keys = ["troupe", "manager"]
    if "UltraDict" not in w.skip:
        keys.append("ultradict")
    if "shared-memory-dict" not in w.skip:
        keys += ["smd", "smd_lock"]
    ds = {k: DictSide(k, w, nops[k], write_frac, exact=(k != "smd")) for k in keys}
    sides = [Side(DICT_NAMES[k], ds[k].run) for k in keys]
    alternate(case, sides, a.runs, fmt_rate)
    tr = sides[0].median
    rows = []
    for k, s in zip(keys, sides):
        d = ds[k]
        rows.append([s.name, f"2 × {d.nops:,}", fmt_rate(s.median) if not math.isnan(s.median) else "–",
                     s.spread(fmt_rate), d.correctness(),
                     fmt_ratio(tr / s.median) if not math.isnan(s.median) else "–"])
    for dist, label in (("UltraDict", "UltraDict"), ("shared-memory-dict", "shared-memory-dict")):
        if dist in w.skip:
            rows.append([label, f"skipped: {w.skip[dist]}", "–", "–", "–", "–"])
    by = {k: s.median for k, s in zip(keys, sides)}
    if write_frac >= 1.0:
        out(f"### incr: random-key increments on a {NKEYS:,}-key shared dict from 2 processes\n")
        out(f"Each of the 2 worker processes increments keys drawn at random (its own seed each run) among {NKEYS:,} "
            f"(`'k0'`–`'k9999'`, all 0 at the start of the run); increments/s = all increments ÷ the time from "
            f"both leaving the barrier to the last one done. After each run the values must add up to the "
            f"increments made. Fewer increments for the slow sides keep each run ~0.2–1 s. {a.runs} runs; "
            f"{METER.note()}.\n")
        out(table(["side", "increments per run", "median increments/s", "min – max", "sum of the values",
                   "troupe's rate ÷ side's"], rows))
        out()
        out(goal("troupe ≥ 200× the Manager's increments/s", tr / by["manager"], 200, True))
        out(goal("troupe ≥ 5× UltraDict's increments/s", tr / by["ultradict"] if "ultradict" in by else None, 5,
                 True))
    else:
        out(f"### read_mostly: {100 - round(write_frac * 100)} % reads, {round(write_frac * 100)} % increments, "
            f"{NKEYS:,}-key shared dict, 2 processes\n")
        out(f"As `incr`, but each operation is a read `d[k]` with probability 0.9 (no lock for any side: one "
            f"read is atomic on its own in each), else the side's increment. Ops/s = all operations ÷ the "
            f"span; the values must add up to the increments made. {a.runs} runs; {METER.note()}.\n")
        out(table(["side", "operations per run", "median ops/s", "min – max", "sum of the values",
                   "troupe's rate ÷ side's"], rows))
        out()
        out(goal("troupe ≥ 10× UltraDict's ops/s", tr / by["ultradict"] if "ultradict" in by else None, 10, True))
    out()


def case_incr(w: Workers, a: argparse.Namespace) -> None:
    dict_case(w, a, "incr", 1.0)


def case_read_mostly(w: Workers, a: argparse.Namespace) -> None:
    dict_case(w, a, "read_mostly", 0.1)


# ---------------------------------------------------------------- queue case
QUEUE_NAMES = {
    "troupe": "troupe.Queue(maxsize=1024) `put` / `get`",
    "mp": "multiprocessing.Queue() `put` / `get`",
    "ff": "faster_fifo.Queue(1 MB) `put` / `get`",
    "ff_many": "faster_fifo.Queue(1 MB) `put` / `get_many(max_messages_to_get=1000)`",
}


def _drained(w: Workers, side: str) -> bool:
    if side == "troupe":
        return all(q.qsize() == 0 for q in w.shared["tq"])
    if side == "mp":
        return all(q.empty() for q in w.shared["mpq"])
    return all(q.empty() for q in w.shared["ffq"])


def case_queue(w: Workers, a: argparse.Namespace) -> None:
    n = 10_000 if a.quick else 100_000
    trips = 300 if a.quick else 2_000
    warm_trips = 100
    keys = ["troupe", "mp"] + (["ff", "ff_many"] if "faster-fifo" not in w.skip else [])
    order_ok: dict[str, list[bool]] = {k: [] for k in keys}

    def through(k: str, count: int) -> Callable[[], float]:
        def real() -> float:
            res = w.call_ok([("produce", (k, count)), ("consume", (k, count))], f"queue {k}")
            t0, (t1, ok) = res
            if count == n:
                order_ok[k].append(ok)
            if not ok:
                raise SystemExit(f"queue {k}: items arrived out of order or wrong")
            if not _drained(w, k):
                raise SystemExit(f"queue {k}: items left in the queue after the run")
            return count / (t1 - t0)

        return real

    sides = [Side(QUEUE_NAMES[k], through(k, n), (lambda k=k: through(k, 2_000)())) for k in keys]
    alternate("queue throughput", sides, a.runs, fmt_rate)
    tr = sides[0].median
    rows = [[s.name, f"{n:,}", fmt_rate(s.median), s.spread(fmt_rate),
             "yes, every run" if all(order_ok[k]) else "**no**", fmt_ratio(tr / s.median)] for k, s in zip(keys, sides)]
    if "faster-fifo" in w.skip:
        rows.append(["faster-fifo", f"skipped: {w.skip['faster-fifo']}", "–", "–", "–", "–"])
    interp = importlib.util.find_spec("concurrent.interpreters") if sys.version_info >= (3, 14) else None
    interp_note = ("Python 3.14's `concurrent.interpreters` queue: not run (it passes objects between "
                   "interpreters of one process, not between processes)" if interp else
                   f"Python 3.14's `concurrent.interpreters` queue: not available (this is Python "
                   f"{platform.python_version()}), not run")
    out("### queue: small items from 1 producer process to 1 consumer process\n")
    out(f"The producer puts the ints 0 … {n - 1:,}, the consumer gets them and checks each is the next one; "
        f"items/s = {n:,} ÷ the time from the producer's first put to the consumer's last get. Each run is "
        f"preceded by an untimed 2 000-item run. {interp_note}. {a.runs} runs; {METER.note()}.\n")
    out(table(["side", "items per run", "median items/s", "min – max", "in order", "troupe's rate ÷ side's"], rows))
    out()
    by = {k: s.median for k, s in zip(keys, sides)}
    out(goal("troupe.Queue ≥ 10× multiprocessing.Queue's items/s", tr / by["mp"], 10, True))
    out()

    # latency: ping-pong over two queues
    METER.start()
    lat_keys = ["troupe", "mp"] + (["ff"] if "faster-fifo" not in w.skip else [])
    p99: dict[str, list[float]] = {k: [] for k in lat_keys}

    def pingpong(k: str) -> Callable[[], float]:
        def run() -> float:
            (lat, ok), _ = w.call_ok([("ping", (k, trips, warm_trips)), ("pong", (k, trips, warm_trips))],
                                     f"ping-pong {k}")
            if not ok:
                raise SystemExit(f"ping-pong {k}: a wrong item came back")
            if not _drained(w, k):
                raise SystemExit(f"ping-pong {k}: items left in the queues after the run")
            lat.sort()
            p99[k].append(lat[int(0.99 * (len(lat) - 1))])
            return statistics.median(lat)

        return run

    lsides = [Side(QUEUE_NAMES[k].replace(" `put` / `get`", ""), pingpong(k)) for k in lat_keys]
    alternate("queue latency", lsides, a.runs, fmt_time)
    tl = lsides[0].median
    rows = [[s.name, fmt_time(s.median), fmt_time(s.median / 2), s.spread(fmt_time),
             fmt_time(statistics.median(p99[k])), fmt_ratio(s.median / tl)] for k, s in zip(lat_keys, lsides)]
    if "faster-fifo" in w.skip:
        rows.append(["faster-fifo", f"skipped: {w.skip['faster-fifo']}", "–", "–", "–", "–"])
    out("### queue latency: one item, ping-pong between 2 processes over 2 queues\n")
    out(f"Process A puts i on queue 1 and waits for it on queue 2; process B gets from 1 and puts on 2 (both block "
        f"in `get`). {trips:,} round trips per run after {warm_trips} untimed ones; the table gives the median "
        f"of the runs' medians (one way = half of it), and the median of the runs' 99th percentiles. "
        f"{interp_note}. {a.runs} runs; {METER.note()}.\n")
    out(table(["side", "median round trip", "one way", "min – max (run medians)", "p99 round trip",
               "side's latency ÷ troupe's"], rows))
    out()
    by = {k: s.median for k, s in zip(lat_keys, lsides)}
    out(goal("troupe.Queue's latency ≤ 0.2× multiprocessing.Queue's", tl / by["mp"], 0.2, False))
    out()


# ---------------------------------------------------------------- main
def main() -> int:
    a, chosen = parse_args(__doc__, CASES, "fewer operations: a smoke run, timings not for comparison")
    end_on_signals()
    started = time.perf_counter()
    w = Workers()
    rc = 0
    out("## troupe's shared dict and queue beside Manager, UltraDict, shared-memory-dict, multiprocessing.Queue "
        "and faster-fifo\n")
    out(run_header(a.quick))
    try:
        w.start()
        vers = troupe_source(", ".join(f"{k} {v}" for k, v in sorted(w.versions.items(), key=lambda kv: kv[0].lower())))
        skipped = "; ".join(f"**{k} skipped**: {v}" for k, v in w.skip.items() if k != "atomics")
        out(f"Versions: {vers}, psutil {psutil.__version__}. Workers: 2 processes, multiprocessing \"spawn\"."
            + (f" {skipped}." if skipped else ""))
        out()
        for c in chosen:
            log(f"case {c}")
            METER.start()
            globals()[f"case_{c}"](w, a)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        w.stop()
        kill_leftovers("at the end")
        left = leftover_segments()
        if left:
            log(f"removing shared-memory segments left behind: {', '.join(left)}")
            for n in left:
                try:
                    os.unlink(os.path.join("/dev/shm", n))
                except OSError:
                    pass
            if rc == 0:
                out(f"Note: the program had to remove {len(left)} shared-memory segment(s) at the end: "
                    f"{', '.join(left)}.")
        else:
            log("no shared-memory segment of this program is left")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
