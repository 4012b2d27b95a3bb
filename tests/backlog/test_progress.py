from __future__ import annotations

import io

from rich.console import Console
from stenopod.backlog.progress import ProgressView, format_duration


def test_progress_shows_counts_audio_hours_throughput_and_eta():
    out = io.StringIO()
    view = ProgressView(
        enabled=True, console=Console(file=out, force_terminal=True, width=200), clock=lambda: 100.0
    )
    with view:
        view.update(total=10, done=0, failed=0, audio_done_s=0.0, audio_remaining_s=3600.0, elapsed_s=0.0)
        view.update(total=10, done=4, failed=1, audio_done_s=1800.0, audio_remaining_s=1800.0, elapsed_s=60.0)
    text = out.getvalue()
    assert "5/10 items" in text
    assert "failed 1" in text and "0.50/1.00 h audio" in text
    assert "30.0 audio s/s" in text and "ETA 1:00" in text


def test_disabled_progress_prints_nothing_and_durations_read_well():
    view = ProgressView(enabled=False)
    with view:
        view.update(total=1, done=1, failed=0, audio_done_s=1.0, audio_remaining_s=0.0, elapsed_s=1.0)
    assert format_duration(59) == "0:59" and format_duration(3725) == "1:02:05"
