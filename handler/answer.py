"""A job's answer from its items' results: a pure function, with the inline size cap.

The answer is schema.JobOutput as a dict, or RunPod's {"error": ...} when every item failed;
refresh_worker asks RunPod for a new worker after a GPU failure.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import stenopod
from stenopod.schema import ErrorCode, ItemError, ItemResult, JobError, JobOutput, Segment, Word

from .engines.base import Engine, Transcript

if TYPE_CHECKING:
    from .pipeline import EngineTimes


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


def worker_facts(engine: Engine, job_s: float, times: EngineTimes) -> dict[str, Any]:
    """The answer's `worker`: what ran the job, and how busy its engine was."""
    return {
        "version": stenopod.__version__,
        "engine": engine.engine_name,
        "device": engine.device,
        "job_s": round(job_s, 3),
        "engine_busy_s": round(times.engine_busy_s, 3),
        # The share of the job the engine was working: on a GPU, the share of billed time used.
        "engine_busy_share": round(times.engine_busy_s / job_s, 3) if job_s > 0 else 0.0,
        "engine_wait_s": round(times.engine_wait_s, 3),
        "first_input_s": round(times.first_input_s, 3),
        "last_output_s": round(times.last_output_s, 3),
        # fetch+decode+write on the critical path: the first batch's input, the engine's waits
        # for later input, and the writes left after the last engine call.
        "critical_io_s": round(times.first_input_s + times.engine_wait_s + times.last_output_s, 3),
    }


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
                    speaker=w.speaker,
                )
                for w in seg.words
            ]
            if with_words
            else None,
            language=seg.language,
            avg_logprob=seg.avg_logprob,
            no_speech_prob=seg.no_speech_prob,
            compression_ratio=seg.compression_ratio,
            speaker=seg.speaker,
        )
        for index, seg in enumerate(transcript.segments)
    ]


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
