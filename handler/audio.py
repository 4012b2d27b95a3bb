"""Audio in: fetch a job's audio reference into a temp file, then decode it to 16 kHz mono float32.

Fetching knows three references: http(s) URLs (streamed, size-capped, retried, SSRF-guarded),
s3://bucket/key (boto3) and data: URIs. Decoding uses PyAV, which ships its own ffmpeg, so anything
ffmpeg reads works and no system ffmpeg is needed. Every failure is a StageError with a stable code.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin

import httpx
import numpy as np
from stenopod.s3_guard import ForbiddenEndpoint
from stenopod.schema import ErrorCode
from stenopod.storage import S3Credentials, S3Store, StorageError, parse_s3_uri

from .errors import StageError
from .netguard import ForbiddenAddress, allow_private_urls, check_url, guarded_client, redact_url
from .wav import PlainWav, probe_plain_wav, read_plain_wav

log = logging.getLogger("stenopod.handler.audio")

SAMPLE_RATE = 16_000
MAX_REDIRECTS = 5


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


@dataclass(frozen=True)
class AudioLimits:
    """Caps and network settings for fetching and decoding, read from the environment."""

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

    @classmethod
    def from_env(cls) -> AudioLimits:
        defaults = cls()
        return cls(
            max_bytes=int(_env_number("STENOPOD_MAX_AUDIO_BYTES", defaults.max_bytes)),
            max_data_uri_bytes=int(_env_number("STENOPOD_MAX_DATA_URI_BYTES", defaults.max_data_uri_bytes)),
            max_seconds=_env_number("STENOPOD_MAX_AUDIO_SECONDS", defaults.max_seconds),
            timeout_s=_env_number("STENOPOD_FETCH_TIMEOUT_S", defaults.timeout_s),
            retries=max(0, int(_env_number("STENOPOD_FETCH_RETRIES", defaults.retries))),
            backoff_s=max(0.0, _env_number("STENOPOD_FETCH_BACKOFF_S", defaults.backoff_s)),
            deadline_s=max(0.001, _env_number("STENOPOD_FETCH_DEADLINE_S", defaults.deadline_s)),
            allow_private=allow_private_urls(),
        )


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
    for attempt in range(limits.retries + 1):
        try:
            return _get_once(client, url, dest, limits)
        except ForbiddenAddress as error:
            raise StageError(ErrorCode.url_forbidden, f"audio: {shown}: {error}") from None
        except _Retryable as error:
            reason = str(error)
        except httpx.TimeoutException:
            reason = "timed out"
        except httpx.TransportError as error:
            reason = f"connection failed ({type(error).__name__})"
        if attempt < limits.retries:
            log.info("fetch %s failed (%s); retry %d of %d", shown, reason, attempt + 1, limits.retries)
            time.sleep(limits.backoff_s * 2**attempt)
    raise StageError(
        ErrorCode.fetch_failed, f"audio: GET {shown} failed after {limits.retries + 1} attempts: {reason}"
    )


def _get_once(client: httpx.Client, url: str, dest: Path, limits: AudioLimits) -> str | None:
    shown = redact_url(url)
    with client.stream("GET", url) as response:
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                raise StageError(ErrorCode.fetch_failed, f"audio: {shown} redirected without a Location")
            return location
        if response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code != 200:  # 4xx, and odd answers like 204 or 206: not worth a retry
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
        S3Store(bucket, "", credentials).download_file(key, dest)
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


# --- decode --------------------------------------------------------------------------------------


def decode_audio(path: Path, max_seconds: float) -> np.ndarray:
    """Decode the first audio stream of path to 16 kHz mono float32; StageError when it cannot."""
    import av  # PyAV loads its bundled ffmpeg libraries; keep that off the import of this module

    if path.stat().st_size == 0:
        raise StageError(ErrorCode.not_audio, "audio: the file is empty (0 bytes)")
    plain = probe_plain_wav(path)
    if plain is not None:
        return _decode_plain_wav(path, plain, max_seconds)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise StageError(ErrorCode.not_audio, f"audio: not a readable audio file ({_short(error)})") from None
    with container:
        if not container.streams.audio:
            raise StageError(ErrorCode.not_audio, "audio: the file has no audio stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None and declared > max_seconds:
            raise _too_long(declared, max_seconds)
        samples = _decode_stream(container, stream, max_seconds)
    if samples.size == 0 and declared is not None and declared >= 1.0:
        # ffmpeg skips frames it cannot decode without an error: a corrupt file must not pass for
        # silence (an "ok" empty transcript) when its header promises seconds of audio.
        raise StageError(
            ErrorCode.not_audio, f"audio: the stream declares {declared:.0f} s but none of it decodes"
        )
    return samples


def _decode_plain_wav(path: Path, layout: PlainWav, max_seconds: float) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV without ffmpeg (handler.wav), with the same caps and errors."""
    declared = layout.declared_seconds()
    if declared is not None and declared > max_seconds:
        raise _too_long(declared, max_seconds)
    max_samples = int(max_seconds * SAMPLE_RATE)
    samples = read_plain_wav(path, layout, max_samples)
    if samples.size > max_samples:
        raise _too_long(samples.size / SAMPLE_RATE, max_seconds)
    if samples.size == 0 and declared is not None and declared >= 1.0:
        raise StageError(
            ErrorCode.not_audio, f"audio: the file declares {declared:.0f} s but holds none of it"
        )
    return samples


# Sample formats whose float conversion numpy does exactly as ffmpeg's converter (an int times a
# power of two), so a frame already at 16 kHz mono can skip the resampler.
_INT_SCALES = {"s16": 1.0 / 2**15, "s16p": 1.0 / 2**15, "s32": 1.0 / 2**31, "s32p": 1.0 / 2**31}


def _direct_samples(frame: Any) -> np.ndarray | None:
    """A 16 kHz mono frame's samples as float32 without the resampler, or None when it needs it.

    The resampler costs ~40 us a frame even when there is nothing to convert, and short clips come
    in 50-100 frames: a third of their decode time, on the critical path of a job's first call.
    """
    if frame.sample_rate != SAMPLE_RATE or frame.layout.nb_channels != 1:
        return None
    name = frame.format.name
    if name in ("flt", "fltp"):
        return frame.to_ndarray().reshape(-1)
    scale = _INT_SCALES.get(name)
    if scale is None:
        return None
    return frame.to_ndarray().reshape(-1).astype(np.float32) * np.float32(scale)


def _decode_stream(container: Any, stream: Any, max_seconds: float) -> np.ndarray:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    resampling = False  # once a frame needed it, every later one goes through it (its buffer keeps order)
    max_samples = int(max_seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
            direct = None if resampling or frame is None else _direct_samples(frame)
            if direct is not None:
                outs = [direct]
            else:
                resampling = resampling or frame is not None
                outs = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
            for out in outs:
                piece = out.astype(np.float32, copy=False)
                total += piece.size
                # Stop as soon as the cap is passed: a file with a missing or lying duration header
                # must not make the worker decode (and hold in memory) days of audio.
                if total > max_samples:
                    raise _too_long(total / SAMPLE_RATE, max_seconds)
                pieces.append(piece)
    except av.FFmpegError as error:
        if total == 0:
            raise StageError(ErrorCode.not_audio, f"audio: cannot decode ({_short(error)})") from None
        # A file truncated mid-stream still yields what decoded before the damage.
        log.warning("decode stopped early after %.1f s: %s", total / SAMPLE_RATE, _short(error))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces)


def _declared_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE units
    return None


def _too_long(seconds: float, cap: float) -> StageError:
    return StageError(
        ErrorCode.too_long,
        f"audio: {seconds:.0f} s is longer than the {cap:.0f} s limit (STENOPOD_MAX_AUDIO_SECONDS)",
    )


def _short(error: Exception) -> str:
    # FFmpegError's text names the temp file; the user only needs the reason.
    reason = str(getattr(error, "strerror", None) or error or type(error).__name__)
    filename = getattr(error, "filename", None)
    if filename:
        reason = reason.replace(str(filename), "")
    return reason.strip(" :'").splitlines()[0][:200] if reason.strip() else type(error).__name__
