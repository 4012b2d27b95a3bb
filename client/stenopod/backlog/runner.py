"""The backlog runner: sources -> items -> jobs -> results, resumable at any instant.

Crash safety comes from the order of writes. For each job the runner commits, in the ledger:
1. the submission token and its items (state submitted) BEFORE POST /run;
2. the job id right after /run answers;
3. the items' outcomes only after their transcripts are verified in the output store.
A rerun of the same command then polls jobs it knows, asks the output store which job took a token
whose job id it never learned (the worker records it, handler/submission.py), resubmits with the
same token otherwise (the worker answers a duplicate with duplicate_of), and never touches an item
that is done.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from stenopod.backlog.inline_payload import (
    JOB_PAYLOAD_BYTES,
    TooLargeForInline,
    check_inline_sizes,
    data_uri,
    item_payload_bytes,
)
from stenopod.backlog.inline_results import worker_timestamps, write_inline_result
from stenopod.backlog.job_options import job_fields, options_problem
from stenopod.backlog.ledger import (
    ATTEMPT_FAILED,
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    LOST,
    PENDING,
    ItemOutcome,
    ItemRecord,
    Ledger,
)
from stenopod.backlog.manifest_out import write_manifest
from stenopod.backlog.packing import (
    BYTES_PER_SECOND,
    DEFAULT_JOB_SECONDS,
    DEFAULT_MAX_ITEMS_PER_JOB,
    UNKNOWN_SECONDS,
    pack_items,
)
from stenopod.backlog.preflight import (
    PreflightError,
    check_contact,
    check_output,
    check_settings,
    discard_state,
    stored_options,
)
from stenopod.backlog.progress import ProgressView
from stenopod.endpoint import EndpointAuthError, EndpointClient, EndpointError, EndpointNotFound, JobStatus
from stenopod.pricing import PricingError, job_cost, price_per_second
from stenopod.schema import MAX_SPEAKERS, ErrorCode, JobError, OutputFormat, Timestamps
from stenopod.storage import (
    DEFAULT_PRESIGN_SECONDS,
    INPUTS_PREFIX,
    ObjectStore,
    S3Credentials,
    S3Store,
    StorageError,
    open_store,
    parse_s3_uri,
    read_submission,
)

if TYPE_CHECKING:
    from stenopod.backlog.sources import SourceItem

log = logging.getLogger(__name__)

DEFAULT_FORMATS = ("json", "txt", "srt", "vtt")
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_MAX_ATTEMPTS = 3
# Errors that another attempt cannot fix: the same bytes will fail the same way.
PERMANENT_CODES = frozenset(
    {
        ErrorCode.invalid_input.value,
        ErrorCode.url_forbidden.value,
        ErrorCode.too_large.value,
        ErrorCode.too_long.value,
        ErrorCode.not_audio.value,
        ErrorCode.model_unavailable.value,
    }
)
_MAX_DUPLICATE_HOPS = 4
_MAX_STATUS_FAILURES = 20
# A /run whose every retry was lost in transit (timeouts, 502s, dropped answers) may still have
# created its job: the submission is asked again under the same token this many more times, so
# the worker's claim on the token (duplicate_of) keeps such a job from transcribing it twice.
_MAX_SAME_TOKEN_RESUBMITS = 2


class UsageError(Exception):
    """The backlog cannot start as asked (bad options, an unusable output); the CLI exits 2."""


@contextmanager
def hold_lock(state: Path) -> Iterator[None]:
    """One run per state file: two would submit the same items. The OS drops the lock if we die."""
    import fcntl

    with open(f"{state}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another stenopod run is using the state file {state}") from None
        yield


class BacklogError(Exception):
    """The run stopped for good (the endpoint refused the API key, the output store is unreachable)."""


class EndpointRefused(BacklogError):
    """The endpoint refused the API key: running again changes nothing until the key is fixed."""


@dataclass
class BacklogOptions:
    """Everything a run needs; stored in the ledger so `stenopod retry` can run it again."""

    sources: list[str]
    output: str
    endpoint: str | None = None  # RunPod endpoint id or base URL; None: the embedded local endpoint
    model: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    timestamps: str = "segment"
    language: str | None = None
    diarize: bool = False  # speaker labels (the worker needs its diarizer baked in)
    max_speakers: int | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    job_seconds: float = DEFAULT_JOB_SECONDS
    max_items_per_job: int = DEFAULT_MAX_ITEMS_PER_JOB
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    webhook_listen: str | None = None
    webhook_url: str | None = None
    presign_expiry_s: int = DEFAULT_PRESIGN_SECONDS
    poll_initial_s: float = 0.5
    poll_max_s: float = 10.0
    # With webhooks, status is still polled (webhooks get lost) but this rarely.
    webhook_poll_s: float = 60.0
    # Before asking again, under the same token, after a /run whose answers were all lost.
    resubmit_wait_s: float = 10.0
    gpu: str | None = None
    price_per_s: float | None = None
    price_table: str | None = None
    # Sent with every job (stenopod.backlog.job_options): translation, vocabulary, subtitle limits.
    task: str = "transcribe"
    prompt: str | None = None
    hotwords: tuple[str, ...] = ()
    subtitles: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["formats"] = list(self.formats)
        data["hotwords"] = list(self.hotwords)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BacklogOptions:
        known = {name: value for name, value in data.items() if name in cls.__dataclass_fields__}
        known["formats"] = tuple(known.get("formats") or DEFAULT_FORMATS)
        known["hotwords"] = tuple(known.get("hotwords") or ())
        return cls(**known)

    def job_fields(self) -> dict[str, Any]:
        """The transcription options as job input fields."""
        return job_fields(self.task, self.prompt, self.hotwords, self.subtitles)

    def validate(self) -> None:
        if not self.sources:
            raise UsageError(
                "give at least one source (a file, folder, glob, URL, manifest, s3:// prefix or feed)"
            )
        if not self.output:
            raise UsageError("--output: give a folder or an s3://bucket/prefix/ URI")
        known_formats = {fmt.value for fmt in OutputFormat}
        bad = [fmt for fmt in self.formats if fmt not in known_formats]
        if bad or not self.formats:
            raise UsageError(
                f"--formats: {','.join(bad) or 'empty'} not among {','.join(sorted(known_formats))}"
            )
        if self.timestamps not in {value.value for value in Timestamps}:
            raise UsageError("--timestamps: must be none, segment or word")
        if self.max_speakers is not None and not self.diarize:
            raise UsageError("--max-speakers: applies only with --diarize")
        if self.max_speakers is not None and not 1 <= self.max_speakers <= MAX_SPEAKERS:
            raise UsageError(
                f"--max-speakers: 1 to {MAX_SPEAKERS}, the most speakers the diarizer tells apart"
            )
        for name in ("max_in_flight", "max_attempts", "max_items_per_job"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.job_seconds <= 0:
            raise UsageError("--job-seconds: must be positive")
        if self.presign_expiry_s < 60:
            raise UsageError("--presign-expiry: must be at least 60 seconds")
        try:
            check_settings(self.language, self.webhook_listen)
        except PreflightError as error:
            raise UsageError(str(error)) from None
        problem = options_problem(self.job_fields())
        if problem is not None:
            raise UsageError(problem)


@dataclass
class BacklogReport:
    """The outcome of a run over the whole backlog (items of earlier runs included)."""

    total: int
    done: int
    failed: int
    pending: int
    items: list[ItemRecord]
    audio_seconds: float
    wall_seconds: float
    output: str
    manifest: str | None
    state: str
    execution_seconds: float = 0.0
    cost_usd: float | None = None
    gpu: str | None = None

    @property
    def failed_items(self) -> list[ItemRecord]:
        return [item for item in self.items if item.state == FAILED]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.pending == 0


def is_local_endpoint(endpoint: str | None) -> bool:
    """True for the embedded endpoint and for a `stenopod serve` URL on a loopback address."""
    if endpoint is None:
        return True
    if "://" not in endpoint:
        return False
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_state_path(output: str) -> Path:
    """Beside a local output (so the backlog and its memory travel together), else the working dir."""
    if output.startswith("s3://"):
        return Path("stenopod-state.sqlite")
    folder = output[len("file://") :] if output.startswith("file://") else output
    return Path(folder).expanduser() / ".stenopod-state.sqlite"


def _output_uri(output: str) -> str:
    """The job input's `output`: s3://bucket/prefix/ with its slash, or an absolute folder path."""
    if output.startswith("s3://"):
        return output if output.endswith("/") else output + "/"
    folder = output[len("file://") :] if output.startswith("file://") else output
    return str(Path(folder).expanduser().resolve())


