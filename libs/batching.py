"""Natural batching: many callers' items, one round trip.

`Batcher.submit(item)` returns that item's result. An item submitted while
fewer than `concurrency` batches are in flight starts a batch at once (an
idle system adds no delay); the items that come while they are in flight wait
and go together in the next one, up to `max_size`. So batches grow with the
load by themselves, and each round trip's fixed cost (a statement, a commit,
a system call) is paid once per batch instead of once per item.

`run(items)` returns one result per item, in order; a result that is an
exception is raised to that item's caller alone. An exception raised by
`run` itself goes to every caller of the batch. A caller that is cancelled
does not take its item out of a batch already sent.

Traces: a batch runs in the trace context of its first item's caller, so the
statement's span sits in that caller's trace (alone, a batch of one is traced
exactly as a call of its own). A batch of several, when traced, runs under a
span `<name>` (attribute `batch.size`) linked to every other caller's span.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_size: int = 64,
        concurrency: int = 1,
        name: str = "batch",
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`name` and `tracer`: the span of a batch of several (none without a tracer)."""
        if max_size < 1 or concurrency < 1:
            raise ValueError("max_size and concurrency must be at least 1")
        self._run = run
        self._max_size = max_size
        self._concurrency = concurrency
        self._name = name
        self._tracer = tracer
        self._waiting: deque[_Waiting[T, R]] = deque()
        self._flushing = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Sizes of the batches sent (for metrics and tests): count and total.
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future, otel_context.get_current()))
        if self._flushing < self._concurrency:
            self._flushing += 1
            task = asyncio.ensure_future(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The item is sent all the same; its outcome is nobody's now.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch = [
                    self._waiting.popleft() for _ in range(min(self._max_size, len(self._waiting)))
                ]
                self.batches += 1
                self.items += len(batch)
                await self._send(batch)
        finally:
            self._flushing -= 1

    async def _send(self, batch: list[_Waiting[T, R]]) -> None:
        token = otel_context.attach(batch[0][2])  # this task's own context: detached below
        try:
            results = await self._traced(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
        except BaseException as exc:  # every caller of the batch hears it
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            otel_context.detach(token)
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _traced(self, batch: list[_Waiting[T, R]]) -> Sequence[R | BaseException]:
        """`run` of the batch's items, under a span linked to the other
        callers' spans when the batch has several and its first caller is traced."""
        items = [item for item, _, _ in batch]
        if self._tracer is None or len(batch) == 1 or not trace.get_current_span().is_recording():
            return await self._run(items)
        links = [
            trace.Link(context)
            for _, _, ctx in batch[1:]
            if (context := trace.get_current_span(ctx).get_span_context()).is_valid
        ]
        with self._tracer.start_as_current_span(
            self._name, links=links, attributes={"batch.size": len(batch)}
        ):
            return await self._run(items)


#: An item waiting for a batch: the item, its caller's future, its caller's trace context.
_Waiting = tuple[T, "asyncio.Future[R]", otel_context.Context]
