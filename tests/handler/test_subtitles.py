"""Readable subtitles: srt/vtt cues re-cut on word times, the limits checked on the files parsed back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from stenopod.formats import TranscriptDocument, render
from stenopod.schema import OutputFormat, Segment, Subtitles, Word

from handler.engines.base import Engine
from handler.job import run_job
from handler.settings import JobSettings
from tests.handler.test_determinism import OneEngineRegistry
from tests.handler.test_formats_cues import _assert_valid, _parse
from tests.handler.test_vocabulary import data_uri


@pytest.fixture(scope="module")
def whisper(tiny_en_dir: Path) -> Engine:
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir)


def _assert_within(cues: list[tuple[int, int, str]], limits: Subtitles) -> None:
    _assert_valid(cues)  # in order, never overlapping, each shown for some time
    for start, end, text in cues:
        assert end - start <= limits.max_duration_s * 1000, (start, end, text)
        lines = text.split("\n")
        assert len(lines) <= limits.max_line_count, text
        for line in lines:
            assert len(line) <= limits.max_line_width or " " not in line, line  # a longer word alone


def test_real_speech_cues_keep_the_limits_in_srt_and_vtt(
    whisper: Engine, data_dir: Path, tmp_path: Path
) -> None:
    limits = {"max_line_width": 24, "max_line_count": 2, "max_duration_s": 3.0}
    job_input = {
        "items": [
            {"id": "jfk", "audio": data_uri(data_dir / "jfk.flac").replace("mpeg", "flac")},
            {"id": "hot", "audio": data_uri(data_dir / "hotwords.mp3")},
        ],
        "subtitles": limits,
        "output": str(tmp_path),
    }
    settings = JobSettings(allow_local_output=True)
    answer = asyncio.run(
        run_job({"id": "job", "input": job_input}, OneEngineRegistry(whisper), settings=settings)
    )
    for item in answer["items"]:
        assert item["status"] == "ok", item
        engine_words = item["text"].split()
        for fmt in (OutputFormat.srt, OutputFormat.vtt):
            cues = _parse(fmt, (tmp_path / f"{item['id']}.{fmt.value}").read_text())
            _assert_within(cues, Subtitles(**limits))
            # Nothing lost or added: the cues read the transcript's words, in order.
            cue_words = [word for _, _, text in cues for word in text.split()]
            if fmt == OutputFormat.srt:
                assert cue_words == engine_words
        # json keeps the engine's segments (and no words: timestamps was not "word").
        body = json.loads((tmp_path / f"{item['id']}.json").read_text())
        assert [s["text"] for s in body["segments"]] == [s["text"] for s in item["segments"]]
        assert all("words" not in s for s in body["segments"])
    assert len(_parse(OutputFormat.srt, (tmp_path / "jfk.srt").read_text())) >= 4  # 11 s, 3 s at most each


def _words(spec: list[tuple[float, float, str]]) -> list[Segment]:
    words = [Word(start=s, end=e, word=w) for s, e, w in spec]
    return [Segment(id=0, start=spec[0][0], end=spec[-1][1], text=" ".join(w for *_, w in spec), words=words)]


def _cues(segments: list[Segment], limits: Subtitles) -> list[tuple[int, int, str]]:
    doc = TranscriptDocument(text="", segments=segments, language="en", duration=60.0, subtitles=limits)
    return _parse(OutputFormat.srt, render(OutputFormat.srt, doc).decode())


def test_a_line_breaks_at_a_sentence_end_and_a_long_pause_starts_a_cue() -> None:
    spec = [(0.0, 0.3, "Yes."), (0.3, 0.6, "We"), (0.6, 0.9, "can"), (0.9, 1.2, "go"), (3.0, 3.3, "Later")]
    cues = _cues(_words(spec), Subtitles(max_line_width=20, max_line_count=2, max_duration_s=6))
    assert [text for _, _, text in cues] == ["Yes.\nWe can go", "Later"]


def test_a_word_longer_than_a_line_stands_alone_and_a_slow_word_is_cut_to_the_limit() -> None:
    spec = [(0.0, 0.5, "a"), (0.5, 9.0, "Donaudampfschifffahrtsgesellschaft"), (9.0, 9.5, "b")]
    limits = Subtitles(max_line_width=10, max_line_count=2, max_duration_s=2)
    cues = _cues(_words(spec), limits)
    _assert_within(cues, limits)
    assert [text for _, _, text in cues] == ["a", "Donaudampfschifffahrtsgesellschaft", "b"]


def test_segments_without_word_times_are_still_cut_to_the_limits() -> None:
    text = " ".join(f"word{i}" for i in range(40))
    segments = [Segment(id=0, start=0.0, end=20.0, text=text)]  # Parakeet without words, say
    limits = Subtitles()
    cues = _cues(segments, limits)
    _assert_within(cues, limits)
    assert [w for _, _, t in cues for w in t.split()] == text.split()


def test_the_srt_speaker_prefix_counts_in_the_line_width() -> None:
    """A diarized srt line reads "SPEAKER_0: ..." and still fits max_line_width; vtt's voice tag is
    not shown, so its lines keep the whole width."""
    words = [
        Word(start=i * 0.3, end=i * 0.3 + 0.25, word=f"w{i:02d}", speaker=f"SPEAKER_{i // 12}")
        for i in range(24)
    ]
    segments = [Segment(id=0, start=0.0, end=7.2, text=" ".join(w.word for w in words), words=words)]
    limits = Subtitles(max_line_width=24, max_line_count=2, max_duration_s=6)
    doc = TranscriptDocument(
        text="",
        segments=segments,
        language="en",
        duration=8.0,
        speakers=["SPEAKER_0", "SPEAKER_1"],
        subtitles=limits,
    )
    srt = _parse(OutputFormat.srt, render(OutputFormat.srt, doc).decode())
    _assert_within(srt, limits)
    assert all(text.startswith(("SPEAKER_0: ", "SPEAKER_1: ")) for _, _, text in srt)
    assert [w for _, _, text in srt for w in text.split() if not w.startswith("SPEAKER")] == [
        w.word for w in words
    ]
    vtt = _parse(OutputFormat.vtt, render(OutputFormat.vtt, doc).decode())
    shown = [(start, end, text.split(">", 1)[1]) for start, end, text in vtt]
    _assert_within(shown, limits)
    # "w00 w01 w02 w03 w04 w05" (23 characters) fills a vtt line; after "SPEAKER_0: " only 3 words fit.
    assert shown[0][2].split("\n")[0] == "w00 w01 w02 w03 w04 w05"
    assert srt[0][2].split("\n")[0] == "SPEAKER_0: w00 w01 w02"
