"""The process-wide runtime: configuration, start on first use, interpreter exit.

``init()`` is optional: the first isolated call or spawn starts the runtime
with defaults. Workers are ``sys.executable -m troupe._worker`` started by
the C++ process layer; they get this process's ``sys.path`` and working
directory on their command line (those in force when the worker starts) and
count against the same machine-wide budget as every troupe program of this
user, C++ or Python.

Invariants:
  R1. ``_core.init`` runs at most once per process, under ``_lock``; a worker
      process never runs it (its runtime was started by ``serve_worker``).
  R2. At interpreter exit (atexit) pending calls fail with ShutdownError,
      the workers leave (no zombie: each is reaped), and no thread of the
      runtime touches Python afterwards.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Any

from . import _core

__all__ = ["init", "shutdown", "ensure", "stats", "worker_pids", "is_worker"]

_lock = threading.Lock()
_started = False
_stopped = False
_command_key: tuple[Any, ...] = ()


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "troupe._worker", json.dumps(sys.path), os.getcwd()]


def init(*, budget: int | None = None, idle_timeout: float = 2.0, budget_file: str | None = None) -> None:
    """Configures and starts the runtime. Optional; call it before first use.

    budget: worker processes at most, machine-wide, shared with every other
    troupe program of this user (default: the number of cores).
    idle_timeout: seconds an idle worker waits before it leaves.
    budget_file: where the machine-wide budget lives (default
    /dev/shm/troupe-budget-<uid>; programs that name another file do not
    share slots with the others: for tests and benchmarks).

    Raises RuntimeError if the runtime already started.
    """
    global _started, _command_key
    with _lock:
        if _started:
            raise RuntimeError("troupe.init() must come before the first use of troupe")
        if _core.is_worker():  # R1: its runtime serves already
            _command_key = (sys.path, "")  # the same list: never refreshed
            _started = True
            return
        if budget is not None and budget < 1:
            raise ValueError(f"budget must be at least 1, not {budget}")
        _command_key = (list(sys.path), os.getcwd())
        _core.init(_worker_command(), budget or 0, float(idle_timeout), budget_file or "")
        atexit.register(_at_exit)
        _started = True


def ensure() -> None:
    """Starts the runtime with defaults unless it runs; follows sys.path."""
    global _command_key
    if not _started:
        try:
            init()
        except RuntimeError:
            pass  # another thread started it meanwhile
    if _stopped:
        from ._errors import ShutdownError

        raise ShutdownError("troupe was shut down")
    if _command_key[0] is not sys.path and _command_key[0] != sys.path:
        with _lock:
            _command_key = (list(sys.path), os.getcwd())
            _core.set_worker_command(_worker_command())


def _at_exit() -> None:
    shutdown()


def shutdown() -> None:
    """Stops the worker processes and fails what is pending (ShutdownError).

    Called at interpreter exit; call it yourself to end the workers earlier.
    Troupe cannot be used again in this process afterwards.
    """
    global _stopped
    with _lock:
        if _stopped or not _started:
            _stopped = True
            return
        _stopped = True
    _core.shutdown()


def stats() -> dict[str, int]:
    """Counters of the worker processes: alive, started, max_alive, lost, replies_to_waiters."""
    return dict(_core.stats())


def worker_pids() -> list[int]:
    """The process ids of the worker processes alive now."""
    return list(_core.worker_pids())


def is_worker() -> bool:
    """True inside a troupe worker process."""
    return bool(_core.is_worker())
