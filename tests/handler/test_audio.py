"""Fetching audio (http through real loopback servers, s3 through moto, data: URIs) and decoding it."""

from __future__ import annotations

import base64
import io
import ipaddress
import time
import wave
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from stenopod.schema import ErrorCode
from stenopod.storage import S3Credentials

from handler import netguard
from handler.audio import AudioLimits, fetch_audio
from handler.decode import decode_audio
from handler.errors import StageError
from handler.netguard import is_forbidden_address, redact_url
from handler.settings import audio_limits_from_env
from tests.support.servers import AudioHTTPServer, MotoS3


def limits(**overrides: object) -> AudioLimits:
    base = {"allow_private": True, "backoff_s": 0.01, "timeout_s": 5.0, "retries": 2}
    return AudioLimits(**{**base, **overrides})  # type: ignore[arg-type]


def fetch_error(ref: str, dest: Path, lim: AudioLimits, creds: S3Credentials | None = None) -> StageError:
    with pytest.raises(StageError) as caught:
        fetch_audio(ref, dest, lim, creds)
    return caught.value


def wav_bytes(samples: np.ndarray, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def redirect_to(location: str):
    return reply(302, headers={"Location": location})


# --- SSRF guard ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    url = "https://user:pw@bucket.s3.amazonaws.com:8443/a/b.mp3?X-Amz-Signature=abc&X-Amz-Credential=k#t"
    assert redact_url(url) == "https://bucket.s3.amazonaws.com:8443/a/b.mp3"
    assert redact_url("data:audio/wav;base64,AAAA") == "data:..."


def test_loopback_url_is_forbidden_without_the_switch(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    error = fetch_error(audio_server.url("jfk.flac"), tmp_path / "a", limits(allow_private=False))
    assert error.code == ErrorCode.url_forbidden
    assert "127.0.0.1" in error.message
    assert audio_server.requests == []  # refused before connecting


def test_localhost_name_is_forbidden_too(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    url = f"http://localhost:{audio_server.port}/jfk.flac"
    assert fetch_error(url, tmp_path / "a", limits(allow_private=False)).code == ErrorCode.url_forbidden


def test_metadata_address_is_forbidden(tmp_path: Path) -> None:
    error = fetch_error(
        "http://169.254.169.254/latest/meta-data/", tmp_path / "a", limits(allow_private=False)
    )
    assert error.code == ErrorCode.url_forbidden


def test_redirect_to_a_private_address_is_forbidden(
    audio_server: AudioHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No public host is reachable from a test, so a test-double policy plays "127.0.0.1 is public";
    # every other non-public address keeps the real verdict. The redirect goes to the metadata address.
    real_policy = netguard.is_forbidden_address

    def test_double_policy(address: netguard.IPAddress) -> bool:
        return str(address) != "127.0.0.1" and real_policy(address)

    monkeypatch.setattr(netguard, "is_forbidden_address", test_double_policy)
    audio_server.routes["/hop"] = redirect_to("http://169.254.169.254/latest/meta-data/")
    audio_server.routes["/hop-local"] = redirect_to(f"http://[::1]:{audio_server.port}/jfk.flac")
    lim = limits(allow_private=False)

    assert fetch_error(audio_server.url("hop"), tmp_path / "a", lim).code == ErrorCode.url_forbidden
    assert fetch_error(audio_server.url("hop-local"), tmp_path / "b", lim).code == ErrorCode.url_forbidden
    # The same policy lets the direct fetch through, so the redirect is what was refused.
    assert fetch_audio(audio_server.url("jfk.flac"), tmp_path / "c", lim).stat().st_size > 0


def test_allow_private_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    assert audio_limits_from_env().allow_private
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "0")
    assert not audio_limits_from_env().allow_private


# --- http(s) -------------------------------------------------------------------------------------


def test_http_fetch_writes_the_file(audio_server: AudioHTTPServer, data_dir: Path, tmp_path: Path) -> None:
    dest = fetch_audio(audio_server.url("jfk.flac"), tmp_path / "a", limits())
    assert dest.read_bytes() == (data_dir / "jfk.flac").read_bytes()


def test_redirects_are_followed(audio_server: AudioHTTPServer, data_dir: Path, tmp_path: Path) -> None:
    audio_server.routes["/r1"] = redirect_to("/r2")
    audio_server.routes["/r2"] = redirect_to(audio_server.url("jfk.flac") + "?sig=x")
    dest = fetch_audio(audio_server.url("r1"), tmp_path / "a", limits())
    assert dest.read_bytes() == (data_dir / "jfk.flac").read_bytes()
    assert audio_server.requests == ["/r1", "/r2", "/jfk.flac"]


def test_redirect_loops_and_odd_schemes_stop(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    audio_server.routes["/loop"] = redirect_to("/loop")
    audio_server.routes["/file"] = redirect_to("file:///etc/passwd")
    assert fetch_error(audio_server.url("loop"), tmp_path / "a", limits()).code == ErrorCode.fetch_failed
    assert len(audio_server.requests) == 6  # the first request and 5 redirects
    assert fetch_error(audio_server.url("file"), tmp_path / "b", limits()).code == ErrorCode.url_forbidden


def test_404_is_fetch_failed_without_retries(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    error = fetch_error(audio_server.url("missing.mp3?X-Amz-Signature=SECRETSIG"), tmp_path / "a", limits())
    assert error.code == ErrorCode.fetch_failed
    assert "404" in error.message and "SECRETSIG" not in error.message
    assert audio_server.requests == ["/missing.mp3"]


@pytest.mark.parametrize("status", [500, 429])
def test_500_and_429_are_retried_then_fetch_failed(
    audio_server: AudioHTTPServer, tmp_path: Path, status: int
) -> None:
    # 429: a CDN asking us to slow down is busy, not refusing; a whole-item resubmission costs more.
    audio_server.routes["/broken"] = reply(status, b"oops")
    error = fetch_error(audio_server.url("broken"), tmp_path / "a", limits(retries=2))
    assert error.code == ErrorCode.fetch_failed
    assert f"HTTP {status}" in error.message
    assert audio_server.requests == ["/broken"] * 3


def test_a_transient_503_recovers(audio_server: AudioHTTPServer, data_dir: Path, tmp_path: Path) -> None:
    data = (data_dir / "jfk.flac").read_bytes()
    calls = []

    def flaky(handler: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        (reply(503) if len(calls) == 1 else reply(200, data))(handler)

    audio_server.routes["/flaky"] = flaky
    assert fetch_audio(audio_server.url("flaky"), tmp_path / "a", limits()).read_bytes() == data
    assert len(calls) == 2


def test_read_timeout_is_fetch_failed(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        try:
            reply(200, b"late")(handler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker gave up waiting, as it should

    audio_server.routes["/slow"] = slow
    error = fetch_error(audio_server.url("slow"), tmp_path / "a", limits(timeout_s=0.3, retries=1))
    assert error.code == ErrorCode.fetch_failed and "timed out" in error.message


def test_connection_refused_is_fetch_failed(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/a.mp3"
    assert fetch_error(url, tmp_path / "a", limits(retries=1)).code == ErrorCode.fetch_failed


def test_too_large_by_content_length(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    error = fetch_error(audio_server.url("jfk.flac"), tmp_path / "a", limits(max_bytes=1000))
    assert error.code == ErrorCode.too_large


def test_too_large_by_counting_a_chunked_body(audio_server: AudioHTTPServer, tmp_path: Path) -> None:
    def chunked(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for _ in range(10):
                piece = b"x" * 500
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker hung up at the cap, as it should

    audio_server.routes["/chunked"] = chunked
    error = fetch_error(audio_server.url("chunked"), tmp_path / "a", limits(max_bytes=1000))
    assert error.code == ErrorCode.too_large
    # Under the cap, the same chunked body comes through whole.
    assert fetch_audio(audio_server.url("chunked"), tmp_path / "b", limits()).stat().st_size == 5000


# --- s3:// and data: ---------------------------------------------------------------------------


def test_s3_fetch_with_env_and_s3config_credentials(
    moto_s3: MotoS3,
    s3_bucket: str,
    s3_env: str,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guarded = limits(allow_private=False)
    data = (data_dir / "jfk.flac").read_bytes()
    moto_s3.client().put_object(Bucket=s3_bucket, Key="in/jfk.flac", Body=data)
    # The worker's own endpoint (S3_ENDPOINT_URL, the operator's) is trusted on loopback.
    assert fetch_audio(f"s3://{s3_bucket}/in/jfk.flac", tmp_path / "a", guarded).read_bytes() == data

    creds = S3Credentials.from_runpod_s3_config(
        {"accessId": "testing", "accessSecret": "testing", "endpointUrl": moto_s3.endpoint_url}
    )
    # A job's own endpoint on loopback needs the allow switch, like any URL a job names.
    error = fetch_error(f"s3://{s3_bucket}/in/jfk.flac", tmp_path / "b", guarded, creds)
    assert error.code == ErrorCode.url_forbidden and "s3Config.endpointUrl" in error.message
    # The worker's switch (STENOPOD_ALLOW_PRIVATE_URLS, read at its start) allows it.
    assert fetch_audio(f"s3://{s3_bucket}/in/jfk.flac", tmp_path / "b", limits(), creds).read_bytes() == data


def test_s3_missing_key_is_fetch_failed(moto_s3: MotoS3, s3_bucket: str, s3_env: str, tmp_path: Path) -> None:
    error = fetch_error(f"s3://{s3_bucket}/nope.mp3", tmp_path / "a", limits())
    assert error.code == ErrorCode.fetch_failed
    assert "testing" not in error.message  # no credentials in messages


def test_data_uri_roundtrip_and_caps(tmp_path: Path) -> None:
    payload = wav_bytes(np.zeros(1600, dtype=np.float32))
    uri = "data:audio/wav;base64," + base64.b64encode(payload).decode()
    assert fetch_audio(uri, tmp_path / "a", limits()).read_bytes() == payload

    error = fetch_error(uri, tmp_path / "b", limits(max_data_uri_bytes=1000))
    assert error.code == ErrorCode.too_large
    bad = fetch_error("data:audio/wav;base64,!!!not-base64!!!", tmp_path / "c", limits())
    assert bad.code == ErrorCode.invalid_input


# --- decode --------------------------------------------------------------------------------------


def test_decode_gives_16k_mono_float32(data_dir: Path) -> None:
    samples = decode_audio(data_dir / "jfk.flac", max_seconds=3600)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / 16_000 - 11.0) < 0.05
    # ffmpeg's stereo->mono downmix (as in `ffmpeg -ac 1`, which Whisper uses) can peak a bit past 1.
    assert 0.1 < np.abs(samples).max() < 2.0


@pytest.mark.parametrize(
    "name", ["hotwords.mp3", "stereo_diarization.wav", "librispeech_1089-134686-0001.wav"]
)
def test_decode_other_containers(data_dir: Path, name: str) -> None:
    samples = decode_audio(data_dir / name, max_seconds=3600)
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 16_000


def test_silence_and_empty_wav_decode_without_error(tmp_path: Path) -> None:
    silent = tmp_path / "silence.wav"
    silent.write_bytes(wav_bytes(np.zeros(16_000, dtype=np.float32)))
    assert np.count_nonzero(decode_audio(silent, 3600)) == 0
    header_only = tmp_path / "empty.wav"
    header_only.write_bytes(wav_bytes(np.zeros(0, dtype=np.float32)))
    assert decode_audio(header_only, 3600).size == 0


def _jpeg_bytes() -> bytes:
    """A real JPEG photo's bytes, encoded by PyAV's bundled ffmpeg (no imaging library needed)."""
    from fractions import Fraction

    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = 32, 32, "yuvj420p", Fraction(1, 25)
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    data = b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])
    assert data.startswith(b"\xff\xd8")  # the JPEG SOI marker
    return data


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("episode.txt", "not audio " * 100)
    return buf.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><head><title>Not found</title></head><body>nope</body></html>" * 20,
        _jpeg_bytes(),
        _zip_bytes(),
        b"",
        bytes(range(256)) * 64,
    ],
    ids=["html", "jpeg", "zip", "zero-bytes", "noise"],
)
def test_not_audio(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "thing"
    path.write_bytes(content)
    with pytest.raises(StageError) as caught:
        decode_audio(path, 3600)
    assert caught.value.code == ErrorCode.not_audio
    assert str(tmp_path) not in caught.value.message


def test_too_long_from_the_declared_duration(data_dir: Path) -> None:
    with pytest.raises(StageError) as caught:
        decode_audio(data_dir / "jfk.flac", max_seconds=5)
    assert caught.value.code == ErrorCode.too_long


def test_too_long_while_decoding_when_no_duration_is_declared(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streams without a duration header (live captures, some raw formats) are capped as they decode.
    import handler.decode

    monkeypatch.setattr(handler.decode, "_declared_seconds", lambda container, stream: None)
    with pytest.raises(StageError) as caught:
        decode_audio(data_dir / "jfk.flac", max_seconds=5)
    assert caught.value.code == ErrorCode.too_long
