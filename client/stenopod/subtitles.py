"""Subtitle cues people can read, cut from word times: a few short lines, shown for a few seconds.

An engine's segments make poor cues: a Whisper segment can run 30 s and 300 characters, a Parakeet
one a whole sentence. With the job's `subtitles` limits the srt/vtt cues are cut again from the
words: at most max_line_count lines of at most max_line_width characters (a single longer word
stands alone on its line), shown for at most max_duration_s, a new cue after a long pause, and a
cue ending, or its line breaking, at a sentence end where one falls well inside the limits. A
diarized transcript starts a new cue where the speaker changes; srt's "SPEAKER_0: " prefix counts
in the width of the cue's first line (vtt names the speaker in a voice tag that is not shown as
text, so its lines keep the whole width).
stenopod.formats turns the spans into timed cues (in order, never overlapping); json keeps the
engine's segments.
"""

from __future__ import annotations

from dataclasses import dataclass

from stenopod.schema import Segment, Subtitles

SENTENCE_ENDS = (".", "?", "!", "…", "。", "？", "！")
# A pause this long between two words starts a new cue: a cue hanging on through silence
# reads as if the speaker were still talking.
PAUSE_S = 1.0
# A sentence end closes the cue once the cue holds at least this share of the characters it
# could: "Yes." alone for a second is fine, a cue of two words before a new sentence is not.
SENTENCE_BREAK_FILL = 0.5


@dataclass(frozen=True)
class _Word:
    start: float
    end: float
    text: str
    speaker: str | None = None

    @property
    def ends_sentence(self) -> bool:
        return self.text.rstrip("\"')]»”").endswith(SENTENCE_ENDS)


def subtitle_spans(
    segments: list[Segment], limits: Subtitles, speaker_prefix: bool = False
) -> list[tuple[float, float, str, str | None]]:
    """(start_s, end_s, text with "\\n" between lines, speaker) per cue, in the words' order.

    speaker_prefix: the cue's first line will be shown after "SPEAKER_n: " (srt), which then
    counts in that line's width."""
    spans: list[tuple[float, float, str, str | None]] = []
    cue: list[_Word] = []
    for word in _words(segments):
        if cue:
            indent = _indent(cue[0], speaker_prefix)
            capacity = limits.max_line_width * limits.max_line_count - indent
            candidate = [*cue, word]
            too_long = word.end - cue[0].start > limits.max_duration_s
            too_wide = _layout(candidate, limits, indent) is None
            paused = word.start - cue[-1].end >= PAUSE_S or word.speaker != cue[-1].speaker
            sentence_done = cue[-1].ends_sentence and _chars(cue) >= SENTENCE_BREAK_FILL * capacity
            if too_long or too_wide or paused or sentence_done:
                spans.append(_span(cue, limits, indent))
                cue = []
        cue.append(word)
    if cue:
        spans.append(_span(cue, limits, _indent(cue[0], speaker_prefix)))
    return spans


def speaker_line_prefix(speaker: str) -> str:
    """What srt shows before a diarized cue's first line."""
    return f"{speaker}: "


def _indent(first: _Word, speaker_prefix: bool) -> int:
    return len(speaker_line_prefix(first.speaker)) if speaker_prefix and first.speaker is not None else 0


def _words(segments: list[Segment]) -> list[_Word]:
    """Every word with its times; a segment without word times has its text spread over its span."""
    words: list[_Word] = []
    for segment in segments:
        timed = [
            _Word(w.start, w.end, w.word.strip(), w.speaker if w.speaker is not None else segment.speaker)
            for w in segment.words or []
            if w.word.strip()
        ]
        words.extend(timed or _spread(segment))
    return words


def _spread(segment: Segment) -> list[_Word]:
    """A segment's words placed by character count over its span: the best guess without word times."""
    texts = segment.text.split()
    total = sum(len(text) + 1 for text in texts) or 1
    duration = max(segment.end - segment.start, 0.0)
    words, position = [], 0
    for text in texts:
        start = segment.start + duration * position / total
        position += len(text) + 1
        words.append(_Word(start, segment.start + duration * position / total, text, segment.speaker))
    return words


def _chars(words: list[_Word]) -> int:
    return sum(len(word.text) for word in words) + max(len(words) - 1, 0)


def _layout(words: list[_Word], limits: Subtitles, indent: int = 0) -> list[str] | None:
    """The cue's lines, or None when the words do not fit the limits.

    A line break at a sentence end is taken where the lines still fit; otherwise the lines are
    filled greedily, a word longer than a line standing on a line of its own. The first line has
    `indent` characters less room (the speaker prefix srt puts before it)."""
    texts = [word.text for word in words]
    width = limits.max_line_width
    for index in range(len(words) - 1):
        if words[index].ends_sentence:
            head = " ".join(texts[: index + 1])
            tail = _wrap(texts[index + 1 :], width)
            if indent + len(head) <= width and len(tail) + 1 <= limits.max_line_count:
                return [head, *tail]
    lines = _wrap(texts, width, indent)
    return lines if len(lines) <= limits.max_line_count else None


def _wrap(texts: list[str], width: int, indent: int = 0) -> list[str]:
    lines: list[str] = []
    for text in texts:
        room = width - (indent if len(lines) == 1 else 0)
        if lines and len(lines[-1]) + 1 + len(text) <= room:
            lines[-1] = f"{lines[-1]} {text}"
        else:
            lines.append(text)
    return lines


def _span(words: list[_Word], limits: Subtitles, indent: int = 0) -> tuple[float, float, str, str | None]:
    lines = _layout(words, limits, indent) or _wrap(
        [word.text for word in words], limits.max_line_width, indent
    )
    start = words[0].start
    # One word said slower than the limit still gets a cue no longer than the limit.
    end = min(max(word.end for word in words), start + limits.max_duration_s)
    return start, end, "\n".join(lines), words[0].speaker
