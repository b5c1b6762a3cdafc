"""Executor: threads by default, worker processes with isolated(), the
concurrent.futures conventions, and what crosses the process boundary."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading

import pytest

import troupe
from conftest import run_script
from helpers import Unpicklable, pid, raise_key, raise_unpicklable, sleep_then, square


def test_thread_and_isolated_submit(ex: troupe.Executor) -> None:
    t = ex.submit(square, 3)
    i = ex.submit(troupe.isolated(square), 4)
    assert isinstance(t, troupe.Future) and isinstance(i, troupe.Future)
    assert isinstance(t, cf.Future)
    assert t.result(10) == 9 and i.result(10) == 16
    assert ex.submit(troupe.isolated(pid)).result(10) != os.getpid()
    assert ex.submit(threading.get_ident).result(10) != threading.get_ident()


def test_is_a_thread_pool_executor() -> None:
    assert issubclass(troupe.Executor, cf.ThreadPoolExecutor)


def test_isolated_decorator_and_direct_call() -> None:
    f = troupe.isolated(square)
    assert f(5) == 25
    assert f.submit(6).result(10) == 36
    assert f.__name__ == "square"


def test_lambda_and_closure_run_in_a_worker(ex: troupe.Executor) -> None:
    k = 7
    assert ex.submit(troupe.isolated(lambda x: x + k), 1).result(10) == 8

    def inner(x: int) -> int:
        return x * k

    assert ex.submit(troupe.isolated(inner), 3).result(10) == 21


def test_map_with_chunks(ex: troupe.Executor) -> None:
    assert list(ex.map(troupe.isolated(square), range(50), chunksize=7)) == [x * x for x in range(50)]
    assert list(ex.map(troupe.isolated(square), range(5))) == [0, 1, 4, 9, 16]
    assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    with pytest.raises(cf.TimeoutError):
        list(ex.map(troupe.isolated(sleep_then), [0.6], timeout=0.2))


def test_as_completed_and_wait(ex: troupe.Executor) -> None:
    fs = [ex.submit(troupe.isolated(square), i) for i in range(20)]
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=30)) == sorted(i * i for i in range(20))
    done, not_done = cf.wait([ex.submit(troupe.isolated(square), 2)], timeout=30)
    assert len(done) == 1 and not not_done


def test_remote_exception_keeps_its_type_and_traceback(ex: troupe.Executor) -> None:
    with pytest.raises(KeyError) as info:
        ex.submit(troupe.isolated(raise_key), "nope").result(10)
    assert isinstance(info.value.__cause__, troupe.RemoteTraceback)
    assert "raise_key" in info.value.__cause__.tb


def test_unrebuildable_exception_is_a_remote_error(ex: troupe.Executor) -> None:
    with pytest.raises(troupe.RemoteError) as info:
        ex.submit(troupe.isolated(raise_unpicklable)).result(10)
    assert "Unpicklable" in info.value.type_name
    assert "1/2" in info.value.message
    assert "raise_unpicklable" in info.value.remote_traceback
    assert Unpicklable  # the type exists here, but not its way back


def test_unpicklable_argument_fails_the_submit_at_once(ex: troupe.Executor) -> None:
    with pytest.raises(TypeError, match="lock"):
        ex.submit(troupe.isolated(square), threading.Lock())
    assert ex.submit(troupe.isolated(square), 2).result(10) == 4  # nothing stuck


def test_unpicklable_result_is_an_error_not_a_hang(ex: troupe.Executor) -> None:
    with pytest.raises(TypeError, match="sending the result back"):
        ex.submit(troupe.isolated(threading.Lock)).result(10)


def test_shutdown_cancel_futures_and_reject_new() -> None:
    e = troupe.Executor(max_workers=1)
    slow = [e.submit(sleep_then, 0.3) for _ in range(3)]
    iso = [e.submit(troupe.isolated(sleep_then), 0.2, i) for i in range(6)]
    e.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in slow + iso)
    assert any(f.cancelled() for f in slow)
    with pytest.raises(RuntimeError):
        e.submit(troupe.isolated(square), 1)
    with pytest.raises(RuntimeError):
        e.submit(square, 1)


def test_cancel_a_queued_thread_future() -> None:
    with troupe.Executor(max_workers=1) as e:
        first = e.submit(sleep_then, 0.3)
        second = e.submit(square, 2)
        assert second.cancel()
        assert second.cancelled()
        assert first.result(10) is None


def test_timeout_fails_with_call_timeout() -> None:
    f = troupe.isolated(sleep_then, timeout=0.2).submit(1.0)
    with pytest.raises(troupe.CallTimeout):
        f.result(10)
    with pytest.raises(TimeoutError):
        troupe.isolated(sleep_then, timeout=0.2)(1.0)


def test_result_timeout_raises_timeout_error() -> None:
    f = troupe.isolated(sleep_then).submit(1.0, "late")
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.05)
    assert f.result(10) == "late"


def test_main_is_never_reexecuted_and_sys_path_and_cwd_arrive(tmp_path) -> None:
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "faraway.py").write_text("def where():\n    import os\n    return os.getcwd()\n")
    work = tmp_path / "work"
    work.mkdir()
    r = run_script(
        f"""
        import os, sys
        print("MAIN RUNS", os.getpid(), flush=True)
        sys.path.insert(0, {str(mod_dir)!r})
        os.chdir({str(work)!r})
        import troupe, faraway
        def local_fn(x):
            return (x, os.getpid())
        with troupe.Executor() as ex:
            print("RESULT", ex.submit(troupe.isolated(faraway.where)).result(30))
            v, wpid = ex.submit(troupe.isolated(local_fn), 5).result(30)
            print("LOCAL", v, wpid != os.getpid())
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("MAIN RUNS") == 1
    assert f"RESULT {work}" in r.stdout
    assert "LOCAL 5 True" in r.stdout


def test_nested_isolated_work_stays_within_the_budget() -> None:
    r = run_script(
        """
        import troupe, helpers
        troupe.init(budget=2)
        pids = troupe.isolated(helpers.nested)(3)
        s = troupe.stats()
        print(len(pids), s["max_alive"])
        """
    )
    assert r.returncode == 0, r.stderr
    levels, max_alive = map(int, r.stdout.split())
    assert levels == 3 and max_alive <= 2


def test_init_after_use_is_refused() -> None:
    troupe.isolated(square)(1)
    with pytest.raises(RuntimeError):
        troupe.init(budget=3)


def test_lambda_typed_at_the_interactive_prompt() -> None:
    import subprocess
    import sys

    session = "import troupe, os\nf = lambda x: (x * 2, os.getpid())\nv, p = troupe.isolated(f)(21)\nprint('REPL', v, p != os.getpid())\n"
    r = subprocess.run([sys.executable, "-q", "-i"], input=session, capture_output=True, text=True, timeout=60)
    assert "REPL 42 True" in r.stdout, r.stderr
