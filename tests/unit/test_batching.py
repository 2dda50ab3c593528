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


def test_a_batch_is_traced_in_its_own_callers_trace_and_links_the_others():
    """Each batch runs in the trace context of its first caller (not of
    whoever started the flush); a batch of several runs under a span linked
    to the other callers' spans."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def test():
        sink = Sink()
        seen: list[trace.SpanContext] = []

        async def run(items: list[int]) -> list[int | BaseException]:
            seen.append(trace.get_current_span().get_span_context())
            return await sink.run(items)

        batcher = Batcher(run, max_size=8, name="test.batch", tracer=tracer)
        callers: dict[int, trace.Span] = {}

        async def caller(i: int) -> int:
            with tracer.start_as_current_span(f"caller {i}") as span:
                callers[i] = span
                return await batcher.submit(i)

        sink.gate.clear()
        first = asyncio.ensure_future(caller(0))
        await asyncio.sleep(0)  # in flight alone
        rest = [asyncio.ensure_future(caller(i)) for i in (2, 4)]
        await asyncio.sleep(0)
        sink.gate.set()
        assert await asyncio.gather(first, *rest) == [0, 20, 40]
        assert sink.batches == [[0], [2, 4]]
        # alone: the run is the caller's own child, no batch span
        assert seen[0] == callers[0].get_span_context()
        (batch,) = [s for s in exporter.get_finished_spans() if s.name == "test.batch"]
        assert seen[1] == batch.context
        assert (
            batch.parent is not None
            and batch.parent.span_id == callers[2].get_span_context().span_id
        )
        assert batch.context.trace_id == callers[2].get_span_context().trace_id
        assert [link.context for link in batch.links] == [callers[4].get_span_context()]
        assert batch.attributes["batch.size"] == 2

    asyncio.run(test())
