"""A job's answer from its items' results: a pure function, with the inline size cap.

The answer is schema.JobOutput as a dict, or RunPod's {"error": ...} when every item failed;
refresh_worker asks RunPod for a new worker after a GPU failure.
"""

from __future__ import annotations

import json
from typing import Any

from stenopod.schema import ErrorCode, ItemError, ItemResult, JobError, JobOutput, Segment, Word

from .engines.base import Transcript


def build_answer(
    results: list[ItemResult],
    model: str | None,
    worker: dict[str, Any] | None,
    *,
    inline_cap: int | None,
    gpu_failed: bool,
) -> dict[str, Any]:
    """The job's answer. inline_cap: the largest answer that may carry the transcripts (None: they
    were written to storage); above it, every transcribed item fails with output_too_large."""
    answer = JobOutput(items=results, model=model, worker=worker).model_dump(mode="json")
    if inline_cap is not None and _json_size(answer) > inline_cap:
        for result in results:
            if result.status == "ok":
                result.text = result.segments = None
                result.status = "error"
                result.error = ItemError(
                    code=ErrorCode.output_too_large,
                    message=f"the transcripts exceed the {inline_cap}-byte inline answer limit; give an "
                    '"output" (s3://bucket/prefix/) to have them written there',
                )
        answer = JobOutput(items=results, model=model, worker=worker).model_dump(mode="json")
    if all(result.status == "error" for result in results):
        first = results[0].error
        assert first is not None
        noun = "item" if len(results) == 1 else f"all {len(results)} items"
        error = JobError(code=first.code, message=f"{noun} failed; first: {first.message}", items=results)
        answer = {"error": error.to_runpod_error()}
    if gpu_failed:
        answer["refresh_worker"] = True
    return answer


def to_schema_segments(transcript: Transcript, with_words: bool) -> list[Segment]:
    """The engine's timings as wire-format segments (texts stripped, words only when asked)."""
    return [
        Segment(
            id=index,
            start=round(seg.start, 3),
            end=round(seg.end, 3),
            text=seg.text.strip(),
            words=[
                Word(
                    start=round(w.start, 3),
                    end=round(w.end, 3),
                    word=w.text.strip(),
                    probability=w.probability,
                )
                for w in seg.words
            ]
            if with_words
            else None,
            language=seg.language,
            avg_logprob=seg.avg_logprob,
            no_speech_prob=seg.no_speech_prob,
            compression_ratio=seg.compression_ratio,
        )
        for index, seg in enumerate(transcript.segments)
    ]


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
