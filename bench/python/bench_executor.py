#!/usr/bin/env python3
"""troupe's Python executor beside ProcessPoolExecutor, multiprocessing.Pool,
loky and Ray: one program, one markdown table per case.

Every side of a case runs in this one invocation, the sides alternating run
by run (the order rotates each run), each run checking its results; a table
gives the median (and the range) of ``--runs`` runs, the goal and the ratio.
Each peer is used the way its documentation recommends:

  ProcessPoolExecutor   default max_workers and context (fork on Linux 3.11)
  multiprocessing.Pool  default processes; apply_async for single tasks,
                        map with chunksize where there are many items
  loky                  get_reusable_executor() (default max_workers)
  Ray                   ray.init(num_cpus=os.cpu_count(),
                        include_dashboard=False), local; ray.remote tasks and
                        actors, ray.get on a list of refs
  troupe                troupe.Executor(); ex.submit(troupe.isolated(f), x),
                        ex.map(troupe.isolated(f), ...); troupe.spawn actors

Every side is warmed up before each timed run (its workers started and
idle: troupe's idle workers retire after 2 s, so a warm-up before each run
keeps every side equal), except in the ``startup`` case, which runs a fresh
interpreter each time. The functions the workers run are in ``_tasks.py``
beside this file (importable by every peer).

Usage: bench_executor.py [--case NAME]... [--runs N] [--quick] [--no-ray]
Cases: rss tiny actor_rt cpu_map array startup (run in that order: rss
first, before any worker imported numpy; startup last, after the in-process
pools are gone). Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
# Workers that start a fresh interpreter (Ray's, loky's, the startup case's)
# find _tasks through PYTHONPATH; troupe passes sys.path itself.
os.environ["PYTHONPATH"] = HERE + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")

import _tasks  # noqa: E402
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

CASES = ["rss", "tiny", "actor_rt", "cpu_map", "array", "startup"]
NCPU = os.cpu_count() or 1


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- machine state
def _is_troupe_worker(cmd: list[str]) -> bool:
    return len(cmd) >= 3 and cmd[1:3] == ["-m", "troupe._worker"]


def foreign_troupe_workers() -> int:
    """Troupe workers of other programs (they share this user's worker budget)."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    n = 0
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] not in mine and _is_troupe_worker(p.info["cmdline"] or []):
                n += 1
        except (psutil.Error, TypeError):
            pass
    return n


METER = CpuMeter()


def machine_note() -> str:
    return (f"{METER.note()}; troupe workers of other programs of this user "
            f"(shared budget) now: {foreign_troupe_workers()}")


def mem_of(pid: int) -> tuple[int, int, int]:
    """(RSS, USS, PSS) in bytes."""
    fi = psutil.Process(pid).memory_full_info()
    return fi.rss, fi.uss, getattr(fi, "pss", 0)


RAY_NAMES = ("raylet", "gcs_server")


def is_ray_process(p: psutil.Process) -> bool:
    try:
        name = p.name()
        if name in RAY_NAMES or name.startswith("ray::"):
            return True
        return any("/ray/" in part or part.startswith("ray::") for part in p.cmdline()[:3])
    except psutil.Error:
        return False


