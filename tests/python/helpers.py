"""Importable functions and classes for the tests (they travel by reference)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
from typing import Any

import troupe


def square(x: int) -> int:
    return x * x


def pid() -> int:
    return os.getpid()


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def raise_key(msg: str) -> None:
    raise KeyError(msg)


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle rebuilds with one arg: fails
        super().__init__(f"{a}/{b}")
        self.lock = __import__("threading").Lock()


def raise_unpicklable() -> None:
    raise Unpicklable(1, 2)


def die(how: str) -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "abort":
        os.abort()
    elif how == "segfault":
        ctypes.string_at(0)
    time.sleep(10)


def nested(level: int) -> list[int]:
    """A chain of isolated calls, `level` deep: the pids that ran each level."""
    here = [os.getpid()]
    if level <= 1:
        return here
    return here + troupe.isolated(nested)(level - 1)


def echo_over(sock: socket.socket, data: bytes) -> int:
    sock.sendall(data)
    sock.close()
    return len(data)


def read_file(f: Any) -> str:
    with f:
        return f.read()


def write_fd(fd: troupe.Fd, data: bytes) -> int:
    with fd:
        return os.write(fd.fileno(), data)


def make_socketpair() -> socket.socket:
    a, b = socket.socketpair()
    a.sendall(b"from the worker")
    a.close()
    return b


def array_sum(a: Any) -> float:
    return float(a.sum())


def array_double(a: Any) -> Any:
    return a * 2


def checksum(b: bytes) -> int:
    return sum(b[::4096]) + len(b)


class Counter:
    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.log: list[int] = []

    def add(self, k: int) -> int:
        self.n += k
        self.log.append(k)
        return self.n

    def get(self) -> int:
        return self.n

    def history(self) -> list[int]:
        return self.log

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise ValueError("counter says no")


class Stage:
    """A pipeline stage in a worker: transforms and forwards to the next stage."""

    def __init__(self, factor: int, next_stage: Any = None) -> None:
        self.factor = factor
        self.next = next_stage
        self.seen = 0

    def push(self, x: int) -> int:
        self.seen += 1
        y = x * self.factor
        if self.next is not None:
            return self.next.push(y).result()
        return y

    def count(self) -> int:
        return self.seen

    def pid(self) -> int:
        return os.getpid()


class Napper:
    """An actor whose method sleeps; and one that calls another actor's."""

    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    def call_nap(self, other: Any, seconds: float) -> str:
        try:
            return other.nap(seconds).result()
        except troupe.CallTimeout:
            return "timeout"


def call_nap(other: Any, seconds: float) -> str:
    """Napper.call_nap as a function (an isolated call names its own timeout)."""
    return Napper().call_nap(other, seconds)


class BadInit:
    def __init__(self) -> None:
        raise RuntimeError("no way")
