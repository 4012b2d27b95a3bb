"""An item's stages outside the engine: fetch and decode before it, render, write and call back after.

Each stage turns its own failure into the item's ItemError, so one item never fails the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stenopod.formats import CONTENT_TYPES, TranscriptDocument, render
from stenopod.schema import ErrorCode, ItemError, Timestamps
from stenopod.storage import StorageError

from .answer import to_schema_segments
from .audio import fetch_audio
from .callback import post_item
from .chunking import chunk_bound
from .decode_pool import shared_pool
from .errors import StageError
from .job_state import ItemState, JobContext

log = logging.getLogger("stenopod.handler.job")


async def prepare_item(ctx: JobContext, tmp_dir: Path, index: int, item: ItemState) -> None:
    """Fetch and decode one item (and plan its chunks); a failure becomes the item's error."""
    # An id may name folders ("2024/ep1"): the fetched file stays one name in tmp_dir.
    path = tmp_dir / f"{index}-{item.spec.id.replace('/', '_')}.audio"
    try:
        fetch = functools.partial(fetch_audio, item.spec.audio, path, ctx.settings.limits, ctx.credentials)
        await _stage(ctx, item, "fetch", "fetched", lambda: asyncio.to_thread(fetch))
        if item.ok:
            # Decoded and planned in a process of the decode pool: off the event loop, off the
            # engine's threads, and on every core (handler.decode_pool).
            pool = shared_pool(ctx.decode_processes())
            prepare = functools.partial(
                pool.prepare, path, ctx.settings.limits.max_seconds, chunk_bound(ctx.engine)
            )
            prepared = await _stage(ctx, item, "decode", "decoded", prepare)
            if prepared is not None:
                item.audio, item.chunks, item.peak = prepared.audio, prepared.chunks, prepared.peak
                item.result.timings.plan_s = round(prepared.plan_s, 3)
    except Exception:
        # Outside the stages (the temp file, say): still this item's error, never an "ok" item
        # without a transcript.
        log.exception("job %s item %s: preparing failed", ctx.job_id, item.spec.id)
        item.fail(ErrorCode.internal_error, "preparing the audio failed unexpectedly; see the worker log")
    finally:
        # The file can be gigabytes: gone as soon as it is decoded, not at job end.
        path.unlink(missing_ok=True)
    if item.ok and item.audio is not None:
        item.result.duration_s = round(item.audio_s, 3)


async def finish_batch(ctx: JobContext, batch: list[ItemState]) -> None:
    """Render and write each transcribed item, then deliver its callback."""
    for item in batch:
        if item.ok and item.transcript is not None:
            _fill_result(ctx, item)
            if ctx.store is not None:
                await _write(ctx, item)
        item.release()
        if ctx.input.callback is not None:
            post = functools.partial(
                post_item,
                ctx.input.callback,
                item.result,
                ctx.job_id,
                retries=ctx.settings.callback_retries,
                backoff_s=ctx.settings.callback_backoff_s,
                allow_private=ctx.settings.limits.allow_private,
            )
            problem = await asyncio.to_thread(post)
            if problem is not None and item.ok:
                item.result.error = ItemError(code=ErrorCode.callback_failed, message=problem)
        ctx.done += 1


async def _stage(
    ctx: JobContext, item: ItemState, timer: str, done: str, run: Callable[[], Awaitable[Any]]
) -> Any:
    """Await a stage, timing it and turning its failure into the item's error."""
    started = time.perf_counter()
    try:
        value = await run()
    except StageError as error:
        item.fail(error.code, error.message)
        return None
    except Exception:
        log.exception("job %s item %s: %s failed", ctx.job_id, item.spec.id, timer)
        item.fail(ErrorCode.internal_error, f"{timer} failed unexpectedly; see the worker log")
        return None
    finally:
        setattr(item.result.timings, f"{timer}_s", round(time.perf_counter() - started, 3))
    ctx.report(item, done)
    return value


def _fill_result(ctx: JobContext, item: ItemState) -> None:
    transcript = item.transcript
    assert transcript is not None
    result = item.result
    segments = to_schema_segments(transcript, ctx.word_timestamps)
    result.text = transcript.text.strip()
    result.language = transcript.language
    result.language_probability = transcript.language_probability
    result.segments = None if ctx.input.timestamps == Timestamps.none else segments
    if result.timings.inference_s > 0 and result.duration_s:
        result.rtfx = round(result.duration_s / result.timings.inference_s, 2)
    item.document = TranscriptDocument(
        text=result.text,
        # Subtitle cues are cut from the words, whether or not the json lists them.
        segments=to_schema_segments(transcript, True) if ctx.input.subtitles is not None else segments,
        language=transcript.language,
        duration=result.duration_s or 0.0,
        word_timestamps=ctx.word_timestamps,
        speakers=result.speakers,
        task=ctx.input.task.value,
        language_probability=transcript.language_probability,
        subtitles=ctx.input.subtitles,
    )


async def _write(ctx: JobContext, item: ItemState) -> None:
    store, document = ctx.store, item.document
    assert store is not None and document is not None

    def write_all() -> dict[str, str]:
        written = {}
        for fmt in ctx.input.formats:
            key = f"{item.spec.id}.{fmt.value}"
            written[fmt.value] = store.put_bytes(key, render(fmt, document), CONTENT_TYPES[fmt])
        return written

    started = time.perf_counter()
    try:
        item.result.outputs = await asyncio.to_thread(write_all)
    except StorageError as error:
        item.fail(ErrorCode.storage_failed, str(error))
    except Exception:
        log.exception("job %s item %s: write failed", ctx.job_id, item.spec.id)
        item.fail(ErrorCode.internal_error, "writing the outputs failed unexpectedly; see the worker log")
    finally:
        item.result.timings.write_s = round(time.perf_counter() - started, 3)
    if item.ok:
        ctx.report(item, "written")
