"""Placement of remote actors from Python (troupe.spawn_with, troupe.Placement,
the C++ proc::Placement): spread actors get workers of their own and one
killed leaves the others serving; a group shares a worker; next_to joins
another actor's worker; fresh fails at once when every worker the budget
allows hosts actors. Each test runs in a fresh interpreter with a budget
file of its own (other troupe programs on the machine hold no slot of it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import troupe
from conftest import run_script


def run(tmp_path: Path, body: str) -> list[str]:
    r = run_script(
        f"""
        import os, signal, troupe, helpers
        from troupe import Placement, spawn, spawn_with, worker_of
        troupe.init(budget=3, budget_file={str(tmp_path / "budget")!r})
        """
        + body
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_spread_actors_have_workers_of_their_own_and_survive_a_kill(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        """
        a, b, c = (spawn(helpers.Counter) for _ in range(3))
        print(len({worker_of(a), worker_of(b), worker_of(c)}))
        os.kill(worker_of(b), signal.SIGKILL)
        try:
            b.add(1).result(30)
        except troupe.WorkerLost:
            print("lost")
        print(a.add(2).result(30), c.add(3).result(30))
        """,
    )
    assert out == ["3", "lost", "2", "3"]


def test_group_next_to_and_fresh(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        """
        g1 = spawn_with(Placement.group("io"), helpers.Counter)
        g2 = spawn_with(Placement.group("io"), helpers.Counter, 5)
        print(worker_of(g1) == worker_of(g2), g2.add(1).result(30))
        n = spawn_with(Placement.next_to(g1), helpers.Counter)
        print(worker_of(n) == worker_of(g1))
        f1 = spawn_with(Placement.fresh(), helpers.Counter)
        f2 = spawn_with(Placement.fresh(), helpers.Counter)
        print(len({worker_of(g1), worker_of(f1), worker_of(f2)}))
        try:
            spawn_with(Placement.fresh(), helpers.Counter)  # all 3 workers host actors
        except ValueError as e:
            print("refused")
        """,
    )
    assert out == ["True", "6", "True", "3", "refused"]


def test_bad_placements_are_typed_errors() -> None:
    with pytest.raises(ValueError):
        troupe.Placement.group("")
    with pytest.raises(TypeError):
        troupe.Placement.next_to("not an actor")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        troupe.spawn_with("spread", dict)  # type: ignore[arg-type]


def test_init_call_timeout_applies_to_calls_between_workers(tmp_path: Path) -> None:
    # The root's default reaches the workers: a call made in one worker to an
    # actor in another (a direct channel) times out too.
    r = run_script(
        f"""
        import troupe, helpers
        from troupe import Placement, spawn_with
        troupe.init(budget=2, budget_file={str(tmp_path / "budget")!r}, call_timeout=0.5)
        b = spawn_with(Placement.fresh(), helpers.Napper)
        caller = troupe.isolated(helpers.call_nap, timeout=30)  # its own timeout: 30 s
        print(caller(b, 3))
        print(caller(b, 0))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["timeout", "rested"]
