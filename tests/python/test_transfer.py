"""What crosses the boundary: descriptors and large buffers."""

from __future__ import annotations

import os
import socket
import tempfile

import numpy as np

import troupe
from troupe import _serial
from helpers import array_double, array_sum, checksum, echo_over, make_socketpair, read_file, write_fd


def test_socket_arrives_working() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert troupe.isolated(echo_over)(b, b"hello through a socket") == 22
        assert a.recv(100) == b"hello through a socket"


def test_file_and_raw_fd_arrive_working() -> None:
    with tempfile.TemporaryFile("w+") as f:
        f.write("some text")
        f.flush()
        f.seek(0)
        assert troupe.isolated(read_file)(f) == "some text"
    r, w = os.pipe()
    try:
        assert troupe.isolated(write_fd)(troupe.Fd(w), b"pipe!") == 5
        assert os.read(r, 10) == b"pipe!"
    finally:
        os.close(r)
        os.close(w)


def test_socket_returned_from_a_worker() -> None:
    s = troupe.isolated(make_socketpair)()
    with s:
        assert s.recv(100) == b"from the worker"


def test_large_buffers_travel_out_of_band() -> None:
    arr = np.arange(1_000_000, dtype=np.float64)
    blob, fds, memfds = _serial.encode_call(array_sum, (arr,), {})
    try:
        assert len(memfds) == 1 and len(blob) < 4096  # the 8 MB are not in the message
        assert os.fstat(memfds[0]).st_size == arr.nbytes
    finally:
        for fd in memfds:
            os.close(fd)
    big = b"x" * (1 << 20)
    blob, fds, memfds = _serial.encode_call(checksum, (big,), {})
    for fd in memfds:
        os.close(fd)
    assert len(memfds) == 1 and len(blob) < 4096


def test_large_arrays_round_trip() -> None:
    arr = np.random.default_rng(1).random(4_000_000)
    assert troupe.isolated(array_sum)(arr) == float(arr.sum())
    out = troupe.isolated(array_double)(arr)
    assert isinstance(out, np.ndarray) and np.array_equal(out, arr * 2)
    big = os.urandom(3 << 20)
    assert troupe.isolated(checksum)(big) == checksum(big)
    assert troupe.isolated(checksum)(bytearray(big)) == checksum(big)
