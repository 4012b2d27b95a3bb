"""Transcript files: json (OpenAI verbose_json's shape), txt, srt and vtt.

A diarized transcript (segments with a `speaker`) keeps its labels in every format: json on each
segment and word plus a top-level `speakers`, txt a `SPEAKER_0: ` before each paragraph (a change
of speaker starts one), srt the same prefix on each cue, vtt a `<v SPEAKER_0>` voice tag.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from stenopod.schema import OutputFormat, Segment, Subtitles, Word
from stenopod.subtitles import speaker_line_prefix, subtitle_spans

CONTENT_TYPES: dict[OutputFormat, str] = {
    OutputFormat.json: "application/json",
    OutputFormat.txt: "text/plain; charset=utf-8",
    OutputFormat.srt: "application/x-subrip; charset=utf-8",
    OutputFormat.vtt: "text/vtt; charset=utf-8",
}

PARAGRAPH_PAUSE_S = 1.5  # txt: a silence this long between two segments starts a new paragraph
PARAGRAPH_MAX_CHARS = 400  # txt: a paragraph this long ends at the next segment boundary
ZERO_LENGTH_CUE_MS = 500  # srt/vtt: how long a cue the engine gave no duration is shown at most


@dataclass
class TranscriptDocument:
    """What every format is rendered from: one item's transcript."""

    text: str
    segments: list[Segment]
    language: str | None
    duration: float
    word_timestamps: bool = False  # json lists the words (srt/vtt may use them either way)
    speakers: list[str] | None = None  # diarized: the labels in order of first words
    task: str = "transcribe"
    language_probability: float | None = None
    subtitles: Subtitles | None = None  # srt/vtt cues cut from word times to these limits


def render(fmt: OutputFormat, doc: TranscriptDocument) -> bytes:
    """The file for one format, UTF-8 encoded."""
    return _RENDERERS[OutputFormat(fmt)](doc).encode("utf-8")


def render_json(doc: TranscriptDocument) -> str:
    """verbose_json as OpenAI's transcription API returns it, so tools that read it read ours."""
    body: dict[str, object] = {
        "task": doc.task,
        "language": doc.language,
        "duration": round(doc.duration, 3),
        "text": doc.text,
        "segments": [
            {"id": seg.id, "start": _r(seg.start), "end": _r(seg.end), "text": seg.text}
            | _known(seg, "language", "avg_logprob", "no_speech_prob", "compression_ratio", "speaker")
            | ({"words": [_word(w) for w in seg.words or []]} if doc.word_timestamps else {})
            for seg in doc.segments
        ],
    }
    if doc.language_probability is not None:
        body["language_probability"] = doc.language_probability
    if doc.speakers is not None:
        body["speakers"] = list(doc.speakers)
    if doc.word_timestamps:
        body["words"] = [_word(w) for seg in doc.segments for w in seg.words or []]
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def render_txt(doc: TranscriptDocument) -> str:
    """Plain text in paragraphs separated by a blank line, built from the segments in the engine's order.

    Segments are joined with a space; a new paragraph starts before a segment when the silence
    since the previous segment's end is at least PARAGRAPH_PAUSE_S (1.5 s), when the paragraph
    so far already holds PARAGRAPH_MAX_CHARS (400) characters or more, or when the speaker changes
    (each paragraph of a diarized transcript opens with "SPEAKER_n: "). A segment is never split, so
    one long segment is one long paragraph. Without segments (or with only blank ones) the
    document's text is written as one paragraph.
    """
    paragraphs: list[list[str]] = []
    length = 0
    previous_end: float | None = None
    speaker: str | None = None
    for seg in doc.segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        pause = previous_end is not None and seg.start - previous_end >= PARAGRAPH_PAUSE_S
        if not paragraphs or pause or length >= PARAGRAPH_MAX_CHARS or seg.speaker != speaker:
            paragraphs.append([f"{seg.speaker}:"] if seg.speaker is not None else [])
            length = -1  # the first segment adds no joining space
        speaker = seg.speaker
        paragraphs[-1].append(text)
        length += len(text) + 1
        previous_end = seg.end
    body = "\n\n".join(" ".join(paragraph) for paragraph in paragraphs) or doc.text.strip()
    return f"{body}\n" if body else ""


