"""A job's diarization stage: the diarizer over a batch of transcribed items, their words labelled.

Runs after the engine call of a batch, on the same audio, in one batched diarizer call (the
diarizer splits it by its own limits): the GPU sees diarization as it sees transcription, in
batches across items. Each item's transcript comes back with a speaker on every segment and
word, and its speakers' labels.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from stenopod.schema import ErrorCode, ItemError

from handler.engine_calls import EngineCalls
from handler.engines.base import SAMPLE_RATE, EngineError, Transcript
from handler.engines.registry import Diarizer, DiarizerUnavailable
from handler.job_state import ItemState, JobContext
from handler.speaker_assign import assign_speakers
from handler.speaker_turns import speaker_turns

log = logging.getLogger("stenopod.handler.job")


class HasDiarizer(Protocol):
    """What the stage needs of handler.engines.registry.EngineRegistry."""

    def diarizer(self) -> Diarizer: ...


@dataclass
class Labelled:
    """One item's transcript with speakers, and their labels in order of first words."""

    transcript: Transcript
    speakers: list[str]


def find_diarizer(registry: HasDiarizer) -> Diarizer | ItemError:
    """The worker's diarizer (loaded on first use), or the model_unavailable error every item of
    the job gets: a job asking for speakers never gets a transcript silently without them."""
    try:
        return registry.diarizer()
    except DiarizerUnavailable as error:
        return ItemError(code=ErrorCode.model_unavailable, message=str(error))


def label_speakers(
    diarizer: Diarizer, audios: list[np.ndarray], transcripts: list[Transcript], max_speakers: int | None
) -> list[Labelled]:
    """Diarize audios in one batched call and assign each transcript's words to its speakers.

    A transcript with no segments (silence) is not diarized: it has no speakers.
    """
    if len(audios) != len(transcripts):
        raise ValueError(f"{len(audios)} audios for {len(transcripts)} transcripts")
    spoken = [index for index, transcript in enumerate(transcripts) if transcript.segments]
    activities = diarizer.activity([audios[index] for index in spoken]) if spoken else []
    labelled = [Labelled(transcript, []) for transcript in transcripts]
    for index, activity in zip(spoken, activities, strict=True):
        duration = audios[index].size / SAMPLE_RATE
        turns = speaker_turns(activity.probabilities, activity.frame_s, duration, max_speakers)
        labelled[index] = Labelled(*assign_speakers(transcripts[index], turns))
    return labelled


def with_diarization(ctx: JobContext, calls: EngineCalls) -> Callable[[list[ItemState]], Awaitable[None]]:
    """The pipeline's engine stage: transcribe a batch, then (jobs with diarize) label its speakers.

    Both run inside the same engine gate, so the GPU time of diarization counts as engine time.
    """

    async def stage(batch: list[ItemState]) -> None:
        await calls.transcribe(batch)
        if ctx.diarizer is not None:
            await _diarize(ctx, calls, ctx.diarizer, batch)

    return stage


async def _diarize(ctx: JobContext, calls: EngineCalls, diarizer: Diarizer, batch: list[ItemState]) -> None:
    """One batched diarizer call over the batch's transcribed items; diarize_s shared by audio."""
    items = [item for item in batch if item.ok and item.audio is not None and item.transcript is not None]
    if not items:
        return
    call = functools.partial(
        label_speakers,
        diarizer,
        [item.audio for item in items],
        [item.transcript for item in items],
        ctx.input.max_speakers,
    )
    started = time.perf_counter()
    try:
        labelled = await asyncio.get_running_loop().run_in_executor(None, call)
    except EngineError as error:
        if error.gpu_failed:
            calls.gpu_failed = True
        code = ErrorCode.gpu_failed if error.gpu_failed else ErrorCode.inference_failed
        log.warning("job %s: diarizer failed on %d item(s): %s", ctx.job_id, len(items), error)
        for item in items:
            item.fail(code, f"diarization failed: {str(error)[:300]}")
        return
    except Exception:
        log.exception("job %s: diarizer raised", ctx.job_id)
        for item in items:
            item.fail(ErrorCode.internal_error, "diarization failed unexpectedly; see the worker log")
        return
    elapsed = time.perf_counter() - started
    total = sum(item.audio_s for item in items) or 1.0
    for item, result in zip(items, labelled, strict=True):
        item.transcript = result.transcript
        item.result.speakers = result.speakers
        item.result.timings.diarize_s = round(elapsed * item.audio_s / total, 3)
        ctx.report(item, "diarized")
