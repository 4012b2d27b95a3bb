"""The progress bar (rich, on stderr): items done/failed, audio hours, throughput and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressView:
    """A no-op unless enabled; use as a context manager around the run."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None
        self._baseline_audio_s: float | None = None
        self._baseline_elapsed_s = 0.0
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]transcribing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task("items", total=None, stats="")

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
        eta = format_duration(audio_remaining_s / speed) if speed > 0 and audio_remaining_s > 0 else "-"
        stats = f"failed {failed} | {audio_done_s / 3600:.2f} h audio | {speed:.1f} audio s/s | ETA {eta}"
        self._progress.update(self._task, total=total, completed=done + failed, stats=stats)
