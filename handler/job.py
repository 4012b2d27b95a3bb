"""One RunPod job: validate, resolve the engine and the output, run the items, answer.

The answer is schema.JobOutput as a dict, or RunPod's {"error": ...} when the input is invalid or
every item failed. The items run through handler.pipeline: handler.item_stages fetches, decodes,
writes and calls back, handler.engine_calls transcribes; one item's failure never fails the
others. The answer is a pure function of the items' results (handler.answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from stenopod.s3_guard import ForbiddenEndpoint
from stenopod.schema import (
    ErrorCode,
    ItemError,
    ItemResult,
    JobError,
    JobInput,
    JobOutput,
    parse_job_input,
)
from stenopod.storage import ObjectStore, S3Credentials, StorageError, open_store, parse_s3_uri

from .answer import build_answer, worker_facts
from .diarize_stage import find_diarizer, with_diarization
from .engine_calls import EngineCalls
from .engines.base import Engine
from .engines.registry import Diarizer, ModelUnavailable
from .item_options import check_options
from .item_stages import finish_batch, prepare_item
from .job_state import ItemState, JobContext
from .pipeline import EngineTimes, run_pipeline
from .progress import Progress, runpod_progress
from .settings import JobSettings
from .submission import claim_submission, record_submission_result

log = logging.getLogger("stenopod.handler.job")


class Registry(Protocol):
    """What run_job needs of handler.engines.registry.EngineRegistry."""

    def get(self, model_id: str | None) -> Engine: ...

    def available(self) -> list[str]: ...

    def diarizer(self) -> Diarizer: ...


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
    parsed = parse_job_input(job.get("input"))
    if isinstance(parsed, JobError):
        return {"error": parsed.to_runpod_error()}
    output_error = _check_output(parsed.output, settings.allow_local_output)
    if output_error is not None:
        return {"error": output_error.to_runpod_error()}
    # The job's own bucket (RunPod's s3Config), else the operator's, read with the settings.
    credentials = S3Credentials.from_runpod_s3_config(job.get("s3Config")) or settings.s3_credentials
    job_id = str(job.get("id") or "")
    return await _Job(job_id, parsed, settings).run(registry, credentials, progress or runpod_progress(job))


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


class _Job:
    """One job's orchestration: engine, output store, submission claim, the items, the answer."""

    def __init__(self, job_id: str, job_input: JobInput, settings: JobSettings) -> None:
        self.job_id = job_id
        self.input = job_input
        self.settings = settings
        self.items = [
            ItemState(spec, ItemResult(id=spec.id, status="ok", model=job_input.model))
            for spec in job_input.job_items()
        ]
        self.started = time.perf_counter()

    async def run(
        self, registry: Registry, credentials: S3Credentials | None, progress: Progress
    ) -> dict[str, Any]:
        try:
            engine = registry.get(self.input.model)
        except ModelUnavailable as error:
            message = (
                f"model {error.model_id!r} is not in this image; available: {', '.join(error.available)}"
            )
            return self._fail_all(ErrorCode.model_unavailable, message, model=self.input.model)
        refused = check_options(self.input, engine)
        if refused is not None:
            return {"error": refused.to_runpod_error()}
        for item in self.items:
            item.result.model = engine.model_id
        diarizer = find_diarizer(registry) if self.input.diarize else None
        if isinstance(diarizer, ItemError):
            return self._fail_all(diarizer.code, diarizer.message, engine=engine)
        store: ObjectStore | None = None
        if self.input.output is not None:
            try:
                store = open_store(
                    self.input.output,
                    credentials,
                    allow_local=self.settings.allow_local_output,
                    allow_private=self.settings.limits.allow_private,
                )
            except StorageError as error:
                # A job's own S3 endpoint on a private address is refused like any such URL.
                forbidden = isinstance(error, ForbiddenEndpoint)
                code = ErrorCode.url_forbidden if forbidden else ErrorCode.storage_failed
                return self._fail_all(code, f"output: {error}", engine=engine)
            if self.input.submission is not None:
                try:
                    holder = await asyncio.to_thread(
                        claim_submission, store, self.input.submission, self.job_id
                    )
                except StorageError as error:
                    return self._fail_all(ErrorCode.storage_failed, f"output: {error}", engine=engine)
                if holder is not None:
                    # Another job holds this submission: answer with it instead of transcribing twice.
                    return JobOutput(items=[], model=engine.model_id, duplicate_of=holder).model_dump(
                        mode="json"
                    )

        ctx = JobContext(
            self.job_id,
            self.input,
            self.settings,
            engine,
            store,
            credentials,
            progress,
            total=len(self.items),
            diarizer=diarizer,
        )
        calls = EngineCalls(ctx)
        tmp_dir = Path(tempfile.mkdtemp(prefix="stenopod-job-", dir=self.settings.tmp_root))
        try:
            times = await run_pipeline(
                self.items,
                functools.partial(prepare_item, ctx, tmp_dir),
                with_diarization(ctx, calls),
                functools.partial(finish_batch, ctx),
                ctx.batch_limits(),
                # Enough items in preparation to keep every decoding process busy.
                concurrency=max(self.settings.fetch_concurrency, ctx.decode_processes()),
            )
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        answer = self._answer(engine, times, inline=store is None, gpu_failed=calls.gpu_failed)
        if self.input.submission is not None and store is not None:
            await self._record_submission(store, engine)
        return answer

    def _fail_all(
        self, code: ErrorCode, message: str, *, engine: Engine | None = None, model: str | None = None
    ) -> dict[str, Any]:
        """Every item fails the same way before any work: the job's answer."""
        for item in self.items:
            item.fail(code, message)
        if engine is None:
            results = [item.result for item in self.items]
            return build_answer(results, model, None, inline_cap=None, gpu_failed=False)
        return self._answer(engine, EngineTimes(), inline=False, gpu_failed=False)

    def _answer(
        self, engine: Engine, times: EngineTimes, *, inline: bool, gpu_failed: bool
    ) -> dict[str, Any]:
        worker = worker_facts(engine, time.perf_counter() - self.started, times)
        inline_cap = self.settings.max_inline_bytes if inline else None
        results = [item.result for item in self.items]
        return build_answer(results, engine.model_id, worker, inline_cap=inline_cap, gpu_failed=gpu_failed)

    async def _record_submission(self, store: ObjectStore, engine: Engine) -> None:
        """Leave the results where a client that lost track of this job will look for them."""
        assert self.input.submission is not None
        record = {
            "model": engine.model_id,
            "items": [item.result.model_dump(mode="json") for item in self.items],
        }
        try:
            await asyncio.to_thread(
                record_submission_result, store, self.input.submission, self.job_id, record
            )
        except StorageError as error:  # the transcripts are written; only the bookkeeping failed
            log.warning("job %s: cannot record submission result: %s", self.job_id, error)