# ---------------------------------------------------------------- the peers
class Peers:
    """Each peer's executor, created once, in a fork-safe order: the fork-based
    pools first (before this process has any runtime thread or has imported
    numpy or Ray: their workers' RSS is then the plain interpreter's),
    then loky (fork+exec), troupe, Ray."""

    def __init__(self, want_ray: bool) -> None:
        self.ppe: concurrent.futures.ProcessPoolExecutor | None = None
        self.pool: Any = None
        self.loky: Any = None
        self.troupe_ex: Any = None
        self.troupe: Any = None
        self.ray: Any = None
        self.ray_skip: str | None = None if want_ray else "--no-ray"
        self.versions: dict[str, str] = {}
        self.want_ray = want_ray
        self.r: dict[str, Any] = {}  # Ray remote functions

    def start(self) -> None:
        log("starting ProcessPoolExecutor and multiprocessing.Pool")
        self.ppe = concurrent.futures.ProcessPoolExecutor()
        self.pool = multiprocessing.Pool()
        self.warm_ppe()
        self.warm_pool()
        log("starting loky")
        import loky

        self.versions["loky"] = loky.__version__
        self.loky = loky.get_reusable_executor()
        self.warm_loky()
        log("starting troupe")
        import troupe

        self.troupe = troupe
        self.versions["troupe"] = troupe.__version__
        self.troupe_ex = troupe.Executor()
        self.t_inc = troupe.isolated(_tasks.inc)
        self.t_nap = troupe.isolated(_tasks.nap)
        self.t_spin = troupe.isolated(_tasks.spin)
        self.t_echo = troupe.isolated(_tasks.echo)
        self.warm_troupe()
        if self.want_ray:
            try:
                import ray
            except Exception as e:  # not installed, or broken
                self.ray_skip = f"not importable ({type(e).__name__}: {e})"
            else:
                log("starting Ray (ray.init)")
                self.versions["ray"] = ray.__version__
                ray.init(num_cpus=NCPU, include_dashboard=False)
                self.ray = ray
                for name in ("inc", "nap", "spin", "echo", "pid"):
                    self.r[name] = ray.remote(getattr(_tasks, name))
                self.warm_ray()
        if self.ray_skip:
            log(f"Ray skipped: {self.ray_skip}")

    # -- warm-ups: every worker of the pool started, then idle; each returns
    #    how many distinct workers ran the naps
    def warm_ppe(self, task: Callable[[float], int] = _tasks.nap) -> int:
        return len(set(self.ppe.map(task, [0.05] * (2 * NCPU))))

    def warm_pool(self, task: Callable[[float], int] = _tasks.nap) -> int:
        return len(set(self.pool.map(task, [0.05] * (2 * NCPU), chunksize=1)))

    def warm_loky(self, task: Callable[[float], int] = _tasks.nap) -> int:
        return len(set(self.loky.map(task, [0.05] * (2 * NCPU))))

    def warm_troupe(self, task: Callable[[float], int] = _tasks.nap) -> int:
        # workers start on demand, one at a time: naps until every worker of
        # the budget ran one (fewer if other troupe programs hold slots)
        iso = self.t_nap if task is _tasks.nap else self.troupe.isolated(task)
        seen: set[int] = set()
        for _ in range(5):
            fs = [self.troupe_ex.submit(iso, 0.05) for _ in range(2 * NCPU)]
            seen = {f.result() for f in fs}
            if len(seen) >= NCPU:
                break
        return len(seen)

    def warm_ray(self, task: Callable[[float], int] = _tasks.nap) -> int:
        fn = self.r["nap"] if task is _tasks.nap else self.r.setdefault(task.__name__, self.ray.remote(task))
        return len(set(self.ray.get([fn.remote(0.05) for _ in range(2 * NCPU)])))

    def stop(self) -> None:
        """Ends every worker this program started (also after Ctrl-C)."""
        if self.ray is not None:
            log("ray.shutdown()")
            try:
                self.ray.shutdown()
            except Exception as e:
                log(f"ray.shutdown failed: {e}")
            self.ray = None
        if self.troupe is not None:
            self.troupe_ex.shutdown(wait=False, cancel_futures=True)
            self.troupe.shutdown()
            self.troupe = None
        if self.loky is not None:
            self.loky.shutdown(wait=True, kill_workers=True)
            self.loky = None
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        if self.ppe is not None:
            self.ppe.shutdown(wait=True, cancel_futures=True)
            self.ppe = None
        # the resource trackers (multiprocessing's, loky's) end with this process
        kill_leftovers([q for q in psutil.Process().children(recursive=True) if not _is_tracker(q)],
                       "after stopping the peers")


def _is_tracker(p: psutil.Process) -> bool:
    try:
        return any("resource_tracker" in part for part in p.cmdline())
    except psutil.Error:
        return True


