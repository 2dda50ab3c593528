"""Natural batching (libs/batching.py): an idle batcher sends at once, items
that come while a batch is in flight go together in the next one (up to its
size), each caller gets its own result or its own error, and a failed batch
fails each of its callers."""

from __future__ import annotations

import asyncio

import pytest

from libs.batching import Batcher


class Sink:
    """A `run` that records its batches and answers once `gate` is open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def test_an_idle_batcher_sends_at_once_and_later_items_go_together():
    async def test():
        sink = Sink()
        batcher = Batcher(sink.run, max_size=3)
        assert await batcher.submit(0) == 0
        sink.gate.clear()
        first = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)  # in flight, holding the gate
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 6, 8, 10)]
        await asyncio.sleep(0)
        sink.gate.set()
        assert await first == 20
        assert await asyncio.gather(*rest) == [40, 60, 80, 100]
        assert sink.batches == [[0], [2], [4, 6, 8], [10]]
        assert (batcher.batches, batcher.items) == (4, 6)

    asyncio.run(test())


def test_each_caller_gets_its_own_error_and_a_failed_batch_fails_them_all():
    async def test():
        sink = Sink()
        batcher = Batcher(sink.run, max_size=8)
        sink.gate.clear()
        calls = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        sink.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [str(r) if isinstance(r, Exception) else r for r in results] == [
            "odd 1",
            20,
            "odd 3",
        ]
        sink.fail = RuntimeError("store down")
        with pytest.raises(RuntimeError, match="store down"):
            await batcher.submit(4)

    asyncio.run(test())


def test_a_wrong_number_of_results_is_an_error_for_every_caller():
    async def test():
        async def short(items: list[int]) -> list[int]:
            return items[:-1]

        batcher = Batcher(short, max_size=8, concurrency=1)
        calls = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        # The first went alone (and was short of its one result); the rest together.
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(test())


def test_concurrency_lets_that_many_batches_be_in_flight():
    async def test():
        sink = Sink()
        sink.gate.clear()
        batcher = Batcher(sink.run, max_size=8, concurrency=2)
        calls = []
        for i in (0, 2, 4, 6):
            calls.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert sink.batches == [[0], [2]]  # two in flight; 4 and 6 wait
        sink.gate.set()
        assert await asyncio.gather(*calls) == [0, 20, 40, 60]
        assert sink.batches[2:] == [[4, 6]]

    asyncio.run(test())
