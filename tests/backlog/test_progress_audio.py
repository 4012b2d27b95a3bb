"""Progress by audio seconds: a long file shows its audio total, elapsed time and an audio ETA."""

from __future__ import annotations

import io

from rich.console import Console
from stenopod.backlog.progress import ProgressView


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(clock: FakeClock) -> tuple[ProgressView, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    return ProgressView(enabled=True, console=console, clock=clock), out


def test_one_long_file_shows_its_audio_total_and_the_time_going_by() -> None:
    clock = FakeClock()
    view, _ = _view(clock)
    view.update(total=1, done=0, failed=0, audio_done_s=0.0, audio_remaining_s=3600.0, elapsed_s=0.0)
    clock.now += 120  # two minutes into the file, no item finished: no update came
    line = view.line()
    assert "0.00/1.00 h audio" in line and "0/1 items" in line
    assert "elapsed 2:00" in line
    assert "ETA -" in line and "- audio s/s" in line  # no speed known yet, and not "0.0"


def test_the_bar_and_the_eta_count_audio_seconds_and_the_eta_counts_down() -> None:
    clock = FakeClock()
    view, out = _view(clock)
    with view:
        view.update(total=2, done=0, failed=0, audio_done_s=0.0, audio_remaining_s=3600.0, elapsed_s=0.0)
        clock.now += 60
        # A 10-minute file done in a minute; a 50-minute one left: 10 audio s/s, 5 minutes left.
        view.update(
            total=2,
            done=1,
            failed=0,
            audio_done_s=600.0,
            audio_remaining_s=3000.0,
            elapsed_s=60.0,
            in_flight=1,
        )
        assert view._progress is not None
        task = view._progress.tasks[0]
        assert (task.completed, task.total) == (600.0, 3600.0)  # the bar is audio, not items
        line = view.line()
        assert "0.17/1.00 h audio" in line and "1/2 items" in line and "1 in flight" in line
        assert "10.0 audio s/s" in line and "elapsed 1:00" in line and "ETA 5:00" in line
        clock.now += 60
        assert "elapsed 2:00" in view.line() and "ETA 4:00" in view.line()
        view._progress.refresh()
    assert "ETA 4:00" in out.getvalue()
