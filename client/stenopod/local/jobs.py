"""Jobs of the local endpoint: their states, the queue, and the status body RunPod answers with.

Pure bookkeeping, no HTTP and no processes: the server (server.py) decides when a job moves, this
module records it and keeps the counters that /health and stats() report.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from stenopod.schema import default_item_id


class JobState(str, Enum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})

DEFAULT_TTL_S = 24 * 3600.0  # RunPod's default job time-to-live


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


@dataclass(eq=False)
class Job:
    id: str
    input: Any
    webhook: str | None = None
    s3_config: dict[str, Any] | None = None
    execution_timeout_s: float | None = None
    ttl_s: float = DEFAULT_TTL_S
    submitted_at: float = field(default_factory=time.monotonic)
    queued_at: float = field(default_factory=time.monotonic)
    status: JobState = JobState.IN_QUEUE
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    has_output: bool = False
    error: str | None = None
    stream_pending: list[Any] = field(default_factory=list)
    stream_all: list[Any] = field(default_factory=list)
    requeues: int = 0  # times a dying worker handed this attempt back to the queue
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def worker_payload(self) -> dict[str, Any]:
        """What job-take hands the runpod worker loop (it builds its Job object from these keys)."""
        payload: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.s3_config is not None:
            payload["s3Config"] = self.s3_config
        return payload

    def status_body(self) -> dict[str, Any]:
        """The body of /status, /runsync and webhooks, shaped like RunPod's (times in integer ms)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started_at is not None:
            body["delayTime"] = _ms(self.started_at - self.queued_at)
            body["workerId"] = self.worker_id
        if self.finished_at is not None and self.started_at is not None:
            body["executionTime"] = _ms(self.finished_at - self.started_at)
        if self.has_output:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body

    def item_ids(self) -> list[str]:
        """The stenopod item ids this job carries, for per-item counts (other inputs carry none)."""
        data = self.input
        if not isinstance(data, dict):
            return []
        items = data.get("items")
        if isinstance(items, list):
            return [str(item["id"]) for item in items if isinstance(item, dict) and "id" in item]
        if isinstance(data.get("id"), str):
            return [data["id"]]
        if isinstance(data.get("audio"), str):
            return [default_item_id(data["audio"])]
        return []


TerminalListener = Callable[[Job], None]


class JobStore:
    """All jobs the endpoint knows, the FIFO queue, deadlines, and cumulative counters."""

    def __init__(self, retention_s: float, on_terminal: TerminalListener) -> None:
        self.retention_s = retention_s
        self._on_terminal = on_terminal
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._running: dict[str, Job] = {}
        # (deadline, sequence, job id): TTL and retention expiries without scanning every job.
        self._deadlines: list[tuple[float, int, str]] = []
        self._sequence = 0
        self.counters: Counter[str] = Counter()
        self.items_started: Counter[str] = Counter()
        self.items_completed: Counter[str] = Counter()

    # ---- lookup -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self) -> list[Job]:
        return list(self._running.values())

    def queued_count(self) -> int:
        return sum(1 for job in self._jobs.values() if job.status is JobState.IN_QUEUE)

    def __len__(self) -> int:
        return len(self._jobs)

    # ---- transitions --------------------------------------------------------------------------
    def add(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._queue.append(job.id)
        self._push_deadline(job.submitted_at + job.ttl_s, job.id)
        self.counters["accepted"] += 1

    def pop_queued(self) -> Job | None:
        """The oldest job still waiting; ids of jobs cancelled, purged or expired meanwhile are skipped."""
        while self._queue:
            job = self._jobs.get(self._queue.popleft())
            if job is not None and job.status is JobState.IN_QUEUE:
                return job
        return None

    def start(self, job: Job, worker_id: str) -> None:
        job.status = JobState.IN_PROGRESS
        job.worker_id = worker_id
        job.started_at = time.monotonic()
        job.finished_at = None
        self._running[job.id] = job
        self.counters["started"] += 1
        self.items_started.update(job.item_ids())

    def requeue(self, job: Job, front: bool) -> None:
        """Back to the queue for another attempt: front after a worker died with it, back on /retry."""
        self._running.pop(job.id, None)
        job.status = JobState.IN_QUEUE
        job.worker_id = None
        job.started_at = job.finished_at = None
        job.output, job.has_output, job.error = None, False, None
        job.stream_pending.clear()
        job.stream_all.clear()
        job.queued_at = time.monotonic()
        job.done.clear()
        if front:
            self._queue.appendleft(job.id)
        else:
            self._queue.append(job.id)
        self.counters["retried"] += 1

    def retry(self, job: Job) -> None:
        """/retry: a fresh attempt with a fresh time-to-live, as a resubmission would get."""
        job.requeues = 0
        job.submitted_at = time.monotonic()
        self._push_deadline(job.submitted_at + job.ttl_s, job.id)
        self.requeue(job, front=False)

    def finish(
        self,
        job: Job,
        status: JobState,
        *,
        output: Any = None,
        has_output: bool = False,
        error: str | None = None,
    ) -> None:
        assert status in TERMINAL
        self._running.pop(job.id, None)
        job.status = status
        job.finished_at = time.monotonic()
        job.output, job.has_output, job.error = output, has_output, error
        self._push_deadline(job.finished_at + self.retention_s, job.id)
        self.counters[status.value.lower()] += 1
        # A job answered with duplicate_of transcribed nothing (another job holds its submission):
        # counting its items would make one transcription look like two.
        duplicate = isinstance(output, dict) and bool(output.get("duplicate_of"))
        if status is JobState.COMPLETED and not duplicate:
            self.items_completed.update(job.item_ids())
        job.done.set()
        self._on_terminal(job)

    def purge_queue(self) -> int:
        """Cancel every job still waiting (RunPod's purge-queue leaves running jobs alone)."""
        purged = [job for job in self._jobs.values() if job.status is JobState.IN_QUEUE]
        for job in purged:
            self.finish(job, JobState.CANCELLED)
        self._queue.clear()
        return len(purged)

    def delete(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._running.pop(job.id, None)
        job.done.set()

    # ---- time ---------------------------------------------------------------------------------
    def _push_deadline(self, deadline: float, job_id: str) -> None:
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, job_id))

    def due_for_deletion(self, now: float) -> Iterator[tuple[Job, str]]:
        """Jobs whose TTL ran out (any state) or whose result outlived the retention time.

        Yields (job, reason) with reason "ttl" or "retention"; the caller deletes them. A heap entry
        made stale by a retry or a later finish is recognised by re-checking the job's own times.
        """
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, job_id = heapq.heappop(self._deadlines)
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if job.submitted_at + job.ttl_s <= now:
                yield job, "ttl"
            elif job.terminal and job.finished_at is not None and job.finished_at + self.retention_s <= now:
                yield job, "retention"

    def overdue(self, now: float) -> list[Job]:
        """Running jobs past their execution timeout."""
        return [
            job
            for job in self._running.values()
            if job.execution_timeout_s is not None
            and job.started_at is not None
            and now - job.started_at > job.execution_timeout_s
        ]
