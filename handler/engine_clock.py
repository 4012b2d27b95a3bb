"""When the engine of a job was busy, idle waiting for input, and what lay outside its work.

With more than one engine call in flight at once, per-call durations overlap; what a user pays for
is the union of the busy intervals, and what the input/output costs them is the time the engine
sat with no call at all: before the first call (first_input_s), between calls (wait_s), and
after the last one (measured by the job as the writes still running then). A call that was ready
but waited for the engine to finish another job's calls counts as input only up to when it was
ready.
"""

from __future__ import annotations

import time


class EngineClock:
    """Counts engine calls in and out; not thread-safe (the job's event loop drives it)."""

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.busy_s = 0.0
        self.wait_s = 0.0
        self.first_input_s: float | None = None
        self._active = 0
        self._busy_since = 0.0
        self._idle_since: float | None = None

    def call_started(self, ready_at: float | None = None) -> None:
        """A call starts now; ready_at: when its input was ready, if it then waited for the engine
        to finish another job's calls (handler.engine_gate): that wait is not waiting for input."""
        now = time.perf_counter()
        if self._active == 0:
            input_until = now if ready_at is None else min(now, ready_at)
            if self.first_input_s is None:
                self.first_input_s = max(0.0, input_until - self.started_at)
            elif self._idle_since is not None:
                self.wait_s += max(0.0, input_until - self._idle_since)
            self._busy_since = now
        self._active += 1

    def call_finished(self) -> None:
        now = time.perf_counter()
        self._active -= 1
        if self._active == 0:
            self.busy_s += now - self._busy_since
            self._idle_since = now
