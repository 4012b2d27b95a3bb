"""Who said what: a transcript's words assigned to the diarizer's speaker turns by time overlap.

Each word goes to the speaker whose turns cover most of it; a word in a pause between turns (or
of no duration) goes to the turn nearest to it. A segment whose words change speaker is split at
each change, its text cut where the next speaker's first word begins, so every segment, cue and
paragraph has one speaker. Labels are SPEAKER_0, SPEAKER_1, ... in the order the speakers are first
heard saying a word. Works the same for every engine: it needs word times only.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace

from handler.engines.base import SegmentTiming, Transcript, WordTiming
from handler.speaker_turns import SpeakerTurn


def speaker_label(number: int) -> str:
    return f"SPEAKER_{number}"


def assign_speakers(transcript: Transcript, turns: list[SpeakerTurn]) -> tuple[Transcript, list[str]]:
    """A copy of transcript with a speaker on every segment and word, segments split where the
    speaker changes, and the speakers' labels in order of appearance.

    Without any turn (the diarizer heard no speech where the recogniser heard words), everything
    said is one speaker's.
    """
    finder = _TurnFinder(turns)
    numbers: dict[int, int] = {}

    def label(speaker: int) -> str:
        return speaker_label(numbers.setdefault(speaker, len(numbers)))

    segments: list[SegmentTiming] = []
    for segment in transcript.segments:
        if not segment.words:
            speaker = finder.speaker(segment.start, segment.end)
            segments.append(replace(segment, speaker=label(speaker)))
            continue
        speakers = [finder.speaker(word.start, word.end) for word in segment.words]
        parts = _runs(speakers)
        texts = _cut_text(segment, [first for first, _ in parts])
        for index, ((first, last), text) in enumerate(zip(parts, texts, strict=True)):
            name = label(speakers[first])
            words = [_word(word, name) for word in segment.words[first : last + 1]]
            # A part runs from its first word to its last; the segment's own edges stay at the ends.
            start = segment.start if index == 0 else words[0].start
            end = segment.end if index == len(parts) - 1 else max(words[-1].end, start)
            # replace() keeps every other field (Whisper's quality measures, the segment's language):
            # each part of a split segment carries the measures of the segment it came from.
            segments.append(replace(segment, start=start, end=end, text=text, words=words, speaker=name))
    labelled = replace(transcript, segments=segments)
    return labelled, [speaker_label(number) for number in range(len(numbers))]


class _TurnFinder:
    """Which speaker a stretch of time belongs to; turns are sorted and do not overlap."""

    def __init__(self, turns: list[SpeakerTurn]) -> None:
        self.turns = sorted(turns, key=lambda turn: turn.start)
        self.starts = [turn.start for turn in self.turns]
        self.ends = [turn.end for turn in self.turns]

    def speaker(self, start: float, end: float) -> int:
        if not self.turns:
            return 0
        overlap: dict[int, float] = {}
        position = bisect_right(self.ends, start)
        while position < len(self.turns) and self.turns[position].start < end:
            turn = self.turns[position]
            shared = min(end, turn.end) - max(start, turn.start)
            if shared > 0:
                overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
            position += 1
        if overlap:
            # The most overlap wins; equal overlap goes to the speaker heard first.
            return min(overlap, key=lambda speaker: (-overlap[speaker], speaker))
        return self._nearest((start + end) / 2)

    def _nearest(self, moment: float) -> int:
        after = bisect_left(self.starts, moment)
        candidates = [self.turns[i] for i in (after - 1, after) if 0 <= i < len(self.turns)]
        # Distance to the turn; a moment inside one (a zero-length word) is at distance 0.
        return min(
            candidates, key=lambda turn: (max(turn.start - moment, moment - turn.end, 0.0), turn.start)
        ).speaker


def _runs(speakers: list[int]) -> list[tuple[int, int]]:
    """(first, last) word positions of each run of one speaker."""
    runs: list[tuple[int, int]] = []
    for position, speaker in enumerate(speakers):
        if runs and speakers[runs[-1][0]] == speaker:
            runs[-1] = (runs[-1][0], position)
        else:
            runs.append((position, position))
    return runs


def _cut_text(segment: SegmentTiming, firsts: list[int]) -> list[str]:
    """The segment's text cut before the first word of each part after the first.

    The cut is found by locating the words in the text, so spacing and punctuation stay as the
    engine wrote them (languages written without spaces included); where a word cannot be found,
    the part's words are joined with spaces instead.
    """
    if len(firsts) == 1:
        return [segment.text.strip()]
    positions: list[int] = []
    cursor = 0
    for word in segment.words:
        found = segment.text.find(word.text.strip(), cursor) if word.text.strip() else cursor
        if found < 0:
            bounds = [*firsts, len(segment.words)]
            return [
                " ".join(w.text.strip() for w in segment.words[a:b] if w.text.strip())
                for a, b in zip(bounds, bounds[1:], strict=False)
            ]
        positions.append(found)
        cursor = found + len(word.text.strip())
    cuts = [0, *(positions[first] for first in firsts[1:]), len(segment.text)]
    return [segment.text[a:b].strip() for a, b in zip(cuts, cuts[1:], strict=False)]


def _word(word: WordTiming, speaker: str) -> WordTiming:
    return replace(word, speaker=speaker)