def kill_leftovers(procs: list[psutil.Process], when: str) -> None:
    """Kills (by pid) processes this program started that are still there."""
    procs = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if not procs:
        return
    names = ", ".join(f"{p.pid} {p.name()}" for p in procs)
    log(f"killing {len(procs)} leftover process(es) {when}: {names}")
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


# ---------------------------------------------------------------- the harness
@dataclass
class Side:
    name: str
    run: Callable[[], float]  # one timed run: returns its measure (seconds unless said)
    warm: Callable[[], Any] | None = None
    values: list[float] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, f: Callable[[float], str] = fmt_time) -> str:
        return f"{f(min(self.values))} – {f(max(self.values))}"

    def workers_text(self) -> str:
        if not self.workers:
            return "–"
        lo, hi = min(self.workers), max(self.workers)
        return str(lo) if lo == hi else f"{lo}–{hi}"


def alternate(case: str, sides: list[Side], runs: int, fmt: Callable[[float], str] = fmt_time) -> None:
    """Runs each side runs times; the order rotates run by run."""
    for r in range(runs):
        k = r % len(sides)
        for s in sides[k:] + sides[:k]:
            if s.warm is not None:
                w = s.warm()
                if isinstance(w, int):
                    s.workers.append(w)
            gc.collect()
            v = s.run()
            s.values.append(v)
            log(f"{case} run {r + 1}/{runs}: {s.name}: {fmt(v)}")


def timed(fn: Callable[[], Any], check: Callable[[Any], bool], what: str) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        if not check(result):
            raise SystemExit(f"wrong result from {what}")
        return dt

    return run


def skipped_row(p: Peers, name: str, ncols: int) -> list[str]:
    return [name, f"skipped: {p.ray_skip}"] + ["–"] * (ncols - 2)


# ---------------------------------------------------------------- cases
def case_tiny(p: Peers, a: argparse.Namespace) -> None:
    n = 1000 if a.quick else 10_000
    want = n * (n + 1) // 2
    ok = lambda r: sum(r) == want  # noqa: E731
    t, ppe, pool, lk = p.troupe_ex, p.ppe, p.pool, p.loky
    sides = [
        Side("troupe `ex.submit(isolated(inc), i)`",
             timed(lambda: [f.result() for f in [t.submit(p.t_inc, i) for i in range(n)]], ok, "troupe"),
             p.warm_troupe),
        Side("ProcessPoolExecutor `submit`",
             timed(lambda: [f.result() for f in [ppe.submit(_tasks.inc, i) for i in range(n)]], ok, "ppe"),
             p.warm_ppe),
        Side("multiprocessing.Pool `apply_async`",
             timed(lambda: [r.get() for r in [pool.apply_async(_tasks.inc, (i,)) for i in range(n)]], ok, "pool"),
             p.warm_pool),
        Side("loky `submit`",
             timed(lambda: [f.result() for f in [lk.submit(_tasks.inc, i) for i in range(n)]], ok, "loky"),
             p.warm_loky),
    ]
    if p.ray:
        ray, inc_r = p.ray, p.r["inc"]
        sides.append(Side("Ray tasks `inc.remote(i)`, `ray.get(refs)`",
                          timed(lambda: ray.get([inc_r.remote(i) for i in range(n)]), ok, "ray"), p.warm_ray))
    alternate("tiny", sides, a.runs)
    tr = sides[0].median
    rows = [[s.name, s.workers_text(), fmt_time(s.median), s.spread(), fmt_rate(n / s.median), fmt_ratio(s.median / tr)]
            for s in sides]
    if not p.ray:
        rows.append(skipped_row(p, "Ray tasks", 6))
    out(f"### tiny: {n:,} submits of `inc(x) = x + 1`, then every result\n")
    out(f"Tasks/s = {n:,} ÷ the median time from the first submit to the last result. "
        f"os.cpu_count() = {NCPU}; {a.runs} runs; {machine_note()}.\n")
    out(table(["side", "workers", "median", "min – max", "tasks/s", "troupe's tasks/s ÷ side's"], rows))
    out()
    by = {s.name.split(" ")[0]: s.median for s in sides}
    out(goal("troupe ≥ 10× ProcessPoolExecutor's tasks/s", by["ProcessPoolExecutor"] / tr, 10, True))
    out(goal("troupe ≥ 1× loky's tasks/s", by["loky"] / tr, 1, True))
    out()

    # the same items, 100 to a worker call
    m = 10_000 if a.quick else 100_000
    want_m = m * (m + 1) // 2
    okm = lambda r: sum(r) == want_m  # noqa: E731
    sides = [
        Side("troupe `ex.map(isolated(inc), chunksize=100)`",
             timed(lambda: list(t.map(p.t_inc, range(m), chunksize=100)), okm, "troupe map"), p.warm_troupe),
        Side("ProcessPoolExecutor `map(chunksize=100)`",
             timed(lambda: list(ppe.map(_tasks.inc, range(m), chunksize=100)), okm, "ppe map"), p.warm_ppe),
        Side("multiprocessing.Pool `map(chunksize=100)`",
             timed(lambda: pool.map(_tasks.inc, range(m), chunksize=100), okm, "pool map"), p.warm_pool),
        Side("loky `map(chunksize=100)`",
             timed(lambda: list(lk.map(_tasks.inc, range(m), chunksize=100)), okm, "loky map"), p.warm_loky),
    ]
    alternate("tiny map", sides, a.runs)
    tr = sides[0].median
    rows = [[s.name, s.workers_text(), fmt_time(s.median), s.spread(), fmt_rate(m / s.median), fmt_ratio(s.median / tr)]
            for s in sides]
    out(f"### tiny, chunked: `map` of `inc` over {m:,} items, 100 items per worker call\n")
    out(f"Items/s = {m:,} ÷ the median time to the last result. Ray has no chunked map (not run). "
        f"{a.runs} runs; {machine_note()}.\n")
    out(table(["side", "workers", "median", "min – max", "items/s", "troupe's items/s ÷ side's"], rows))
    out()
    out(f"No goal; troupe's items/s ÷ ProcessPoolExecutor's: {fmt_ratio(sides[1].median / tr)}.")
    out()


