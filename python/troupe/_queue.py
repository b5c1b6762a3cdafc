"""troupe.Queue: a bounded queue between processes, in shared memory.

Any process of the same user can use it by name (``troupe.Queue("jobs")``
creates it or opens it), and it can be passed to isolated calls and actors.
Items are stored in the queue's shared heap: int, float, str, bool and
bytes as they are (a memoryview as bytes: one copy, into the heap; ``get_view``
reads a bytes item in place, without a copy), anything else pickled
(protocol 5); each put and get
is one transaction of that heap (troupe.shm), so a process killed at any
instruction has put (or taken) an item wholly or not at all, and a put or a
get inside ``heap.atomically`` joins that transaction. A blocked ``get``
sleeps on a futex in the shared memory (no CPU while idle) and is woken by
the put, not by polling; ``put`` blocks likewise while the queue is full.
It follows ``queue.Queue``: ``put(item, block, timeout)``, ``get(block,
timeout)``, ``put_nowait``/``get_nowait`` raising ``queue.Full``/
``queue.Empty``, ``qsize``; plus ``get_view``, ``close()`` and
``await get_async()``/``await put_async()``.
"""

from __future__ import annotations

import queue as _stdqueue
import time
from typing import Any

from . import _core
from .shm import Heap, _shm_name

__all__ = ["Queue"]

_SLICE = 0.1  # seconds a wait lasts before Python looks again (signals)


class Queue:
    """A bounded multi-producer multi-consumer queue shared by processes.

    ``Queue(name, maxsize=1024)`` opens the queue `name` or creates it with
    room for `maxsize` items (an existing queue keeps its size). Its heap
    (``heap``) is a shared-memory segment of at most `heap_size` bytes.
    """

    def __init__(self, name: str, maxsize: int = 1024, *, heap_size: int = 256 << 20) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1 (the queue is bounded)")
        self.name = name
        hname = "queue." + name
        try:
            self.heap = Heap.open(hname)
        except LookupError:
            try:
                self.heap = Heap.create(hname, size=heap_size)
            except FileExistsError:  # another process created it meanwhile
                self.heap = Heap.open(hname)
        self._q = _core.queue_create(self.heap._box, name, maxsize)

    @property
    def maxsize(self) -> int:
        return int(self._q.capacity)

    # ---- put
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Puts item, waiting while the queue is full (queue.Full at the timeout)."""
        if self._q.put_item(item):  # the common case: room at once
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._q.put_item(item):
            if not block:
                raise _stdqueue.Full
            left = _SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _stdqueue.Full
            self._q.wait(True, min(left, _SLICE))

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    # ---- get
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The oldest item, waiting while the queue is empty (queue.Empty at
        the timeout, or at once when it is closed and empty)."""
        found, item = self._q.get_item()
        if found:  # the common case: an item at once
            return item
        return self._wait_get(self._q.get_item, block, timeout)

    def get_view(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get``, except that a ``bytes`` item (or one put as a
        ``memoryview``) of more than 8 bytes comes back as a read-only
        ``memoryview`` of the queue's shared memory, not copied. The memory
        is this process's until the view (and every view or array made from
        it) is released, and is freed then, or when the process dies. Other
        items come back as ``get`` returns them. Not inside ``atomically``."""
        found, item = self._q.get_view()
        if found:
            return item
        return self._wait_get(self._q.get_view, block, timeout)

    def _wait_get(self, take: Any, block: bool, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found, item = take()
            if found:
                return item
            if not block or self._q.closed():
                raise _stdqueue.Empty
            left = _SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _stdqueue.Empty
            self._q.wait(False, min(left, _SLICE))

    def get_nowait(self) -> Any:
        return self.get(block=False)

    # ---- asyncio
    async def get_async(self, timeout: float | None = None) -> Any:
        """``get`` for a coroutine: the event loop keeps running while it waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.get_nowait()
            except _stdqueue.Empty:
                if self._q.closed():
                    raise
            left = _SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _stdqueue.Empty
            await _to_thread(self._q.wait, False, min(left, _SLICE))

    async def put_async(self, item: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.put_nowait(item)
            except _stdqueue.Full:
                pass
            left = _SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _stdqueue.Full
            await _to_thread(self._q.wait, True, min(left, _SLICE))

    # ---- state
    def qsize(self) -> int:
        return int(self._q.size())

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return self.qsize() >= self.maxsize

    def close(self) -> None:
        """No put succeeds afterwards (ShutdownError); gets drain what is left."""
        self._q.close()

    def closed(self) -> bool:
        return bool(self._q.closed())

    def __reduce__(self) -> Any:
        return _reopen, (self.name,)

    def __repr__(self) -> str:
        return f"troupe.Queue({self.name!r}, maxsize={self.maxsize})"

    @staticmethod
    def remove(name: str, *, missing_ok: bool = False) -> None:
        """Removes a queue's shared memory (processes using it keep their mapping)."""
        Heap.remove("queue." + name, missing_ok=missing_ok)


async def _to_thread(fn: Any, *args: Any) -> Any:
    import asyncio  # only for the asyncio methods

    return await asyncio.to_thread(fn, *args)


def _reopen(name: str) -> Queue:
    q = Queue.__new__(Queue)
    q.name = name
    q.heap = Heap.open("queue." + name)
    q._q = _core.queue_open(q.heap._box, name)
    return q


_ = _shm_name  # the heap naming rule lives in shm
