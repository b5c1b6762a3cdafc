"""Tracing and runtime counters from Python: troupe.trace() writes a Chrome
trace / Perfetto JSON file of actor behaviours, multi-actor acquisitions,
worker calls and transactions; TROUPE_TRACE records a whole run (each worker
its own file); troupe.stats() shows the pool and the workers; a default call
timeout from init() fails a call that runs too long."""

from __future__ import annotations

import glob
import json
import os
import uuid
from pathlib import Path

import pytest

import troupe
from troupe import shm

from conftest import run_script
from helpers import square


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def events(path: Path) -> list[dict]:
    with open(path) as f:
        doc = json.load(f)
    assert doc["dropped"] == 0
    return [e for e in doc["traceEvents"] if e["ph"] != "M"]


def test_trace_records_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    a, b = troupe.actor(Counter()), troupe.actor(Counter())
    name = f"troupe-trace-{uuid.uuid4().hex[:8]}"
    heap = shm.Heap.create(name, size=8 << 20)
    try:
        d = heap.root("d", shm.Dict)
        with troupe.trace(str(out)):
            for i in range(20):
                a.add(1)
            troupe.when(a, b)(lambda x, y: (x.add(1), y.add(1))).result(30)
            assert troupe.isolated(square)(7) == 49
            heap.atomically(lambda: d.__setitem__("k", 1))
        evs = events(out)
    finally:
        heap.close()
        shm.Heap.remove(name, missing_ok=True)
    cats = {e["cat"] for e in evs}
    assert {"actor", "acquire", "proc", "tx"} <= cats, cats
    two = [e for e in evs if e["cat"] == "actor" and len(e["args"]["actors"]) == 2]
    assert len(two) == 1
    calls = [e for e in evs if e["cat"] == "proc"]
    assert any("square" in e["name"] and e["args"]["worker_pid"] in troupe.worker_pids() for e in calls)
    assert all(e["dur"] >= 0 for e in evs if e["ph"] == "X")
    assert troupe.stop_trace() == 0  # nothing recording now


def test_trace_twice_is_refused(tmp_path: Path) -> None:
    with troupe.trace(str(tmp_path / "a.json")):
        with pytest.raises(ValueError):
            troupe.start_trace(str(tmp_path / "b.json"))


def test_troupe_trace_environment_writes_one_file_per_process(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    r = run_script(
        """
        import troupe, helpers
        print(troupe.isolated(helpers.square)(6))
        """,
        env={**os.environ, "TROUPE_TRACE": str(out)},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["36"]
    assert any(e["cat"] == "proc" for e in events(out))
    workers = glob.glob(str(tmp_path / "env.*.json"))
    assert workers, os.listdir(tmp_path)
    served = [e for w in workers for e in events(Path(w))]
    assert all(e["pid"] != json.load(open(out))["traceEvents"][0]["pid"] for e in served)


def test_stats_show_the_pool_and_the_workers() -> None:
    c = troupe.actor(Counter())
    for _ in range(10):
        c.add(1)
    assert c.add(0).result(30) == 10
    s = troupe.stats()
    assert s["threads"] >= 1 and s["behaviours_run"] >= 11
    for key in ("waiting", "longest_wait_ms", "given_back", "alive", "lost", "stolen", "sleeps", "queued"):
        assert key in s and s[key] >= 0


def test_default_call_timeout_from_init(tmp_path: Path) -> None:
    # A budget file of its own: slots held by other troupe programs on this
    # machine must not make the second call wait past the timeout.
    r = run_script(
        f"""
        import troupe, helpers
        troupe.init(call_timeout=0.3, budget=2, budget_file={str(tmp_path / "budget")!r})
        # A timeout of its own overrides the default (a worker's start may
        # take longer than 0.3 s on a loaded machine).
        print(troupe.isolated(helpers.square, timeout=60)(2))
        try:
            troupe.isolated(helpers.sleep_then)(1.5, 1)  # the default applies
        except troupe.CallTimeout as e:
            print("timeout")
        print(troupe.isolated(helpers.square, timeout=60)(3))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4", "timeout", "9"]