def case_actor_rt(p: Peers, a: argparse.Namespace) -> None:
    calls = 200 if a.quick else 1000
    troupe = p.troupe
    h = troupe.spawn(_tasks.Counter)

    def lat_run(call: Callable[[], int]) -> Callable[[], float]:
        def run() -> float:
            lat = []
            last = call()
            for _ in range(calls):
                t0 = time.perf_counter()
                v = call()
                lat.append(time.perf_counter() - t0)
                if v != last + 1:
                    raise SystemExit("actor counter out of order")
                last = v
            return statistics.median(lat)

        return run

    sides = [Side("troupe `troupe.spawn(Counter)`, `h.incr(1).result()`", lat_run(lambda: h.incr(1).result()),
                  lambda: [h.incr(0).result() for _ in range(10)] and None)]
    ray_actor = None
    if p.ray:
        ray = p.ray
        ray_actor = ray.remote(_tasks.Counter).remote()
        sides.append(Side("Ray actor `A.remote()`, `ray.get(a.incr.remote(1))`",
                          lat_run(lambda: ray.get(ray_actor.incr.remote(1))),
                          lambda: [ray.get(ray_actor.incr.remote(0)) for _ in range(10)] and None))
    # references, not peers: a stateless pool's single-task round trip
    sides.append(Side("(reference) ProcessPoolExecutor `submit(f).result()`",
                      lat_run(_ppe_counter(p)), None))
    alternate("actor_rt", sides, a.runs)
    tr = sides[0].median
    rows = [[s.name, fmt_time(s.median), s.spread(), fmt_ratio(s.median / tr)] for s in sides]
    if not p.ray:
        rows.insert(1, skipped_row(p, "Ray actor", 4))
    out("### actor_rt: one method call on an actor in a worker process, round trip\n")
    out(f"Median latency of {calls:,} sequential calls (each waits for its result), median over {a.runs} runs; "
        f"troupe's actor runs in pid {troupe.worker_of(h)}; {machine_note()}.\n")
    out(table(["side", "median latency", "min – max (run medians)", "side's time ÷ troupe's"], rows))
    out()
    ray_ratio = tr / sides[1].median if p.ray else None
    out(goal("troupe's latency ≤ 0.1× the Ray actor's", ray_ratio, 0.1, False))
    out()
    del h
    if ray_actor is not None:
        p.ray.kill(ray_actor)
    gc.collect()


