"""Engine calls over planned chunks: every chunk of every audio batched together, times stitched back.

The chunks of ALL audios of a call go to the engine as one flat list in batches, so a job of many
short files and a job of one long file both keep the engine busy. Segment and word times come
back relative to the original audio. Where the cuts fall is handler.chunking's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from handler.chunking import Chunk, ChunkingOptions, chunk_bound, plan_audio
from handler.coverage import missed_speech
from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)


def _shift(transcript: Transcript, offset: float, limit: float, floor: float) -> list[SegmentTiming]:
    """The chunk's segments in the audio's time: offset added, within [floor, limit], monotonic."""

    def place(value: float, low: float) -> float:
        return min(max(offset + float(value), low), limit)

    segments: list[SegmentTiming] = []
    for segment in transcript.segments:
        start = place(segment.start, floor)
        end = place(segment.end, start)
        words: list[WordTiming] = []
        word_floor = start
        for word in segment.words:
            word_start = place(word.start, word_floor)
            word_end = place(word.end, word_start)
            words.append(
                WordTiming(start=word_start, end=word_end, text=word.text, probability=word.probability)
            )
            word_floor = word_start
        segments.append(
            SegmentTiming(
                start=start,
                end=end,
                text=segment.text,
                words=words,
                avg_logprob=segment.avg_logprob,
                no_speech_prob=segment.no_speech_prob,
                compression_ratio=segment.compression_ratio,
                # Each chunk's language was detected on that chunk alone: a recording that changes
                # language between pauses says so segment by segment.
                language=segment.language or transcript.language,
            )
        )
        floor = start
    return segments


def _stitch(audio: np.ndarray, parts: list[tuple[Chunk, Transcript]], language: str | None) -> Transcript:
    """One audio's transcript from its chunks' (in any order, a second pass's inside a first's)."""
    duration = audio.shape[0] / SAMPLE_RATE
    segments: list[SegmentTiming] = []
    spoken: Counter[str] = Counter()
    for chunk, part in parts:
        start = chunk.start / SAMPLE_RATE
        segments.extend(_shift(part, start, min(chunk.end / SAMPLE_RATE, duration), start))
        if part.language:
            spoken[part.language] += chunk.end - chunk.start
    segments.sort(key=lambda segment: segment.start)  # stable: a chunk's own order is kept
    detected = spoken.most_common(1)[0][0] if spoken else None
    text = " ".join(segment.text.strip() for segment in segments if segment.text.strip())
    # What the engine reported, never merely what was asked: Parakeet, which reports no language,
    # says None even when the job named one.
    return Transcript(
        text=text, segments=segments, language=detected, **_detection(parts, language, detected)
    )


def _detection(
    parts: list[tuple[Chunk, Transcript]], language: str | None, detected: str | None
) -> dict[str, object]:
    """The whole audio's language probabilities: each chunk's, weighed by its length.

    So a recording half in English, half in German reports English (or German) at about 0.5, not
    the certainty either half had on its own. Nothing when the language was given, or when no
    chunk's language was detected (an English-only model, Parakeet)."""
    weights = [(chunk.end - chunk.start, part) for chunk, part in parts if part.language_probabilities]
    total = sum(weight for weight, _ in weights)
    if language is not None or detected is None or total <= 0:
        return {}
    codes = {code for _, part in weights for code in part.language_probabilities}
    probabilities = {
        code: sum(weight * part.language_probabilities.get(code, 0.0) for weight, part in weights) / total
        for code in codes
    }
    return {"language_probability": probabilities.get(detected, 0.0), "language_probabilities": probabilities}


def transcribe_long(
    engine: Engine,
    audios: list[np.ndarray],
    *,
    plans: list[list[Chunk]] | None = None,
    language: str | None = None,
    word_timestamps: bool = False,
    max_chunk_s: float | None = None,
    batch_size: int | None = None,
    options: ChunkingOptions | None = None,
    decode: Sequence[DecodeOptions] | None = None,
    progress: Callable[[list[tuple[int, float]]], None] | None = None,
) -> list[Transcript]:
    """Transcribe 16 kHz mono arrays of any length; one Transcript per input, in order.

    plans: each audio's chunks, planned beforehand (the job plans while it prepares the audio);
    None plans them here. max_chunk_s: None takes the engine's bound (handler.chunking.chunk_bound);
    math.inf turns chunking off. Each engine call carries up to the engine's batch_limits()
    (batch_size, when given, caps the number of audios per call). decode: each audio's options
    (language, prompt, hotwords, task), reaching every chunk of that audio; None: language and
    word_timestamps for all. progress, when given, is called (in this thread) after each engine
    call of the first pass with its chunks' (audio index, seconds).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limits = engine.batch_limits()
    max_items = batch_size or limits.max_items
    if plans is None:
        bound = chunk_bound(engine, max_chunk_s)
        plans = [plan_audio(audio, bound, options) for audio in audios]
    if len(plans) != len(audios):
        raise ValueError(f"{len(plans)} plans for {len(audios)} audios")

    settings = per_audio_options(len(audios), language, word_timestamps, decode)
    flat = [(index, chunk) for index, plan in enumerate(plans) for chunk in plan]
    results = _run(engine, audios, flat, max_items, limits.max_audio_s, settings, progress)
    # Speech the first pass skipped (coverage.missed_speech), once more on its own.
    again = [
        (index, missed)
        for (index, chunk), result in zip(flat, results, strict=True)
        for missed in missed_speech(chunk, result)
    ]
    retried = _run(engine, audios, again, max_items, limits.max_audio_s, settings)

    parts: list[list[tuple[Chunk, Transcript]]] = [[] for _ in audios]
    for (index, chunk), result in zip([*flat, *again], [*results, *retried], strict=True):
        parts[index].append((chunk, result))
    out: list[Transcript] = []
    for index, plan in enumerate(plans):
        if len(parts[index]) == 1 and plan[0].start == 0 and plan[0].end == audios[index].shape[0]:
            out.append(parts[index][0][1])  # passed through whole: nothing to shift
        else:
            out.append(_stitch(audios[index], parts[index], settings[index].language))
    return out


def _run(
    engine: Engine,
    audios: list[np.ndarray],
    flat: list[tuple[int, Chunk]],
    max_items: int,
    max_audio_s: float,
    settings: list[DecodeOptions],
    progress: Callable[[list[tuple[int, float]]], None] | None = None,
) -> list[Transcript]:
    """Each (audio index, chunk) transcribed, in engine calls of similar lengths; in flat's order."""
    # Similar lengths side by side: a batch pads to its longest member (NeMo), and a call's
    # streams finish together (Whisper).
    order = sorted(range(len(flat)), key=lambda i: flat[i][1].end - flat[i][1].start)
    results: list[Transcript | None] = [None] * len(flat)
    sizes = [(flat[i][1].end - flat[i][1].start) / SAMPLE_RATE for i in order]
    for picked_positions in BatchLimits(max_items, max_audio_s).group(sizes):
        picked = [order[position] for position in picked_positions]
        batch = [audios[flat[i][0]][flat[i][1].start : flat[i][1].end] for i in picked]
        transcripts = engine.transcribe(batch, options=[settings[flat[i][0]] for i in picked])
        if len(transcripts) != len(batch):
            raise RuntimeError(f"engine returned {len(transcripts)} transcripts for {len(batch)} audios")
        for i, transcript in zip(picked, transcripts, strict=True):
            results[i] = transcript
        if progress is not None:
            progress([(flat[i][0], (flat[i][1].end - flat[i][1].start) / SAMPLE_RATE) for i in picked])
    return [result for result in results if result is not None]
