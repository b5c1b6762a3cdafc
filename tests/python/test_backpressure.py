"""Bounded actor mailboxes from Python (troupe/backpressure.hpp).

A plain thread's calls to a full actor block with the GIL released (the
actor's methods, which need the GIL, drain it meanwhile) or raise
``troupe.Overloaded`` with nothing sent; an actor method that floods another
actor is not paused (Python code may wait on anything). Every call that was
accepted runs, in order per sender; a refused ``when`` settles its future.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import pytest

import troupe


@pytest.fixture(autouse=True)
def default_settings() -> Iterator[None]:
    yield
    troupe.set_backpressure()  # back to no limit, block


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Holds the calling actor until pred() (a sender met the full mailbox):
    the senders meet it however fast the actor is (sanitizers slow senders
    more than a consumer that sleeps)."""
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.001)


def _grew(counter: str) -> Callable[[], bool]:
    before = troupe.backpressure_stats()[counter]
    return lambda: troupe.backpressure_stats()[counter] > before


class Sink:
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.max_backlog = 0
        self.me: troupe.LocalActor[Sink] | None = None

    def take(self, i: int) -> None:
        self.seen.append(i)
        if self.me is not None:
            self.max_backlog = max(self.max_backlog, self.me.backlog)
        time.sleep(0.0002)  # slower than the sender

    def set_me(self, me: troupe.LocalActor[Sink]) -> None:
        self.me = me

    def hold(self, pred: Callable[[], bool]) -> None:
        _until(pred)

    def result(self) -> tuple[list[int], int]:
        return self.seen, self.max_backlog


def test_a_thread_blocks_with_the_gil_released() -> None:
    sink = troupe.actor(Sink(), mailbox_limit=50)
    sink.set_me(sink).result(10)
    before = troupe.backpressure_stats()["blocked"]
    sink.hold(_grew("blocked"))
    futs = [sink.take(i) for i in range(1000)]
    for f in futs:
        f.result(60)
    seen, max_backlog = sink.result().result(10)
    assert seen == list(range(1000))
    assert max_backlog <= 50 + 2
    assert troupe.backpressure_stats()["blocked"] > before


def test_a_thread_can_be_refused_instead() -> None:
    troupe.set_backpressure(outside="fail")
    gate = threading.Event()

    class Busy:
        def __init__(self) -> None:
            self.ran = 0

        def wait(self) -> None:
            gate.wait(30)

        def work(self) -> None:
            self.ran += 1

        def count(self) -> int:
            return self.ran

    busy = troupe.actor(Busy(), mailbox_limit=8)
    busy.wait()
    accepted = refused = 0
    for _ in range(40):
        try:
            busy.work()
            accepted += 1
        except troupe.Overloaded as e:
            assert "mailbox limit of 8" in str(e)
            refused += 1
    gate.set()
    assert 6 <= accepted <= 8 and refused == 40 - accepted
    troupe.set_backpressure()  # block again: the queue may not have drained yet
    assert busy.count().result(10) == accepted  # a refused call sent nothing


def test_an_actor_flooding_another_is_not_paused() -> None:
    sink = troupe.actor(Sink(), mailbox_limit=20)
    sink.set_me(sink).result(10)

    class Producer:
        def __init__(self, to: troupe.LocalActor[Sink]) -> None:
            self.to = to

        def burst(self, start: int, n: int) -> None:
            for i in range(start, start + n):
                self.to.take(i)

    prod = troupe.actor(Producer(sink))
    before = troupe.backpressure_stats()
    sink.hold(_grew("skipped"))
    last = None
    for k in range(40):
        last = prod.burst(k * 25, 25)
    assert last is not None
    last.result(60)
    seen, max_backlog = sink.result().result(60)
    assert seen == list(range(1000))
    after = troupe.backpressure_stats()
    # Python methods may wait on anything (a future's result()): the
    # producer is never paused, its overloaded sends are counted as skipped.
    assert after["paused"] == before["paused"]
    assert after["skipped"] > before["skipped"]
    assert max_backlog > 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        troupe.set_backpressure(outside="drop")
    with pytest.raises(ValueError):
        troupe.actor(Sink(), mailbox_limit=-1)


def test_a_refused_when_settles_its_future() -> None:
    troupe.set_backpressure(outside="fail")
    gate = threading.Event()

    class Busy:
        def wait(self) -> None:
            gate.wait(30)

        def nothing(self) -> None:
            pass

    busy = troupe.actor(Busy(), mailbox_limit=2)
    busy.wait()
    while True:  # fill it
        try:
            busy.nothing()
        except troupe.Overloaded:
            break
    fut = troupe.when(busy)(lambda b: 1)
    with pytest.raises(troupe.Overloaded):
        fut.result(10)
    gate.set()


def test_the_event_loop_thread_is_never_blocked() -> None:
    import asyncio

    class Slow:
        def work(self) -> None:
            time.sleep(0.001)

        def hold(self, pred: Callable[[], bool]) -> None:
            _until(pred)

    async def flood() -> None:
        s = troupe.actor(Slow(), mailbox_limit=4)
        s.hold(_grew("skipped"))
        futs = [s.work() for _ in range(40)]
        await asyncio.wrap_future(futs[-1])

    before = troupe.backpressure_stats()
    asyncio.run(flood())
    after = troupe.backpressure_stats()
    assert after["blocked"] == before["blocked"]  # the loop's thread never waited
    assert after["skipped"] > before["skipped"]  # it met the full mailbox
