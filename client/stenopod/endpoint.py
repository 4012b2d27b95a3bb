"""An async client for a RunPod serverless endpoint (or `stenopod serve`, which speaks the same API).

It keeps going through the failures a long backlog meets: 429 and 5xx answers, dropped connections
and timeouts are retried with exponential backoff and full jitter (honouring Retry-After); requests
stay under RunPod's published per-10-second limits on the client side; and at most max_in_flight
requests are open at once.

Retrying POST /run: a retried /run can create a second job when the first attempt did reach the
server. The client retries without a second thought when the request certainly never arrived
(connection refused, connect timeout) or the server refused it (429, 503). For the ambiguous
failures (read timeout, connection dropped after the request was sent, 500/502/504) it retries too,
and counts them in stats["ambiguous_run_retries"]: a duplicate job is harmless because the backlog
layer puts a `submission` token in every job input (schema.JobInput.submission) and the worker
answers a second job with the same token with `duplicate_of` instead of transcribing twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from stenopod.ratelimit import RateLimiter
from stenopod.settings import client_settings

log = logging.getLogger(__name__)

RUNPOD_API_BASE = "https://api.runpod.ai/v2"
LOCAL_ENDPOINT_ID = "local"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# RunPod's published limits for the operations that have no constructor argument.
CANCEL_LIMIT = (100, 10.0)
PURGE_LIMIT = (2, 10.0)
_ENDPOINT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_MAX_RETRY_AFTER_S = 600.0  # a broken Retry-After must not park the client for hours
_BODY_SNIPPET_CHARS = 300


class EndpointError(Exception):
    """A request to the endpoint failed for good (after retries, or with a non-retryable status)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class EndpointAuthError(EndpointError):
    """401/403: the API key is missing or wrong."""


class EndpointNotFound(EndpointError):
    """404: no such endpoint, or the job is unknown or its result expired."""


@dataclass
class JobStatus:
    id: str
    status: str
    output: Any = None
    error: Any = None
    delay_time_ms: int | None = None
    execution_time_ms: int | None = None
    worker_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @classmethod
    def from_body(cls, body: dict[str, Any], job_id: str | None = None) -> JobStatus:
        return cls(
            id=str(body.get("id") or job_id or ""),
            status=str(body.get("status") or "UNKNOWN"),
            output=body.get("output"),
            error=body.get("error"),
            delay_time_ms=_int_or_none(body.get("delayTime")),
            execution_time_ms=_int_or_none(body.get("executionTime")),
            worker_id=body.get("workerId"),
            raw=body,
        )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def resolve_base_url(endpoint: str) -> str:
    """The URL that operations are appended to: .../v2/<endpoint id>.

    A bare id means a RunPod endpoint (RUNPOD_ENDPOINT_BASE_URL overrides https://api.runpod.ai/v2,
    as in the official client); a URL is a local endpoint given as http://host:port,
    http://host:port/v2 (both mean endpoint id "local") or http://host:port/v2/<id>.
    """
    endpoint = endpoint.strip()
    if not endpoint:
        raise ValueError("endpoint: give a RunPod endpoint id or a base URL such as http://127.0.0.1:8000")
    if "://" not in endpoint:
        if not _ENDPOINT_ID_RE.match(endpoint):
            raise ValueError(
                f"endpoint: {endpoint!r} is neither a RunPod endpoint id (letters, digits, '-', '_') "
                "nor an http(s):// URL"
            )
        base = client_settings().runpod_endpoint_base_url or RUNPOD_API_BASE
        return f"{base.rstrip('/')}/{endpoint}"
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"endpoint: {endpoint!r} must be an http(s):// URL or a RunPod endpoint id")
    if parsed.query or parsed.fragment:
        raise ValueError(f"endpoint: {endpoint!r} must not carry a query or fragment")
    root = f"{parsed.scheme}://{parsed.netloc}"
    segments = [part for part in parsed.path.split("/") if part]
    if segments and segments[-1] == "v2":
        segments.append(LOCAL_ENDPOINT_ID)
    elif len(segments) >= 2 and segments[-2] == "v2":
        pass
    elif "v2" in segments:
        raise ValueError(
            f"endpoint: {endpoint!r} has a path after /v2/<endpoint id>; give the endpoint's base URL"
        )
    else:
        segments += ["v2", LOCAL_ENDPOINT_ID]
    return "/".join([root, *segments])


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


class _Retryable(Exception):
    """One failed attempt that may be retried: why, and the server's wish for a pause."""

    def __init__(self, reason: str, status_code: int | None, retry_after: float | None, sent: bool):
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.retry_after = retry_after
        self.sent = sent  # False only when the request certainly never reached the server


