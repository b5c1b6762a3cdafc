"""Actors in this process and in workers, when over several actors, when_all/any."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

import troupe
from helpers import BadInit, Counter, Stage, square


def test_local_actor_runs_calls_in_send_order() -> None:
    c = troupe.actor(Counter())
    fs = [c.add(i) for i in range(200)]
    assert fs[-1].result(10) == sum(range(200))
    assert c.history().result(10) == list(range(200))


def test_local_actor_errors_reach_the_future() -> None:
    c = troupe.actor(Counter())
    with pytest.raises(ValueError, match="counter says no"):
        c.fail().result(10)
    assert c.add(1).result(10) == 1  # still usable
    with pytest.raises(AttributeError):
        c.no_such_method


def test_class_methods_local_and_spawn() -> None:
    class Acc(troupe.Actor, Counter):
        pass

    assert Acc.local(5).add(1).result(10) == 6


def test_local_actor_cannot_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError, match="cannot leave its process"):
        pickle.dumps(troupe.actor(Counter()))


def test_when_is_atomic_over_several_actors() -> None:
    accounts = [troupe.actor(Counter(100)) for _ in range(10)]
    rng = random.Random(7)
    futures = []

    def transfer(a: Counter, b: Counter) -> None:
        a.add(-1)
        b.add(1)

    for _ in range(2000):
        i, j = rng.sample(range(10), 2)
        futures.append(troupe.when(accounts[i], accounts[j])(transfer))
        if rng.random() < 0.05:
            audit = troupe.when(*accounts)(lambda *objs: sum(o.n for o in objs))
            futures.append(audit)
    for f in futures:
        r = f.result(30)
        if r is not None:
            assert r == 1000  # every audit sees the total conserved
    assert sum(a.get().result(10) for a in accounts) == 1000


def test_when_with_a_future_and_the_same_actor_twice() -> None:
    a = troupe.actor(Counter(1))
    f = troupe.isolated(square).submit(4)
    assert troupe.when(a, f, a)(lambda x, v, y: (x is y, x.add(v))).result(30) == (True, 17)


def test_when_all_and_when_any() -> None:
    fs = [troupe.isolated(square).submit(i) for i in range(5)]
    assert troupe.when_all(*fs).result(30) == [0, 1, 4, 9, 16]
    first = troupe.when_any(*fs).result(30)
    assert first in fs


def test_remote_actor_lives_in_a_worker() -> None:
    c = troupe.spawn(Counter, 10)
    assert c.add(5).result(30) == 15
    assert c.pid().result(30) == troupe.worker_of(c)
    with pytest.raises(ValueError, match="counter says no"):
        c.fail().result(30)
    fs = [c.add(1) for _ in range(100)]
    assert [f.result(30) for f in fs] == list(range(16, 116))


def test_spawn_raises_the_constructors_error() -> None:
    with pytest.raises(RuntimeError, match="no way"):
        troupe.spawn(BadInit)


def test_actor_graph_across_workers_by_handles() -> None:
    """Three actors in two workers calling each other by handles they were given."""
    sink = troupe.spawn(Stage, 5)
    middle = troupe.spawn(Stage, 3, sink)
    source = troupe.spawn(Stage, 2, middle)
    pids = {troupe.worker_of(h) for h in (sink, middle, source)}
    assert 1 <= len(pids) <= 2  # the budget here is the number of cores
    assert [source.push(i).result(30) for i in range(20)] == [i * 30 for i in range(20)]
    assert sink.count().result(30) == 20 and middle.count().result(30) == 20


def test_remote_handle_passed_to_an_isolated_call() -> None:
    c = troupe.spawn(Counter)
    assert troupe.isolated(_add_through)(c, 4) == 4
    assert c.get().result(30) == 4


def _add_through(handle: troupe.RemoteActor, k: int) -> int:
    return handle.add(k).result(30)


def test_actor_served_by_the_loop_thread() -> None:
    async def main() -> tuple[int, bool]:
        loop_thread = threading.get_ident()
        c = troupe.actor(Counter(), loop=asyncio.get_running_loop())
        seen: list[int] = []

        class Probe:
            def where(self) -> int:
                seen.append(threading.get_ident())
                return threading.get_ident()

        p = troupe.actor(Probe(), loop=asyncio.get_running_loop())
        v = await c.add(3)
        t = await p.where()
        return v, t == loop_thread

    assert asyncio.run(main()) == (3, True)
