"""The Python entry points: everything `stenopod transcribe` does, as one call.

Five lines from a list of URLs to transcripts in S3 on a RunPod endpoint (RUNPOD_API_KEY and the
AWS_* variables in the environment):

    from stenopod import api

    report = api.transcribe(
        ["https://example.com/ep1.mp3", "https://example.com/feed.xml"],
        "s3://my-bucket/transcripts/",
        endpoint="abc123xyz",
    )
    print(report.done, "done,", report.failed, "failed; manifest at", report.manifest)

Without `endpoint`, the embedded local endpoint (one worker process on this machine) does the work
and is stopped at the end. In async code, `await api.transcribe_backlog(...)` takes the same
arguments; `api.transcribe` works inside a running event loop too (a Jupyter notebook), by running
the backlog on a loop of its own in a helper thread. Run the same call again after a crash (or Ctrl-C) and it finishes the backlog: the
state file remembers every item and job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from stenopod.backlog.errors import BacklogError, UsageError
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_IN_FLIGHT,
    BacklogOptions,
)
from stenopod.backlog.report import BacklogReport
from stenopod.storage import DEFAULT_PRESIGN_SECONDS, S3Credentials

if TYPE_CHECKING:
    from stenopod.local import LocalEndpoint

__all__ = [
    "BacklogError",
    "BacklogOptions",
    "BacklogReport",
    "UsageError",
    "split_formats",
    "transcribe",
    "transcribe_backlog",
]


async def transcribe_backlog(
    sources: Iterable[str] | str,
    output: str,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    formats: Sequence[str] | str = DEFAULT_FORMATS,
    timestamps: str = "segment",
    language: str | None = None,
    task: str = "transcribe",
    prompt: str | None = None,
    hotwords: Sequence[str] | str = (),
    subtitles: dict[str, float] | bool | None = None,
    diarize: bool = False,
    max_speakers: int | None = None,
    state: str | Path | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    job_seconds: float = 600.0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    webhook_listen: str | None = None,
    webhook_url: str | None = None,
    presign_expiry_s: int = DEFAULT_PRESIGN_SECONDS,
    api_key: str | None = None,
    s3_credentials: S3Credentials | None = None,
    gpu: str | None = None,
    price_per_s: float | None = None,
    price_table: str | None = None,
    show_progress: bool = False,
) -> BacklogReport:
    """Transcribe every recording the sources name into output; returns the BacklogReport.

    sources: files, folders, globs, http(s) URLs, manifests (.txt/.csv/.jsonl), s3:// prefixes and
        podcast feed URLs, in any mix.
    output: a folder or s3://bucket/prefix/. Transcripts land at <output>/<item id>.<format>, with
        <output>/manifest.jsonl listing every item. A folder with a RunPod endpoint needs no bucket:
        local files (up to ~7.4 MB each) travel inside the jobs and transcripts come back in the answers.
    formats: a list such as ["json", "srt"] or a comma string such as "json,srt".
    task: "translate" for English text from any language (multilingual Whisper models).
    prompt, hotwords: vocabulary, e.g. hotwords=["ComfyUI", "Sortformer"] or "ComfyUI,Sortformer";
    subtitles: True (or {}) for readable srt/vtt cues with the default limits, or a dict such as
        {"max_line_width": 32, "max_duration_s": 5}.
    diarize: label who speaks when (`speaker` on segments and words, speaker-prefixed txt, srt and
        vtt); the endpoint's image needs its diarizer. max_speakers (with diarize): at most this many.
    endpoint: a RunPod endpoint id (key from api_key or RUNPOD_API_KEY), or the URL of a
        `stenopod serve` endpoint; None starts the embedded local endpoint for this call.
    state: the SQLite ledger; default <output>/.stenopod-state.sqlite for a folder output, else
        ./stenopod-state.sqlite. The same state file resumes an interrupted backlog.
    Raises UsageError for unusable arguments and BacklogError when the run cannot go on.
    """
    # The keywords above are the options' own names: BacklogOptions takes what it knows of them.
    options = BacklogOptions.from_values(
        {
            **locals(),
            "formats": split_formats(formats),
            "hotwords": _hotwords(hotwords),
            "subtitles": _subtitles(subtitles),
        }
    )
    return await run_backlog(
        options, state=state, api_key=api_key, s3_credentials=s3_credentials, show_progress=show_progress
    )


async def run_backlog(
    options: BacklogOptions,
    *,
    state: str | Path | None = None,
    api_key: str | None = None,
    s3_credentials: S3Credentials | None = None,
    show_progress: bool = False,
    worker_log_dir: str | Path | None = None,
) -> BacklogReport:
    """Run a backlog described by BacklogOptions (what `stenopod retry` replays from the ledger).

    worker_log_dir: where the embedded endpoint's worker writes its log (default: this process's stderr).
    """
    options.validate()
    start_endpoint = None
    if options.endpoint is None:
        from stenopod.local import run_in_thread

        def start_endpoint() -> AbstractContextManager[LocalEndpoint]:
            # One worker, allowed to fetch from the runner's loopback file server.
            return run_in_thread(
                workers=1,
                model=options.model,
                allow_private_urls=True,
                log_dir=Path(worker_log_dir) if worker_log_dir is not None else None,
            )

    runner = BacklogRunner(
        options,
        state=state,
        api_key=api_key,
        s3_credentials=s3_credentials,
        show_progress=show_progress,
        start_endpoint=start_endpoint,
    )
    return await runner.run()


def _hotwords(hotwords: Sequence[str] | str) -> tuple[str, ...]:
    """A string is a comma list of hotwords, never a list of its letters."""
    parts = hotwords.split(",") if isinstance(hotwords, str) else list(hotwords)
    return tuple(part.strip() for part in map(str, parts) if part.strip())


def _subtitles(subtitles: dict[str, float] | bool | None) -> dict[str, float] | None:
    """True or {}: the default limits; a dict: those limits; None or False: the engine's own cues."""
    if subtitles is None or subtitles is False:
        return None
    return {} if subtitles is True else dict(subtitles)


def split_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """("json", "srt") from ["json", "srt"] or "json,srt" (a string is not a list of one-letter formats)."""
    parts = formats.split(",") if isinstance(formats, str) else list(formats)
    return tuple(dict.fromkeys(str(part).strip().lower() for part in parts if str(part).strip()))


def transcribe(sources: Iterable[str] | str, output: str, **options: object) -> BacklogReport:
    """Blocking wrapper of transcribe_backlog (same arguments), for scripts and notebooks.

    asyncio.run cannot start inside a running loop (a notebook's): there the backlog runs on a
    loop of its own in a helper thread, and this call still blocks until it is done.
    """
    coroutine = transcribe_backlog(sources, output, **options)  # type: ignore[arg-type]
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stenopod-transcribe") as pool:
        return pool.submit(asyncio.run, coroutine).result()