class EndpointClient:
    """Async client for one endpoint. Use `async with EndpointClient(...) as client:`."""

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        max_in_flight: int = 64,
        run_limit: tuple[int, float] = (1000, 10.0),
        status_limit: tuple[int, float] = (2000, 10.0),
        max_retries: int = 8,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        self._base_url = resolve_base_url(endpoint)
        self._api_key = api_key if api_key is not None else client_settings().runpod_api_key
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        # Public so tests and callers can swap in limiters on another clock.
        self.run_limiter = RateLimiter(*run_limit)
        self.status_limiter = RateLimiter(*status_limit)
        self.cancel_limiter = RateLimiter(*CANCEL_LIMIT)
        self.purge_limiter = RateLimiter(*PURGE_LIMIT)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.stats: dict[str, int] = {
            "requests": 0,  # HTTP attempts sent
            "retries": 0,  # attempts repeated after a retryable failure
            "throttled": 0,  # 429 and 503 answers
            "ambiguous_run_retries": 0,  # /run retried although the first attempt may have arrived
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.AsyncClient(
            headers=headers,
            # The semaphore bounds concurrency; the pool just has to be as large and never time out.
            timeout=httpx.Timeout(timeout_s, pool=None),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    def __repr__(self) -> str:
        key = "set" if self._api_key else "unset"
        return f"EndpointClient(base_url={self._base_url!r}, api_key=<{key}>)"

    async def __aenter__(self) -> EndpointClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- operations -------------------------------------------------------------------------

    async def run(
        self,
        input: dict[str, Any],
        *,
        webhook: str | None = None,
        policy: dict[str, Any] | None = None,
        s3_config: dict[str, Any] | None = None,
    ) -> str:
        """Queue a job; returns its id. See the module docstring on retries and duplicates."""
        payload: dict[str, Any] = {"input": input}
        if webhook is not None:
            payload["webhook"] = webhook
        if policy is not None:
            payload["policy"] = policy
        if s3_config is not None:
            payload["s3Config"] = s3_config
        body = await self._request("POST", "run", self.run_limiter, json=payload)
        job_id = body.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise EndpointError(f"POST {self._base_url}/run: answer has no job id")
        return job_id

    async def status(self, job_id: str) -> JobStatus:
        body = await self._request("GET", f"status/{_job_path(job_id)}", self.status_limiter)
        return JobStatus.from_body(body, job_id)

    async def cancel(self, job_id: str) -> JobStatus:
        body = await self._request("POST", f"cancel/{_job_path(job_id)}", self.cancel_limiter)
        return JobStatus.from_body(body, job_id)

    async def retry(self, job_id: str) -> JobStatus:
        """Requeue a FAILED or TIMED_OUT job under the same id (RunPod's /retry)."""
        body = await self._request("POST", f"retry/{_job_path(job_id)}", self.cancel_limiter)
        return JobStatus.from_body(body, job_id)

    async def stream(self, job_id: str) -> dict[str, Any]:
        return await self._request("GET", f"stream/{_job_path(job_id)}", self.status_limiter)

    async def health(self) -> dict[str, Any]:
        return await self._request("GET", "health", self.status_limiter)

    async def purge_queue(self) -> dict[str, Any]:
        return await self._request("POST", "purge-queue", self.purge_limiter)

    # --- transport --------------------------------------------------------------------------

    async def _request(
        self, method: str, operation: str, limiter: RateLimiter, json: Any = None
    ) -> dict[str, Any]:
        url = f"{self._base_url}/{operation}"
        is_run = operation == "run"

        def before_retry(state: RetryCallState) -> None:
            failure = _failure(state)
            if is_run and failure.sent and failure.status_code not in (429, 503):
                # The job may exist already; the submission token makes the duplicate harmless.
                self.stats["ambiguous_run_retries"] += 1
            log.info("%s %s: %s; retrying in %.2f s", method, url, failure.reason, state.upcoming_sleep)
            self.stats["retries"] += 1

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=lambda state: self._backoff_delay(state.attempt_number - 1, _failure(state).retry_after),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=before_retry,
            reraise=True,
        )
        try:
            # The sleep between attempts is outside the semaphore: a backing-off request holds no slot.
            async for attempt in retrying:
                with attempt:
                    async with self._in_flight:
                        # Count against the rate limit only when about to send, so sends never bunch
                        # up behind the semaphore and exceed the limit on the server's side.
                        await limiter.acquire()
                        return await self._attempt(method, url, json)
        except _Retryable as failure:
            raise EndpointError(
                self._scrub(
                    f"{method} {url}: {failure.reason} (gave up after {self.max_retries + 1} attempts)"
                ),
                failure.status_code,
            ) from None
        raise AssertionError("tenacity ended without an answer or an error")

    async def _attempt(self, method: str, url: str, json: Any) -> dict[str, Any]:
        self.stats["requests"] += 1
        try:
            response = await self._http.request(method, url, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise _Retryable(f"cannot connect ({type(error).__name__})", None, None, sent=False) from None
        except httpx.TransportError as error:
            # Read/write timeouts and dropped connections: the request may have been processed.
            raise _Retryable(f"connection failed ({type(error).__name__})", None, None, sent=True) from None
        status = response.status_code
        if status == 429 or status == 408 or status >= 500:
            if status in (429, 503):
                self.stats["throttled"] += 1
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            raise _Retryable(f"HTTP {status}", status, retry_after, sent=True)
        if status >= 400:
            raise self._http_error(method, url, response)
        try:
            body = response.json()
        except ValueError:
            raise EndpointError(
                f"{method} {url}: HTTP {status} with a body that is not JSON", status
            ) from None
        if not isinstance(body, dict):
            raise EndpointError(f"{method} {url}: expected a JSON object, got {type(body).__name__}", status)
        return body

    def _http_error(self, method: str, url: str, response: httpx.Response) -> EndpointError:
        status = response.status_code
        snippet = response.text[:_BODY_SNIPPET_CHARS].strip()
        message = self._scrub(f"{method} {url}: HTTP {status}" + (f": {snippet}" if snippet else ""))
        if status in (401, 403):
            hint = "the API key was refused" if self._api_key else "no API key: set RUNPOD_API_KEY"
            return EndpointAuthError(f"{message} ({hint})", status)
        if status == 404:
            return EndpointNotFound(message, status)
        return EndpointError(message, status)

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads a crowd of clients that were throttled together.
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _scrub(self, text: str) -> str:
        # Servers sometimes echo request details; the key must never reach a message or a log.
        return text.replace(self._api_key, "***") if self._api_key else text


def _failure(state: RetryCallState) -> _Retryable:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, _Retryable)
    return error


def _job_path(job_id: str) -> str:
    if not job_id:
        raise ValueError("job_id must not be empty")
    return quote(job_id, safe="")
