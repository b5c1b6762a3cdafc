"""troupe: use every core from Python, without the GIL in the way.

One executor runs work on threads or, with ``isolated``, in worker processes
that each have their own interpreter and GIL; actors (any object made
active) live in this process or in workers and answer method calls with
futures; ``when`` runs a function atomically over several actors. Futures
follow ``concurrent.futures`` and are awaitable. The runtime underneath is
troupe's C++ core (``troupe._core``).

    import troupe

    @troupe.isolated
    def checksum(data: bytes) -> int:
        return sum(data) % 65521

    with troupe.Executor() as ex:
        print(ex.submit(checksum, b"hello").result())

Importing troupe starts nothing and prints nothing; the runtime starts on
first use (or ``troupe.init()``).
"""

from __future__ import annotations

from ._actor import (
    Actor,
    LocalActor,
    Placement,
    RemoteActor,
    actor,
    backpressure_stats,
    set_backpressure,
    spawn,
    spawn_with,
    when,
    when_all,
    when_any,
    worker_of,
)
from ._errors import (
    BadMessage,
    BadSegment,
    HeapFull,
    NotFound,
    CallTimeout,
    Overloaded,
    RemoteError,
    RemoteTraceback,
    ShutdownError,
    TroupeError,
    WorkerLost,
)
from ._executor import Executor
from ._future import Future
from ._isolated import Isolated, isolated
from ._runtime import init, is_worker, shutdown, start_trace, stats, stop_trace, trace, worker_pids
from ._queue import Queue
from ._serial import Fd

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "BadMessage",
    "BadSegment",
    "HeapFull",
    "NotFound",
    "CallTimeout",
    "Overloaded",
    "Executor",
    "Fd",
    "Future",
    "Isolated",
    "Queue",
    "LocalActor",
    "Placement",
    "RemoteActor",
    "RemoteError",
    "RemoteTraceback",
    "ShutdownError",
    "TroupeError",
    "WorkerLost",
    "actor",
    "backpressure_stats",
    "init",
    "is_worker",
    "isolated",
    "set_backpressure",
    "shutdown",
    "spawn",
    "spawn_with",
    "start_trace",
    "stats",
    "stop_trace",
    "trace",
    "when",
    "when_all",
    "when_any",
    "worker_of",
    "worker_pids",
]