def _ppe_counter(p: Peers) -> Callable[[], int]:
    state = [0]

    def call() -> int:
        state[0] = p.ppe.submit(_tasks.inc, state[0]).result()
        return state[0]

    return call


STARTUP_SCRIPTS = {
    "troupe": """
        import time; t0 = time.perf_counter()
        import troupe, _tasks
        r = troupe.isolated(_tasks.inc)(1)
        t1 = time.perf_counter()
        """,
    "ray": """
        import time; t0 = time.perf_counter()
        import ray, _tasks
        ray.init()
        r = ray.get(ray.remote(_tasks.inc).remote(1))
        t1 = time.perf_counter()
        ray.shutdown()
        """,
    "ppe": """
        import time; t0 = time.perf_counter()
        import concurrent.futures, _tasks
        ex = concurrent.futures.ProcessPoolExecutor()
        r = ex.submit(_tasks.inc, 1).result()
        t1 = time.perf_counter()
        ex.shutdown()
        """,
    "loky": """
        import time; t0 = time.perf_counter()
        import loky, _tasks
        r = loky.get_reusable_executor().submit(_tasks.inc, 1).result()
        t1 = time.perf_counter()
        """,
    "pool": """
        import time; t0 = time.perf_counter()
        import multiprocessing, _tasks
        with multiprocessing.Pool() as pool:
            r = pool.apply(_tasks.inc, (1,))
            t1 = time.perf_counter()
        """,
}
STARTUP_NAMES = {
    "troupe": "troupe: `import troupe` → `isolated(inc)(1)`",
    "ray": "Ray: `import ray`, `ray.init()` → `ray.get(f.remote(1))`",
    "ppe": "ProcessPoolExecutor(): import → first `submit(...).result()`",
    "loky": "loky: import → `get_reusable_executor().submit(...).result()`",
    "pool": "multiprocessing.Pool(): import → first `apply`",
}


def run_fresh(key: str, first: list[float]) -> float:
    """One fresh interpreter: returns its wall time (start to exit); appends
    the import-to-first-result time it measured itself to first."""
    code = textwrap.dedent(STARTUP_SCRIPTS[key]) + (
        "assert r == 2\nimport json; print('BENCH ' + json.dumps(t1 - t0), flush=True)\n"
    )
    if foreign_troupe_workers():
        STARTUP_BUSY[key] = STARTUP_BUSY.get(key, 0) + 1
    t_start = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=HERE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        so, se = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SystemExit(f"startup {key}: no result in 180 s")
    wall = time.perf_counter() - t0
    if key == "ray":  # anything its cluster left behind (a raylet, a worker) goes now
        left, mine = [], _mine()
        for q in psutil.process_iter():
            try:
                if q.create_time() >= t_start - 1 and q.pid not in mine and is_ray_process(q):
                    left.append(q)
            except psutil.Error:
                pass
        kill_leftovers(left, "after a Ray start-up run")
    line = [ln for ln in so.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"startup {key} failed (exit {proc.returncode}):\n{so}\n{se[-3000:]}")
    first.append(json.loads(line[0][6:]))
    return wall


STARTUP_BUSY: dict[str, int] = {}  # runs launched while other troupe programs had workers


def _mine() -> set[int]:
    return {c.pid for c in psutil.Process().children(recursive=True)}


