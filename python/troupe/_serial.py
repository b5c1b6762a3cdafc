"""What crosses a process boundary, and how.

Functions and classes travel by reference when importable (module and
qualified name) and by value otherwise (``__main__``, the REPL, lambdas,
closures), through cloudpickle. Arguments and results use pickle protocol 5:
buffers of 64 KiB and more (numpy arrays, bytearray, PickleBuffer, large
memoryviews, large top-level bytes) travel out of band, each in a memfd that
is passed as a descriptor and mapped by the receiver (one copy into shared
memory, none out of it), never through the channel. Sockets, files and
``troupe.Fd`` objects travel as descriptors (SCM_RIGHTS) and arrive as
working objects of the same kind.

A message is ``<u32 count of user descriptors> + pickle``; its descriptor
list is the user descriptors (in pickling order) then one memfd per
out-of-band buffer.

Invariants:
  S1. Every descriptor received is owned exactly once: by the object rebuilt
      from it, by the mapping of a buffer, or closed here.
  S2. Descriptors sent by the caller are borrowed until the submit returns;
      those sent back in a reply are duplicates the runtime closes after
      sending.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import socket
import struct
import threading
import sys
import traceback
import types
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from ._errors import RemoteError, RemoteTraceback

__all__ = ["Fd", "OOB_THRESHOLD", "encode", "decode", "encode_error", "decode_reply"]

#: Buffers at least this large travel out of band, through shared memory.
OOB_THRESHOLD = 64 * 1024

_HEADER = struct.Struct("<I")


class Fd:
    """An open file descriptor passed to a worker as it is.

    The sender keeps its own descriptor; the receiver gets a ``Fd`` owning a
    duplicate (close it, or use it with ``with``).
    """

    __slots__ = ("_fd", "_owned")

    def __init__(self, fd: int, *, owned: bool = False) -> None:
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"troupe.Fd needs an open descriptor, not {fd!r}")
        self._fd = fd
        self._owned = owned

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on a closed troupe.Fd")
        return self._fd

    def detach(self) -> int:
        """Gives up ownership and returns the descriptor."""
        fd, self._fd, self._owned = self._fd, -1, False
        return fd

    def close(self) -> None:
        if self._fd >= 0 and self._owned:
            os.close(self._fd)
        self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"troupe.Fd({self._fd})"


# ------------------------------------------------------------------ encoding
_by_reference: dict[Any, bool] = {}  # functions and classes found importable (bounded)


def _by_value(obj: Any) -> bool:
    """True if a function or class must travel by value: plain pickle would
    name it by a module and qualified name the worker cannot look up."""
    if obj in _by_reference:
        return False
    if _lookup_fails(obj):
        return True
    if len(_by_reference) < 4096:
        _by_reference[obj] = True  # importable: it lives as long as its module anyway
    return False


def _lookup_fails(obj: Any) -> bool:
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not mod or not qual or mod == "__main__" or "<" in qual:
        return True
    m = sys.modules.get(mod)
    if m is None:
        return True
    try:
        for part in qual.split("."):
            m = getattr(m, part)
    except AttributeError:
        return True
    return m is not obj


def _from_cloudpickle(blob: bytes) -> Any:
    return cloudpickle.loads(blob)


class _Encoder(pickle.Pickler):
    """Protocol 5 with out-of-band buffers and descriptors. Importable
    functions and classes go by reference (the C pickler's own way); the
    others are handed to cloudpickle, by value."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._buffer)
        self.file = file
        self.busy = False
        self.fds: list[int] = []
        self.buffers: list[memoryview] = []

    def _buffer(self, pb: pickle.PickleBuffer) -> bool:
        try:
            m = pb.raw()
        except BufferError:  # not contiguous: in band
            return True
        if m.nbytes < OOB_THRESHOLD:
            return True  # in band
        self.buffers.append(m)
        return False

    def _fd(self, fd: int) -> int:
        if fd < 0:
            raise TypeError("cannot send a closed socket or file to another process")
        self.fds.append(fd)
        return len(self.fds) - 1

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.FunctionType or isinstance(obj, type):
            if _by_value(obj):
                return _from_cloudpickle, (cloudpickle.dumps(obj, protocol=5),)
            return NotImplemented
        if isinstance(obj, socket.socket):
            return _socket_from, (self._fd(obj.fileno()), int(obj.family), int(obj.type), obj.proto)
        if t is Fd:
            return _fd_from, (self._fd(obj.fileno()),)
        if hasattr(obj, "fileno") and isinstance(obj, io.IOBase) and not isinstance(obj, (io.BytesIO, io.StringIO)):
            try:
                fd = obj.fileno()
            except (OSError, ValueError) as e:
                raise TypeError(f"cannot send {obj!r} to another process: it has no descriptor") from e
            if obj.writable() and not obj.closed:
                obj.flush()
            mode = getattr(obj, "mode", "rb")
            binary = not isinstance(obj, io.TextIOBase)
            if binary and "b" not in mode:
                mode += "b"
            return _file_from, (self._fd(fd), mode, getattr(obj, "name", None))
        if t is memoryview and obj.nbytes >= OOB_THRESHOLD and obj.contiguous:
            return _memoryview_from, (pickle.PickleBuffer(obj), obj.format, obj.shape)
        if t is _BigBytes:
            return bytes, (pickle.PickleBuffer(obj.data),)
        return NotImplemented


class _BigBytes:
    """A large top-level bytes argument, sent out of band."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _lift(value: Any) -> Any:
    if type(value) is bytes and len(value) >= OOB_THRESHOLD:
        return _BigBytes(value)
    return value


def _to_memfd(m: memoryview) -> int:
    fd = os.memfd_create("troupe-buffer", os.MFD_CLOEXEC)
    try:
        view = m.cast("B")
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])
    except BaseException:
        os.close(fd)
        raise
    return fd


_tx = threading.local()  # each thread's reusable encoder (its buffer and memo are reset per message)


def encode(obj: Any) -> tuple[bytes, list[int], list[int]]:
    """Pickles obj: (message, descriptors to send, descriptors to close after).

    Raises TypeError naming what could not be pickled.
    """
    enc: _Encoder | None = getattr(_tx, "enc", None)
    if enc is None or enc.busy:  # first use on this thread, or a nested encode
        enc = _Encoder(io.BytesIO())
        if getattr(_tx, "enc", None) is None:
            _tx.enc = enc
    f = enc.file
    enc.busy = True
    try:
        f.seek(0)
        f.truncate()
        f.write(b"\0\0\0\0")
        enc.fds = []
        enc.buffers = []
        enc.clear_memo()
        try:
            enc.dump(obj)
        except Exception as e:
            raise TypeError(f"cannot send to another process: {e}") from e
        fds, buffers = enc.fds, enc.buffers
        if fds:
            f.seek(0)
            f.write(_HEADER.pack(len(fds)))
        blob = f.getvalue()
    finally:
        enc.busy = False
        enc.buffers = []
        enc.clear_memo()  # the memo references what was pickled: keep nothing alive
    memfds: list[int] = []
    try:
        for m in buffers:
            memfds.append(_to_memfd(m))
    except BaseException:
        for fd in memfds:
            os.close(fd)
        raise
    return blob, fds + memfds if memfds else fds, memfds


def encode_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bytes, list[int], list[int]]:
    for a in args:
        if type(a) is bytes and len(a) >= OOB_THRESHOLD:
            args = tuple(_lift(a) for a in args)
            break
    if kwargs:
        kwargs = {k: _lift(v) for k, v in kwargs.items()}
    return encode((fn, args, kwargs))


# ------------------------------------------------------------------ decoding
_rx = threading.local()  # the descriptors of the message being decoded (S1)


def _take(index: int) -> int:
    fds: list[int] = _rx.fds
    taken: set[int] = _rx.taken
    if index in taken:  # the same descriptor named twice: each object owns its own
        return os.dup(fds[index])
    taken.add(index)
    return fds[index]


def _socket_from(index: int, family: int, type_: int, proto: int) -> socket.socket:
    return socket.socket(family, type_, proto, fileno=_take(index))


def _fd_from(index: int) -> Fd:
    return Fd(_take(index), owned=True)


def _file_from(index: int, mode: str, name: Any) -> Any:
    f = os.fdopen(_take(index), mode)
    return f


def _memoryview_from(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    return memoryview(buf).cast("B").cast(fmt, shape) if shape else memoryview(buf)  # type: ignore[call-overload]


def _map(fd: int) -> memoryview:
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return memoryview(bytearray())
        return memoryview(mmap.mmap(fd, size))
    finally:
        os.close(fd)


def decode(blob: bytes, fds: list[int]) -> Any:
    """Unpickles a message, taking ownership of its descriptors (S1)."""
    if not fds and blob[:4] == b"\0\0\0\0":  # no descriptor, no out-of-band buffer
        return pickle.loads(memoryview(blob)[_HEADER.size :])
    pending = list(fds)  # owned by nothing yet: closed here unless taken
    try:
        (n_user,) = _HEADER.unpack_from(blob)
        if n_user > len(pending):
            raise ValueError("a message names more descriptors than it carries")
        views = []
        while len(pending) > n_user:
            views.append(_map(pending.pop(n_user)))  # _map owns (and closes) it
        _rx.fds, _rx.taken = pending, set()
        try:
            return pickle.loads(memoryview(blob)[_HEADER.size :], buffers=views)
        finally:
            taken = _rx.taken
            _rx.fds = _rx.taken = None
            pending = [fd for i, fd in enumerate(pending) if i not in taken]
    finally:
        for fd in pending:
            os.close(fd)


def decode_quietly(fds: list[int]) -> None:
    """Closes the descriptors of a message nobody will decode."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# ------------------------------------------------------------------ replies
def type_name(t: type) -> str:
    mod = t.__module__
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def encode_reply(value: Any) -> tuple[bytes, list[int]]:
    """A worker's reply carrying value; descriptors are the runtime's (S2)."""
    blob, fds, memfds = encode(("ok", _lift(value)))
    n_user = len(fds) - len(memfds)
    return blob, [os.dup(fd) for fd in fds[:n_user]] + memfds


def encode_error(e: BaseException, context: str = "") -> tuple[bytes, list[int]]:
    """A worker's reply carrying the exception e (and its traceback text)."""
    if context:
        e.add_note(f"(in the worker process, {context})")
    tb = "".join(traceback.format_exception(e))
    msg = str(e)
    try:
        exc_blob = cloudpickle.dumps(e, protocol=5)
    except Exception:
        exc_blob = b""
    blob, fds, _ = encode(("err", type_name(type(e)), msg, tb, exc_blob))
    return blob, fds


def decode_reply(blob: bytes, fds: list[int]) -> tuple[bool, Any]:
    """(True, value) or (False, exception) from a worker's reply."""
    reply = decode(blob, fds)
    if reply[0] == "ok":
        return True, reply[1]
    _, tname, msg, tb, exc_blob = reply
    exc: BaseException
    try:
        exc = pickle.loads(exc_blob) if exc_blob else RemoteError(tname, msg, tb)
        if not isinstance(exc, BaseException):
            raise TypeError("not an exception")
    except Exception:
        exc = RemoteError(tname, msg, tb)
    if not isinstance(exc, RemoteError):
        exc.__cause__ = RemoteTraceback(tb)
    return False, exc