def render_srt(doc: TranscriptDocument) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm --> HH:MM:SS,mmm, a blank line after each cue."""
    cues = []
    for number, (start, end, text, speaker) in enumerate(_cues(doc, speaker_prefix=True), start=1):
        line = f"{speaker_line_prefix(speaker)}{text}" if speaker is not None else text
        cues.append(f"{number}\n{_srt_ms(start)} --> {_srt_ms(end)}\n{line}\n")
    return "\n".join(cues)


def render_vtt(doc: TranscriptDocument) -> str:
    """WebVTT: the WEBVTT signature line, then cues with HH:MM:SS.mmm times (hours always given)."""
    cues = [
        f"{_vtt_ms(start)} --> {_vtt_ms(end)}\n{_vtt_voice(speaker)}{_vtt_escape(text)}\n"
        for start, end, text, speaker in _cues(doc)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def srt_time(seconds: float) -> str:
    return _srt_ms(_ms(seconds))


def vtt_time(seconds: float) -> str:
    return _vtt_ms(_ms(seconds))


def _srt_ms(total_ms: int) -> str:
    hours, minutes, secs, millis = _split_ms(total_ms)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def _vtt_ms(total_ms: int) -> str:
    hours, minutes, secs, millis = _split_ms(total_ms)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _ms(seconds: float) -> int:
    """Whole milliseconds, never negative (rounded first, so 59.9996 s carries over to 60.000)."""
    return max(0, round(seconds * 1000))


def _split_ms(total_ms: int) -> tuple[int, int, int, int]:
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return hours, minutes, secs, millis


def _cues(doc: TranscriptDocument, speaker_prefix: bool = False) -> list[tuple[int, int, str, str | None]]:
    """(start_ms, end_ms, text, speaker) per non-empty segment: in order, never overlapping, each end > start.

    Deterministic, and done in whole milliseconds so what is written is what was checked:
    - segments with blank text are dropped;
    - the rest are sorted by start, segments starting in the same millisecond kept in the engine's order;
    - a cue's start is moved up to the previous cue's end where it would overlap it (a contained or
      overlapping segment is shown after the one before it, never on top of it);
    - a cue whose end is not after its (possibly moved) start is shown for ZERO_LENGTH_CUE_MS, or
      less, up to the first later original start, where one comes sooner; that bound is always after
      the start, so every cue lasts at least 1 ms, and cues sharing one start follow one another.
    speaker_prefix: srt shows "SPEAKER_n: " before a diarized cue, which counts in its first line's
    width (vtt's voice tag is not shown).
    json is not affected: it keeps the engine's segments as they are.
    """
    if doc.subtitles is not None:
        spans = subtitle_spans(doc.segments, doc.subtitles, speaker_prefix)
    else:
        spans = [(seg.start, seg.end, " ".join(seg.text.split()), seg.speaker) for seg in doc.segments]
    pending: list[tuple[int, int, int, str, str | None]] = []
    for index, (span_start, span_end, span_text, speaker) in enumerate(spans):
        # A blank line ends a cue and "-->" starts a timing line: neither may appear in cue text;
        # the line breaks a subtitle layout chose are kept.
        lines = (" ".join(line.split()).replace("-->", "->") for line in span_text.split("\n"))
        text = "\n".join(line for line in lines if line)
        if text:
            pending.append((_ms(span_start), index, _ms(span_end), text, speaker))
    pending.sort(key=lambda cue: cue[:2])
    starts = [cue[0] for cue in pending]
    cues: list[tuple[int, int, str, str | None]] = []
    previous_end = 0
    for position, (original_start, _, original_end, text, speaker) in enumerate(pending):
        start = max(original_start, previous_end)
        end = original_end
        if end <= start:
            end = start + ZERO_LENGTH_CUE_MS
            later = bisect_right(starts, start, lo=position + 1)  # the first later cue starting after `start`
            if later < len(starts):
                end = min(end, starts[later])
        if doc.subtitles is not None:
            end = min(end, start + _ms(doc.subtitles.max_duration_s))
        cues.append((start, end, text, speaker))
        previous_end = end
    return cues


def _vtt_voice(speaker: str | None) -> str:
    """A cue's voice tag: players show or style the speaker by it (WebVTT's <v> span)."""
    return "" if speaker is None else f"<v {_vtt_escape(speaker)}>"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _word(word: Word) -> dict[str, object]:
    spoken: dict[str, object] = {"word": word.word, "start": _r(word.start), "end": _r(word.end)}
    return spoken | _known(word, "probability", "speaker")


def _known(model: Segment | Word, *names: str) -> dict[str, object]:
    """The named fields set on a segment or word (Whisper's confidences, speakers when diarized)."""
    values = {name: getattr(model, name) for name in names}
    return {name: value for name, value in values.items() if value is not None}


def _r(value: float) -> float:
    return round(value, 3)


_RENDERERS: dict[OutputFormat, Callable[[TranscriptDocument], str]] = {
    OutputFormat.json: render_json,
    OutputFormat.txt: render_txt,
    OutputFormat.srt: render_srt,
    OutputFormat.vtt: render_vtt,
}