def case_startup(p: Peers, a: argparse.Namespace) -> None:
    keys = ["troupe", "ppe", "pool", "loky"] + (["ray"] if p.want_ray and p.ray_skip is None else [])
    firsts: dict[str, list[float]] = {k: [] for k in keys}
    sides = [Side(STARTUP_NAMES[k], (lambda k=k: run_fresh(k, firsts[k]))) for k in keys]
    STARTUP_BUSY.clear()
    alternate("startup", sides, a.runs)
    tr_first = statistics.median(firsts["troupe"])
    rows = []
    for k, s in zip(keys, sides):
        f = statistics.median(firsts[k])
        rows.append([s.name, fmt_time(f), f"{fmt_time(min(firsts[k]))} – {fmt_time(max(firsts[k]))}",
                     fmt_time(s.median), fmt_ratio(tr_first / f)])
    if "ray" not in keys:
        rows.append(skipped_row(p, "Ray", 5))
    out("### startup: a fresh interpreter each run, from the import to the first result\n")
    out(f"'import → first result' is measured inside the new process (its clock starts before the import); "
        f"'process wall' is from launching `python -c ...` to its exit (interpreter start, shutdown of the "
        f"workers included; Ray: `ray.shutdown()` too). Default settings everywhere (Ray: plain `ray.init()`). "
        f"{a.runs} runs; {machine_note()}; troupe runs launched while other troupe programs of this user "
        f"had workers (a shared budget: the first call may wait for a slot): {STARTUP_BUSY.get('troupe', 0)}.\n")
    out(table(["side", "import → first result", "min – max", "process wall", "troupe ÷ side"], rows))
    out()
    ray_ratio = tr_first / statistics.median(firsts["ray"]) if "ray" in keys else None
    out(goal("troupe's time to first result ≤ 0.25× Ray's", ray_ratio, 0.25, False))
    out()


def case_cpu_map(p: Peers, a: argparse.Namespace) -> None:
    chunks = 16 if a.quick else 64
    # calibrate once: n loop iterations take ~50 ms here, sequentially
    probe = 200_000
    best = min(_time_once(lambda: _tasks.spin(probe)) for _ in range(3))
    n = max(1000, int(probe * 0.050 / best))
    one = min(_time_once(lambda: _tasks.spin(n)) for _ in range(3))
    want = _tasks.spin(n)
    ok = lambda r: list(r) == [want] * chunks  # noqa: E731
    items = [n] * chunks
    t, ppe, pool, lk = p.troupe_ex, p.ppe, p.pool, p.loky
    sides = [
        Side("sequential (this process)", timed(lambda: [_tasks.spin(x) for x in items], ok, "sequential")),
        Side("troupe `ex.map(isolated(spin), ...)`", timed(lambda: list(t.map(p.t_spin, items)), ok, "troupe"),
             p.warm_troupe),
        Side("ProcessPoolExecutor `map`", timed(lambda: list(ppe.map(_tasks.spin, items)), ok, "ppe"), p.warm_ppe),
        Side("multiprocessing.Pool `map`", timed(lambda: pool.map(_tasks.spin, items), ok, "pool"), p.warm_pool),
        Side("loky `map`", timed(lambda: list(lk.map(_tasks.spin, items)), ok, "loky"), p.warm_loky),
    ]
    if p.ray:
        ray, spin_r = p.ray, p.r["spin"]
        sides.append(Side("Ray tasks, `ray.get(refs)`", timed(lambda: ray.get([spin_r.remote(x) for x in items]), ok,
                                                              "ray"), p.warm_ray))
    alternate("cpu_map", sides, a.runs)
    seq = sides[0].median
    rows = [[s.name, s.workers_text(), fmt_time(s.median), s.spread(), fmt_ratio(seq / s.median)] for s in sides]
    if not p.ray:
        rows.append(skipped_row(p, "Ray tasks", 5))
    out(f"### cpu_map: {chunks} chunks of pure-Python CPU work, ~50 ms each\n")
    out(f"**os.cpu_count() = {NCPU}**. One chunk = `spin({n:,})`, calibrated once: {fmt_time(one)} sequentially. "
        f"Speed-up = the sequential median ÷ the side's median. {a.runs} runs; {machine_note()}.\n")
    out(table(["side", "workers", "median", "min – max", "speed-up over sequential"], rows))
    out()
    target = 0.9 * NCPU
    out(goal(f"troupe's speed-up ≥ {target:.1f}× on {NCPU} cores", seq / sides[1].median, target, True))
    out()


