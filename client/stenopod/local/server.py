"""`stenopod serve`: a local endpoint that speaks RunPod's serverless API, with its own workers.

The client half (client_api.py) is what runpod.Endpoint and stenopod's SDK call; the worker half
(worker_api.py) is what the unmodified runpod worker loop calls. This module holds the state both
halves share and the rules that move a job: dispatch, results, cancellation, timeouts, expiry and
what happens when a worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from stenopod.local.client_api import ClientAPI, RunRequest
from stenopod.local.http import json_errors
from stenopod.local.jobs import Job, JobState, JobStore
from stenopod.local.webhook_sender import WebhookSender
from stenopod.local.worker_api import WorkerAPI
from stenopod.local.worker_env import WorkerUrls, build_worker_env
from stenopod.local.worker_limits import check_worker_count
from stenopod.local.workers import Worker, WorkerPool
from stenopod.schema import ErrorCode, JobError

log = logging.getLogger("stenopod.local")

DEFAULT_WORKER_COMMAND = [sys.executable, "-m", "handler"]
MAX_BODY_BYTES = 32 * 1024 * 1024  # RunPod accepts 10 MB on /run and 20 MB on /runsync
WEBHOOK_STATUSES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT})


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalEndpoint:
    """A RunPod-compatible serverless endpoint on this machine, with `workers` worker processes.

    Extra keyword-only knobs, mostly for tests: endpoint_id, execution_timeout_s (default for
    requests without policy.executionTimeout; None: no limit, since CPU runs are slower than
    RunPod's 600 s default assumes), webhook_retry_delay_s (RunPod: 10 s), stop_grace_s (how long a
    worker may take to let go of a cancelled or timed-out job before it is restarted), job_poll_s
    (how long a worker's job-take long-poll is held), tick_s (timer resolution).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 1,
        model: str | None = None,
        api_key: str | None = None,
        allow_private_urls: bool = False,
        worker_command: list[str] | None = None,
        env: dict[str, str] | None = None,
        retention_s: float = 1800,
        log_dir: Path | None = None,
        *,
        endpoint_id: str = "local",
        execution_timeout_s: float | None = None,
        webhook_retry_delay_s: float = 10.0,
        stop_grace_s: float = 10.0,
        job_poll_s: float = 20.0,
        tick_s: float = 0.25,
    ) -> None:
        if not is_loopback_host(host) and not api_key:
            raise ValueError(
                f"refusing to listen on {host} without an API key: anyone who can reach it could run "
                "jobs and read results; set an API key (--api-key) or bind 127.0.0.1"
            )
        # Checked against this machine's cores and memory (workers.worker_limit): a thousand workers
        # on two cores would only run it out of memory. A custom worker command (a test's) loads no
        # model, so only the core count bounds it.
        check_worker_count(workers, loads_model=worker_command is None)
        self.host = host
        self._port = port
        self.workers = workers
        self.model = model
        self._api_key = api_key
        self.allow_private_urls = allow_private_urls
        self.worker_command = list(worker_command or DEFAULT_WORKER_COMMAND)
        self.env = dict(env or {})
        self.retention_s = retention_s
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._endpoint_id = endpoint_id
        self.execution_timeout_s = execution_timeout_s
        self.stop_grace_s = stop_grace_s
        self.job_poll_s = job_poll_s
        self.tick_s = tick_s
        self.store = JobStore(retention_s, self._on_terminal)
        self.webhooks = WebhookSender(retry_delay_s=webhook_retry_delay_s)
        self.pool: WorkerPool | None = None
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._queue_signal = asyncio.Event()
        self.expired = 0

    # ---- public surface -----------------------------------------------------------------------
    @property
    def endpoint_id(self) -> str:
        return self._endpoint_id

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """What RUNPOD_ENDPOINT_BASE_URL / runpod.endpoint_url_base should be: http://HOST:PORT/v2."""
        if not self._port:
            raise RuntimeError("the endpoint has no port yet: call start() first")
        return f"http://{self._connect_host()}:{self._port}/v2"

    @property
    def url(self) -> str:
        """This endpoint's own URL: base_url + "/" + endpoint_id."""
        return f"{self.base_url}/{self._endpoint_id}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
        app.add_routes(ClientAPI(self).routes())
        app.add_routes(WorkerAPI(self).routes())
        # No access log: worker URLs carry their token in the query string.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        await self.webhooks.start()
        self.pool = WorkerPool(
            self.workers,
            self.worker_command,
            self._worker_env,
            self._on_worker_exit,
            self._notify_queue,
            log_dir=self.log_dir,
        )
        self.pool.start()
        self._reaper = asyncio.create_task(self._reap_forever(), name="stenopod-reaper")
        log.info("local endpoint %s listening (%d worker(s))", self.url, self.workers)

    async def stop(self) -> None:
        self._closing = True
        self._notify_queue()
        for worker in self.pool.workers() if self.pool is not None else []:
            worker.stop_wakeup.set()  # job-stop long-polls answer now, not at their deadline
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self.pool is not None:
            await self.pool.stop()
        await self.webhooks.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the CLI: jobs by fate, per-item starts/completions, workers, webhooks.

        Safe to call from another thread than the endpoint's (run_in_thread): it then asks the loop.
        """
        loop = self._loop
        if loop is not None and loop.is_running() and not _in_loop_thread(loop):
            return asyncio.run_coroutine_threadsafe(self._stats_async(), loop).result(timeout=10)
        return self._stats_now()

    async def _stats_async(self) -> dict[str, Any]:
        return self._stats_now()

    def _stats_now(self) -> dict[str, Any]:
        counters = self.store.counters
        return {
            "endpoint_id": self._endpoint_id,
            "jobs": {
                "accepted": counters["accepted"],
                "started": counters["started"],
                "completed": counters["completed"],
                "failed": counters["failed"],
                "timed_out": counters["timed_out"],
                "cancelled": counters["cancelled"],
                "retried": counters["retried"],
                "expired": self.expired,
                "in_queue": self.store.queued_count(),
                "in_progress": len(self.store.running()),
                "stored": len(self.store),
            },
            "items_started": dict(self.store.items_started),
            "items_completed": dict(self.store.items_completed),
            "workers": {
                **(self.pool.counts() if self.pool else {}),
                "restarts": self.pool.restarts if self.pool else 0,
            },
            "webhooks": {"delivered": self.webhooks.delivered, "failed": self.webhooks.failed},
        }

    # ---- client side --------------------------------------------------------------------------
    def authorize_client(self, header: str | None) -> bool:
        """RunPod clients send "Bearer <key>" (runpod.Endpoint) or the bare key (older clients)."""
        if not self._api_key:
            return True
        if not header:
            return False
        presented = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
        return hmac.compare_digest(presented.encode(), self._api_key.encode())

    def submit(self, request: RunRequest, *, sync: bool = False) -> Job:
        prefix = "sync-" if sync else ""
        timeout = request.execution_timeout_s
        job = Job(
            id=f"{prefix}{uuid.uuid4()}",
            input=request.input,
            webhook=request.webhook,
            s3_config=request.s3_config,
            execution_timeout_s=timeout if timeout is not None else self.execution_timeout_s,
        )
        if request.ttl_s is not None:
            job.ttl_s = request.ttl_s
        self.store.add(job)
        self._notify_queue()
        return job

    def cancel(self, job: Job) -> None:
        if job.terminal:
            return
        was_running = job.status is JobState.IN_PROGRESS
        self.store.finish(job, JobState.CANCELLED)
        if was_running:
            self._tell_worker_to_stop(job)

    def retry(self, job: Job) -> bool:
        if job.status not in (JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED):
            return False
        self.store.retry(job)
        self._notify_queue()
        return True

    def purge_queue(self) -> int:
        return self.store.purge_queue()

    def health(self) -> dict[str, Any]:
        counters = self.store.counters
        return {
            "jobs": {
                "completed": counters["completed"],
                # RunPod's health has no timed-out bucket: a timed-out job is a failed one there.
                "failed": counters["failed"] + counters["timed_out"],
                "inProgress": len(self.store.running()),
                "inQueue": self.store.queued_count(),
                "retried": counters["retried"],
            },
            "workers": self.pool.counts() if self.pool else {},
        }

    # ---- worker side --------------------------------------------------------------------------
    def find_worker(self, worker_id: str, token: str | None) -> Worker | None:
        worker = self.pool.get(worker_id) if self.pool else None
        if worker is None or not token or not hmac.compare_digest(token.encode(), worker.token.encode()):
            return None
        return worker

    async def take_jobs(
        self, worker: Worker, max_jobs: int, job_in_progress: bool, request: web.Request
    ) -> list[Job]:
        """job-take long-poll: hand out up to max_jobs queued jobs, or none within job_poll_s."""
        worker.ready = True
        if not job_in_progress:
            self._worker_holds_nothing(worker)
        deadline = time.monotonic() + self.job_poll_s
        while True:
            if self._closing or worker.stopping:
                return []
            transport = request.transport
            if transport is None or transport.is_closing():
                return []  # the worker gave up on this poll: a job handed out now would be lost
            taken: list[Job] = []
            while len(taken) < max_jobs and (job := self.store.pop_queued()) is not None:
                self.store.start(job, worker.id)
                worker.jobs.add(job.id)
                taken.append(job)
            if taken:
                return taken
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            signal = self._queue_signal
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(signal.wait(), remaining)

    def report_result(self, worker: Worker, job_id: str, body: dict[str, Any], is_stream: bool) -> None:
        """job-done: a final result, or (status IN_PROGRESS) a progress update."""
        job = self.store.get(job_id)
        final = body.get("status") != "IN_PROGRESS"
        if final:
            worker.jobs.discard(job_id)
            worker.stop_deadlines.pop(job_id, None)
            if body.get("stopPod"):
                # refresh_worker: RunPod replaces the worker once the job is answered.
                self._restart_worker_soon(worker, "the handler asked for refresh_worker")
        if job is None or job.worker_id != worker.id or job.status is not JobState.IN_PROGRESS:
            return  # cancelled, timed out or expired meanwhile: the late answer is dropped
        if not final:
            if "output" in body:
                job.output, job.has_output = body["output"], True
            return
        has_output = "output" in body
        output = body.get("output")
        if is_stream and not output and job.stream_all:
            # A generator handler's final post carries an empty list; RunPod's status shows the parts.
            output, has_output = list(job.stream_all), True
        error = body.get("error")
        if error:
            text = error if isinstance(error, str) else _json_text(error)
            self.store.finish(job, JobState.FAILED, output=output, has_output=has_output, error=text)
        else:
            self.store.finish(job, JobState.COMPLETED, output=output, has_output=has_output)

    def report_stream(self, worker: Worker, job_id: str, body: dict[str, Any]) -> None:
        job = self.store.get(job_id)
        if job is None or job.worker_id != worker.id or job.status is not JobState.IN_PROGRESS:
            return
        part = body.get("output")
        job.stream_pending.append(part)
        job.stream_all.append(part)

    def ping(self, worker: Worker, running_ids: set[str]) -> None:
        worker.ready = True
        for job_id in list(worker.stop_deadlines):
            if job_id not in running_ids:
                # Told to stop and no longer listed: let go.
                del worker.stop_deadlines[job_id]
            elif job_id not in worker.stop_queue:
                # Still listed: say it again. runpod drops a stop that arrives between taking a job
                # and starting its task ("No in-progress job"), so one signal is not always enough.
                worker.stop_queue.append(job_id)
                worker.stop_wakeup.set()

    async def stop_signals(self, worker: Worker) -> list[str]:
        """job-stop long-poll: the ids of jobs this worker must stop, or none within job_poll_s."""
        deadline = time.monotonic() + self.job_poll_s
        while True:
            if worker.stop_queue:
                ids = list(worker.stop_queue)
                worker.stop_queue.clear()
                return ids
            remaining = deadline - time.monotonic()
            if self._closing or worker.stopping or remaining <= 0:
                return []
            worker.stop_wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(worker.stop_wakeup.wait(), remaining)

    # ---- rules --------------------------------------------------------------------------------
    def _notify_queue(self) -> None:
        """Wake every job-take long-poll to look at the queue (and at closing/stopping) again."""
        self._queue_signal.set()
        self._queue_signal = asyncio.Event()

    def _on_terminal(self, job: Job) -> None:
        if job.webhook and job.status in WEBHOOK_STATUSES:
            self.webhooks.send(job.webhook, job.status_body())

    def _tell_worker_to_stop(self, job: Job) -> None:
        worker = self.pool.get(job.worker_id) if (self.pool and job.worker_id) else None
        if worker is None:
            return
        worker.jobs.discard(job.id)
        worker.stop_queue.append(job.id)
        worker.stop_deadlines[job.id] = time.monotonic() + self.stop_grace_s
        worker.stop_wakeup.set()

    def _restart_worker_soon(self, worker: Worker, reason: str) -> None:
        if self.pool is not None and not self._closing:
            self.pool.restart(worker, reason)

    def _worker_holds_nothing(self, worker: Worker) -> None:
        """The worker says it runs no job: any job we think it runs was dropped without an answer."""
        worker.stop_deadlines.clear()
        for job_id in list(worker.jobs):
            worker.jobs.discard(job_id)
            job = self.store.get(job_id)
            if job is not None and job.status is JobState.IN_PROGRESS and job.worker_id == worker.id:
                self._lost(job, "the worker dropped the job without sending a result")

    def _on_worker_exit(self, worker: Worker, returncode: int) -> None:
        for job_id in list(worker.jobs):
            job = self.store.get(job_id)
            if job is not None and job.status is JobState.IN_PROGRESS and job.worker_id == worker.id:
                self._lost(job, f"the worker process exited (code {returncode}) while running the job")
        worker.jobs.clear()
        self._notify_queue()

    def _lost(self, job: Job, reason: str) -> None:
        """A job whose worker vanished: requeued once (RunPod's 'retried'), then FAILED."""
        if job.requeues < 1:
            job.requeues += 1
            log.warning("job %s requeued: %s", job.id, reason)
            self.store.requeue(job, front=True)
            self._notify_queue()
            return
        log.warning("job %s failed: %s, after one requeue", job.id, reason)
        error = JobError(
            code=ErrorCode.internal_error, message=f"{reason}; it had already been requeued once"
        )
        self.store.finish(job, JobState.FAILED, error=error.to_runpod_error())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self._reap(time.monotonic())
            except Exception:  # a bug here must not stop timeouts and expiry for good
                log.exception("local endpoint timer failed")

    def _reap(self, now: float) -> None:
        for job in self.store.overdue(now):
            self.store.finish(job, JobState.TIMED_OUT)
            self._tell_worker_to_stop(job)
        for job, reason in list(self.store.due_for_deletion(now)):
            if reason == "ttl":
                self.expired += 1
                if job.status is JobState.IN_PROGRESS:
                    self._tell_worker_to_stop(job)
            self.store.delete(job)
        for worker in self.pool.workers() if self.pool else []:
            late = [job_id for job_id, deadline in worker.stop_deadlines.items() if deadline <= now]
            if late:
                worker.stop_deadlines.clear()
                self._restart_worker_soon(
                    worker, f"it did not stop job(s) {', '.join(late)} within {self.stop_grace_s:g} s"
                )

    def _worker_env(self, worker: Worker) -> dict[str, str]:
        urls = WorkerUrls.for_worker(f"http://{self._connect_host()}:{self._port}", self._endpoint_id, worker)
        return build_worker_env(
            worker,
            urls,
            self._endpoint_id,
            model=self.model,
            allow_private_urls=self.allow_private_urls,
            extra=self.env,
        )

    def _connect_host(self) -> str:
        """Where this machine's clients and workers reach the server (a wildcard bind: loopback)."""
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
