"""One RunPod job: validate -> per item fetch, decode, transcribe (in batches), render, write -> answer.

The answer is schema.JobOutput as a dict, or RunPod's {"error": ...} when the input is invalid or
every item failed. One item's failure never fails the others: each stage turns its failure into
that item's ItemError, and the engine runs in a thread so RunPod's progress and cancellation work.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import stenopod
from stenopod.s3_guard import ForbiddenEndpoint
from stenopod.schema import (
    ErrorCode,
    ItemError,
    ItemResult,
    JobError,
    JobInput,
    JobItem,
    JobOutput,
    Timestamps,
    parse_job_input,
)
from stenopod.storage import ObjectStore, S3Credentials, StorageError, open_store, parse_s3_uri

from .answer import build_answer, to_schema_segments
from .audio import fetch_audio
from .callback import post_item
from .chunking import Chunk, chunk_bound
from .decode_pool import shared_pool
from .engine_clock import EngineClock
from .engine_gate import EngineGate
from .engines.base import SAMPLE_RATE, BatchLimits, DecodeOptions, Engine, EngineError, Transcript
from .engines.registry import ModelUnavailable
from .errors import StageError
from .feed import Feed
from .formats import CONTENT_TYPES, TranscriptDocument, render
from .item_options import check_options, decode_options
from .longform import transcribe_long
from .progress import Progress, runpod_progress
from .settings import JobSettings, decode_processes_for
from .submission import claim_submission, record_submission_result

log = logging.getLogger("stenopod.handler.job")


class Registry(Protocol):
    """What run_job needs of handler.engines.registry.EngineRegistry."""

    def get(self, model_id: str | None) -> Engine: ...

    def available(self) -> list[str]: ...


# Engine calls a job may have at once (see _pipeline).
ENGINE_CALLS_IN_FLIGHT = 2
# Engine calls in flight across all the jobs this worker runs at once (handler/__main__.py takes
# the next job while one runs, so its fetches overlap this one's inference).
ENGINE_GATE = EngineGate(ENGINE_CALLS_IN_FLIGHT)


@dataclass
class _Item:
    """One item's state while the job runs."""

    spec: JobItem
    result: ItemResult
    options: DecodeOptions
    audio: np.ndarray | None = None
    chunks: list[Chunk] | None = None  # where the engine call cuts the audio, planned in preparation
    transcript: Transcript | None = None
    document: TranscriptDocument | None = None

    @property
    def ok(self) -> bool:
        return self.result.status == "ok"

    def fail(self, code: ErrorCode, message: str) -> None:
        self.result.status = "error"
        self.result.error = ItemError(code=code, message=message)
        self.audio = None
        self.chunks = None
        self.transcript = None
        self.document = None


async def run_job(
    job: dict[str, Any],
    registry: Registry,
    progress: Progress | None = None,
    settings: JobSettings | None = None,
) -> dict[str, Any]:
    """Run one RunPod job ({"id": ..., "input": {...}, "s3Config": ...}) and return its answer.

    Never raises for a job's content: a bug becomes internal_error here, because runpod would
    otherwise put the exception's traceback into the answer.
    """
    try:
        return await _run_job(job, registry, progress, settings)
    except Exception:
        log.exception("job %s failed unexpectedly", job.get("id"))
        error = JobError(code=ErrorCode.internal_error, message="the worker failed unexpectedly; see its log")
        return {"error": error.to_runpod_error()}


async def _run_job(
    job: dict[str, Any], registry: Registry, progress: Progress | None, settings: JobSettings | None
) -> dict[str, Any]:
    settings = settings or JobSettings.from_env()
    job_id = str(job.get("id") or "")
    parsed = parse_job_input(job.get("input"))
    if isinstance(parsed, JobError):
        return {"error": parsed.to_runpod_error()}
    output_error = _check_output(parsed.output, settings.allow_local_output)
    if output_error is not None:
        return {"error": output_error.to_runpod_error()}
    runner = _JobRunner(job_id, parsed, registry, progress or runpod_progress(job), settings)
    return await runner.run(S3Credentials.from_runpod_s3_config(job.get("s3Config")))


