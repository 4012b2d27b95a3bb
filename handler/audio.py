"""Audio in: fetch a job's audio reference into a temp file, then decode it to 16 kHz mono float32.

Fetching knows three references: http(s) URLs (streamed, size-capped, retried, SSRF-guarded),
s3://bucket/key (boto3) and data: URIs. Decoding uses PyAV, which ships its own ffmpeg, so anything
ffmpeg reads works and no system ffmpeg is needed. Every failure is a StageError with a stable code.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes, urljoin

import httpx
from stenopod.s3_guard import ForbiddenEndpoint
from stenopod.schema import ErrorCode
from stenopod.storage import S3Credentials, S3Store, StorageError, parse_s3_uri
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .errors import StageError
from .netguard import ForbiddenAddress, check_url, guarded_client, redact_url

log = logging.getLogger("stenopod.handler.audio")

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class AudioLimits:
    """Caps and network settings for fetching and decoding (read by handler.settings)."""

    max_bytes: int = 2 * 1024**3
    max_data_uri_bytes: int = 10 * 1000**2
    max_seconds: float = 4 * 3600.0
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    # timeout_s bounds each read; this bounds a whole download, so a server dripping a byte now
    # and then (never idle long enough for the read timeout) cannot hold the worker for days.
    deadline_s: float = 3 * 3600.0
    allow_private: bool = False


def fetch_audio(
    ref: str, dest: Path, limits: AudioLimits, s3_credentials: S3Credentials | None = None
) -> Path:
    """Write the audio named by ref (http(s)://, s3://, data:) to dest and return dest."""
    scheme = ref.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        _fetch_http(ref, dest, limits)
    elif scheme == "s3":
        _fetch_s3(ref, dest, limits, s3_credentials)
    elif scheme == "data":
        _fetch_data_uri(ref, dest, limits)
    else:
        raise StageError(ErrorCode.url_forbidden, f"audio: scheme {scheme!r} is not allowed")
    return dest


# --- http(s) -----------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failure worth another attempt (5xx, timeout, dropped connection)."""


def _fetch_http(url: str, dest: Path, limits: AudioLimits) -> None:
    check_url(url, "audio")  # a URL httpx cannot parse is the job's error, not the worker's
    timeout = httpx.Timeout(limits.timeout_s, connect=limits.timeout_s)
    with guarded_client(timeout, limits.allow_private) as client:
        # Redirects are followed here, not by httpx, so each hop's scheme and form are checked; the
        # guarded transport checks each hop's addresses when it connects.
        for _hop in range(MAX_REDIRECTS + 1):
            location = _get_with_retries(client, url, dest, limits)
            if location is None:
                return
            url = urljoin(url, location)  # a Location httpx cannot parse is fetch_failed already
            check_url(url, "audio: redirect", ErrorCode.url_forbidden)
    raise StageError(ErrorCode.fetch_failed, f"audio: more than {MAX_REDIRECTS} redirects")


def _get_with_retries(client: httpx.Client, url: str, dest: Path, limits: AudioLimits) -> str | None:
    """Download url to dest; returns a redirect's Location instead when the server redirects."""
    shown = redact_url(url)

    def before_retry(state: RetryCallState) -> None:
        reason = state.outcome.exception() if state.outcome is not None else None
        log.info("fetch %s failed (%s); retry %d of %d", shown, reason, state.attempt_number, limits.retries)

    retrying = Retrying(
        stop=stop_after_attempt(limits.retries + 1),
        wait=wait_exponential(multiplier=limits.backoff_s),  # backoff_s, then twice as long each time
        retry=retry_if_exception_type(_Retryable),
        before_sleep=before_retry,
        reraise=True,
    )
    try:
        return retrying(_get_or_retryable, client, url, dest, limits)
    except _Retryable as error:
        raise StageError(
            ErrorCode.fetch_failed, f"audio: GET {shown} failed after {limits.retries + 1} attempts: {error}"
        ) from None


def _get_or_retryable(client: httpx.Client, url: str, dest: Path, limits: AudioLimits) -> str | None:
    """One attempt; a failure worth another is raised as _Retryable, with its reason."""
    try:
        return _get_once(client, url, dest, limits)
    except ForbiddenAddress as error:
        raise StageError(ErrorCode.url_forbidden, f"audio: {redact_url(url)}: {error}") from None
    except httpx.TimeoutException:
        raise _Retryable("timed out") from None
    except httpx.TransportError as error:
        raise _Retryable(f"connection failed ({type(error).__name__})") from None


def _get_once(client: httpx.Client, url: str, dest: Path, limits: AudioLimits) -> str | None:
    shown = redact_url(url)
    with client.stream("GET", url) as response:
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                raise StageError(ErrorCode.fetch_failed, f"audio: {shown} redirected without a Location")
            return location
        if response.status_code >= 500 or response.status_code == 429:  # busy, or asking us to slow down
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code != 200:  # other 4xx, and odd answers like 204 or 206: not worth a retry
            raise StageError(
                ErrorCode.fetch_failed, f"audio: GET {shown} returned HTTP {response.status_code}"
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_bytes:
            raise _too_large(shown, limits.max_bytes)
        received = 0
        deadline = time.monotonic() + limits.deadline_s
        with dest.open("wb") as out:
            # Counting while streaming catches chunked bodies and servers that lie about the length;
            # chunks come as they arrive (not buffered to a size) so the deadline is checked often.
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > limits.max_bytes:
                    raise _too_large(shown, limits.max_bytes)
                if time.monotonic() > deadline:
                    raise StageError(
                        ErrorCode.fetch_failed,
                        f"audio: GET {shown} took longer than {limits.deadline_s:g} s "
                        "(STENOPOD_FETCH_DEADLINE_S)",
                    )
                out.write(chunk)
    return None


def _too_large(shown: str, cap: int) -> StageError:
    return StageError(
        ErrorCode.too_large, f"audio: {shown} is larger than {cap} bytes (STENOPOD_MAX_AUDIO_BYTES)"
    )


# --- s3:// ---------------------------------------------------------------------------------------


def _fetch_s3(uri: str, dest: Path, limits: AudioLimits, credentials: S3Credentials | None) -> None:
    try:
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise StorageError(f"{uri!r} names a bucket but no key")
        S3Store(bucket, "", credentials, limits.allow_private).download_file(key, dest)
    except ForbiddenEndpoint as error:  # the job's s3Config names a private address: nothing was sent
        raise StageError(ErrorCode.url_forbidden, f"audio: {error}") from None
    except StorageError as error:  # its message already leaves secrets out
        raise StageError(ErrorCode.fetch_failed, f"audio: {error}") from None
    if dest.stat().st_size > limits.max_bytes:
        raise _too_large(uri, limits.max_bytes)


# --- data: ---------------------------------------------------------------------------------------


def _fetch_data_uri(uri: str, dest: Path, limits: AudioLimits) -> None:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise StageError(ErrorCode.invalid_input, "audio: a data: URI needs a ',' before its payload")
    is_base64 = header.lower().endswith(";base64")
    # Refuse before decoding: base64 grows data by 4/3, so the payload length bounds the size.
    estimate = len(payload) * 3 // 4 if is_base64 else len(payload)
    if estimate > limits.max_data_uri_bytes:
        raise StageError(
            ErrorCode.too_large,
            f"audio: data: URI holds more than {limits.max_data_uri_bytes} bytes "
            "(STENOPOD_MAX_DATA_URI_BYTES); give an http(s) or s3:// URL for large files",
        )
    if is_base64:
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise StageError(
                ErrorCode.invalid_input, "audio: data: URI payload is not valid base64"
            ) from None
    else:
        data = unquote_to_bytes(payload)
    dest.write_bytes(data)
