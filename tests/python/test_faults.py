"""Faults: dead workers, signals, threads beside the runtime, interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import troupe
from conftest import children_of, open_fds, run_script, HERE
from helpers import Counter, die, sleep_then, square


@pytest.mark.parametrize(
    "how,signame", [("kill", "signal 9"), ("abort", "signal 6"), ("segfault", "signal 11")]
)
def test_dead_worker_fails_only_its_call(ex: troupe.Executor, how: str, signame: str) -> None:
    other = ex.submit(troupe.isolated(sleep_then), 0.5, "fine")
    with pytest.raises(troupe.WorkerLost) as info:
        ex.submit(troupe.isolated(die), how).result(30)
    assert signame in str(info.value) and "helpers.die" in str(info.value)
    assert ex.submit(troupe.isolated(square), 3).result(30) == 9  # still usable
    try:
        assert other.result(30) == "fine"
    except troupe.WorkerLost:
        pass  # it shared the dead worker (budget 2): lost, never hung


def _quiet() -> None:
    """Retires every idle worker and waits (bounded) until none is left."""
    troupe._core.retire_idle_workers()
    deadline = time.time() + 10
    while time.time() < deadline and children_of(os.getpid()):
        time.sleep(0.05)


def _kill_loop(n: int) -> None:
    # The runtime's own descriptors (its IO thread's epoll and eventfd, the
    # budget file's probe) exist before the count, whichever test ran first.
    assert troupe.isolated(square)(1) == 1
    _quiet()
    fds_before = open_fds()
    for i in range(n):
        with pytest.raises(troupe.WorkerLost):
            troupe.isolated(die)("kill")
    assert troupe.isolated(square)(4) == 16
    _quiet()
    assert children_of(os.getpid()) == [], "a worker process was left behind"
    assert open_fds() <= fds_before + 2, "descriptors leaked"


def test_twenty_kills_in_a_row() -> None:
    _kill_loop(20)


@pytest.mark.stress
def test_two_hundred_kills_in_a_row() -> None:
    _kill_loop(200)


def test_dead_actor_worker_fails_its_calls() -> None:
    c = troupe.spawn(Counter)
    assert c.add(1).result(30) == 1
    os.kill(troupe.worker_of(c), signal.SIGKILL)
    with pytest.raises(troupe.WorkerLost):
        c.add(1).result(30)


def test_ctrl_c_interrupts_a_wait_promptly() -> None:
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import troupe, helpers, time\n"
            "f = troupe.isolated(helpers.sleep_then).submit(30)\n"
            "print('waiting', flush=True)\n"
            "try:\n"
            "    f.result()\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', time.monotonic(), flush=True)\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.3)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert "interrupted" in out, err
    assert float(out.split()[-1]) - sent < 1.0


def test_python_threads_beside_the_runtime_do_not_deadlock(ex: troupe.Executor) -> None:
    stop = time.monotonic() + 1.0
    errors: list[BaseException] = []
    counter = troupe.actor(Counter())

    def spin() -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1

    def submitter() -> None:
        try:
            while time.monotonic() < stop:
                assert ex.submit(troupe.isolated(square), 3).result(30) == 9
                counter.add(1).result(30)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=spin) for _ in range(2)] + [
        threading.Thread(target=submitter) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "deadlock"
    assert not errors
    assert counter.get().result(10) > 0


def test_exit_with_work_pending_is_clean() -> None:
    r = run_script(
        """
        import os, troupe, helpers
        c = troupe.spawn(helpers.Counter)
        fs = [troupe.isolated(helpers.sleep_then).submit(30) for _ in range(4)]
        c.add(1)
        print(" ".join(map(str, troupe.worker_pids())), flush=True)
        """,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    for pid in map(int, r.stdout.split()):
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the program"


def test_call_after_shutdown_is_a_typed_error() -> None:
    r = run_script(
        """
        import troupe, helpers
        assert troupe.isolated(helpers.square)(2) == 4
        troupe.shutdown()
        try:
            troupe.isolated(helpers.square)(2)
        except troupe.ShutdownError as e:
            print("shutdown error", e)
        """
    )
    assert "shutdown error" in r.stdout, r.stderr