def _check_output(output: str | None, allow_local: bool) -> JobError | None:
    """Refuse an unusable output location before any work is done."""
    if output is None:
        return None
    problem = None
    if output.startswith("s3://"):
        try:
            parse_s3_uri(output)
        except StorageError:
            problem = "must be an s3://bucket/prefix/ URI"
    elif not allow_local:
        # Named, so a --test_input run or a self-hosted worker knows how to allow it (RunPod's
        # local test mode is left refusing: it shows what the job would get on RunPod).
        problem = (
            "must be an s3://bucket/prefix/ URI; a local folder is accepted only when the worker runs "
            "with STENOPOD_ALLOW_LOCAL_OUTPUT=1 (`stenopod serve` sets it)"
        )
    elif "://" in output and not output.startswith("file://"):
        problem = "must be an s3://bucket/prefix/ URI, a file:// URI or a folder path"
    if problem is None:
        return None
    return JobError(code=ErrorCode.invalid_input, message=f"input.output: {problem}", fields=["input.output"])


class _JobRunner:
    def __init__(
        self, job_id: str, job_input: JobInput, registry: Registry, progress: Progress, settings: JobSettings
    ) -> None:
        self.job_id = job_id
        self.input = job_input
        self.registry = registry
        self.progress = progress
        self.settings = settings
        self.word_timestamps = job_input.timestamps == Timestamps.word
        self.items = [
            _Item(
                spec,
                ItemResult(id=spec.id, status="ok", model=job_input.model),
                decode_options(job_input, spec),
            )
            for spec in job_input.job_items()
        ]
        self.gpu_failed = False
        self.done = 0
        self.engine_busy_s = 0.0
        self.engine_wait_s = 0.0
        self.first_input_s = 0.0
        self.last_output_s = 0.0
        self.started = time.perf_counter()
        self.engine: Engine | None = None
        self.store: ObjectStore | None = None
        self.credentials: S3Credentials | None = None

    async def run(self, credentials: S3Credentials | None) -> dict[str, Any]:
        self.started = time.perf_counter()
        self.credentials = credentials
        try:
            self.engine = self.registry.get(self.input.model)
        except ModelUnavailable as error:
            message = (
                f"model {error.model_id!r} is not in this image; available: {', '.join(error.available)}"
            )
            for item in self.items:
                item.fail(ErrorCode.model_unavailable, message)
            return self._answer()
        refused = check_options(self.input, self.engine)
        if refused is not None:
            return {"error": refused.to_runpod_error()}
        for item in self.items:
            item.result.model = self.engine.model_id
        if self.input.output is not None:
            try:
                self.store = open_store(
                    self.input.output, credentials, allow_local=self.settings.allow_local_output
                )
            except StorageError as error:
                # A job's own S3 endpoint on a private address is refused like any such URL.
                code = (
                    ErrorCode.url_forbidden
                    if isinstance(error, ForbiddenEndpoint)
                    else ErrorCode.storage_failed
                )
                for item in self.items:
                    item.fail(code, f"output: {error}")
                return self._answer()
            if self.input.submission is not None:
                try:
                    holder = await asyncio.to_thread(
                        claim_submission, self.store, self.input.submission, self.job_id
                    )
                except StorageError as error:
                    for item in self.items:
                        item.fail(ErrorCode.storage_failed, f"output: {error}")
                    return self._answer()
                if holder is not None:
                    # Another job holds this submission: answer with it instead of transcribing twice.
                    return JobOutput(items=[], model=self.engine.model_id, duplicate_of=holder).model_dump(
                        mode="json"
                    )

        tmp_dir = Path(tempfile.mkdtemp(prefix="stenopod-job-", dir=self.settings.tmp_root))
        try:
            await self._pipeline(tmp_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        answer = self._answer()
        if self.input.submission is not None and self.store is not None:
            await self._record_submission()
        return answer

    async def _record_submission(self) -> None:
        """Leave the results where a client that lost track of this job will look for them."""
        assert self.store is not None and self.input.submission is not None
        record = {
            "model": self.engine.model_id if self.engine is not None else None,
            "items": [item.result.model_dump(mode="json") for item in self.items],
        }
        try:
            await asyncio.to_thread(
                record_submission_result, self.store, self.input.submission, self.job_id, record
            )
        except StorageError as error:  # the transcripts are written; only the bookkeeping failed
            log.warning("job %s: cannot record submission result: %s", self.job_id, error)

    def _decode_processes(self) -> int:
        assert self.engine is not None
        return decode_processes_for(self.settings, self.engine.device)

    def _batch_limits(self) -> BatchLimits:
        """The engine's own batch limits; STENOPOD_BATCH_SIZE, when set, caps the items per call."""
        assert self.engine is not None
        limits = self.engine.batch_limits()
        if self.settings.batch_size is not None:
            return BatchLimits(min(limits.max_items, self.settings.batch_size), limits.max_audio_s)
        return limits

    async def _pipeline(self, tmp_dir: Path) -> None:
        """Batch by batch, overlapped so the engine does not wait on the network or the store.

        Items are fetched and decoded ahead (handler.feed) while the engine transcribes, and each
        batch is written while the engine works on the next. While a call runs, the next one is
        filled up to the engine's batch limits in audio seconds; an engine with no call takes
        whatever is ready, since an idle GPU waiting for a full batch is billed time lost. Up to
        ENGINE_CALLS_IN_FLIGHT calls run at once, so a call's CPU-side work overlaps the tail of
        the one before. Memory holds those calls plus one call's worth of audio prepared ahead.
        Long audio is planned into chunks while it is prepared (handler.decode_pool), so the
        engine call only transcribes.

        engine_wait_s records how long the engine sat with no call while the job still had items
        (waiting for input); first_input_s the fetch before the engine had its first audio;
        last_output_s the writes after the last call, which nothing overlaps. Their sum is the input/output on the critical path (critical_io_s).
        """
        limits = self._batch_limits()
        feed: Feed[_Item] = Feed(
            self.items,
            functools.partial(self._prepare_one, tmp_dir),
            lambda item: item.audio.size / SAMPLE_RATE if item.audio is not None else 0.0,
            # Enough items in preparation to keep every decoding process busy.
            concurrency=max(self.settings.fetch_concurrency, self._decode_processes()),
            ahead_audio_s=limits.max_audio_s,
            ahead_items=limits.max_items,
        )
        clock = EngineClock()
        calls: set[asyncio.Task[None]] = set()
        writes: list[asyncio.Task[None]] = []

        async def transcribe_then_write(batch: list[_Item]) -> None:
            ready_at = await ENGINE_GATE.acquire()
            try:
                clock.call_started(ready_at)
                try:
                    await self._transcribe(batch)
                finally:
                    clock.call_finished()
            finally:
                ENGINE_GATE.release()
            writes.append(asyncio.ensure_future(self._finish(batch)))

        try:
            while True:
                if len(calls) >= ENGINE_CALLS_IN_FLIGHT:
                    finished, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                    calls.difference_update(finished)
                    for task in finished:
                        task.result()  # an unexpected failure ends the job as it did with one call
                # An idle engine takes whatever is ready; a busy one's next call waits to be full.
                batch = await feed.take(
                    limits.max_items, limits.max_audio_s, take_any=lambda: all(call.done() for call in calls)
                )
                if not batch:
                    break
                call = asyncio.ensure_future(transcribe_then_write(batch))
                call.add_done_callback(lambda _: feed.wake())
                calls.add(call)
            await asyncio.gather(*calls)
            tail = time.perf_counter()
            await asyncio.gather(*writes)
            # The writes still running after the last engine call are on the critical path too.
            self.last_output_s = time.perf_counter() - tail
        finally:
            # A cancelled job must not leave fetches, calls or writes running after its answer.
            await feed.close()
            for task in [*calls, *writes]:
                task.cancel()
            await asyncio.gather(*calls, *writes, return_exceptions=True)
            self.engine_busy_s = clock.busy_s
            self.engine_wait_s = clock.wait_s
            self.first_input_s = clock.first_input_s or 0.0

    # --- stages -------------------------------------------------------------------------------

    async def _prepare_one(self, tmp_dir: Path, index: int, item: _Item) -> None:
        """Fetch and decode one item; a failure becomes the item's error."""
        path = tmp_dir / f"{index}-{item.spec.id}.audio"
        try:
            fetch = functools.partial(
                fetch_audio, item.spec.audio, path, self.settings.limits, self.credentials
            )
            await self._stage(item, "fetch", "fetched", lambda: asyncio.to_thread(fetch))
            if item.ok:
                # Decoded and planned in a process of the decode pool: off the event loop, off the
                # engine's threads, and on every core (handler.decode_pool).
                pool = shared_pool(self._decode_processes())
                prepare = functools.partial(
                    pool.prepare, path, self.settings.limits.max_seconds, chunk_bound(self.engine)
                )
                prepared = await self._stage(item, "decode", "decoded", prepare)
                if prepared is not None:
                    item.audio, item.chunks = prepared.audio, prepared.chunks
                    item.result.timings.plan_s = round(prepared.plan_s, 3)
        except Exception:
            # Outside the stages (the temp file, say): still this item's error, never an "ok"
            # item without a transcript.
            log.exception("job %s item %s: preparing failed", self.job_id, item.spec.id)
            item.fail(ErrorCode.internal_error, "preparing the audio failed unexpectedly; see the worker log")
        finally:
            # The file can be gigabytes: gone as soon as it is decoded, not at job end.
            path.unlink(missing_ok=True)
        if item.ok and item.audio is not None:
            item.result.duration_s = round(item.audio.size / SAMPLE_RATE, 3)

    async def _stage(self, item: _Item, timer: str, done: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """Await a stage, timing it and turning its failure into the item's error."""
        started = time.perf_counter()
        try:
            value = await run()
        except StageError as error:
            item.fail(error.code, error.message)
            return None
        except Exception:
            log.exception("job %s item %s: %s failed", self.job_id, item.spec.id, timer)
            item.fail(ErrorCode.internal_error, f"{timer} failed unexpectedly; see the worker log")
            return None
        finally:
            setattr(item.result.timings, f"{timer}_s", round(time.perf_counter() - started, 3))
        self._report(item, done)
        return value

    async def _transcribe(self, batch: list[_Item]) -> None:
        ready = [item for item in batch if item.ok and item.audio is not None]
        for item in ready:
            if item.audio is not None and is_silent(item.audio):
                # Nothing to hear: an empty transcript without asking the engine, which would
                # invent words ("You", "Thank you.") for a short stretch of silence.
                item.transcript = Transcript(text="", segments=[], language=None)
        ready = [item for item in ready if item.transcript is None]
        if not ready:
            return
        if self.gpu_failed:
            for item in ready:
                item.fail(ErrorCode.gpu_failed, "the GPU failed earlier in this job; retry the item")
            return
        await self._after_engine(ready, await self._run_engine(ready))

    async def _after_engine(self, ready: list[_Item], failure: ItemError | None) -> None:
        """After an engine call over `ready`: on failure, find the bad input by retrying each alone."""
        if failure is not None and len(ready) > 1 and failure.code != ErrorCode.gpu_failed:
            # One bad input can fail a whole batch: retry each alone so only the bad one fails.
            for item in ready:
                alone = await self._run_engine([item])
                if alone is not None:
                    item.fail(alone.code, alone.message)
        elif failure is not None:
            for item in ready:
                item.fail(failure.code, failure.message)
        for item in ready:
            if item.ok:
                self._report(item, "transcribed")

    async def _run_engine(self, items: list[_Item]) -> ItemError | None:
        """Transcribe items in one engine call: sets their transcripts, or returns why it failed."""
        assert self.engine is not None
        audios = [item.audio for item in items]
        plans = [item.chunks for item in items]
        log.info(
            "job %s: engine call of %d item(s), %.1f s of audio",
            self.job_id,
            len(items),
            sum(audio.size for audio in audios if audio is not None) / SAMPLE_RATE,
        )
        # transcribe_long cuts long audio at silences into engine-sized chunks and stitches the
        # times back; short audio reaches the engine whole, in calls of the engine's batch limits.
        call = functools.partial(
            transcribe_long,
            self.engine,
            audios,
            plans=None if any(plan is None for plan in plans) else plans,
            decode=[item.options for item in items],
            batch_size=self._batch_limits().max_items,
        )
        started = time.perf_counter()
        return await self._settle_engine_call(
            items, asyncio.get_running_loop().run_in_executor(None, call), started
        )

    async def _settle_engine_call(
        self,
        items: list[_Item],
        call: Awaitable[list[Transcript]],
        started: float,
    ) -> ItemError | None:
        """Wait for an engine call over items: sets their transcripts, or returns why it failed."""
        audios = [item.audio for item in items]
        try:
            transcripts = await call
            if len(transcripts) != len(items):
                raise EngineError(f"engine returned {len(transcripts)} transcripts for {len(items)} inputs")
        except EngineError as error:
            if error.gpu_failed:
                self.gpu_failed = True
                log.error("job %s: GPU failure, asking RunPod to replace this worker: %s", self.job_id, error)
                return ItemError(code=ErrorCode.gpu_failed, message=f"GPU failure: {str(error)[:300]}")
            log.warning("job %s: engine failed on %d item(s): %s", self.job_id, len(items), error)
            return ItemError(
                code=ErrorCode.inference_failed, message=f"transcription failed: {str(error)[:300]}"
            )
        except Exception:
            log.exception("job %s: engine raised", self.job_id)
            return ItemError(
                code=ErrorCode.internal_error, message="transcription failed unexpectedly; see the worker log"
            )
        elapsed = time.perf_counter() - started
        # One call served every item: share its time out by each item's share of the audio.
        sizes = [audio.size for audio in audios if audio is not None]
        total = sum(sizes) or 1
        for item, transcript, size in zip(items, transcripts, sizes, strict=True):
            item.transcript = transcript
            item.result.timings.inference_s = round(elapsed * size / total, 3)
        return None

    async def _finish(self, batch: list[_Item]) -> None:
        """Render and write each transcribed item, then deliver its callback."""
        for item in batch:
            if item.ok and item.transcript is not None:
                self._fill_result(item)
                if self.store is not None:
                    await self._write(item)
            item.audio = None
            item.chunks = None
            item.transcript = None
            if self.input.callback is not None:
                problem = await asyncio.to_thread(post_item, self.input.callback, item.result, self.job_id)
                if problem is not None and item.ok:
                    item.result.error = ItemError(code=ErrorCode.callback_failed, message=problem)
            self.done += 1

    def _fill_result(self, item: _Item) -> None:
        transcript = item.transcript
        assert transcript is not None
        result = item.result
        segments = to_schema_segments(transcript, self.word_timestamps)
        result.text = transcript.text.strip()
        result.language = transcript.language
        result.language_probability = transcript.language_probability
        result.segments = None if self.input.timestamps == Timestamps.none else segments
        if result.timings.inference_s > 0 and result.duration_s:
            result.rtfx = round(result.duration_s / result.timings.inference_s, 2)
        item.document = TranscriptDocument(
            text=result.text,
            # Subtitle cues are cut from the words, whether or not the json lists them.
            segments=to_schema_segments(transcript, True) if self.input.subtitles is not None else segments,
            language=transcript.language,
            duration=result.duration_s or 0.0,
            word_timestamps=self.word_timestamps,
            task=self.input.task.value,
            language_probability=transcript.language_probability,
            subtitles=self.input.subtitles,
        )

    async def _write(self, item: _Item) -> None:
        assert self.store is not None
        store, document = self.store, item.document
        assert document is not None

        def write_all() -> dict[str, str]:
            written = {}
            for fmt in self.input.formats:
                key = f"{item.spec.id}.{fmt.value}"
                written[fmt.value] = store.put_bytes(key, render(fmt, document), CONTENT_TYPES[fmt])
            return written

        started = time.perf_counter()
        try:
            item.result.outputs = await asyncio.to_thread(write_all)
        except StorageError as error:
            item.fail(ErrorCode.storage_failed, str(error))
        except Exception:
            log.exception("job %s item %s: write failed", self.job_id, item.spec.id)
            item.fail(ErrorCode.internal_error, "writing the outputs failed unexpectedly; see the worker log")
        finally:
            item.result.timings.write_s = round(time.perf_counter() - started, 3)
        if item.ok:
            self._report(item, "written")

    # --- answer -------------------------------------------------------------------------------

    def _report(self, item: _Item, stage: str) -> None:
        payload = {"item": item.spec.id, "stage": stage, "done": self.done, "total": len(self.items)}
        try:
            self.progress(payload)
        except Exception as error:  # progress is a courtesy; it never fails the job
            log.warning("progress update failed: %s", type(error).__name__)

    def _answer(self) -> dict[str, Any]:
        model = self.engine.model_id if self.engine is not None else self.input.model
        worker = None
        if self.engine is not None:
            job_s = time.perf_counter() - self.started
            worker = {
                "version": stenopod.__version__,
                "engine": self.engine.engine_name,
                "device": self.engine.device,
                "job_s": round(job_s, 3),
                "engine_busy_s": round(self.engine_busy_s, 3),
                # The share of the job the engine was working: on a GPU, the share of billed time used.
                "engine_busy_share": round(self.engine_busy_s / job_s, 3) if job_s > 0 else 0.0,
                "engine_wait_s": round(self.engine_wait_s, 3),
                "first_input_s": round(self.first_input_s, 3),
                "last_output_s": round(self.last_output_s, 3),
                # fetch+decode+write on the critical path: the first batch's input, the engine's
                # waits for later input, and the writes left after the last engine call.
                "critical_io_s": round(self.first_input_s + self.engine_wait_s + self.last_output_s, 3),
            }
        inline_cap = self.settings.max_inline_bytes if self.store is None else None
        results = [item.result for item in self.items]
        return build_answer(results, model, worker, inline_cap=inline_cap, gpu_failed=self.gpu_failed)


# Below about 3 steps of 16-bit audio: digital silence, or dither nobody can hear.
SILENCE_PEAK = 1e-4


def is_silent(audio: np.ndarray) -> bool:
    """True for no samples, or samples that never rise above SILENCE_PEAK."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK
