"""The progress bar (rich, on stderr): audio done of the backlog's total, items, throughput, time.

The bar and the ETA count audio seconds, not items: one 1-hour file is one item, and a bar of items
says nothing until it ends. The total is the audio done plus the ledger's estimate of what is left
(each item's duration from the manifest, feed or probe, else its size). Elapsed time and the ETA
move between updates (they are worked out each time the bar is drawn), so a long item still shows
the run is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _StatsColumn(ProgressColumn):
    def __init__(self, view: ProgressView) -> None:
        super().__init__()
        self._view = view

    def render(self, task: Task) -> Text:
        return Text(self._view.line())


class ProgressView:
    """A no-op unless enabled; use as a context manager around the run."""

    def __init__(
        self, enabled: bool, console: Console | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = enabled
        self._clock = clock
        self._progress: Progress | None = None
        self._task = None
        self._baseline_audio_s: float | None = None
        self._baseline_elapsed_s = 0.0
        self._line = ""
        self._updated_at = 0.0  # clock() at the last update
        self._elapsed_s = 0.0  # the run's elapsed time at the last update
        self._eta_s: float | None = None  # at the last update
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]transcribing"),
                BarColumn(),
                _StatsColumn(self),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task("audio", total=None)

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(
        self,
        *,
        total: int,
        done: int,
        failed: int,
        audio_done_s: float,
        audio_remaining_s: float,
        elapsed_s: float,
        in_flight: int | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        if self._baseline_audio_s is None:
            # Items finished by an earlier run do not count towards this run's throughput.
            self._baseline_audio_s = audio_done_s
            self._baseline_elapsed_s = elapsed_s
        run_audio = audio_done_s - self._baseline_audio_s
        run_elapsed = max(elapsed_s - self._baseline_elapsed_s, 1e-6)
        speed = run_audio / run_elapsed
        self._eta_s = audio_remaining_s / speed if speed > 0 and audio_remaining_s > 0 else None
        self._updated_at = self._clock()
        self._elapsed_s = elapsed_s
        audio_total_s = audio_done_s + audio_remaining_s
        parts = [
            f"{audio_done_s / 3600:.2f}/{audio_total_s / 3600:.2f} h audio",
            f"{done + failed}/{total} items",
            f"failed {failed}",
        ]
        if in_flight is not None:
            parts.append(f"{in_flight} in flight")
        parts.append(f"{speed:.1f} audio s/s" if speed > 0 else "- audio s/s")
        self._line = " | ".join(parts)
        self._progress.update(
            self._task, total=audio_total_s if audio_total_s > 0 else None, completed=audio_done_s
        )

    def line(self) -> str:
        """The text beside the bar, with elapsed time and ETA as of now."""
        since = max(0.0, self._clock() - self._updated_at)
        eta = "-" if self._eta_s is None else format_duration(round(max(0.0, self._eta_s - since)))
        return f"{self._line} | elapsed {format_duration(self._elapsed_s + since)} | ETA {eta}"