def _time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def case_array(p: Peers, a: argparse.Namespace) -> None:
    import numpy as np

    nbytes = 20_000_000 if a.quick else 100_000_000
    arr = np.arange(nbytes // 8, dtype=np.float64)
    sample = arr[:: 4099].copy()

    def ok(b: Any) -> bool:
        return isinstance(b, np.ndarray) and b.shape == arr.shape and b.dtype == arr.dtype and \
            np.array_equal(b[:: 4099], sample) and b[-1] == arr[-1]

    # every warm-up imports numpy in the workers (troupe's workers retire after
    # 2 s idle: without it, its new workers would import numpy in the timed run)
    w_troupe, w_ppe, w_pool, w_loky = (lambda: p.warm_troupe(_tasks.nap_numpy)), (lambda: p.warm_ppe(
        _tasks.nap_numpy)), (lambda: p.warm_pool(_tasks.nap_numpy)), (lambda: p.warm_loky(_tasks.nap_numpy))
    w_ray = lambda: p.warm_ray(_tasks.nap_numpy)  # noqa: E731
    t, ppe, pool, lk = p.troupe_ex, p.ppe, p.pool, p.loky
    sides = [
        Side("troupe `ex.submit(isolated(echo), a).result()`", timed(lambda: t.submit(p.t_echo, arr).result(), ok,
                                                                     "troupe"), w_troupe),
        Side("ProcessPoolExecutor `submit(echo, a).result()`", timed(lambda: ppe.submit(_tasks.echo, arr).result(), ok,
                                                                     "ppe"), w_ppe),
        Side("multiprocessing.Pool `apply(echo, (a,))`", timed(lambda: pool.apply(_tasks.echo, (arr,)), ok, "pool"),
             w_pool),
        Side("loky `submit(echo, a).result()`", timed(lambda: lk.submit(_tasks.echo, arr).result(), ok, "loky"),
             w_loky),
    ]
    if p.ray:
        ray, echo_r = p.ray, p.r["echo"]
        sides.append(Side("Ray `ray.get(echo.remote(a))` (put included)",
                          timed(lambda: ray.get(echo_r.remote(arr)), ok, "ray"), w_ray))
        ref: list[Any] = [None]

        def warm_put() -> int:
            ref[0] = ray.put(arr)  # untimed
            return w_ray()

        sides.append(Side("Ray `ray.get(echo.remote(ref))` (`ray.put(a)` excluded)",
                          timed(lambda: ray.get(echo_r.remote(ref[0])), ok, "ray ref"), warm_put))
    alternate("array", sides, a.runs)
    tr = sides[0].median
    rows = [[s.name, fmt_time(s.median), s.spread(), f"{nbytes * 2 / s.median / 1e9:.2f} GB/s",
             fmt_ratio(s.median / tr)] for s in sides]
    if not p.ray:
        rows.append(skipped_row(p, "Ray", 5))
    out(f"### array: a {nbytes / 1e6:.0f} MB float64 numpy array to a worker and back\n")
    out(f"The worker's `echo(a)` returns the array it got; time from the send to the array back here (checked "
        f"untimed). GB/s counts both directions. Every warm-up imports numpy in the workers first. {a.runs} runs; {machine_note()}.\n")
    out(table(["side", "median round trip", "min – max", "throughput", "side's time ÷ troupe's"], rows))
    out()
    out(goal("troupe ≥ 10× faster than ProcessPoolExecutor", sides[1].median / tr, 10, True))
    out()


def case_rss(p: Peers, a: argparse.Namespace) -> None:
    """Idle workers' memory: each pool warmed (it ran _tasks.nap), then measured at once."""
    rows = []
    troupe_uss = None

    def add(name: str, pids: list[int]) -> None:
        nonlocal troupe_uss
        mems = []
        for pid in pids:
            try:
                mems.append(mem_of(pid))
            except psutil.Error:
                pass
        if not mems:
            rows.append([name, "0", "–", "–", "–", "–"])
            return
        rss = statistics.median(m[0] for m in mems) / 2**20
        uss = statistics.median(m[1] for m in mems) / 2**20
        pss = statistics.median(m[2] for m in mems) / 2**20
        if troupe_uss is None:
            troupe_uss = (rss, uss)
        rows.append([name, str(len(mems)), f"{rss:.1f} MiB", f"{uss:.1f} MiB", f"{pss:.1f} MiB",
                     f"{troupe_uss[0] / rss:.2f}× / {troupe_uss[1] / uss:.2f}×"])

    p.warm_troupe()
    add("troupe worker (`python -m troupe._worker`)", p.troupe.worker_pids())
    p.warm_ppe()
    add("ProcessPoolExecutor worker (fork)", [q.pid for q in p.ppe._processes.values()])
    p.warm_pool()
    add("multiprocessing.Pool worker (fork)", [q.pid for q in p.pool._pool])
    p.warm_loky()
    add("loky worker (fork+exec)", [q.pid for q in p.loky._processes.values()])
    ray_sys = None
    if p.ray:
        p.warm_ray()
        ray_procs = [q for q in psutil.Process().children(recursive=True) if is_ray_process(q)]
        workers = [q.pid for q in ray_procs if q.name() == "ray::IDLE"]
        add("Ray worker (`ray::IDLE`)", workers)
        others = [q for q in ray_procs if q.pid not in workers]
        total = 0
        for q in others:
            try:
                total += q.memory_info().rss
            except psutil.Error:
                pass
        ray_sys = (len(others), total / 2**20, ", ".join(sorted({q.name() for q in others})))
    else:
        rows.append(skipped_row(p, "Ray worker", 6))
    out("### rss: one idle worker process's memory\n")
    out("Each pool warmed up (its workers ran `nap`, a stdlib-only function), then measured while idle; "
        "median over the pool's workers. RSS counts pages shared with other processes (the fork-based pools share "
        "the parent's: this program forks them before it imports numpy, Ray or troupe); USS is the memory "
        f"only that process holds; PSS splits shared pages. One sample; {machine_note()}.\n")
    out(table(["side", "workers", "RSS", "USS", "PSS", "troupe ÷ side (RSS / USS)"], rows))
    out()
    if ray_sys:
        out(f"Ray's own processes beside its workers ({ray_sys[0]}: {ray_sys[2]}) hold {ray_sys[1]:.0f} MiB RSS "
            "in all; troupe and the pools have none (their coordination runs in the program's process).")
        out()
    out("No goal (reported for comparison).")
    out()


# ---------------------------------------------------------------- main
def main() -> int:
    a, chosen = parse_args(__doc__, CASES, "fewer items: a smoke run, timings not for comparison",
                           lambda ap: ap.add_argument("--no-ray", action="store_true", help="skip Ray"))
    end_on_signals()
    started = time.perf_counter()
    peers = Peers(want_ray=not a.no_ray)
    out("## troupe beside ProcessPoolExecutor, multiprocessing.Pool, loky and Ray\n")
    out(run_header(a.quick))
    try:
        if any(c != "startup" for c in chosen):
            peers.start()
        else:
            try:
                import ray  # noqa: F401
            except Exception as e:
                peers.ray_skip = f"not importable ({type(e).__name__}: {e})"
        import numpy
        vers = troupe_source(", ".join(f"{k} {v}" for k, v in sorted(peers.versions.items())))
        out(f"Versions: {vers}{', ' if vers else ''}numpy {numpy.__version__}, psutil {psutil.__version__}."
            + (f" **Ray skipped**: {peers.ray_skip}." if peers.ray_skip else ""))
        out()
        for c in chosen:
            if c == "startup":
                peers.stop()  # a quiet machine, and no worker of ours holds troupe's budget
            log(f"case {c}")
            METER.start()
            globals()[f"case_{c}"](peers, a)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        peers.stop()
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
