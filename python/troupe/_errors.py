"""Exceptions raised by troupe, all catchable by type.

Every error the C++ runtime reports carries a code (the `Errc` of
``troupe/error.hpp``) and a message that names the cause; ``from_code`` turns
one into the matching class here. Exceptions raised by user code in a worker
arrive as themselves (their own type), with the worker's traceback attached
as ``__cause__``; only one that cannot be rebuilt here becomes RemoteError.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Callable

__all__ = [
    "TroupeError",
    "HeapFull",
    "NotFound",
    "BadSegment",
    "WorkerLost",
    "RemoteError",
    "RemoteTraceback",
    "BadMessage",
    "CallTimeout",
    "ShutdownError",
    "Overloaded",
    "from_code",
]


class TroupeError(Exception):
    """Base class of the errors troupe itself reports.

    ``code`` is the runtime's error code name (``"worker_lost"``, ...).
    """

    code: str = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class WorkerLost(TroupeError):
    """The worker process running the call died (killed, crashed, exited).

    Only the calls that worker was running fail; the executor keeps working
    and starts a fresh worker for later calls.
    """

    code = "worker_lost"


class BadMessage(TroupeError):
    """A message between processes was truncated, forged or of the wrong type."""

    code = "bad_message"


class CallTimeout(TroupeError, TimeoutError):
    """A call ran past the timeout it was given."""

    code = "timeout"


class ShutdownError(TroupeError, RuntimeError):
    """The runtime was shut down (interpreter exit, ``troupe.shutdown()``)."""

    code = "shutdown"


class HeapFull(TroupeError, MemoryError):
    """A shared heap is full; the transaction that needed the space left no trace."""

    code = "out_of_memory"


class NotFound(TroupeError, LookupError):
    """No such heap, or a stale handle: its container was freed (read it again from a root)."""

    code = "not_found"


class BadSegment(TroupeError):
    """A shared heap's memory is not what troupe wrote there (corrupt, truncated, foreign)."""

    code = "bad_segment"


class Overloaded(TroupeError):
    """An actor's mailbox is over its limit and this thread may not wait (``outside="fail"``),
    or waited longer than ``block_for``: nothing was sent."""

    code = "overloaded"


class RemoteTraceback(Exception):
    """The worker's traceback, attached as ``__cause__`` of a remote exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n--- traceback in the worker process ---\n" + self.tb


class RemoteError(TroupeError):
    """An exception raised in a worker that could not be rebuilt here.

    ``type_name`` is its qualified type name, ``message`` its ``str()`` and
    ``remote_traceback`` the worker's formatted traceback.
    """

    code = "remote_exception"

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


# The C++ runtime's codes (troupe::Errc), in its order.
_CODES = [
    None,
    "broken_promise",
    "condition_false",
    "cancelled",
    "timeout",
    "shutdown",
    "invalid_argument",
    "bad_segment",
    "version_mismatch",
    "out_of_memory",
    "permission_denied",
    "not_found",
    "system",
    "worker_lost",
    "bad_message",
    "remote_exception",
    "overloaded",
]

_CLASSES: dict[str, type[TroupeError]] = {
    "worker_lost": WorkerLost,
    "bad_message": BadMessage,
    "timeout": CallTimeout,
    "shutdown": ShutdownError,
    "out_of_memory": HeapFull,
    "not_found": NotFound,
    "bad_segment": BadSegment,
    "version_mismatch": BadSegment,
    "overloaded": Overloaded,
}


class _PermissionDenied(TroupeError, PermissionError):
    code = "permission_denied"


_CLASSES["permission_denied"] = _PermissionDenied


def _make(code: int, message: str) -> BaseException:
    return from_code(code, message)


def exception_types() -> dict[int, Callable[[str], BaseException]]:
    """code -> a callable making the exception from a message (for _core)."""
    out: dict[int, Callable[[str], BaseException]] = {}
    for i, name in enumerate(_CODES):
        if name is not None and name not in ("remote_exception",):
            out[i] = functools.partial(_make, i)
    return out


def code_name(code: int) -> str:
    name = _CODES[code] if 0 < code < len(_CODES) else None
    return name or f"code {code}"


def from_code(code: int, message: str) -> BaseException:
    """The exception for a runtime error code and its message."""
    name = code_name(code)
    if name == "cancelled":
        return concurrent.futures.CancelledError(message)
    if name == "invalid_argument":
        return ValueError(message)
    cls = _CLASSES.get(name, TroupeError)
    return cls(message, name)


class _Conflict(BaseException):
    """Internal: a transaction conflict unwinding a Python transaction body
    (retried by the runtime; a BaseException so `except Exception` lets it
    pass). Never reaches user code outside the body."""
