"""The Python entry points as a notebook user meets them: a running event loop, formats as a string."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import stenopod.api as api
from stenopod.backlog.errors import UsageError
from stenopod.backlog.report import BacklogReport

pytestmark = pytest.mark.timeout(60)


def test_transcribe_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def in_a_notebook_cell() -> None:
        # No endpoint is needed to reach the run: a missing source stops it as a usage error,
        # not as "asyncio.run() cannot be called from a running event loop".
        with pytest.raises(UsageError, match="nowhere.mp3: no such file"):
            api.transcribe([str(tmp_path / "nowhere.mp3")], str(tmp_path / "out"))

    asyncio.run(in_a_notebook_cell())


@pytest.mark.parametrize("formats", ["json,srt", " JSON, srt ,", ["json", "srt"], ("json", "srt", "json")])
def test_formats_take_a_list_or_a_comma_string(formats: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    async def fake_run_backlog(options: api.BacklogOptions, **_: Any) -> BacklogReport:
        options.validate()
        seen.append(options.formats)
        return BacklogReport(0, 0, 0, 0, [], 0.0, 0.0, options.output, None, "state")

    monkeypatch.setattr(api, "run_backlog", fake_run_backlog)
    api.transcribe("a.mp3", "out", formats=formats)
    assert seen == [("json", "srt")]


@pytest.mark.parametrize(
    ("hotwords", "subtitles", "expected"),
    [
        ("ComfyUI", True, (("ComfyUI",), {})),
        ("ComfyUI, Sortformer", {}, (("ComfyUI", "Sortformer"), {})),
        (["ComfyUI"], {"max_line_width": 32}, (("ComfyUI",), {"max_line_width": 32})),
        ((), False, ((), None)),
        ((), None, ((), None)),
    ],
)
def test_hotwords_and_subtitles_mean_what_they_say(
    hotwords: Any, subtitles: Any, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    async def fake_run_backlog(options: api.BacklogOptions, **_: Any) -> BacklogReport:
        seen.append((options.hotwords, options.subtitles))
        return BacklogReport(0, 0, 0, 0, [], 0.0, 0.0, options.output, None, "state")

    monkeypatch.setattr(api, "run_backlog", fake_run_backlog)
    api.transcribe("a.mp3", "out", hotwords=hotwords, subtitles=subtitles)
    assert seen == [expected]
