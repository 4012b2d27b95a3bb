"""Signed callbacks: POST each finished item to the job's callback URL (see stenopod.signing)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from stenopod.addresses import url_problem
from stenopod.schema import Callback, ItemResult
from stenopod.signing import signature_headers
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from .netguard import ForbiddenAddress, guarded_client, redact_url

log = logging.getLogger("stenopod.handler.callback")

JOB_ID_HEADER = "X-Stenopod-Job-Id"


@dataclass(frozen=True)
class _Sent:
    """One attempt's result: reason None when delivered; retry when another attempt may help."""

    reason: str | None
    retry: bool = False
    refused: bool = False  # the guard refused the address: nothing was sent


def _post_once(client: httpx.Client, callback: Callback, body: bytes, job_id: str | None) -> _Sent:
    # A fresh timestamp per attempt, so a late retry is still inside the receiver's window.
    headers = signature_headers(callback.secret.get_secret_value(), body)
    headers["Content-Type"] = "application/json"
    if job_id:
        headers[JOB_ID_HEADER] = job_id
    try:
        response = client.post(callback.url, content=body, headers=headers)
    except ForbiddenAddress as error:
        return _Sent(str(error), refused=True)
    except httpx.HTTPError as error:
        return _Sent(f"connection failed ({type(error).__name__})", retry=True)
    if response.is_success:
        return _Sent(None)
    # A 4xx other than 429: the receiver refused it; sending it again will not help.
    return _Sent(
        f"HTTP {response.status_code}", retry=response.status_code >= 500 or response.status_code == 429
    )


def post_item(
    callback: Callback,
    item: ItemResult,
    job_id: str | None = None,
    *,
    retries: int = 2,
    backoff_s: float = 1.0,
    allow_private: bool = False,
) -> str | None:
    """POST the item's JSON, signed; None when delivered, else why not (secret-free, URL redacted).

    Retried on connection errors, timeouts, 429 and 5xx. A 3xx is not followed: the receiver is a fixed
    endpoint, and following would let it bounce the worker to an address the guard has not seen.
    """
    attempts = 1 + max(0, retries)
    body = item.model_dump_json().encode("utf-8")
    shown = redact_url(callback.url)
    problem = url_problem(callback.url)  # the schema refuses these; a caller that skipped it is told why
    if problem is not None:
        return f"callback {shown} refused: input.callback.url {problem}"
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s),  # backoff, 2 x backoff, 4 x backoff...
        retry=retry_if_result(lambda sent: sent.retry),
        retry_error_callback=lambda state: (
            state.outcome.result() if state.outcome else _Sent("not attempted")
        ),
    )
    with guarded_client(httpx.Timeout(15.0), allow_private) as client:
        sent: _Sent = retrying(_post_once, client, callback, body, job_id)
    if sent.reason is None:
        return None
    if sent.refused:
        return f"callback {shown} refused: {sent.reason}"
    message = f"callback {shown} failed: {sent.reason}"
    log.warning("item %s: %s", item.id, message)
    return message
