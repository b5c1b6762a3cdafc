"""troupe.Executor: one executor, threads by default, worker processes on request.

A ``concurrent.futures.ThreadPoolExecutor`` (so asyncio accepts it as its
default executor): ``submit(f, ...)`` runs f on a thread; ``submit(
isolated(f), ...)`` runs f in a worker process. Both return troupe.Future.
Unlike ProcessPoolExecutor a dead worker fails only the calls it ran
(WorkerLost); the executor stays usable.

Invariants:
  E1. Every future this executor returned and that is not done is in
      ``_isolated`` (worker calls) or wraps a thread-pool future; shutdown
      cancels or waits for all of them.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import itertools
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ._future import Future
from ._isolated import Isolated

__all__ = ["Executor"]

T = TypeVar("T")


def _run_into(fut: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        r = fn(*args, **kwargs)
    except BaseException as e:
        fut.set_exception(e)
    else:
        fut.set_result(r)


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


def _unwrap(fn: Any, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """asyncio.to_thread(isolated(f), x) submits partial(ctx.run, isolated(f), x)."""
    if (
        isinstance(fn, functools.partial)
        and isinstance(getattr(fn.func, "__self__", None), contextvars.Context)
        and fn.args
        and isinstance(fn.args[0], Isolated)
        and not fn.keywords
    ):
        return fn.args[0], fn.args[1:] + args
    return fn, args


class Executor(concurrent.futures.ThreadPoolExecutor):
    """Runs callables on threads, and ``isolated`` ones in worker processes."""

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "troupe",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self._isolated: weakref.WeakSet[Future[Any]] = weakref.WeakSet()  # E1
        self._isolated_lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fn, args = _unwrap(fn, args)
        if isinstance(fn, Isolated):
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut = fn.submit(*args, **kwargs)
            self._track(fut)
            return fut
        out: Future[T] = Future()
        inner = super().submit(_run_into, out, fn, args, kwargs)
        out._troupe_inner = inner
        inner.add_done_callback(lambda i: out.cancel() if i.cancelled() else None)
        return out

    def _track(self, fut: Future[Any]) -> None:
        # E1: a pending call's future is alive (its call holds it until it is
        # delivered), so a weak set loses none that shutdown must wait for.
        with self._isolated_lock:
            self._isolated.add(fut)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """As ``Executor.map``; for an isolated fn, ``chunksize`` items go to a
        worker in one call."""
        if not isinstance(fn, Isolated) or chunksize <= 1:
            futures = [self.submit(fn, *args) for args in zip(*iterables)]
            return _results(futures, timeout, flat=False)
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        it = zip(*iterables)
        chunks = iter(lambda: list(itertools.islice(it, chunksize)), [])
        runner: Any = Isolated(functools.partial(_run_chunk, fn.fn), timeout=fn.timeout)
        runner._name = fn._name
        futures = [self.submit(runner, chunk) for chunk in chunks]
        return _results(futures, timeout, flat=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        with self._isolated_lock:
            pending = [f for f in self._isolated if not f.done()]
        if cancel_futures:
            for f in pending:
                f.cancel()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            concurrent.futures.wait(pending)

    def set_as_event_loop_default(self, loop: Any = None) -> None:
        """Makes this the default executor of loop (default: the running loop)."""
        import asyncio

        (loop or asyncio.get_running_loop()).set_default_executor(self)


def _results(futures: list[Future[Any]], timeout: float | None, flat: bool) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout

    def gen() -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                f = futures.pop()
                left = None if deadline is None else deadline - time.monotonic()
                if flat:
                    yield from f.result(left)
                else:
                    yield f.result(left)
        finally:
            for f in futures:
                f.cancel()

    return gen()
