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
import contextlib
import json
import os
import sys
import threading
from typing import Any, Iterator

from . import _core

__all__ = [
    "init",
    "shutdown",
    "ensure",
    "stats",
    "worker_pids",
    "is_worker",
    "start_trace",
    "stop_trace",
    "trace",
]

_lock = threading.Lock()
_started = False
_stopped = False
_command_key: tuple[Any, ...] = ()


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "troupe._worker", json.dumps(sys.path), os.getcwd()]


def init(
    *,
    budget: int | None = None,
    idle_timeout: float = 2.0,
    budget_file: str | None = None,
    call_timeout: float | None = None,
) -> None:
    """Configures and starts the runtime. Optional; call it before first use.

    budget: worker processes at most, machine-wide, shared with every other
    troupe program of this user (default: the number of cores).
    idle_timeout: seconds an idle worker waits before it leaves.
    budget_file: where the machine-wide budget lives (default
    /dev/shm/troupe-budget-<uid>; programs that name another file do not
    share slots with the others: for tests and benchmarks).
    call_timeout: seconds after which every call to a worker that names no
    timeout of its own (isolated calls, spawns, actor method calls) fails
    with CallTimeout (default: none).

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
        if call_timeout is not None and call_timeout <= 0:
            raise ValueError(f"call_timeout must be positive, not {call_timeout}")
        _core.init(_worker_command(), budget or 0, float(idle_timeout), budget_file or "", float(call_timeout or 0.0))
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
    """Counters of the runtime, as a dict.

    Worker processes: ``alive``, ``started``, ``max_alive``, ``lost``,
    ``replies_to_waiters``; calls ``waiting`` for a worker now and the
    ``longest_wait_ms`` among them; ``given_back`` (idle workers retired
    because another troupe program waited for a slot of the machine-wide
    budget). The thread pool: ``threads``, ``behaviours_run``, ``stolen``,
    ``sleeps``, ``wakes``, ``queued``.
    """
    return dict(_core.stats())


def start_trace(path: str) -> None:
    """Starts recording a timeline into ``path`` (Chrome trace / Perfetto JSON).

    Recorded: actor behaviours, multi-actor ``when`` acquisitions, calls to
    worker processes and shared-heap transactions. The file is written by
    :func:`stop_trace`. ``TROUPE_TRACE=path.json`` in the environment records
    the whole run instead (each worker process writes ``path.<pid>.json``).
    Raises ``ValueError`` if a recording is already running.
    """
    _core.trace_start(os.fspath(path))


def stop_trace() -> int:
    """Stops recording, writes the file and returns the number of events.

    Returns 0 (and writes nothing) when no recording is running; raises
    ``troupe.TroupeError`` when the file cannot be written.
    """
    return int(_core.trace_stop())


@contextlib.contextmanager
def trace(path: str) -> Iterator[None]:
    """Records a timeline of the block into ``path`` (see :func:`start_trace`)."""
    start_trace(path)
    try:
        yield
    finally:
        stop_trace()


def worker_pids() -> list[int]:
    """The process ids of the worker processes alive now."""
    return list(_core.worker_pids())


def is_worker() -> bool:
    """True inside a troupe worker process."""
    return bool(_core.is_worker())
