"""`stenopod serve`: a local endpoint that speaks RunPod's serverless API, with its own workers.

The client half (client_api.py) is what runpod.Endpoint and stenopod's SDK call; the worker half
(worker_api.py) is what the unmodified runpod worker loop calls. This module holds the state both
halves share, its lifecycle and the client-side operations; dispatch.py hands jobs to workers and
holds the rules that move a job when a worker dies, hangs or runs past its time. ROUTE_TABLES is
the one place where the HTTP routes are mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.util
import ipaddress
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from stenopod.local.client_api import ClientAPI, RunRequest
from stenopod.local.dispatch import JobDispatch
from stenopod.local.http import RouteTable, json_errors
from stenopod.local.jobs import Job, JobState, JobStore
from stenopod.local.openai_api import OpenAIRoutes
from stenopod.local.webhook_sender import WebhookSender
from stenopod.local.worker_api import WorkerAPI
from stenopod.local.worker_env import WorkerUrls, build_worker_env, check_worker_settings
from stenopod.local.worker_limits import check_worker_count
from stenopod.local.workers import Worker, WorkerPool

log = logging.getLogger("stenopod.local")

DEFAULT_WORKER_COMMAND = [sys.executable, "-m", "handler"]
MAX_BODY_BYTES = 32 * 1024 * 1024  # RunPod accepts 10 MB on /run and 20 MB on /runsync
# Every route table `stenopod serve` mounts, each built from the endpoint (the one place to add one).
# RunPod's client API, its worker API, and OpenAI's transcription API (/v1/audio/*).
ROUTE_TABLES: tuple[type[RouteTable], ...] = (ClientAPI, WorkerAPI, OpenAIRoutes)
WEBHOOK_STATUSES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT})


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalEndpoint(JobDispatch):
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
        if worker_command is None and importlib.util.find_spec("handler") is None:
            # The SDK's wheel does not carry the worker: it runs from a checkout or the image.
            raise ValueError(
                "the local endpoint's workers run the stenopod worker (handler/), which this Python "
                "cannot import: run from a stenopod checkout set up with `make setup`"
            )
        if worker_command is None:
            check_worker_settings(env or {})
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
        for api in ROUTE_TABLES:
            app.add_routes(api(self).routes())
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

    def _on_terminal(self, job: Job) -> None:
        if job.webhook and job.status in WEBHOOK_STATUSES:
            self.webhooks.send(job.webhook, job.status_body())

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
