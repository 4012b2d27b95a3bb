"""srt/vtt cues from broken engine timings (overlapping, containing, zero-length, out of order) and txt paragraphs."""

from __future__ import annotations

import json
import random
import re

import pytest
from stenopod.formats import PARAGRAPH_MAX_CHARS, ZERO_LENGTH_CUE_MS, TranscriptDocument, render
from stenopod.schema import OutputFormat, Segment

TIME = r"(\d{2}):(\d{2}):(\d{2})[,.](\d{3})"


def _ms(groups: tuple[str, ...]) -> int:
    h, m, s, ms = (int(x) for x in groups)
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def _parse(fmt: OutputFormat, body: str) -> list[tuple[int, int, str]]:
    """(start_ms, end_ms, text) per cue of an srt or vtt file; checks the numbering and the header on the way."""
    if fmt == OutputFormat.vtt:
        assert body.startswith("WEBVTT\n\n")
        body = body.removeprefix("WEBVTT\n\n")
    cues = []
    for number, block in enumerate(filter(None, body.strip().split("\n\n")), start=1):
        lines = block.split("\n")
        if fmt == OutputFormat.srt:
            assert lines.pop(0) == str(number)
        separator = "," if fmt == OutputFormat.srt else "."
        match = re.fullmatch(rf"{TIME} --> {TIME}", lines[0])
        assert match and separator in lines[0], f"bad timing line {lines[0]!r}"
        text = "\n".join(lines[1:])
        assert text.strip() and "-->" not in text
        cues.append((_ms(match.groups()[:4]), _ms(match.groups()[4:]), text))
    return cues


def _doc(spans: list[tuple[float, float, str]]) -> TranscriptDocument:
    segments = [Segment(id=i, start=start, end=end, text=text) for i, (start, end, text) in enumerate(spans)]
    return TranscriptDocument(
        text=" ".join(t.strip() for _, _, t in spans if t.strip()),
        segments=segments,
        language="en",
        duration=max((end for _, end, _ in spans), default=0.0),
    )


def _assert_valid(cues: list[tuple[int, int, str]]) -> None:
    for start, end, _ in cues:
        assert end > start, cues
    for (_, end, _), (next_start, _, _) in zip(cues, cues[1:], strict=False):
        assert next_start >= end, cues  # in order and never overlapping


ADVERSARIAL = {
    "containing": [(314.22, 323.712, "cue 83"), (315.0, 318.0, "cue 84"), (323.9, 326.0, "cue 85")],
    "overlapping": [(0.0, 2.4, "a"), (2.0, 4.0, "b"), (3.5, 6.0, "c")],
    "zero_length_run": [(59.9, 59.9, f"z{i}") for i in range(20)],
    "zero_then_next": [(1.0, 1.0, "zero"), (1.2, 3.0, "next")],
    "end_before_start": [(5.0, 4.0, "backwards"), (5.0, 5.0, "same start"), (5.0, 7.0, "third")],
    "equal_starts": [(2.0, 4.0, "first"), (2.0, 3.0, "second"), (2.0, 5.0, "third")],
    "out_of_order": [(10.0, 12.0, "late"), (0.0, 1.0, "early"), (5.0, 6.0, "middle")],
    "sub_millisecond": [(1.0001, 1.0004, "tiny"), (1.0002, 1.0003, "tinier")],
    "negative": [(-0.5, -0.1, "before zero"), (-0.2, 0.3, "straddles zero")],
    "blank_text": [(0.0, 1.0, "  "), (0.5, 0.5, "\n"), (1.0, 2.0, "kept")],
}


@pytest.mark.parametrize("fmt", [OutputFormat.srt, OutputFormat.vtt])
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_cues_are_ordered_never_overlap_and_last(fmt: OutputFormat, case: str) -> None:
    doc = _doc(ADVERSARIAL[case])
    body = render(fmt, doc).decode()
    cues = _parse(fmt, body)
    _assert_valid(cues)
    texts = [t.strip() for _, _, t in ADVERSARIAL[case] if t.strip()]
    assert sorted(t for _, _, t in cues) == sorted(texts)  # nothing lost but the blank ones
    assert render(fmt, doc).decode() == body  # the same file every time


