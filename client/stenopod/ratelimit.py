"""A client-side sliding-window rate limiter for asyncio.

RunPod publishes its endpoint limits as "N requests per 10 seconds"; staying under them on our side
means a large backlog never earns a storm of 429s in the first place. A sliding-window log is exact
for that kind of limit (a token bucket would allow a burst of N right after a full window).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateLimiter:
    """At most max_calls acquisitions in any period_s window.

    clock and sleep are injectable so tests can drive the limiter with a fake clock instead of
    waiting on wall time. Waiters are served first come, first served.
    """

    def __init__(
        self,
        max_calls: int,
        period_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_calls < 1:
            raise ValueError(f"max_calls must be at least 1, got {max_calls}")
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.max_calls = max_calls
        self.period_s = period_s
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waits = 0  # how many acquisitions had to wait: a sign the limit is the bottleneck

    async def acquire(self) -> None:
        """Wait until one more call fits in the window, then count it."""
        asked_at = self._clock()
        # The lock makes waiters queue in order; only the head of the queue sleeps on the clock.
        async with self._lock:
            while True:
                now = self._clock()
                while self._granted and now - self._granted[0] >= self.period_s:
                    self._granted.popleft()
                if len(self._granted) < self.max_calls:
                    self._granted.append(now)
                    if now > asked_at:
                        self.waits += 1
                    return
                await self._sleep(self._granted[0] + self.period_s - now)

    def __repr__(self) -> str:
        return f"RateLimiter(max_calls={self.max_calls}, period_s={self.period_s})"
