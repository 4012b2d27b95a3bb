"""Engine calls in flight across every job a worker runs at once.

A worker takes its next job while the current one is still running (handler/__main__.py's
concurrency), so the next job's audio is fetched and decoded while the engine works: the engine
does not sit idle between jobs waiting on the network. The engine itself must not take more calls
than it runs well, whichever jobs they come from: each call takes a slot here first. A job's wait
for a slot is time the engine was busy with another job, not time it waited for input.
"""

from __future__ import annotations

import asyncio
import time
import weakref


class EngineGate:
    """At most `slots` engine calls at once in this process (one semaphore per event loop)."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        # asyncio primitives belong to one loop; tests run each job in a loop of its own.
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop[loop] = asyncio.Semaphore(self.slots)
        return semaphore

    async def acquire(self) -> float:
        """Take a slot, waiting for one if need be; returns when the wait began (perf_counter)."""
        asked = time.perf_counter()
        await self._semaphore().acquire()
        return asked

    def release(self) -> None:
        self._semaphore().release()
