"""troupe.Future: a concurrent.futures.Future that is also awaitable.

A future of a call to a worker process is completed by whichever comes
first (src/python/core.cpp PY3): the completer thread, which delivers replies in
batches under one GIL acquisition, or a thread waiting in ``result()``,
which waits in C++ with the GIL released (taking the reply from the shared
ring itself when it can) and delivers it on the spot. Waits return to
Python every 100 ms at most, so Ctrl-C raises KeyboardInterrupt promptly.

``await fut`` reaches the running event loop through its LoopBridge: the
loop watches one eventfd per loop (``loop.add_reader``) and runs every
completion that arrived since it last looked, in one go, instead of one
``call_soon_threadsafe`` per result.

Invariants:
  F1. A future is set once; a late outcome (after cancel) is dropped and its
      descriptors closed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
import weakref
from typing import Any, Callable, Generator, TypeVar

from . import _core
from ._errors import _Conflict, exception_types, from_code
from ._serial import decode_quietly, decode_reply

__all__ = ["Future", "deliver", "loop_bridge"]

T = TypeVar("T")
_CANCELLED_AND_NOTIFIED = concurrent.futures._base.CANCELLED_AND_NOTIFIED


class Future(concurrent.futures.Future[T]):
    """The result of work submitted to troupe.

    A ``concurrent.futures.Future`` (``as_completed``, ``wait`` and
    ``asyncio.wrap_future`` work on it) that can also be awaited directly.
    """

    _troupe_call: Any = None
    _troupe_decode: Callable[[Any, Any], tuple[bool, Any]] | None = None
    _troupe_inner: concurrent.futures.Future[Any] | None = None

    def _troupe_wait(self, timeout: float | None) -> float | None:
        """Waits in C++ for a pending call (GIL released); returns the time left."""
        call = self._troupe_call
        if call is None or self.done():
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        left = timeout
        try:
            while not call.done():
                if not call.wait(-1.0 if left is None else left) and deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return 0.0
        finally:
            # core.cpp PY3: a reply that came while we waited is ours to deliver, even
            # if a signal (KeyboardInterrupt) ends the wait.
            if call.done() and call.claim():
                deliver(self, call)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def result(self, timeout: float | None = None) -> T:
        return super().result(self._troupe_wait(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return super().exception(self._troupe_wait(timeout))

    def cancel(self) -> bool:
        """Cancels the work if it has not finished (a call in a worker is
        skipped if it has not started there; one that runs is left to finish
        and its result dropped)."""
        inner = self._troupe_inner
        if inner is not None and not inner.cancel() and inner.running():
            return False
        if not super().cancel():
            return False
        call = self._troupe_call
        if call is not None:
            call.cancel()
        # Nobody else will: wait() and as_completed() count a cancelled
        # future as done only once it is notified.
        self.set_running_or_notify_cancel()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        """As Future's, but a second call on a cancelled future returns False."""
        with self._condition:
            if self._state == _CANCELLED_AND_NOTIFIED:
                return False
            return super().set_running_or_notify_cancel()

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done():
            import asyncio  # not at import: it costs a third of `import troupe`

            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            bridge = loop_bridge(loop)
            self.add_done_callback(lambda _f: bridge.post(functools.partial(_wake, waiter)))
            waiter.add_done_callback(lambda w: self.cancel() if w.cancelled() else None)
            yield from waiter
        return self.result()

    __iter__ = __await__


def _wake(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


def deliver(fut: Future[Any], call: Any) -> None:
    """Sets fut from its call's outcome (the completer's and waiters' PY3 in core.cpp)."""
    kind, a, b = call.outcome()
    if fut.done():  # cancelled meanwhile (F1)
        if kind == "ok":
            decode_quietly(b)
        return
    ok: bool
    value: Any
    try:
        if kind == "error":
            ok, value = False, from_code(a, b)
        else:
            decode = fut._troupe_decode or (lambda x, y: decode_reply(x, y))
            ok, value = decode(a, b)
    except BaseException as e:  # a reply we cannot read
        ok, value = False, e
    try:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled while we decoded (F1)


_core.set_deliver(deliver)  # the completer's (core.cpp PY1), here and in workers
_core.set_error_types(exception_types(), _Conflict)  # troupe::Error codes -> these types

# ------------------------------------------------------------------ event loops
_bridges: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def loop_bridge(loop: Any) -> Any:
    """The LoopBridge of an asyncio event loop (created, and watched, on first use)."""
    bridge = _bridges.get(loop)
    if bridge is None:
        import asyncio

        bridge = _core.LoopBridge()
        _bridges[loop] = bridge
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            loop.add_reader(bridge.fileno(), bridge.run_pending)
        else:
            loop.call_soon_threadsafe(loop.add_reader, bridge.fileno(), bridge.run_pending)
    return bridge
