"""asyncio: awaitable futures, to_thread, default executor, many results at once."""

from __future__ import annotations

import asyncio

import troupe
from helpers import sleep_then, square


def test_await_an_isolated_future() -> None:
    async def main() -> int:
        return await troupe.isolated(square).submit(9)

    assert asyncio.run(main()) == 81


def test_to_thread_runs_isolated_in_a_worker() -> None:
    async def main() -> tuple[int, int]:
        import os

        a = await asyncio.to_thread(troupe.isolated(square), 6)
        p = await asyncio.to_thread(troupe.isolated(os.getpid))
        return a, p

    with troupe.Executor() as ex:

        async def with_default() -> tuple[int, int]:
            ex.set_as_event_loop_default()
            return await main()

        a, p = asyncio.run(with_default())
    import os

    assert a == 36 and p != os.getpid()


def test_run_in_executor_and_wrap_future() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with troupe.Executor() as ex:
            a = await loop.run_in_executor(ex, troupe.isolated(square), 3)
            b = await asyncio.wrap_future(ex.submit(troupe.isolated(square), 4))
            c = await loop.run_in_executor(ex, square, 5)
        return [a, b, c]

    assert asyncio.run(main()) == [9, 16, 25]


def test_gather_many_results() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(troupe.isolated(square).submit(i) for i in range(500)))

    assert asyncio.run(main()) == [i * i for i in range(500)]


def test_cancelling_the_awaiting_task_cancels_the_call() -> None:
    async def main() -> bool:
        f = troupe.isolated(sleep_then).submit(5.0)
        t = asyncio.ensure_future(_await(f))
        await asyncio.sleep(0.1)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        return f.cancelled()

    assert asyncio.run(main())


async def _await(f: troupe.Future) -> object:
    return await f
