"""Signed callbacks: POST each finished item to the job's callback URL (see stenopod.signing)."""

from __future__ import annotations

import logging
import time

import httpx
from stenopod.addresses import url_problem
from stenopod.schema import Callback, ItemResult
from stenopod.signing import signature_headers

from .netguard import ForbiddenAddress, allow_private_urls, guarded_client, redact_url

log = logging.getLogger("stenopod.handler.callback")

JOB_ID_HEADER = "X-Stenopod-Job-Id"


def post_item(
    callback: Callback,
    item: ItemResult,
    job_id: str | None = None,
    *,
    retries: int = 2,
    backoff_s: float = 1.0,
) -> str | None:
    """POST the item's JSON, signed; None when delivered, else why not (secret-free, URL redacted).

    Retried on connection errors, timeouts and 5xx. A 3xx is not followed: the receiver is a fixed
    endpoint, and following would let it bounce the worker to an address the guard has not seen.
    """
    attempts = 1 + max(0, retries)
    body = item.model_dump_json().encode("utf-8")
    shown = redact_url(callback.url)
    problem = url_problem(callback.url)  # the schema refuses these; a caller that skipped it is told why
    if problem is not None:
        return f"callback {shown} refused: input.callback.url {problem}"
    reason = "not attempted"
    with guarded_client(httpx.Timeout(15.0), allow_private_urls()) as client:
        for attempt in range(attempts):
            # A fresh timestamp per attempt, so a late retry is still inside the receiver's window.
            headers = signature_headers(callback.secret.get_secret_value(), body)
            headers["Content-Type"] = "application/json"
            if job_id:
                headers[JOB_ID_HEADER] = job_id
            try:
                response = client.post(callback.url, content=body, headers=headers)
            except ForbiddenAddress as error:
                return f"callback {shown} refused: {error}"
            except httpx.HTTPError as error:
                reason = f"connection failed ({type(error).__name__})"
            else:
                if response.is_success:
                    return None
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the receiver refused it; sending it again will not help
            if attempt + 1 < attempts:
                time.sleep(backoff_s * 2**attempt)
    message = f"callback {shown} failed: {reason}"
    log.warning("item %s: %s", item.id, message)
    return message
