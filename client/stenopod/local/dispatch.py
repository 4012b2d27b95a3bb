"""The local endpoint's worker side: hand jobs to workers, take their results, and the rules that
move a job when things go wrong (cancellation, timeouts, expiry, a worker that dies or hangs).

A mixin of LocalEndpoint (server.py), which owns the state it works on: the job store, the worker
pool and the queue signal. WorkerAPI (worker_api.py) turns the runpod worker loop's requests into
these calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web

from stenopod.local.jobs import Job, JobState, JobStore
from stenopod.local.workers import Worker, WorkerPool
from stenopod.schema import ErrorCode, JobError

log = logging.getLogger("stenopod.local")


class JobDispatch:
    """Worker-side behaviour of LocalEndpoint; the attributes below are the endpoint's."""

    store: JobStore
    pool: WorkerPool | None
    job_poll_s: float
    stop_grace_s: float
    tick_s: float
    expired: int
    _closing: bool
    _queue_signal: asyncio.Event

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


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
