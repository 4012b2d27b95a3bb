"""The client half of the local endpoint: RunPod's /v2/{endpoint_id}/... API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from stenopod.local.http import BadRequest, endpoint_routes, error_response, read_json
from stenopod.local.jobs import Job
from stenopod.local.webhook_sender import is_webhook_url

if TYPE_CHECKING:
    from stenopod.local.server import LocalEndpoint

# /runsync holds the request this long by default, and at most this long (RunPod: 90 s, 1-300 s).
RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 300_000
NOT_FOUND = "request does not exist"


@dataclass(frozen=True)
class RunRequest:
    input: Any
    webhook: str | None = None
    execution_timeout_s: float | None = None
    ttl_s: float | None = None
    s3_config: dict[str, Any] | None = None


def _positive_ms(policy: dict[str, Any], name: str) -> float | None:
    value = policy.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BadRequest(f"policy.{name}: must be a positive number of milliseconds")
    return float(value) / 1000.0


def parse_run_request(body: Any) -> RunRequest:
    """Check a /run or /runsync body; each refusal names the field."""
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    if body.get("input") is None:
        raise BadRequest("input: required (the object your handler receives)")
    webhook = body.get("webhook")
    if webhook is not None and (not isinstance(webhook, str) or not is_webhook_url(webhook)):
        raise BadRequest("webhook: must be an http(s):// URL")
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        raise BadRequest("policy: must be an object")
    s3_config = body.get("s3Config")
    if s3_config is not None and not isinstance(s3_config, dict):
        raise BadRequest("s3Config: must be an object")
    return RunRequest(
        input=body["input"],
        webhook=webhook,
        execution_timeout_s=_positive_ms(policy, "executionTimeout"),
        ttl_s=_positive_ms(policy, "ttl"),
        s3_config=s3_config,
    )


def _wait_seconds(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return RUNSYNC_DEFAULT_WAIT_MS / 1000
    try:
        wait_ms = int(raw)
    except ValueError:
        raise BadRequest("wait: must be an integer number of milliseconds") from None
    return min(max(wait_ms, RUNSYNC_MIN_WAIT_MS), RUNSYNC_MAX_WAIT_MS) / 1000


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientAPI:
    def __init__(self, endpoint: LocalEndpoint) -> None:
        self.endpoint = endpoint

    def routes(self) -> list[web.RouteDef]:
        return endpoint_routes(
            self._guard,
            [
                ("POST", "run", self.run),
                ("POST", "runsync", self.runsync),
                ("GET", "status/{job_id}", self.status),
                ("POST", "status/{job_id}", self.status),
                ("GET", "stream/{job_id}", self.stream),
                ("POST", "stream/{job_id}", self.stream),
                ("POST", "cancel/{job_id}", self.cancel),
                ("POST", "retry/{job_id}", self.retry),
                ("GET", "health", self.health),
                ("POST", "purge-queue", self.purge_queue),
            ],
        )

    def _guard(self, handler: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
        """Endpoint id, API key and job lookup, in that order, before any handler runs."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            endpoint_id = request.match_info["endpoint_id"]
            if endpoint_id != self.endpoint.endpoint_id:
                return error_response(404, f"endpoint {endpoint_id!r} does not exist")
            if not self.endpoint.authorize_client(request.headers.get("Authorization")):
                return error_response(
                    401, "Unauthorized: send the endpoint's API key as 'Authorization: Bearer <key>'"
                )
            job_id = request.match_info.get("job_id")
            if job_id is None:
                return await handler(request)
            job = self.endpoint.store.get(job_id)
            if job is None:
                return error_response(404, NOT_FOUND)
            return await handler(request, job)

        return guarded

    async def run(self, request: web.Request) -> web.StreamResponse:
        job = self.endpoint.submit(parse_run_request(await read_json(request)))
        return web.json_response({"id": job.id, "status": job.status.value})

    async def runsync(self, request: web.Request) -> web.StreamResponse:
        wait_s = _wait_seconds(request)
        job = self.endpoint.submit(parse_run_request(await read_json(request)), sync=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.done.wait(), wait_s)
        if job.terminal:
            return web.json_response(job.status_body())
        # Still running: the caller polls /status with this id, as with RunPod.
        return web.json_response({"id": job.id, "status": job.status.value})

    async def status(self, request: web.Request, job: Job) -> web.StreamResponse:
        return web.json_response(job.status_body())

    async def stream(self, request: web.Request, job: Job) -> web.StreamResponse:
        # Each call hands out the parts produced since the previous one, as RunPod's /stream does.
        parts = [{"output": part} for part in job.stream_pending]
        job.stream_pending.clear()
        return web.json_response({"id": job.id, "status": job.status.value, "stream": parts})

    async def cancel(self, request: web.Request, job: Job) -> web.StreamResponse:
        self.endpoint.cancel(job)
        return web.json_response({"id": job.id, "status": job.status.value})

    async def retry(self, request: web.Request, job: Job) -> web.StreamResponse:
        if not self.endpoint.retry(job):
            return error_response(
                400,
                f"job {job.id} is {job.status.value}; only FAILED, TIMED_OUT or CANCELLED jobs can be retried",
            )
        return web.json_response({"id": job.id, "status": job.status.value})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.endpoint.health())

    async def purge_queue(self, request: web.Request) -> web.StreamResponse:
        removed = self.endpoint.purge_queue()
        return web.json_response({"removed": removed, "status": "completed"})
