"""The engine's side of a job: one call per batch, and what a failed call means for each item.

A batch's silent items get an empty transcript without the engine; a call that fails for a batch
is retried item by item so one bad input fails only itself; a GPU failure fails the rest of the
job's items and asks RunPod for a new worker (the answer's refresh_worker).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from stenopod.schema import ErrorCode, ItemError

from .engines.base import EngineError, Transcript
from .item_options import decode_options
from .job_state import ItemState, JobContext
from .longform import transcribe_long

log = logging.getLogger("stenopod.handler.job")

# Below about 3 steps of 16-bit audio: digital silence, or dither nobody can hear.
SILENCE_PEAK = 1e-4


class EngineCalls:
    """Transcribes a job's batches; remembers a GPU failure for the rest of the job."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.gpu_failed = False

    async def transcribe(self, batch: list[ItemState]) -> None:
        """Give each ok item of the batch its transcript, or its error."""
        ready = [item for item in batch if item.ok and item.audio is not None]
        for item in ready:
            # The peak was measured in preparation: scanning an hour here would hold the engine.
            if item.peak < SILENCE_PEAK:
                # Nothing to hear: an empty transcript without asking the engine, which would
                # invent words ("You", "Thank you.") for a short stretch of silence.
                item.transcript = Transcript(text="", segments=[], language=None)
                self.ctx.add_audio(item, item.audio_s)
        ready = [item for item in ready if item.transcript is None]
        if not ready:
            return
        if self.gpu_failed:
            for item in ready:
                item.fail(ErrorCode.gpu_failed, "the GPU failed earlier in this job; retry the item")
            return
        failure = await self._call(ready)
        if failure is not None and len(ready) > 1 and failure.code != ErrorCode.gpu_failed:
            # One bad input can fail a whole batch: retry each alone so only the bad one fails.
            for item in ready:
                alone = await self._call([item])
                if alone is not None:
                    item.fail(alone.code, alone.message)
        elif failure is not None:
            for item in ready:
                item.fail(failure.code, failure.message)
        for item in ready:
            if item.ok:
                self.ctx.add_audio(item, item.audio_s)  # what no chunk reported: silence between
                self.ctx.report(item, "transcribed")

    def _chunks_done(self, items: list[ItemState], chunks: list[tuple[int, float]]) -> None:
        """An engine call's chunks transcribed: one progress update says how far the job has got,
        when that leaves a long item part done (a whole item's "transcribed" follows anyway)."""
        moved = None
        for index, seconds in chunks:
            item = items[index]
            if item.transcript is None and item.ok:
                self.ctx.add_audio(item, seconds)
                if item.audio_done_s < item.audio_s:
                    moved = item
        if moved is not None:
            self.ctx.report(moved, "transcribing")

    async def _call(self, items: list[ItemState]) -> ItemError | None:
        """One engine call over items: sets their transcripts, or returns why it failed."""
        ctx = self.ctx
        audios = [item.audio for item in items]
        plans = [item.chunks for item in items]
        log.info(
            "job %s: engine call of %d item(s), %.1f s of audio",
            ctx.job_id,
            len(items),
            sum(item.audio_s for item in items),
        )
        loop = asyncio.get_running_loop()

        def chunks_done(chunks: list[tuple[int, float]]) -> None:  # in the engine's thread
            loop.call_soon_threadsafe(self._chunks_done, items, chunks)

        # transcribe_long cuts long audio at the planned chunks and stitches the times back;
        # short audio reaches the engine whole, in calls of the engine's batch limits.
        call = functools.partial(
            transcribe_long,
            ctx.engine,
            audios,
            plans=None if any(plan is None for plan in plans) else plans,
            # Each item's own language, prompt and hotwords (handler.item_options), on every chunk.
            decode=[decode_options(ctx.input, item.spec, ctx.engine_word_timestamps) for item in items],
            batch_size=ctx.batch_limits().max_items,
            progress=chunks_done,
        )
        started = time.perf_counter()
        try:
            # In a thread: RunPod's progress updates and cancellation keep working meanwhile.
            transcripts = await loop.run_in_executor(None, call)
            if len(transcripts) != len(items):
                raise EngineError(f"engine returned {len(transcripts)} transcripts for {len(items)} inputs")
        except EngineError as error:
            if error.gpu_failed:
                self.gpu_failed = True
                log.error("job %s: GPU failure, asking RunPod to replace this worker: %s", ctx.job_id, error)
                return ItemError(code=ErrorCode.gpu_failed, message=f"GPU failure: {str(error)[:300]}")
            log.warning("job %s: engine failed on %d item(s): %s", ctx.job_id, len(items), error)
            return ItemError(
                code=ErrorCode.inference_failed, message=f"transcription failed: {str(error)[:300]}"
            )
        except Exception:
            log.exception("job %s: engine raised", ctx.job_id)
            return ItemError(
                code=ErrorCode.internal_error, message="transcription failed unexpectedly; see the worker log"
            )
        elapsed = time.perf_counter() - started
        # One call served every item: share its time out by each item's share of the audio.
        total = sum(item.audio_s for item in items) or 1.0
        for item, transcript in zip(items, transcripts, strict=True):
            item.transcript = transcript
            item.result.timings.inference_s = round(elapsed * item.audio_s / total, 3)
        return None
