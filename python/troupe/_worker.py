"""A worker process: ``python -m troupe._worker SYS_PATH_JSON CWD``.

Started by the C++ process layer of a troupe program (never by hand): takes
the program's sys.path and working directory, ignores SIGINT (Ctrl-C goes to
the whole process group; the program decides what happens to its work), and
serves calls until the program asks it to leave or ends. It never runs the
program's ``__main__``: functions defined there arrive by value.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _serve(blob: bytes, fds: list[int], run: Callable[[Any], Any]) -> tuple[bytes, list[int]]:
    """Decodes a call, runs it (run(decoded) -> result) and encodes the reply:
    every failure, at any of the three steps, becomes an error reply."""
    from ._serial import decode, encode_error, encode_reply

    try:
        try:
            call = decode(blob, fds)
        except BaseException as e:
            return encode_error(e, "while receiving the call's function and arguments")
        try:
            result = run(call)
        except BaseException as e:
            return encode_error(e)
        try:
            return encode_reply(result)
        except BaseException as e:
            return encode_error(TypeError(f"{e} (while sending the result back)"))
    finally:
        _flush()


def serve_call(blob: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    """One isolated call: (fn, args, kwargs) -> reply."""
    from ._isolated import Isolated

    def run(call: Any) -> Any:
        fn, args, kwargs = call
        if isinstance(fn, Isolated):
            fn = fn.fn
        return fn(*args, **kwargs)

    return _serve(blob, fds, run)


def serve_actor(cell: list[Any], blob: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    """One call to an actor hosted here: ("new", cls, args, kwargs) or ("call", name, args, kwargs)."""

    def run(call: Any) -> Any:
        op, what, args, kwargs = call
        if op == "new":
            cell[:] = [what(*args, **kwargs)]
            return os.getpid()
        if not cell:
            raise RuntimeError("the actor's constructor failed; it cannot be called")
        return getattr(cell[0], what)(*args, **kwargs)

    return _serve(blob, fds, run)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(sys.argv) >= 3:
        sys.path[:] = json.loads(sys.argv[1])
        try:
            os.chdir(sys.argv[2])
        except OSError:
            pass
    from . import _core

    _core.serve_worker(serve_call, serve_actor)


if __name__ == "__main__":
    main()
