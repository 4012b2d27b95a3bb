"""A job's items through the engine, batch by batch, overlapped so the engine does not wait.

Items are fetched and decoded ahead (handler.feed) while the engine transcribes, and each batch is
written while the engine works on the next. While a call runs, the next one is filled up to the
engine's batch limits in audio seconds; an engine with no call takes whatever is ready, since an
idle GPU waiting for a full batch is billed time lost. Up to ENGINE_CALLS_IN_FLIGHT calls run at
once, so a call's CPU-side work overlaps the tail of the one before. Memory holds those calls plus
one call's worth of audio prepared ahead. Long audio is planned into chunks while it is prepared
(handler.decode_pool), so the engine call only transcribes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .engine_clock import EngineClock
from .engine_gate import EngineGate
from .engines.base import BatchLimits
from .feed import Feed
from .job_state import ItemState

# Engine calls a job may have at once.
ENGINE_CALLS_IN_FLIGHT = 2
# Engine calls in flight across all the jobs this worker runs at once (handler/__main__.py takes
# the next job while one runs, so its fetches overlap this one's inference).
ENGINE_GATE = EngineGate(ENGINE_CALLS_IN_FLIGHT)

Stage = Callable[[list[ItemState]], Awaitable[None]]


@dataclass(frozen=True)
class EngineTimes:
    """engine_busy_s: the union of the engine's calls. engine_wait_s: how long the engine sat with
    no call while the job still had items; first_input_s: the input before its first call;
    last_output_s: the writes after the last call, which nothing overlaps."""

    engine_busy_s: float = 0.0
    engine_wait_s: float = 0.0
    first_input_s: float = 0.0
    last_output_s: float = 0.0


async def run_pipeline(
    items: list[ItemState],
    prepare: Callable[[int, ItemState], Awaitable[None]],
    transcribe: Stage,
    finish: Stage,
    limits: BatchLimits,
    concurrency: int,
) -> EngineTimes:
    """prepare each item (ahead, `concurrency` at once), transcribe in batches, finish each batch."""
    feed: Feed[ItemState] = Feed(
        items,
        prepare,
        lambda item: item.audio_s,
        concurrency=concurrency,
        ahead_audio_s=limits.max_audio_s,
        ahead_items=limits.max_items,
    )
    clock = EngineClock()
    calls: set[asyncio.Task[None]] = set()
    writes: list[asyncio.Task[None]] = []
    last_output_s = 0.0

    async def transcribe_then_finish(batch: list[ItemState]) -> None:
        ready_at = await ENGINE_GATE.acquire()
        try:
            clock.call_started(ready_at)
            try:
                await transcribe(batch)
            finally:
                clock.call_finished()
        finally:
            ENGINE_GATE.release()
        writes.append(asyncio.ensure_future(finish(batch)))

    try:
        while True:
            if len(calls) >= ENGINE_CALLS_IN_FLIGHT:
                finished, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                calls.difference_update(finished)
                for task in finished:
                    task.result()  # an unexpected failure ends the job as it did with one call
            # An idle engine takes whatever is ready; a busy one's next call waits to be full.
            batch = await feed.take(
                limits.max_items, limits.max_audio_s, take_any=lambda: all(call.done() for call in calls)
            )
            if not batch:
                break
            call = asyncio.ensure_future(transcribe_then_finish(batch))
            call.add_done_callback(lambda _: feed.wake())
            calls.add(call)
        await asyncio.gather(*calls)
        tail = time.perf_counter()
        await asyncio.gather(*writes)
        # The writes still running after the last engine call are on the critical path too.
        last_output_s = time.perf_counter() - tail
    finally:
        # A cancelled job must not leave fetches, calls or writes running after its answer.
        await feed.close()
        for task in [*calls, *writes]:
            task.cancel()
        await asyncio.gather(*calls, *writes, return_exceptions=True)
    return EngineTimes(clock.busy_s, clock.wait_s, clock.first_input_s or 0.0, last_output_s)
