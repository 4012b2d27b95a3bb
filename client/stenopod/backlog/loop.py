"""The backlog run loop: sources -> items -> jobs -> results, resumable at any instant.

Crash safety comes from the order of writes. For each job the loop commits, in the ledger:
1. the submission token and its items (state submitted) BEFORE POST /run;
2. the job id right after /run answers;
3. the items' outcomes only after their transcripts are verified in the output store.
A rerun of the same command then polls jobs it knows, asks the output store which job took a token
whose job id it never learned (the worker records it, handler/submission.py), resubmits with the
same token otherwise (the worker answers a duplicate with duplicate_of), and never touches an item
that is done. Each step is a module of its own (docs/architecture.md); this one keeps them going.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from stenopod.backlog.errors import UsageError
from stenopod.backlog.following import (
    Settled,
    duplicate_target,
    failed_outcomes,
    settle_endless_duplicates,
    settle_final,
    settle_vanished,
)
from stenopod.backlog.id_book import keep_id_scheme
from stenopod.backlog.in_flight import InFlightAudio
from stenopod.backlog.inline_payload import (
    JOB_PAYLOAD_BYTES,
    TooLargeForInline,
    check_inline_sizes,
    item_payload_bytes,
)
from stenopod.backlog.ledger import ItemOutcome, ItemRecord, Ledger
from stenopod.backlog.options import BacklogOptions, is_local_endpoint
from stenopod.backlog.packing import pack_items
from stenopod.backlog.polling import PollIntervals, wait_final
from stenopod.backlog.preflight import (
    PreflightError,
    check_contact,
    check_output,
    discard_state,
    hold_lock,
    stored_options,
)
from stenopod.backlog.progress import ProgressView
from stenopod.backlog.report import BacklogReport, make_report, show_progress
from stenopod.backlog.sources import SourceError, SourceItem, expand_sources
from stenopod.backlog.staging import Stager
from stenopod.backlog.states import ItemState, SubmissionState
from stenopod.backlog.submitting import SubmitFailed, job_input, submit
from stenopod.backlog.verify import InlineRendering, reopen_for_new_formats, verify_outcomes
from stenopod.endpoint import EndpointClient, JobStatus
from stenopod.output_location import OutputLocation
from stenopod.pricing import PricingError, price_per_second
from stenopod.storage import ObjectStore, S3Credentials, StorageError
from stenopod.submission_record import SubmissionRecord, read_submission

log = logging.getLogger(__name__)

_MAX_DUPLICATE_HOPS = 4
# A /run whose every retry was lost in transit (timeouts, 502s, dropped answers) may still have
# created its job: the submission is asked again under the same token this many more times, so
# the worker's claim on the token (duplicate_of) keeps such a job from transcribing it twice.
_MAX_SAME_TOKEN_RESUBMITS = 2


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
        try:
            self.location = OutputLocation.parse(options.output)
        except StorageError as error:
            raise UsageError(f"--output: {error}") from None
        # A RunPod endpoint and a folder, no bucket: local files go inside the job as data: URIs
        # (inline_payload.py), transcripts come back in its answer (inline_results.py).
        self.inline = not self.local and not self.location.is_s3
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
        self.state_path = Path(state) if state is not None else self.location.default_state_path()
        self.api_key = api_key
        self.s3_credentials = s3_credentials
        self.file_server = file_server
        self.show_progress = show_progress
        # Starts the embedded endpoint (a context manager yielding an object with .base_url), only
        # when there is work for it: a rerun of a finished backlog does not load a model.
        self.start_endpoint = start_endpoint
        self.output_uri = self.location.job_output()
        self.store: ObjectStore | None = None
        self.ledger: Ledger | None = None
        self.client: EndpointClient | None = None
        self.stager: Stager | None = None
        self.webhooks: Any = None
        self.view: ProgressView | None = None
        # Items whose job was cancelled while this run followed it (stenopod cancel, a purged
        # queue): pending in the ledger for the next run, but not resubmitted by this one, which
        # would undo the cancel over and over (a cancel uses up no attempt).
        self._held: set[str] = set()
        self._started = 0.0
        self.in_flight_audio = InFlightAudio()  # partial audio of jobs running, for the progress bar

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> BacklogReport:
        self._started = time.monotonic()
        options = self.options
        try:
            check_output(self.location)
            self.store = self.location.open_store(self.s3_credentials)
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
            with ExitStack() as closing:
                closing.enter_context(hold_lock(self.state_path))
                self.ledger.set_meta("state_version", 1)
                keep_id_scheme(self.ledger)  # before items are added: an old file's stays hashed
                added = self.ledger.add_items(items)
                log.info("%d items from the sources, %d new", len(items), added)
                reopen_for_new_formats(self.ledger, self.options.formats)
                endpoint = options.endpoint
                if endpoint is None:
                    if not self.ledger.counts().pending and not self.ledger.open_submissions():
                        self._save_options()
                        return self._report()
                    assert self.start_endpoint is not None
                    endpoint = closing.enter_context(self.start_endpoint()).base_url
                self.stager = Stager(
                    self.store,
                    upload=self.location.is_s3,
                    inline=self.inline,
                    presign_expiry_s=options.presign_expiry_s,
                    s3_credentials=self.s3_credentials,
                    file_server=self.file_server,
                    closing=closing,
                )
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

    def _save_options(self) -> None:
        """The options `retry` replays, saved once the run has started; an embedded endpoint is
        stored as None (retry starts a fresh one) and local paths absolute (retry may run elsewhere)."""
        assert self.ledger is not None
        self.ledger.set_meta("options", stored_options(self.options.to_json()))

    async def _start_webhooks(self) -> None:
        from stenopod.backlog.webhook_listener import WebhookListener

        try:
            self.webhooks = WebhookListener(self.options.webhook_listen or "", self.options.webhook_url)
            await self.webhooks.start()
        except ValueError as error:
            raise UsageError(str(error)) from None  # it names --webhook-listen or --webhook-url
        except OSError as error:
            raise UsageError(f"--webhook-listen: {error}") from None

    async def _expand_sources(self) -> list[SourceItem]:
        try:
            return await asyncio.to_thread(
                expand_sources,
                list(self.options.sources),
                s3_credentials=self.s3_credentials,
                state=self.state_path,
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
                    packs.extend(
                        pack.item_ids
                        for pack in pack_items(
                            self._pending(),
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
        return [item for item in self.ledger.items(ItemState.PENDING) if item.id not in self._held]

    # --- one submission -----------------------------------------------------------------------

    async def _drive(self, token: str, item_ids: list[str], job_id: str | None, *, recovered: bool) -> None:
        """Submit (unless a job id is known), wait for the job, settle its items."""
        assert self.ledger is not None and self.stager is not None and self.client is not None
        unstaged: list[ItemOutcome] = []
        resubmits = 0
        while job_id is None:
            unstaged = []
            if recovered or resubmits:
                # We died (or /run's answers were lost) before the job id was known: the worker
                # may have recorded it under the token.
                record = await self._read_submission(token)
                if record is not None:
                    job_id = record.job_id
                    self.ledger.set_job_id(token, job_id)
                    break
            records = [self.ledger.item(item_id) for item_id in item_ids]
            staged, unstaged = await self.stager.stage([record for record in records if record is not None])
            if not staged:
                self._settle(token, Settled(SubmissionState.ATTEMPT_FAILED, unstaged), None)
                return
            webhook = self.webhooks.url if self.webhooks is not None else None
            try:
                job_id = await submit(
                    self.client,
                    job_input(self.options, None if self.inline else self.output_uri, token, staged),
                    webhook,
                )
            except SubmitFailed as failure:
                if failure.ambiguous and resubmits < _MAX_SAME_TOKEN_RESUBMITS:
                    log.warning("submitting %s: %s; asking again under the same token", token, failure)
                    resubmits += 1
                    await asyncio.sleep(self.options.resubmit_wait_s * resubmits)
                    continue
                outcomes = failed_outcomes([item["id"] for item in staged], failure.code, failure.message)
                self._settle(token, Settled(SubmissionState.ATTEMPT_FAILED, [*outcomes, *unstaged]), None)
                return
            self.ledger.set_job_id(token, job_id)
        unstaged_ids = {outcome.id for outcome in unstaged}
        followed = [item_id for item_id in item_ids if item_id not in unstaged_ids]
        settled, execution_ms = await self._follow(token, followed, job_id, recovered=recovered)
        assert self.store is not None  # a success counts once its files are in the store (verify.py)
        options = self.options
        inline = InlineRendering(options.timestamps, options.subtitles, options.task) if self.inline else None
        verified = await verify_outcomes(self.store, options.formats, settled.outcomes, inline=inline)
        settled.outcomes = [*verified, *unstaged]
        if settled.state == SubmissionState.CANCELLED and not recovered:
            log.warning(
                "job %s was cancelled: its %d item(s) stay pending for the next run", job_id, len(followed)
            )
            self._held.update(followed)
        self._settle(token, settled, execution_ms)

    async def _follow(
        self, token: str, item_ids: list[str], job_id: str, *, recovered: bool
    ) -> tuple[Settled, int | None]:
        """Wait for job_id (following duplicate_of) and turn its end into item outcomes."""
        assert self.ledger is not None and self.client is not None
        execution_ms: int | None = None
        intervals = PollIntervals.choose(self.options, webhooks=self.webhooks is not None, local=self.local)
        for _hop in range(_MAX_DUPLICATE_HOPS):
            progress = functools.partial(self._progress, token)
            status = await wait_final(self.client, job_id, intervals, self.webhooks, on_status=progress)
            if status is None:
                # The endpoint forgot the job: its results may still be in the store.
                stored = await self._read_submission(token)
                settled = settle_vanished(job_id, item_ids, stored, recovered=recovered)
                return settled, None
            if status.execution_time_ms:
                execution_ms = (execution_ms or 0) + status.execution_time_ms
            original = duplicate_target(status, job_id)
            if original is not None:
                log.info("job %s duplicates %s: following the original", job_id, original)
                job_id = original
                self.ledger.set_job_id(token, job_id)
                continue
            return settle_final(status, item_ids, await self._read_submission(token)), execution_ms
        return settle_endless_duplicates(item_ids), execution_ms

    def _progress(self, token: str, status: JobStatus) -> None:
        if self.in_flight_audio.update(token, status):
            self._refresh_view()

    def _settle(self, token: str, settled: Settled, execution_ms: int | None) -> None:
        assert self.ledger is not None
        self.in_flight_audio.settled(token)
        self.ledger.finish_submission(
            token,
            settled.state,
            settled.outcomes,
            max_attempts=self.options.max_attempts,
            execution_ms=execution_ms,
            count_attempt=settled.count_attempt,
        )
        self._refresh_view()

    async def _read_submission(self, token: str) -> SubmissionRecord | None:
        assert self.store is not None
        return await asyncio.to_thread(read_submission, self.store, token)

    # --- progress and report ------------------------------------------------------------------

    def _refresh_view(self) -> None:
        if self.view is not None and self.ledger is not None:
            elapsed_s = time.monotonic() - self._started
            show_progress(self.view, self.ledger, elapsed_s, self.in_flight_audio.total_s())

    def _report(self) -> BacklogReport:
        assert self.ledger is not None and self.store is not None
        return make_report(
            self.ledger,
            self.store,
            output=self.options.output,
            state=str(self.state_path),
            wall_seconds=time.monotonic() - self._started,
            price=self.price,
        )
