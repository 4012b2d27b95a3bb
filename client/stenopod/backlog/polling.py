"""Waiting for a job to end: /status polled with backoff, or a webhook awaited (and polled rarely)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stenopod.backlog.errors import BacklogError, EndpointRefused
from stenopod.backlog.options import BacklogOptions
from stenopod.endpoint import EndpointAuthError, EndpointClient, EndpointError, EndpointNotFound, JobStatus

log = logging.getLogger(__name__)

MAX_STATUS_FAILURES = 20


@dataclass(frozen=True)
class PollIntervals:
    initial_s: float
    max_s: float

    @classmethod
    def choose(cls, options: BacklogOptions, *, webhooks: bool, local: bool) -> PollIntervals:
        initial_s = options.poll_initial_s
        if webhooks:
            every = max(options.webhook_poll_s, initial_s)
            return cls(every, every)
        if local:
            # A status call on loopback costs next to nothing; backing off to 10 s would leave
            # a finished job unnoticed for seconds, the most of a short backlog's run time.
            return cls(initial_s, initial_s)
        return cls(initial_s, options.poll_max_s)


async def wait_final(
    client: EndpointClient,
    job_id: str,
    intervals: PollIntervals,
    webhooks: Any = None,
    on_status: Callable[[JobStatus], None] | None = None,
) -> JobStatus | None:
    """Poll (or wait for a webhook) until the job is final; None when the endpoint forgot it.

    on_status sees each status before that (an IN_PROGRESS one carries the worker's progress)."""
    interval = intervals.initial_s
    last_seen: tuple[str, str] | None = None
    failures = 0
    while True:
        try:
            status: JobStatus | None = await client.status(job_id)
            failures = 0
        except EndpointNotFound:
            return None
        except EndpointAuthError as error:
            raise EndpointRefused(f"endpoint: {error.message}") from None
        except EndpointError as error:
            failures += 1
            if failures >= MAX_STATUS_FAILURES:
                raise BacklogError(f"cannot read job {job_id}'s status: {error.message}") from None
            log.warning("status of job %s: %s", job_id, error.message)
            status = None
        if status is not None:
            if status.is_final:
                return status
            if on_status is not None:
                on_status(status)
            seen = (status.status, json.dumps(status.output, sort_keys=True, default=str))
            # Progress (a new state or a progress update) means the job moves: look again soon.
            interval = intervals.initial_s if seen != last_seen else min(interval * 1.6, intervals.max_s)
            last_seen = seen
        if webhooks is not None:
            if await webhooks.wait(job_id, interval):
                continue
        else:
            await asyncio.sleep(interval)
