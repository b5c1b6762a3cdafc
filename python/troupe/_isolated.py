"""Isolated calls: a function run in a worker process.

``isolated(f)`` wraps f; submitting the wrapper (to an Executor, to
``asyncio.to_thread``, or through ``.submit``) runs f in a worker process
with its own interpreter and GIL. Calls made inside a worker go through the
root process, so nested isolated work never starts more workers than the
budget allows.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable, Generic, ParamSpec, TypeVar, overload

from . import _core, _runtime
from ._future import Future
from ._serial import decode_reply, encode_call

__all__ = ["isolated", "Isolated", "submit_isolated"]

P = ParamSpec("P")
R = TypeVar("R")


def _display_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    mod = getattr(fn, "__module__", None)
    return f"{mod}.{name}" if mod and mod != "builtins" else str(name)


def submit_isolated(
    target: Any, display: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> Future[Any]:
    """Sends target(*args, **kwargs) to a worker; the future gets its result.

    Raises TypeError at once if target or an argument cannot be pickled.
    """
    _runtime.ensure()
    blob, fds, owned = encode_call(target, args, kwargs)
    fut: Future[Any] = Future()
    fut._troupe_decode = decode_reply
    try:
        fut._troupe_call = _core.submit(_core.CALL_FUNCTION, 0, 0, display, blob, fds, timeout or 0.0, fut)
    finally:
        for fd in owned:
            _close(fd)
    return fut


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass


def _import_attr(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class Isolated(Generic[P, R]):
    """A function that runs in a worker process when submitted or called.

    ``Executor.submit(isolated(f), x)``, ``isolated(f).submit(x)`` and
    ``await asyncio.to_thread(isolated(f), x)`` return at once with a future;
    calling ``isolated(f)(x)`` waits for the result. Usable as a decorator.
    ``timeout`` (seconds) fails a call that runs longer with CallTimeout.
    """

    def __init__(self, fn: Callable[P, R], *, timeout: float | None = None) -> None:
        if isinstance(fn, Isolated):
            fn = fn.fn
        if not callable(fn):
            raise TypeError(f"troupe.isolated needs a callable, not {type(fn).__name__}")
        self.fn: Callable[P, R] = fn
        self.timeout = timeout
        self._name = _display_name(fn)
        functools.update_wrapper(self, fn)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Runs the function in a worker; returns its future at once."""
        target = self.__dict__.get("_target")
        if target is None:
            # What travels: this wrapper by name when it is a module attribute
            # (its function's own name leads to the wrapper), else the bare
            # function, which the worker calls as it is.
            target = self._target = self if self.__reduce__()[0] is _import_attr else self.fn
        return submit_isolated(target, self._name, args, kwargs, self.timeout)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.submit(*args, **kwargs).result()

    def __reduce__(self) -> Any:
        # A module-level decorated function travels by name; anything else
        # carries its function (by reference, or by value if it must).
        r = self.__dict__.get("_reduced")
        if r is None:
            r = self._reduced = self._reduce()
        return r

    def _reduce(self) -> Any:
        mod, qual = getattr(self, "__module__", None), getattr(self, "__qualname__", None)
        if mod and qual and mod != "__main__" and "<locals>" not in qual:
            try:
                if _import_attr(mod, qual) is self:
                    return _import_attr, (mod, qual)
            except Exception:
                pass
        return Isolated, (self.fn,), {"timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.timeout = state.get("timeout")

    def __repr__(self) -> str:
        return f"troupe.isolated({self._name})"


@overload
def isolated(fn: Callable[P, R], *, timeout: float | None = None) -> Isolated[P, R]: ...
@overload
def isolated(fn: None = None, *, timeout: float | None = None) -> Callable[[Callable[P, R]], Isolated[P, R]]: ...


def isolated(fn: Callable[P, R] | None = None, *, timeout: float | None = None) -> Any:
    """Marks fn to run in a worker process (also ``@isolated`` or ``@isolated(timeout=5)``)."""
    if fn is None:
        return lambda f: Isolated(f, timeout=timeout)
    return Isolated(fn, timeout=timeout)
