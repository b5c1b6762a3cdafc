"""Actors: any Python object made active, in this process or in a worker.

``actor(obj)`` activates obj here: each method call on the handle returns a
future and runs later as a behaviour of the C++ runtime (on its pool, or on
an asyncio loop's own thread with ``loop=``), one at a time per actor, in
send order per sending thread. ``spawn(Cls, ...)`` creates the object in a
worker process; its handle is picklable and can be given to other actors
and workers, so actor graphs span processes. ``when(a, b)(fn)`` runs fn
atomically over several local actors (the C++ multi-actor ``when``: one
global order, never a deadlock).

Invariants:
  A1. A local actor's object is touched only by its behaviours (and by
      when-blocks that hold it); the handle never reads it.
  A2. A remote actor lives while an owning handle (made by spawn in the root
      process) lives; handles unpickled elsewhere do not keep it alive.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Generic, TypeVar

from . import _core, _runtime
from ._future import Future, loop_bridge
from ._serial import decode_reply, encode

__all__ = [
    "actor",
    "spawn",
    "spawn_with",
    "Placement",
    "when",
    "when_all",
    "when_any",
    "LocalActor",
    "RemoteActor",
    "Actor",
    "worker_of",
    "set_backpressure",
    "backpressure_stats",
]

T = TypeVar("T")


# ------------------------------------------------------------------ local
class _Job:
    """One method call as a behaviour: runs it and settles its future."""

    __slots__ = ("fut", "name", "args", "kwargs")

    def __init__(self, fut: Future[Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fut, self.name, self.args, self.kwargs = fut, name, args, kwargs

    def __call__(self, obj: Any) -> None:
        fut = self.fut
        if not fut.set_running_or_notify_cancel():
            return
        try:
            r = getattr(obj, self.name)(*self.args, **self.kwargs)
        except BaseException as e:
            fut.set_exception(e)
        else:
            fut.set_result(r)


class _LocalMethod:
    __slots__ = ("core", "name")

    def __init__(self, core: Any, name: str) -> None:
        self.core, self.name = core, name

    def __call__(self, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self.core.post(_Job(fut, self.name, args, kwargs))
        return fut


class LocalActor(Generic[T]):
    """A handle on an object made active in this process (``troupe.actor``)."""

    def __init__(self, obj: T, *, loop: Any = None, mailbox_limit: int = 0) -> None:
        self._troupe_type = type(obj)
        bridge = loop_bridge(loop) if loop is not None else None
        if mailbox_limit < 0:
            raise ValueError(f"mailbox_limit must be >= 0, not {mailbox_limit}")
        self._troupe_core = _core.LocalActor(obj, bridge, mailbox_limit)

    @property
    def backlog(self) -> int:
        """Calls queued on it now, approximately (0 unless it has a mailbox limit)."""
        return int(self._troupe_core.backlog)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or not callable(getattr(self._troupe_type, name, None)):
            raise AttributeError(f"{self._troupe_type.__name__} has no method {name!r}")
        m = _LocalMethod(self._troupe_core, name)
        self.__dict__[name] = m  # the next call finds it at once
        return m

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a local actor ({self._troupe_type.__name__}) cannot leave its process: "
            "create it in a worker with troupe.spawn to share it"
        )

    def __repr__(self) -> str:
        return f"<troupe.LocalActor {self._troupe_type.__name__}>"


def actor(obj: T, *, loop: Any = None, mailbox_limit: int = 0) -> LocalActor[T]:
    """Makes obj an actor of this process (on asyncio ``loop``'s thread if given).

    ``mailbox_limit=n`` bounds its queue (0: the process's default, see
    ``set_backpressure``): while n calls are queued on it, an actor method that
    calls it is paused after it returns until the queue drained to n/2, and a
    plain thread's call blocks (the GIL released) or raises ``Overloaded``.
    """
    return LocalActor(obj, loop=loop, mailbox_limit=mailbox_limit)


def set_backpressure(mailbox_limit: int = 0, *, outside: str = "block", block_for: float = 30.0) -> None:
    """Process-wide backpressure settings (``troupe/backpressure.hpp``).

    ``mailbox_limit``: the limit of actors made from now on (0: none).
    ``outside``: what a plain thread's call to an overloaded actor does:
    ``"block"`` (until it drained to half its limit, at most ``block_for``
    seconds, then ``Overloaded``) or ``"fail"`` (``Overloaded`` at once).
    Nothing is sent when ``Overloaded`` is raised.
    """
    if outside not in ("block", "fail"):
        raise ValueError(f"outside must be 'block' or 'fail', not {outside!r}")
    if mailbox_limit < 0 or block_for <= 0:
        raise ValueError("mailbox_limit must be >= 0 and block_for > 0")
    _core.set_backpressure(mailbox_limit, outside == "fail", block_for)


def backpressure_stats() -> dict[str, int]:
    """Since start: calls paused, resumed early, not paused (skipped), blocked, refused."""
    return dict(_core.backpressure_stats())


# ------------------------------------------------------------------ remote
def _decode_created(worker: int, obj: int) -> tuple[bool, Any]:
    return True, (worker, obj)


class _RemoteMethod:
    __slots__ = ("handle", "name", "display")

    def __init__(self, handle: RemoteActor[Any], name: str) -> None:
        self.handle, self.name = handle, name
        self.display = f"{handle._troupe_cls}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.handle._troupe_send(("call", self.name, args, kwargs), self.display)


class RemoteActor(Generic[T]):
    """A handle on an object living in a worker process (``troupe.spawn``).

    Method calls return futures. Picklable: pass it to other actors and to
    isolated calls; calls from one thread run in the order they were sent.
    """

    def __init__(self, ref: Any, cls_name: str, pid: int) -> None:
        self._troupe_ref = ref
        self._troupe_cls = cls_name
        self._troupe_pid = pid

    def _troupe_send(self, payload: Any, display: str) -> Future[Any]:
        _runtime.ensure()
        blob, fds, owned = encode(payload)
        fut: Future[Any] = Future()
        fut._troupe_decode = decode_reply
        ref = self._troupe_ref
        try:
            fut._troupe_call = _core.submit(_core.CALL_METHOD, ref.worker, ref.object, display, blob, fds, 0.0, fut)
        finally:
            for fd in owned:
                os.close(fd)
        return fut

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        m = _RemoteMethod(self, name)
        self.__dict__[name] = m
        return m

    def __reduce__(self) -> Any:
        ref = self._troupe_ref
        return _remote_from, (ref.worker, ref.object, self._troupe_cls, self._troupe_pid)

    def __repr__(self) -> str:
        return f"<troupe.RemoteActor {self._troupe_cls} in pid {self._troupe_pid}>"


def _remote_from(worker: int, obj: int, cls_name: str, pid: int) -> RemoteActor[Any]:
    return RemoteActor(_core.RemoteRef(worker, obj, False), cls_name, pid)  # A2


def worker_of(handle: RemoteActor[Any]) -> int:
    """The process id of the worker that hosts a remote actor."""
    return handle._troupe_pid


class Placement:
    """Where ``spawn_with`` puts an actor (the C++ ``proc::Placement``).

    ``Placement.spread()`` (what ``spawn`` does): the worker hosting the
    fewest actors, a new one while the budget allows, so that a program's
    actors share no process (and no core) until the budget is spent.
    ``Placement.fresh()``: a worker hosting no other actor (raises ValueError
    at once when every worker the budget allows hosts actors).
    ``Placement.group(name)``: actors of one group share a worker.
    ``Placement.next_to(handle)``: in the worker of another remote actor
    (WorkerLost if it is gone).
    """

    __slots__ = ("_kind", "_group", "_worker")

    def __init__(self, kind: int, group: str = "", worker: int = 0) -> None:
        self._kind, self._group, self._worker = kind, group, worker

    @classmethod
    def spread(cls) -> Placement:
        return cls(_core.PLACE_SPREAD)

    @classmethod
    def fresh(cls) -> Placement:
        return cls(_core.PLACE_FRESH)

    @classmethod
    def group(cls, name: str) -> Placement:
        if not isinstance(name, str) or not name:
            raise ValueError("Placement.group needs a non-empty name")
        return cls(_core.PLACE_GROUP, name)

    @classmethod
    def next_to(cls, other: RemoteActor[Any]) -> Placement:
        if not isinstance(other, RemoteActor):
            raise TypeError(f"Placement.next_to takes a RemoteActor, not {type(other).__name__}")
        return cls(_core.PLACE_SPREAD, "", other._troupe_ref.worker)

    def __repr__(self) -> str:
        kind = {_core.PLACE_SPREAD: "spread", _core.PLACE_FRESH: "fresh", _core.PLACE_GROUP: "group"}[self._kind]
        if self._worker:
            return f"Placement.next_to(worker {self._worker})"
        return f"Placement.{kind}({self._group!r})" if self._group else f"Placement.{kind}()"


def spawn(cls: Callable[..., T], /, *args: Any, **kwargs: Any) -> RemoteActor[T]:
    """Creates ``cls(*args, **kwargs)`` in a worker process; returns its handle.

    Waits until the object exists; an exception from its constructor is
    raised here. Placement: ``Placement.spread()`` (see ``spawn_with``).
    """
    return spawn_with(Placement.spread(), cls, *args, **kwargs)


def spawn_with(where: Placement, cls: Callable[..., T], /, *args: Any, **kwargs: Any) -> RemoteActor[T]:
    """As ``spawn``, in the worker ``where`` names (a ``Placement``)."""
    if not isinstance(where, Placement):
        raise TypeError(f"spawn_with takes a Placement first, not {type(where).__name__}")
    _runtime.ensure()
    name = getattr(cls, "__qualname__", type(cls).__name__)
    created: Future[Any] = Future()
    created._troupe_decode = _decode_created
    created._troupe_call = _core.submit(
        _core.CALL_CREATE, where._worker, 0, f"new {name}", b"", [], 0.0, created, where._kind, where._group
    )
    worker, obj = created.result()
    handle: RemoteActor[T] = RemoteActor(_core.RemoteRef(worker, obj, True), name, 0)
    handle._troupe_pid = handle._troupe_send(("new", cls, args, kwargs), f"{name}.__init__").result()
    return handle


class Actor:
    """Optional base class: ``Cls.local(...)`` and ``Cls.spawn(...)``."""

    @classmethod
    def local(cls: type[T], *args: Any, **kwargs: Any) -> LocalActor[T]:
        """Creates the object here and makes it an actor."""
        return LocalActor(cls(*args, **kwargs))

    @classmethod
    def spawn(cls: type[T], *args: Any, **kwargs: Any) -> RemoteActor[T]:
        """Creates the object in a worker process."""
        return spawn(cls, *args, **kwargs)


# ------------------------------------------------------------------ when
def when(*targets: Any) -> Callable[[Callable[..., T]], Future[T]]:
    """``when(a, b, fut)(fn)``: runs fn(a_obj, b_obj, fut_value) once fut is
    done, holding the local actors a and b at once (atomic over both)."""
    for t in targets:
        if not isinstance(t, (LocalActor, concurrent.futures.Future)):
            raise TypeError(f"when() takes local actors and futures, not {type(t).__name__}")

    def run(fn: Callable[..., T]) -> Future[T]:
        result: Future[T] = Future()
        futures = [t for t in targets if isinstance(t, concurrent.futures.Future)]

        def go(_: Any = None) -> None:
            values: dict[int, Any] = {}
            for i, t in enumerate(targets):
                if isinstance(t, concurrent.futures.Future):
                    try:
                        values[i] = t.result()
                    except BaseException as e:
                        result.set_exception(e)
                        return
            cores: list[Any] = []
            index: dict[int, int] = {}
            for t in targets:
                if isinstance(t, LocalActor) and id(t._troupe_core) not in index:
                    index[id(t._troupe_core)] = len(cores)
                    cores.append(t._troupe_core)

            def job(*objs: Any) -> None:
                if not result.set_running_or_notify_cancel():
                    return
                args = [
                    objs[index[id(t._troupe_core)]] if isinstance(t, LocalActor) else values[i]
                    for i, t in enumerate(targets)
                ]
                try:
                    r = fn(*args)
                except BaseException as e:
                    result.set_exception(e)
                else:
                    result.set_result(r)

            if cores:
                try:
                    _core.post_many(cores, job)
                except BaseException as e:  # Overloaded, or shut down: settle, never hang
                    if result.set_running_or_notify_cancel():
                        result.set_exception(e)
            else:
                job()

        if futures:
            when_all(*futures).add_done_callback(go)
        else:
            go()
        return result

    return run


def when_all(*futures: concurrent.futures.Future[Any]) -> Future[list[Any]]:
    """A future of every result, in order; fails with the first error."""
    out: Future[list[Any]] = Future()
    left = [len(futures)]
    if not futures:
        out.set_result([])
        return out

    def one(f: concurrent.futures.Future[Any]) -> None:
        if out.done():
            return
        if f.cancelled() or f.exception() is not None:
            try:
                out.set_exception(f.exception() if not f.cancelled() else concurrent.futures.CancelledError())
            except concurrent.futures.InvalidStateError:
                pass
            return
        with _when_lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            try:
                out.set_result([g.result() for g in futures])
            except concurrent.futures.InvalidStateError:
                pass

    for f in futures:
        f.add_done_callback(one)
    return out


def when_any(*futures: concurrent.futures.Future[Any]) -> Future[concurrent.futures.Future[Any]]:
    """A future of the first of futures to finish (the future itself)."""
    out: Future[concurrent.futures.Future[Any]] = Future()

    def one(f: concurrent.futures.Future[Any]) -> None:
        try:
            out.set_result(f)
        except concurrent.futures.InvalidStateError:
            pass

    for f in futures:
        f.add_done_callback(one)
    return out


import threading as _threading  # noqa: E402

_when_lock = _threading.Lock()