@dataclass
class _Settled:
    state: str
    outcomes: list[ItemOutcome] = field(default_factory=list)
    count_attempt: bool = True


class BacklogRunner:
    """Runs one backlog to the end. `await BacklogRunner(options, ...).run()` -> BacklogReport."""

    def __init__(
        self,
        options: BacklogOptions,
        *,
        state: Path | str | None = None,
        api_key: str | None = None,
        s3_credentials: S3Credentials | None = None,
        file_server: Any = None,
        show_progress: bool = False,
        start_endpoint: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        options.validate()
        self.options = options
        self.local = is_local_endpoint(options.endpoint)
        # A RunPod endpoint and a folder, no bucket: local files go inside the job as data: URIs
        # (inline_payload.py) and transcripts come back in its answer (inline_results.py).
        self.inline = not self.local and not options.output.startswith("s3://")
        if options.endpoint is None and start_endpoint is None:
            raise UsageError("no endpoint: use stenopod.api.transcribe_backlog to start the embedded one")
        self.price: tuple[str, float] | None = None
        if not self.local:
            # Checked now, not after hours of work: an unknown GPU is a usage error.
            try:
                self.price = price_per_second(
                    options.gpu, price_per_s=options.price_per_s, table_path=options.price_table
                )
            except PricingError as error:
                raise UsageError(str(error)) from None
        self.state_path = Path(state) if state is not None else default_state_path(options.output)
        self.api_key = api_key
        self.s3_credentials = s3_credentials
        # Serves local files to a local endpoint (a LocalFileServer; started on first use when None).
        self.file_server = file_server
        self._closing = ExitStack()
        self.show_progress = show_progress
        # Starts the embedded endpoint (a context manager yielding an object with .base_url), only
        # when there is work for it: a rerun of a finished backlog does not load a model.
        self.start_endpoint = start_endpoint
        self.output_uri = _output_uri(options.output)
        self.store: ObjectStore | None = None
        self.ledger: Ledger | None = None
        self.client: EndpointClient | None = None
        self.webhooks: Any = None
        self.view: ProgressView | None = None
        self._source_stores: dict[str, S3Store] = {}
        # Items whose job was cancelled while this run followed it (stenopod cancel, a purged
        # queue): pending in the ledger for the next run, but not resubmitted by this one, which
        # would undo the cancel over and over (a cancel uses up no attempt).
        self._held: set[str] = set()
        self._started = 0.0

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> BacklogReport:
        self._started = time.monotonic()
        options = self.options
        try:
            check_output(options.output)
            self.store = open_store(options.output, self.s3_credentials)
        except PreflightError as error:
            raise UsageError(str(error)) from None
        except StorageError as error:
            raise UsageError(f"--output: {error}") from None
        # Sources and endpoint are checked before the state file is touched: a run that cannot
        # start leaves neither a new state file nor its options in an old one (`retry` replays them).
        items = await self._expand_sources()
        if self.inline:
            try:
                check_inline_sizes(items)  # before anything is submitted
            except TooLargeForInline as error:
                raise UsageError(str(error)) from None
        if options.endpoint is not None:
            try:
                await check_contact(options.endpoint, self.api_key)
            except PreflightError as error:
                raise UsageError(str(error)) from None
        fresh = not self.state_path.exists()
        self.ledger = Ledger(self.state_path)
        try:
            with ExitStack() as self._closing:
                self._closing.enter_context(hold_lock(self.state_path))
                self.ledger.set_meta("state_version", 1)
                added = self.ledger.add_items(items)
                log.info("%d items from the sources, %d new", len(items), added)
                self._reopen_for_new_formats()
                endpoint = options.endpoint
                if endpoint is None:
                    if not self.ledger.counts().pending and not self.ledger.open_submissions():
                        self._save_options()
                        return self._report()
                    assert self.start_endpoint is not None
                    endpoint = self._closing.enter_context(self.start_endpoint()).base_url
                self.client = EndpointClient(endpoint, self.api_key, max_in_flight=64)
                try:
                    if options.webhook_listen:
                        await self._start_webhooks()
                    self._save_options()
                    self.view = ProgressView(enabled=self.show_progress)
                    with self.view:
                        self._refresh_view()
                        await self._work()
                finally:
                    if self.webhooks is not None:
                        await self.webhooks.stop()
                    await self.client.aclose()
            return self._report()
        except UsageError:
            if fresh:
                self.ledger.close()
                discard_state(self.state_path)
            raise
        finally:
            self.ledger.close()

    def _reopen_for_new_formats(self) -> None:
        """Done items lacking a format this run asks for are transcribed again, for all of them."""
        assert self.ledger is not None
        wanted = set(self.options.formats)
        lacking = [item.id for item in self.ledger.items(DONE) if not wanted <= set(item.outputs)]
        if lacking:
            log.warning(
                "%d done item(s) lack some of %s: transcribing them again", len(lacking), sorted(wanted)
            )
            self.ledger.reset_failed(done_ids=lacking)

    def _save_options(self) -> None:
        """The options `retry` replays, saved once the run has started; an embedded endpoint is
        stored as None (retry starts a fresh one) and local paths absolute (retry may run elsewhere)."""
        assert self.ledger is not None
        self.ledger.set_meta("options", stored_options(self.options.to_json()))

    async def _start_webhooks(self) -> None:
        from stenopod.backlog.webhooks import WebhookListener

        try:
            self.webhooks = WebhookListener(self.options.webhook_listen or "", self.options.webhook_url)
            await self.webhooks.start()
        except ValueError as error:
            raise UsageError(str(error)) from None  # it names --webhook-listen or --webhook-url
        except OSError as error:
            raise UsageError(f"--webhook-listen: {error}") from None

    async def _expand_sources(self) -> list[SourceItem]:
        from stenopod.backlog.sources import SourceError, expand_sources

        try:
            return await asyncio.to_thread(
                expand_sources, list(self.options.sources), s3_credentials=self.s3_credentials
            )
        except SourceError as error:
            raise UsageError(str(error)) from None

    async def _work(self) -> None:
        """Keep up to max_in_flight jobs going until no item is pending or in flight."""
        assert self.ledger is not None
        active: set[asyncio.Task[None]] = set()
        for sub in self.ledger.open_submissions():
            # Left open by an earlier run that stopped: follow them, never resubmit blindly.
            active.add(asyncio.create_task(self._drive(sub.token, sub.item_ids, sub.job_id, recovered=True)))
        packs: deque[list[str]] = deque()
        try:
            while True:
                if not packs:
                    pending = self._pending()
                    packs.extend(
                        pack.item_ids
                        for pack in pack_items(
                            pending,
                            job_seconds=self.options.job_seconds,
                            max_items=self.options.max_items_per_job,
                            payload_bytes=item_payload_bytes if self.inline else None,
                            max_payload_bytes=JOB_PAYLOAD_BYTES if self.inline else None,
                        )
                    )
                while packs and len(active) < self.options.max_in_flight:
                    item_ids = packs.popleft()
                    token = uuid.uuid4().hex
                    self.ledger.create_submission(token, item_ids)
                    active.add(asyncio.create_task(self._drive(token, item_ids, None, recovered=False)))
                if not active:
                    if packs or self._pending():
                        continue
                    return
                finished, active = await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # a fatal error (BacklogError) ends the run here
                self._refresh_view()
        finally:
            for task in active:
                task.cancel()
            if active:
                await asyncio.gather(*active, return_exceptions=True)

    def _pending(self) -> list[ItemRecord]:
        """Pending items this run may submit (not those held after a cancel)."""
        assert self.ledger is not None
        return [item for item in self.ledger.items(PENDING) if item.id not in self._held]

    # --- one submission -----------------------------------------------------------------------

    async def _drive(
        self, token: str, item_ids: list[str], job_id: str | None, *, recovered: bool, resubmits: int = 0
    ) -> None:
        """Submit (unless a job id is known), wait for the job, settle its items."""
        assert self.ledger is not None and self.store is not None
        if job_id is None and (recovered or resubmits):
            # We died between recording the token and the job id: the worker may know the job.
            record = await self._read_submission(token)
            if record is not None:
                job_id = str(record["job_id"])
                self.ledger.set_job_id(token, job_id)
        unstaged: list[ItemOutcome] = []
        if job_id is None:
            staged, unstaged = await self._stage(item_ids)
            if not staged:
                self._settle(token, _Settled(ATTEMPT_FAILED, unstaged), None)
                return
            try:
                job_id = await self._submit(token, staged)
            except _SubmitFailed as failure:
                if failure.ambiguous and resubmits < _MAX_SAME_TOKEN_RESUBMITS:
                    log.warning("submitting %s: %s; asking again under the same token", token, failure)
                    await asyncio.sleep(self.options.resubmit_wait_s * (resubmits + 1))
                    await self._drive(token, item_ids, None, recovered=recovered, resubmits=resubmits + 1)
                    return
                outcomes = [
                    ItemOutcome(
                        id=item["id"], ok=False, error_code=failure.code, error_message=failure.message
                    )
                    for item in staged
                ]
                self._settle(token, _Settled(ATTEMPT_FAILED, [*outcomes, *unstaged]), None)
                return
            self.ledger.set_job_id(token, job_id)
        unstaged_ids = {outcome.id for outcome in unstaged}
        followed = [item_id for item_id in item_ids if item_id not in unstaged_ids]
        settled, execution_ms = await self._follow(token, followed, job_id, recovered=recovered)
        settled.outcomes.extend(unstaged)
        if settled.state == CANCELLED and not recovered:
            log.warning(
                "job %s was cancelled: its %d item(s) stay pending for the next run", job_id, len(followed)
            )
            self._held.update(followed)
        self._settle(token, settled, execution_ms)

    def _settle(self, token: str, settled: _Settled, execution_ms: int | None) -> None:
        assert self.ledger is not None
        self.ledger.finish_submission(
            token,
            settled.state,
            settled.outcomes,
            max_attempts=self.options.max_attempts,
            execution_ms=execution_ms,
            count_attempt=settled.count_attempt,
        )
        self._refresh_view()

    async def _stage(self, item_ids: list[str]) -> tuple[list[dict[str, str]], list[ItemOutcome]]:
        """Each item's audio as a URL the worker can fetch; an item that cannot be staged (its file
        gone, an upload refused) fails alone, and the rest of its pack still goes."""
        assert self.ledger is not None
        staged: list[dict[str, str]] = []
        unstaged: list[ItemOutcome] = []
        for item_id in item_ids:
            record = self.ledger.item(item_id)
            assert record is not None
            try:
                staged.append({"id": item_id, "audio": await self._audio_url(record)})
            except (StorageError, OSError) as error:
                message = f"cannot stage {record.source}: {error}"
                unstaged.append(
                    ItemOutcome(
                        id=item_id, ok=False, error_code=ErrorCode.storage_failed.value, error_message=message
                    )
                )
        return staged, unstaged

    async def _submit(self, token: str, job_items: list[dict[str, str]]) -> str:
        assert self.client is not None
        job_input: dict[str, Any] = {
            "items": job_items,
            "formats": list(self.options.formats),
            "timestamps": worker_timestamps(self.options.timestamps, self.options.subtitles is not None)
            if self.inline
            else self.options.timestamps,
            "submission": token,
        }
        if not self.inline:
            job_input["output"] = self.output_uri
        if self.options.model:
            job_input["model"] = self.options.model
        if self.options.language:
            job_input["language"] = self.options.language
        job_input.update(self.options.job_fields())
        if self.options.diarize:
            job_input["diarize"] = True
            if self.options.max_speakers is not None:
                job_input["max_speakers"] = self.options.max_speakers
        webhook = self.webhooks.url if self.webhooks is not None else None
        try:
            return await self.client.run(job_input, webhook=webhook)
        except EndpointAuthError as error:
            raise EndpointRefused(f"endpoint: {error.message}") from None
        except EndpointNotFound as error:
            raise BacklogError(f"endpoint not found: {error.message}") from None
        except EndpointError as error:
            if error.status_code is not None and 400 <= error.status_code < 500:
                # The endpoint refused this input: retrying it unchanged will not help.
                raise _SubmitFailed(ErrorCode.invalid_input.value, error.message) from None
            # No answer we can trust: the job may exist all the same.
            raise _SubmitFailed(
                ErrorCode.internal_error.value, f"submitting failed: {error.message}", ambiguous=True
            ) from None

    async def _audio_url(self, item: ItemRecord) -> str:
        """A URL the worker can fetch the item from."""
        if item.local_path:
            path = Path(item.local_path)
            if self.inline:
                return await asyncio.to_thread(data_uri, path)
            if self.options.output.startswith("s3://"):
                assert self.store is not None
                key = f"{INPUTS_PREFIX}{item.id}{path.suffix.lower()}"
                store = self.store
                # Ids are stable, so an upload survives a restart and is not repeated.
                if not await asyncio.to_thread(store.exists, key):
                    await asyncio.to_thread(store.put_file, key, path)
                return await asyncio.to_thread(store.presigned_get_url, key, self.options.presign_expiry_s)
            if self.file_server is None:
                # Local files for a local endpoint: served on loopback for as long as this run lasts.
                from stenopod.backlog.fileserver import LocalFileServer

                self.file_server = self._closing.enter_context(LocalFileServer())
            return self.file_server.register(path)
        audio = item.audio or item.source
        if audio.startswith("s3://"):
            # Presign with the client's credentials: the worker may have none for the source bucket.
            bucket, key = parse_s3_uri(audio)
            store = self._source_stores.get(bucket)
            if store is None:
                store = S3Store(bucket, "", self.s3_credentials)
                self._source_stores[bucket] = store
            return await asyncio.to_thread(store.presigned_get_url, key, self.options.presign_expiry_s)
        return audio

    async def _follow(
        self, token: str, item_ids: list[str], job_id: str, *, recovered: bool
    ) -> tuple[_Settled, int | None]:
        """Wait for job_id (following duplicate_of) and turn its end into item outcomes."""
        assert self.ledger is not None
        execution_ms: int | None = None
        for _hop in range(_MAX_DUPLICATE_HOPS):
            status = await self._wait_final(job_id)
            if status is None:
                # The endpoint forgot the job: its results may still be in the store.
                record = await self._read_submission(token)
                if record is not None and record.get("state") == "done":
                    return _Settled(FINISHED, await self._outcomes(item_ids, record.get("items") or [])), None
                message = f"job {job_id} vanished from the endpoint without a result"
                outcomes = [
                    ItemOutcome(
                        id=i, ok=False, error_code=ErrorCode.internal_error.value, error_message=message
                    )
                    for i in item_ids
                ]
                # A job lost while this client was not running is not the items' fault.
                return _Settled(LOST, outcomes, count_attempt=not recovered), None
            if status.execution_time_ms:
                execution_ms = (execution_ms or 0) + status.execution_time_ms
            output = status.output if isinstance(status.output, dict) else {}
            duplicate_of = output.get("duplicate_of") if status.status == "COMPLETED" else None
            if duplicate_of and duplicate_of != job_id:
                log.info("job %s duplicates %s: following the original", job_id, duplicate_of)
                job_id = str(duplicate_of)
                self.ledger.set_job_id(token, job_id)
                continue
            return await self._settle_status(token, item_ids, status), execution_ms
        message = "the endpoint kept answering duplicate_of"
        outcomes = [
            ItemOutcome(id=i, ok=False, error_code=ErrorCode.internal_error.value, error_message=message)
            for i in item_ids
        ]
        return _Settled(ATTEMPT_FAILED, outcomes), execution_ms

    async def _wait_final(self, job_id: str) -> JobStatus | None:
        """Poll (or wait for a webhook) until the job is final; None when the endpoint forgot it."""
        assert self.client is not None
        webhooks = self.webhooks
        if webhooks is not None:
            interval = max_interval = max(self.options.webhook_poll_s, self.options.poll_initial_s)
        else:
            interval, max_interval = self.options.poll_initial_s, self.options.poll_max_s
            if self.local:
                # A status call on loopback costs next to nothing; backing off to 10 s would leave
                # a finished job unnoticed for seconds, the most of a short backlog's run time.
                max_interval = interval
        initial = interval
        last_seen: tuple[str, str] | None = None
        failures = 0
        while True:
            try:
                status = await self.client.status(job_id)
                failures = 0
            except EndpointNotFound:
                return None
            except EndpointAuthError as error:
                raise EndpointRefused(f"endpoint: {error.message}") from None
            except EndpointError as error:
                failures += 1
                if failures >= _MAX_STATUS_FAILURES:
                    raise BacklogError(f"cannot read job {job_id}'s status: {error.message}") from None
                log.warning("status of job %s: %s", job_id, error.message)
                status = None
            if status is not None:
                if status.is_final:
                    return status
                seen = (status.status, json.dumps(status.output, sort_keys=True, default=str))
                # Progress (a new state or a progress update) means the job moves: look again soon.
                interval = initial if seen != last_seen else min(interval * 1.6, max_interval)
                last_seen = seen
            if webhooks is not None:
                if await webhooks.wait(job_id, interval):
                    continue
            else:
                await asyncio.sleep(interval)

    async def _settle_status(self, token: str, item_ids: list[str], status: JobStatus) -> _Settled:
        record = await self._read_submission(token)
        stored = record.get("items") if record is not None and record.get("state") == "done" else None
        if status.status == "COMPLETED":
            output = status.output if isinstance(status.output, dict) else {}
            results = stored if stored is not None else output.get("items") or []
            return _Settled(FINISHED, await self._outcomes(item_ids, results))
        if status.status == "FAILED":
            error = JobError.from_runpod_error(status.error)
            results = (
                stored if stored is not None else [item.model_dump(mode="json") for item in error.items or []]
            )
            outcomes = await self._outcomes(
                item_ids, results, default_code=error.code.value, default_message=error.message
            )
            return _Settled(ATTEMPT_FAILED, outcomes)
        if stored is not None:
            # The worker finished and recorded it before the timeout or the cancel landed: the
            # transcripts are in the store (each is checked there), not worth doing again.
            return _Settled(FINISHED, await self._outcomes(item_ids, stored))
        if status.status == "CANCELLED":
            code, message = ErrorCode.cancelled.value, f"job {status.id} was cancelled"
        else:
            code = ErrorCode.internal_error.value
            message = f"job {status.id} ended {status.status} (past the endpoint's execution timeout?)"
        outcomes = [ItemOutcome(id=i, ok=False, error_code=code, error_message=message) for i in item_ids]
        if status.status == "CANCELLED":
            # Someone stopped the job (stenopod cancel): the items did nothing wrong.
            return _Settled(CANCELLED, outcomes, count_attempt=False)
        return _Settled(ATTEMPT_FAILED, outcomes)

    async def _outcomes(
        self,
        item_ids: list[str],
        results: list[Any],
        *,
        default_code: str = ErrorCode.internal_error.value,
        default_message: str = "the job's answer does not mention this item",
    ) -> list[ItemOutcome]:
        by_id = {result.get("id"): result for result in results if isinstance(result, dict)}
        outcomes = []
        for item_id in item_ids:
            result = by_id.get(item_id)
            if result is None:
                outcomes.append(
                    ItemOutcome(
                        id=item_id,
                        ok=False,
                        error_code=default_code,
                        error_message=default_message,
                        retryable=default_code not in PERMANENT_CODES,
                    )
                )
            elif result.get("status") == "ok":
                outcomes.append(await self._verified(item_id, result))
            else:
                error = result.get("error") or {}
                code = str(error.get("code") or default_code)
                outcomes.append(
                    ItemOutcome(
                        id=item_id,
                        ok=False,
                        error_code=code,
                        error_message=str(error.get("message") or default_message),
                        retryable=code not in PERMANENT_CODES,
                    )
                )
        return outcomes

    async def _verified(self, item_id: str, result: dict[str, Any]) -> ItemOutcome:
        """Done only when every asked-for format is in the output store."""
        assert self.store is not None
        store = self.store
        if self.inline:
            formats, timestamps = self.options.formats, self.options.timestamps
            try:
                await asyncio.to_thread(
                    write_inline_result,
                    store,
                    item_id,
                    result,
                    formats,
                    timestamps,
                    self.options.subtitles,
                    self.options.task,
                )
            except (StorageError, ValueError) as error:
                return ItemOutcome(
                    id=item_id, ok=False, error_code=ErrorCode.storage_failed.value, error_message=str(error)
                )
        try:
            keys = set(await asyncio.to_thread(lambda: list(store.list_keys(f"{item_id}."))))
        except StorageError as error:
            return ItemOutcome(
                id=item_id, ok=False, error_code=ErrorCode.storage_failed.value, error_message=str(error)
            )
        missing = [fmt for fmt in self.options.formats if f"{item_id}.{fmt}" not in keys]
        if missing:
            return ItemOutcome(
                id=item_id,
                ok=False,
                error_code=ErrorCode.storage_failed.value,
                error_message=f"the job reported success but {', '.join(missing)} is missing from the output",
            )
        outputs = {fmt: store.uri(f"{item_id}.{fmt}") for fmt in self.options.formats}
        return ItemOutcome(
            id=item_id,
            ok=True,
            outputs=outputs,
            model=result.get("model"),
            language=result.get("language"),
            duration_s=result.get("duration_s"),
        )

    async def _read_submission(self, token: str) -> dict[str, Any] | None:
        assert self.store is not None
        return await asyncio.to_thread(read_submission, self.store, token)

    # --- progress and report ------------------------------------------------------------------

    def _audio_seconds(self) -> tuple[float, float]:
        assert self.ledger is not None
        return self.ledger.audio_seconds(BYTES_PER_SECOND, UNKNOWN_SECONDS)

    def _refresh_view(self) -> None:
        if self.view is None or not self.view.enabled or self.ledger is None:
            return
        counts = self.ledger.counts()
        done_s, remaining_s = self._audio_seconds()
        self.view.update(
            total=counts.total,
            done=counts.done,
            failed=counts.failed,
            audio_done_s=done_s,
            audio_remaining_s=remaining_s,
            elapsed_s=time.monotonic() - self._started,
            in_flight=counts.submitted,  # items sent and not yet settled
        )

    def _report(self) -> BacklogReport:
        assert self.ledger is not None and self.store is not None
        items = self.ledger.items()
        counts = self.ledger.counts()
        manifest = write_manifest(self.store, items)
        done_s, _ = self._audio_seconds()
        execution_ms = self.ledger.execution_ms_total()
        cost = gpu = None
        if self.price is not None:
            gpu, per_s = self.price
            cost = job_cost(execution_ms, per_s)
        return BacklogReport(
            total=counts.total,
            done=counts.done,
            failed=counts.failed,
            pending=counts.pending + counts.submitted,
            items=items,
            audio_seconds=done_s,
            wall_seconds=time.monotonic() - self._started,
            output=self.options.output,
            manifest=manifest,
            state=str(self.state_path),
            execution_seconds=execution_ms / 1000.0,
            cost_usd=cost,
            gpu=gpu,
        )


class _SubmitFailed(Exception):
    def __init__(self, code: str, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous  # the endpoint may have created the job anyway
        self.code = code
        self.message = message
