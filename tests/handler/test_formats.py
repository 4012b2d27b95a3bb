"""Transcript files checked against their formats: parsed back, times valid and monotonic, hours shown."""

from __future__ import annotations

import json
import re

import pytest
from stenopod.formats import TranscriptDocument, render, srt_time, vtt_time
from stenopod.schema import OutputFormat, Segment, Word

SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def _doc(word_timestamps: bool = False) -> TranscriptDocument:
    segments = [
        Segment(
            id=0, start=0.0, end=2.5, text="Hello there.", words=[Word(start=0.0, end=0.9, word="Hello")]
        ),
        Segment(id=1, start=2.5, end=65.25, text="A <b>bold</b> claim --> & more"),
        Segment(id=2, start=3599.9996, end=3725.5, text="Past the first\n\nhour."),
        Segment(id=3, start=3725.5, end=3726.0, text="   "),  # empty: no cue
    ]
    return TranscriptDocument(
        text="Hello there. A <b>bold</b> claim --> & more Past the first hour.",
        segments=segments,
        language="en",
        duration=3726.0,
        word_timestamps=word_timestamps,
    )


def _parse_cues(text: str, time_re: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        match = re.fullmatch(rf"{time_re} --> {time_re}", lines[timing])
        assert match, f"bad timing line {lines[timing]!r}"
        groups = match.groups()
        cue_text = "\n".join(lines[timing + 1 :])
        assert cue_text and "-->" not in cue_text
        cues.append((_seconds(groups[:4]), _seconds(groups[4:]), cue_text))
    return cues


def test_time_formats_include_hours_and_carry_rounding() -> None:
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(3725.5) == "01:02:05,500"
    assert vtt_time(3725.5) == "01:02:05.500"
    assert vtt_time(59.9996) == "00:01:00.000"
    assert srt_time(36000 + 1.234) == "10:00:01,234"
    assert srt_time(-0.2) == "00:00:00,000"


def test_srt_cues_are_numbered_timed_and_monotonic() -> None:
    srt = render(OutputFormat.srt, _doc()).decode()
    blocks = srt.strip().split("\n\n")
    assert [block.split("\n")[0] for block in blocks] == ["1", "2", "3"]
    cues = _parse_cues(srt, SRT_TIME)
    assert [c[2] for c in cues] == ["Hello there.", "A <b>bold</b> claim -> & more", "Past the first hour."]
    assert cues[2][:2] == (3600.0, 3725.5)
    starts = [c[0] for c in cues]
    assert starts == sorted(starts) and all(end >= start for start, end, _ in cues)


def test_vtt_is_valid_webvtt_with_escaped_text() -> None:
    vtt = render(OutputFormat.vtt, _doc()).decode()
    assert vtt.startswith("WEBVTT\n\n")
    cues = _parse_cues(vtt.removeprefix("WEBVTT\n\n"), VTT_TIME)
    assert cues[1][2] == "A &lt;b&gt;bold&lt;/b&gt; claim -&gt; &amp; more"
    assert cues[2][:2] == (3600.0, 3725.5)
    assert "01:02:05.500" in vtt


def test_json_is_shaped_like_verbose_json() -> None:
    body = json.loads(render(OutputFormat.json, _doc()))
    assert body["task"] == "transcribe"
    assert body["language"] == "en" and body["duration"] == 3726.0
    assert body["text"].startswith("Hello there.")
    assert [s["id"] for s in body["segments"]] == [0, 1, 2, 3]
    assert set(body["segments"][0]) == {"id", "start", "end", "text"}
    assert "words" not in body


def test_json_carries_words_when_word_timestamps() -> None:
    body = json.loads(render(OutputFormat.json, _doc(word_timestamps=True)))
    assert body["words"] == [{"word": "Hello", "start": 0.0, "end": 0.9}]
    assert body["segments"][0]["words"] == body["words"]


def test_json_language_is_null_when_the_engine_reports_none() -> None:
    doc = _doc()
    doc.language = None
    assert json.loads(render(OutputFormat.json, doc))["language"] is None


def test_txt_and_empty_transcripts() -> None:
    assert render(OutputFormat.txt, _doc()).decode().endswith("hour.\n")
    empty = TranscriptDocument(text="", segments=[], language=None, duration=1.0)
    assert render(OutputFormat.txt, empty) == b""
    assert render(OutputFormat.srt, empty) == b""
    assert render(OutputFormat.vtt, empty) == b"WEBVTT\n\n"
    assert json.loads(render(OutputFormat.json, empty))["segments"] == []


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_renders_utf8(fmt: OutputFormat) -> None:
    doc = TranscriptDocument(
        text="Grüße — 日本語",
        segments=[Segment(id=0, start=0, end=1, text="Grüße — 日本語")],
        language="de",
        duration=1.0,
    )
    assert "Grüße — 日本語" in render(fmt, doc).decode("utf-8")
