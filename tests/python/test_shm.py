"""troupe.shm: shared containers that behave like Python's, transactions, errors."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

import troupe
import troupe.shm as shm
from shm_helpers import Account, add_many, add_many_in_transactions, churn


@pytest.fixture
def heap():
    name = f"test-{uuid.uuid4().hex[:12]}"
    h = shm.Heap.create(name, size=64 << 20)
    yield h
    h.close()
    shm.Heap.remove(name, missing_ok=True)  # workers that still had it open do not remove it


def test_values_round_trip(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)
    values = [None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64, -(10**50), 1.5, "", "é" * 20, b"", b"\x00" * 100, (1, ("a", b"b"), None)]
    for i, v in enumerate(values):
        d[i] = v
    for i, v in enumerate(values):
        got = d[i]
        assert got == v and type(got) is type(v), (i, v, got)


def test_dict_is_a_complete_mutable_mapping(heap: shm.Heap) -> None:
    from collections.abc import MutableMapping

    d = heap.root("d", shm.Dict)
    assert isinstance(d, MutableMapping)
    d.update({"a": 1, "b": 2}, c=3)
    assert len(d) == 3 and "a" in d and "z" not in d and [] not in d
    assert sorted(d) == ["a", "b", "c"] and sorted(d.values()) == [1, 2, 3]
    assert d.pop("a") == 1 and d.pop("a", 7) == 7
    with pytest.raises(KeyError):
        d.pop("a")
    assert d.setdefault("n", 5) == 5 and d.setdefault("n", 6) == 5
    assert d.get("nope") is None and d.get("nope", 1) == 1
    del d["n"]
    with pytest.raises(KeyError):
        del d["n"]
    assert d == {"b": 2, "c": 3}
    d.clear()
    assert len(d) == 0 and d == {}
    with pytest.raises(TypeError):
        d[[1]] = 1  # a list is not a key, as in Python


def test_nested_containers_and_to_python(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)
    d["tree"] = {"a": [1, {"b": (2, 3)}], "c": {}}
    assert isinstance(d["tree"], shm.Dict) and isinstance(d["tree"]["a"], shm.List)
    d["tree"]["a"][1]["b"] = "changed"
    assert d.to_python() == {"tree": {"a": [1, {"b": "changed"}], "c": {}}}


def test_list_is_a_complete_mutable_sequence(heap: shm.Heap) -> None:
    from collections.abc import MutableSequence

    ls = heap.root("l", shm.List)
    assert isinstance(ls, MutableSequence)
    ls.extend([5, 3, 9, 1])
    assert ls[0] == 5 and ls[-1] == 1 and ls[1:3] == [3, 9] and len(ls) == 4
    ls.sort()
    assert ls == [1, 3, 5, 9]
    ls.insert(0, 0)
    ls[2] = 30
    del ls[1]
    assert ls == [0, 30, 5, 9]
    assert ls.pop() == 9 and ls.pop(0) == 0
    ls[0:1] = ["a", "b"]
    assert list(ls) == ["a", "b", 5] and ls.index(5) == 2 and 5 in ls
    ls.reverse()
    assert ls == [5, "b", "a"]
    with pytest.raises(IndexError):
        ls[10]
    ls.clear()
    with pytest.raises(IndexError):
        ls.pop()


def test_transactions_are_all_or_nothing(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)
    d["x"] = 1

    def fails() -> None:
        d["x"] = 2
        d["y"] = [1, 2, 3]
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        heap.atomically(fails)
    assert d.to_python() == {"x": 1}
    assert heap.atomically(lambda: d["x"] + 1) == 2


def test_concurrent_threads_count_exactly(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)

    def body() -> None:
        d["n"] = d.get("n", 0) + 1

    def work() -> None:
        for _ in range(500):
            heap.atomically(body)
            d.increment("m")

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert d["n"] == 2000 and d["m"] == 2000


def test_processes_share_one_object(heap: shm.Heap) -> None:
    fs = [troupe.isolated(add_many).submit(heap, "c", "k", 1000) for _ in range(2)]
    fs += [troupe.isolated(add_many_in_transactions).submit(heap, "c", "t", 500) for _ in range(2)]
    assert sum(f.result(120) for f in fs) == 3000
    c = heap.root("c", shm.Dict)
    assert c["k"] == 2000 and c["t"] == 1000


def test_records_have_shared_fields_and_python_methods(heap: shm.Heap) -> None:
    accounts = heap.root("accounts", shm.Dict)
    accounts["ann"] = Account(balance=10, owner="ann")
    acct = accounts["ann"]
    assert isinstance(acct, Account) and acct.owner == "ann"
    assert heap.atomically(lambda: acct.deposit(5)) == 15
    assert troupe.isolated(_deposit_there)(heap, 7) == 22
    assert accounts["ann"].balance == 22
    with pytest.raises(AttributeError):
        acct.nope


def _deposit_there(heap: shm.Heap, n: int) -> int:
    acct = heap.root("accounts", shm.Dict)["ann"]
    return heap.atomically(lambda: acct.deposit(n))


def test_bad_values_raise_type_error_naming_them(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)
    with pytest.raises(TypeError, match="TextIOWrapper.*dict value"):
        with open(os.devnull) as f:
            d["f"] = f
    with pytest.raises(TypeError, match="function"):
        d["f"] = lambda: 1
    with pytest.raises(TypeError, match="object"):
        d["o"] = object()
    assert "f" not in d and "o" not in d


def test_full_heap_raises_heap_full_and_leaves_no_trace() -> None:
    name = f"small-{uuid.uuid4().hex[:8]}"
    h = shm.Heap.create(name, size=2 << 20, initial=1 << 20)
    try:
        d = h.root("d", shm.Dict)
        d["keep"] = 1
        before = h.live_bytes()
        with pytest.raises(troupe.HeapFull) as info:
            h.atomically(lambda: [d.__setitem__(i, b"x" * 100_000) for i in range(100)])
        assert isinstance(info.value, MemoryError)
        assert d.to_python() == {"keep": 1} and h.live_bytes() == before
    finally:
        h.close()
        shm.Heap.remove(name, missing_ok=True)


def test_stale_handle_raises_not_found(heap: shm.Heap) -> None:
    d = heap.root("d", shm.Dict)
    d["inner"] = {"a": 1}
    inner = d["inner"]
    del d["inner"]
    d["other"] = {"b": 2}  # may reuse the block
    with pytest.raises(troupe.NotFound, match="stale"):
        inner["a"]


def test_unrelated_process_opens_by_name(heap: shm.Heap) -> None:
    from conftest import run_script

    heap.root("d", shm.Dict)["hello"] = "world"
    r = run_script(
        f"""
        import troupe.shm as shm
        h = shm.Heap.open({heap.name!r})
        print(h.root("d")["hello"])
        h.root("d")["back"] = 42
        """
    )
    assert r.stdout.strip() == "world", r.stderr
    assert heap.root("d")["back"] == 42
    assert oct(os.stat(f"/dev/shm/troupe.{heap.name}").st_mode & 0o777) == "0o600"


def _warm_up(heap: shm.Heap) -> int:
    """One round first: the dict's buckets grow to their size. What is
    measured is used_bytes (published data less the transaction layer's own
    logs): worker caches and logs come and go with the workers."""
    heap.root("churn", shm.Dict)
    fs = [troupe.isolated(churn).submit(heap, 200, tag) for tag in range(2)]
    assert [f.result(300) for f in fs] == [200, 200]
    return heap.used_bytes()


def test_churn_from_two_processes_leaks_nothing(heap: shm.Heap) -> None:
    before = _warm_up(heap)
    fs = [troupe.isolated(churn).submit(heap, 3000, tag) for tag in range(2)]
    assert [f.result(300) for f in fs] == [3000, 3000]
    assert len(heap.root("churn")) == 0
    assert heap.used_bytes() == before
    assert heap.verify() == []


@pytest.mark.stress
def test_a_million_cycles_from_two_processes_leak_nothing(heap: shm.Heap) -> None:
    before = _warm_up(heap)
    fs = [troupe.isolated(churn).submit(heap, 500_000, tag) for tag in range(2)]
    assert [f.result(1200) for f in fs] == [500_000, 500_000]
    assert heap.used_bytes() == before
    assert heap.verify() == []


def test_shared_buffer_filled_by_two_workers_without_copies() -> None:
    import numpy as np

    from shm_helpers import fill

    name = f"buf-{uuid.uuid4().hex[:8]}"
    h = shm.Heap.create(name, size=512 << 20)
    try:
        n = 256 << 20
        buf = h.buffer(n)
        a = np.frombuffer(buf, dtype=np.uint8)
        assert a.nbytes == n and not a.any()
        half = n // 2
        fs = [troupe.isolated(fill).submit(buf, 7, 0, half), troupe.isolated(fill).submit(buf, 9, half, n)]
        assert [f.result(120) for f in fs] == [half, n - half]
        assert a[0] == 7 and a[half - 1] == 7 and a[half] == 9 and a[-1] == 9
        assert int(a[::4096].astype(np.int64).sum()) == (half // 4096) * 7 + ((n - half) // 4096) * 9
        live = h.live_bytes()
        del buf  # `a` still references it: nothing is freed yet
        assert h.live_bytes() == live and a[-1] == 9
        del a
        assert h.live_bytes() <= live - n
    finally:
        h.close()
        shm.Heap.remove(name, missing_ok=True)


def test_increment_is_one_atomic_operation(heap: shm.Heap) -> None:
    d = heap.root("inc", shm.Dict)
    d.update({"n": 10, "s": "text", "k" * 100: 1, 7: 0})
    assert d.increment("n", 5) == 15
    assert d.increment("absent") == 1 and d["absent"] == 1  # inserted
    assert d.increment("k" * 100, 2) == 3  # a long key: a transaction's path
    assert d.increment(7) == 1
    with pytest.raises(ValueError, match="not an int"):
        d.increment("s")

    def rolled_back() -> None:
        assert d.increment("n", 100) == 115
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        heap.atomically(rolled_back)  # inside a transaction it is part of it
    assert d["n"] == 15 and d["s"] == "text"
