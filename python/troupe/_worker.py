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
from typing import Any


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def serve_call(blob: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    """One isolated call: (fn, args, kwargs) -> reply."""
    from ._isolated import Isolated
    from ._serial import decode, encode_error, encode_reply

    try:
        try:
            fn, args, kwargs = decode(blob, fds)
        except BaseException as e:
            return encode_error(e, "while receiving the call's function and arguments")
        if isinstance(fn, Isolated):
            fn = fn.fn
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            return encode_error(e)
        try:
            return encode_reply(result)
        except BaseException as e:
            return encode_error(TypeError(f"{e} (while sending the result back)"))
    finally:
        _flush()


def serve_actor(cell: list[Any], blob: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    """One call to an actor hosted here: ("new", cls, args, kwargs) or ("call", name, args, kwargs)."""
    from ._serial import decode, encode_error, encode_reply

    try:
        try:
            op, what, args, kwargs = decode(blob, fds)
        except BaseException as e:
            return encode_error(e, "while receiving the call's arguments")
        try:
            if op == "new":
                cell[:] = [what(*args, **kwargs)]
                result: Any = os.getpid()
            elif not cell:
                raise RuntimeError("the actor's constructor failed; it cannot be called")
            else:
                result = getattr(cell[0], what)(*args, **kwargs)
        except BaseException as e:
            return encode_error(e)
        try:
            return encode_reply(result)
        except BaseException as e:
            return encode_error(TypeError(f"{e} (while sending the result back)"))
    finally:
        _flush()


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
