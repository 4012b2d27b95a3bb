"""Items fetched and decoded ahead of the engine, handed over in batches sized by audio seconds.

A job's items are prepared (fetched and decoded) a few at a time while the engine works; the
engine then takes whatever is ready, up to its batch limits. Batching by audio seconds rather
than by a count of items matters both ways: a job of 5-second clips should reach the engine in
calls large enough to fill every batch slot (Whisper packs several clips to a window), and a job of
hour-long recordings must not hold many of them decoded in memory at once. Preparation stops
running ahead once the decoded audio waiting for the engine reaches `ahead_audio_s` or
`ahead_items`, so memory holds that plus what is in flight and what the engine was handed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("stenopod.handler.feed")

ItemT = TypeVar("ItemT")


class Feed(Generic[ItemT]):
    """Prepares `items` in order, at most `concurrency` at once, and hands them out in batches.

    prepare(position, item) does the work and must not raise (a stage failure is the item's
    error, kept on the item); an unexpected exception is logged and the item still handed out,
    so the job answers for it. seconds(item) is the decoded audio an item holds (0 when failed).
    """

    def __init__(
        self,
        items: list[ItemT],
        prepare: Callable[[int, ItemT], Awaitable[None]],
        seconds: Callable[[ItemT], float],
        *,
        concurrency: int,
        ahead_audio_s: float,
        ahead_items: int,
    ) -> None:
        self._items = items
        self._prepare = prepare
        self._seconds = seconds
        self._concurrency = max(1, concurrency)
        self._ahead_audio_s = ahead_audio_s
        self._ahead_items = max(1, ahead_items)
        self._next = 0
        self._ready: list[tuple[int, ItemT]] = []  # (position in items, item), as they finish
        self._running: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def exhausted(self) -> bool:
        """Every item was prepared and handed out."""
        return self._next >= len(self._items) and not self._running and not self._ready

    def _ready_s(self) -> float:
        return sum(self._seconds(item) for _, item in self._ready)

    def _fill(self) -> None:
        while (
            not self._closed
            and self._next < len(self._items)
            and len(self._running) < self._concurrency
            and len(self._ready) + len(self._running) < self._ahead_items
            and self._ready_s() < self._ahead_audio_s
        ):
            position, item = self._next, self._items[self._next]
            self._next += 1
            self._running.add(asyncio.ensure_future(self._run(position, item)))

    async def _run(self, position: int, item: ItemT) -> None:
        try:
            await self._prepare(position, item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("preparing item %d failed unexpectedly", position)
        finally:
            # Out of the running set before take() wakes up, so it sees the item as finished.
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(task)  # type: ignore[arg-type]
        self._ready.append((position, item))
        self._changed.set()
        # Refill as each preparation ends, not only when a batch is taken: while the job waits on
        # its engine calls (both in flight) nobody takes, and the next call's fetches must still
        # run ahead of it.
        self._fill()

    async def take(
        self, max_items: int, max_audio_s: float, take_any: Callable[[], bool] = lambda: False
    ) -> list[ItemT]:
        """The next batch: waits until max_items or max_audio_s of prepared items are ready (or
        nothing more is coming, or take_any() says whatever is ready will do: the engine is idle),
        then takes ready items up to those limits, at least one. An empty list means every item
        was handed out. Call wake() when take_any's answer may have changed."""
        while True:
            self._fill()
            done_preparing = self._next >= len(self._items) and not self._running
            if self._ready and (
                done_preparing
                or len(self._ready) >= max_items
                or self._ready_s() >= max_audio_s
                or take_any()
            ):
                break
            if done_preparing:
                return []
            self._changed.clear()
            await self._changed.wait()
        picked: list[tuple[int, ItemT]] = []
        seconds = 0.0
        for position, item in sorted(self._ready, key=lambda pair: pair[0]):
            duration = self._seconds(item)
            if picked and (len(picked) >= max_items or seconds + duration > max_audio_s):
                continue  # a later, shorter item may still fit
            picked.append((position, item))
            seconds += duration
        taken = {position for position, _ in picked}
        self._ready = [pair for pair in self._ready if pair[0] not in taken]
        self._fill()
        # In the job's order, so answers, callbacks and writes follow the input.
        return [item for _, item in picked]

    def wake(self) -> None:
        """Look again at what take() waits for (an engine call ended)."""
        self._changed.set()

    async def close(self) -> None:
        """Stop preparing (a cancelled job must not leave fetches running after its answer)."""
        self._closed = True  # a preparation finishing meanwhile starts no other
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