def test_overlaps_move_the_later_cue_and_keep_the_earlier_one() -> None:
    cues = _parse(OutputFormat.srt, render(OutputFormat.srt, _doc(ADVERSARIAL["containing"])).decode())
    assert cues == [
        (314_220, 323_712, "cue 83"),
        (323_712, 323_900, "cue 84"),  # moved after 83, shown until 85 starts
        (323_900, 326_000, "cue 85"),
    ]


def test_zero_length_cues_get_a_short_duration_bounded_by_the_next_start() -> None:
    cues = _parse(OutputFormat.srt, render(OutputFormat.srt, _doc(ADVERSARIAL["zero_then_next"])).decode())
    assert cues == [(1000, 1200, "zero"), (1200, 3000, "next")]
    run = _parse(OutputFormat.vtt, render(OutputFormat.vtt, _doc(ADVERSARIAL["zero_length_run"])).decode())
    assert [t for _, _, t in run] == [f"z{i}" for i in range(20)]  # equal starts keep the engine's order
    assert run[0] == (59_900, 59_900 + ZERO_LENGTH_CUE_MS, "z0")
    assert all(end - start == ZERO_LENGTH_CUE_MS for start, end, _ in run)


def test_out_of_order_segments_are_sorted_and_json_keeps_them_as_they_were() -> None:
    doc = _doc(ADVERSARIAL["out_of_order"])
    cues = _parse(OutputFormat.srt, render(OutputFormat.srt, doc).decode())
    assert [t for _, _, t in cues] == ["early", "middle", "late"]
    segments = json.loads(render(OutputFormat.json, _doc(ADVERSARIAL["containing"])))["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(314.22, 323.712), (315.0, 318.0), (323.9, 326.0)]


@pytest.mark.parametrize("seed", range(20))
def test_random_broken_timings_give_valid_cues(seed: int) -> None:
    rng = random.Random(seed)
    spans = []
    for i in range(rng.randint(1, 60)):
        start = rng.choice([rng.uniform(0, 120), 59.9, 10.0, 0.0])
        end = start + rng.choice([0.0, -rng.uniform(0, 3), rng.uniform(0, 30), 0.0004])
        spans.append((start, end, rng.choice([f"s{i}", " ", f"s{i} --> x"])))
    for fmt in (OutputFormat.srt, OutputFormat.vtt):
        _assert_valid(_parse(fmt, render(fmt, _doc(spans)).decode()))


def test_txt_is_one_paragraph_per_stretch_of_speech() -> None:
    doc = _doc(
        [
            (0.0, 2.0, " Hello there."),
            (2.5, 4.0, "How are you?"),  # 0.5 s pause: same paragraph
            (5.5, 7.0, "Fine, thanks."),  # 1.5 s pause: new paragraph
            (7.1, 8.0, "   "),  # blank: skipped
            (8.0, 9.0, "And\nyou?"),
        ]
    )
    assert render(OutputFormat.txt, doc).decode() == "Hello there. How are you?\n\nFine, thanks. And you?\n"


def test_txt_breaks_long_paragraphs_at_a_segment_boundary() -> None:
    sentence = "word " * 39 + "end."  # 199 characters
    doc = _doc([(float(i), i + 1.0, sentence) for i in range(7)])  # continuous speech, no pauses
    paragraphs = render(OutputFormat.txt, doc).decode().removesuffix("\n").split("\n\n")
    assert [p.count("end.") for p in paragraphs] == [3, 3, 1]  # 2 segments are 399 chars, 3 reach the limit
    assert all(len(p) <= PARAGRAPH_MAX_CHARS + len(sentence) + 1 for p in paragraphs)
    assert "\n" not in "".join(paragraphs)


def test_txt_falls_back_to_the_text_without_segments() -> None:
    doc = TranscriptDocument(text=" spoken words ", segments=[], language=None, duration=1.0)
    assert render(OutputFormat.txt, doc) == b"spoken words\n"
