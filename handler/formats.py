"""Transcript files: json (OpenAI verbose_json's shape), txt, srt and vtt."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from stenopod.schema import OutputFormat, Segment, Word

CONTENT_TYPES: dict[OutputFormat, str] = {
    OutputFormat.json: "application/json",
    OutputFormat.txt: "text/plain; charset=utf-8",
    OutputFormat.srt: "application/x-subrip; charset=utf-8",
    OutputFormat.vtt: "text/vtt; charset=utf-8",
}


@dataclass
class TranscriptDocument:
    """What every format is rendered from: one item's transcript."""

    text: str
    segments: list[Segment]
    language: str | None
    duration: float
    word_timestamps: bool = False


def render(fmt: OutputFormat, doc: TranscriptDocument) -> bytes:
    """The file for one format, UTF-8 encoded."""
    return _RENDERERS[OutputFormat(fmt)](doc).encode("utf-8")


def render_json(doc: TranscriptDocument) -> str:
    """verbose_json as OpenAI's transcription API returns it, so tools that read it read ours."""
    body: dict[str, object] = {
        "task": "transcribe",
        "language": doc.language,
        "duration": round(doc.duration, 3),
        "text": doc.text,
        "segments": [
            {"id": seg.id, "start": _r(seg.start), "end": _r(seg.end), "text": seg.text}
            | ({"words": [_word(w) for w in seg.words or []]} if doc.word_timestamps else {})
            for seg in doc.segments
        ],
    }
    if doc.word_timestamps:
        body["words"] = [_word(w) for seg in doc.segments for w in seg.words or []]
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def render_txt(doc: TranscriptDocument) -> str:
    text = doc.text.strip()
    return f"{text}\n" if text else ""


def render_srt(doc: TranscriptDocument) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm --> HH:MM:SS,mmm, a blank line after each cue."""
    cues = []
    for number, (start, end, text) in enumerate(_cues(doc), start=1):
        cues.append(f"{number}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n")
    return "\n".join(cues)


def render_vtt(doc: TranscriptDocument) -> str:
    """WebVTT: the WEBVTT signature line, then cues with HH:MM:SS.mmm times (hours always given)."""
    cues = [
        f"{vtt_time(start)} --> {vtt_time(end)}\n{_vtt_escape(text)}\n" for start, end, text in _cues(doc)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def srt_time(seconds: float) -> str:
    hours, minutes, secs, millis = _split_time(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def vtt_time(seconds: float) -> str:
    hours, minutes, secs, millis = _split_time(seconds)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _split_time(seconds: float) -> tuple[int, int, int, int]:
    total_ms = max(0, round(seconds * 1000))  # whole milliseconds first, so 59.9996 s carries over
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return hours, minutes, secs, millis


def _cues(doc: TranscriptDocument) -> list[tuple[float, float, str]]:
    """(start, end, text) per non-empty segment, with times that never run backwards."""
    cues: list[tuple[float, float, str]] = []
    previous_start = 0.0
    for seg in doc.segments:
        # A blank line ends a cue and "-->" starts a timing line: neither may appear in cue text.
        text = " ".join(seg.text.split()).replace("-->", "->")
        if not text:
            continue
        start = max(seg.start, previous_start)
        end = max(seg.end, start)
        cues.append((start, end, text))
        previous_start = start
    return cues


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _word(word: Word) -> dict[str, object]:
    return {"word": word.word, "start": _r(word.start), "end": _r(word.end)}


def _r(value: float) -> float:
    return round(value, 3)


_RENDERERS: dict[OutputFormat, Callable[[TranscriptDocument], str]] = {
    OutputFormat.json: render_json,
    OutputFormat.txt: render_txt,
    OutputFormat.srt: render_srt,
    OutputFormat.vtt: render_vtt,
}
