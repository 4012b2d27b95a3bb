"""The bad-input catalogue: one table of hostile or broken jobs, each with the error code it must get.

Every case runs through run_job with the real development registry (tiny.en, loaded once for the
module), against real servers on loopback: an HTTP server with scripted misbehaviour and moto's S3
with IAM enforcement switched on for the credential cases. After the table the same registry must
still transcribe jfk.flac, the worker's temp root must be empty and no answer may carry a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from stenopod.schema import ErrorCode, JobError

from bench.figures import record
from handler import netguard
from handler.engines.registry import EngineRegistry, registry_from_env
from handler.job import run_job
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.timeout(300)

OK_EMPTY = "ok-empty"  # the item succeeds with an empty transcript
OK_PARTIAL = "ok"  # the item succeeds (a truncated file transcribes what survived)
SECRET_FOR_BAD_CREDENTIALS = "catalogue-wrong-secret-9f3b"

Route = Callable[[BaseHTTPRequestHandler], None]


# --- what the cases are made of ------------------------------------------------------------------


@dataclass
class World:
    """The servers and names the cases refer to."""

    server: AudioHTTPServer
    moto: MotoS3
    bucket: str
    writer_key: str
    writer_secret: str

    def url(self, path: str) -> str:
        return self.server.url(path)

    def s3_config(self, secret: str | None = None) -> dict[str, str]:
        return {
            "accessId": self.writer_key,
            "accessSecret": secret or self.writer_secret,
            "endpointUrl": self.moto.endpoint_url,
        }


@dataclass(frozen=True)
class Case:
    name: str
    job: Callable[[World], dict[str, Any]]  # the whole RunPod job body: {"input": ..., "s3Config": ...}
    expect: str  # an ErrorCode value, OK_EMPTY or OK_PARTIAL
    env: dict[str, str] = field(default_factory=dict)
    iam: bool = False  # moto checks signatures and IAM policies while this case runs
    policy_double: bool = False  # the netguard policy test double treats 127.0.0.1 as public


LOOPBACK = {"STENOPOD_ALLOW_PRIVATE_URLS": "1"}
URL = "https://example.com/a.mp3"  # never fetched: the input is refused before any work


def given(input_: Any) -> Callable[[World], dict[str, Any]]:
    return lambda world: {"input": input_}


def audio_at(path: str, **extra: Any) -> Callable[[World], dict[str, Any]]:
    return lambda world: {"input": {"audio": world.url(path), **extra}}


def audio_url(url: str) -> Callable[[World], dict[str, Any]]:
    return lambda world: {"input": {"audio": url}}


def this_machine(host: str) -> Callable[[World], dict[str, Any]]:
    """The audio server's jfk.flac under another spelling of 127.0.0.1 (or of "this machine")."""
    return lambda world: {"input": {"audio": f"http://{host}:{world.server.port}/jfk.flac"}}


def item_id(bad_id: str) -> Callable[[World], dict[str, Any]]:
    # With an s3 output, so the check after the table shows no key was written anywhere.
    return lambda world: {
        "input": {"items": [{"id": bad_id, "audio": URL}], "output": f"s3://{world.bucket}/ids/"}
    }


def silence_to(output: Callable[[World], str], *, s3_config: Callable[[World], Any] | None = None):
    def build(world: World) -> dict[str, Any]:
        job: dict[str, Any] = {
            "input": {"audio": _data_uri(_silence_wav(1.0)), "id": "quiet", "output": output(world)}
        }
        if s3_config is not None:
            job["s3Config"] = s3_config(world)
        return job

    return build


CASES: list[Case] = [
    # -- malformed input and the schema --
    Case("input-null", given(None), "invalid_input"),
    Case("input-string", given("https://example.com/a.mp3"), "invalid_input"),
    Case("input-list", given([{"audio": URL}]), "invalid_input"),
    Case("input-empty-object", given({}), "invalid_input"),
    Case("unknown-field", given({"audio": URL, "speed": 2}), "invalid_input"),
    Case("audio-not-a-string", given({"audio": 123}), "invalid_input"),
    Case("items-not-a-list", given({"items": "a.mp3"}), "invalid_input"),
    Case("formats-unknown", given({"audio": URL, "formats": ["docx"]}), "invalid_input"),
    Case("timestamps-wrong-type", given({"audio": URL, "timestamps": 5}), "invalid_input"),
    Case("language-too-long", given({"audio": URL, "language": "english-please"}), "invalid_input"),
    Case("neither-audio-nor-items", given({"model": "tiny.en"}), "invalid_input"),
    Case("both-audio-and-items", given({"audio": URL, "items": [{"id": "a", "audio": URL}]}), "invalid_input"),
    Case("empty-items", given({"items": []}), "invalid_input"),
    Case("too-many-items", given({"items": [{"id": f"i{n}", "audio": URL} for n in range(1001)]}), "invalid_input"),
    Case("item-without-id", given({"items": [{"audio": URL}]}), "invalid_input"),
    Case("duplicate-ids", given({"items": [{"id": "a", "audio": URL}, {"id": "a", "audio": URL}]}), "invalid_input"),
    Case("id-with-slash", item_id("../escape/x"), "invalid_input"),
    Case("id-with-empty-folder", item_id("a//b"), "invalid_input"),
    Case("id-with-leading-slash", item_id("/a"), "invalid_input"),
    Case("id-dot-dot", item_id("a..b"), "invalid_input"),
    Case("id-control-chars", item_id("a\x00b\nc"), "invalid_input"),
    Case("id-1kb", item_id("a" * 1024), "invalid_input"),
    Case("callback-secret-too-short", given({"audio": URL, "callback": {"url": URL, "secret": "short"}}), "invalid_input"),
    Case("output-gs-scheme", given({"audio": URL, "output": "gs://bucket/x/"}), "invalid_input"),
    Case("output-local-folder-on-a-worker", given({"audio": URL, "output": "/tmp/out"}), "invalid_input"),
    # -- schemes the worker never fetches --
    Case("scheme-file", audio_url("file:///etc/passwd"), "invalid_input"),
    Case("scheme-ftp", audio_url("ftp://example.com/a.mp3"), "invalid_input"),
    Case("scheme-gopher", audio_url("gopher://example.com/a.mp3"), "invalid_input"),
    Case("scheme-javascript", audio_url("javascript:alert(1)"), "invalid_input"),
    # -- addresses the worker must not reach (no allow switch) --
    Case("loopback-127", lambda w: {"input": {"audio": w.url("jfk.flac")}}, "url_forbidden"),
    Case("private-10", audio_url("http://10.0.0.1/a.mp3"), "url_forbidden"),
    Case("private-172-16", audio_url("http://172.16.0.1/a.mp3"), "url_forbidden"),
    Case("private-192-168", audio_url("http://192.168.1.1/a.mp3"), "url_forbidden"),
    Case("metadata-169-254", audio_url("http://169.254.169.254/latest/meta-data/"), "url_forbidden"),
    Case("loopback-ipv6", audio_url("http://[::1]/a.mp3"), "url_forbidden"),
    Case("localhost-name", lambda w: {"input": {"audio": f"http://localhost:{w.server.port}/jfk.flac"}}, "url_forbidden"),
    Case("redirect-to-metadata", audio_at("redirect-metadata"), "url_forbidden", policy_double=True),
    Case("redirect-to-ipv6-loopback", audio_at("redirect-ipv6-loopback"), "url_forbidden", policy_double=True),
    Case("redirect-to-file-scheme", audio_at("redirect-file"), "url_forbidden", LOOPBACK),
    Case("redirect-to-port-99999", audio_at("redirect-bad-port"), "url_forbidden", LOOPBACK),
    # -- other spellings of this machine (no allow switch) --
    Case("loopback-decimal", this_machine("2130706433"), "url_forbidden"),
    Case("loopback-octal", this_machine("0177.0.0.1"), "invalid_input"),  # httpx cannot parse it
    Case("loopback-hex-dotted", this_machine("0x7f.0.0.1"), "url_forbidden"),
    Case("loopback-hex-whole", this_machine("0x7f000001"), "url_forbidden"),
    Case("loopback-short-form", this_machine("127.1"), "url_forbidden"),
    Case("loopback-ipv4-mapped-ipv6", this_machine("[::ffff:127.0.0.1]"), "url_forbidden"),
    Case("unspecified-0-0-0-0", this_machine("0.0.0.0"), "url_forbidden"),
    Case("loopback-trailing-dot", this_machine("127.0.0.1."), "url_forbidden"),
    Case("localhost-trailing-dot", this_machine("localhost."), "url_forbidden"),
    Case("localhost-upper-case", this_machine("LOCALHOST"), "url_forbidden"),
    Case("loopback-upper-case-scheme", lambda w: {"input": {"audio": w.url("jfk.flac").replace("http:", "HTTP:")}}, "url_forbidden"),
    # -- URLs nothing can parse: the job's error, naming the field, before any network work --
    Case("url-port-out-of-range", audio_url("http://example.com:99999/a.mp3"), "invalid_input"),
    Case("url-unclosed-ipv6-bracket", audio_url("http://[::1/a.mp3"), "invalid_input"),
    Case("url-space-in-host", audio_url("http://exa mple.com/a.mp3"), "invalid_input"),
    Case("url-without-host", audio_url("http:///a.mp3"), "invalid_input"),
    Case("callback-url-octal", given({"audio": URL, "callback": {"url": "http://0177.0.0.1/hook", "secret": "s" * 16}}), "invalid_input"),
    # -- an S3 endpoint the job names (s3Config.endpointUrl) on loopback, no allow switch --
    Case("s3config-loopback-endpoint-input", lambda w: {"input": {"audio": f"s3://{w.bucket}/a.mp3"}, "s3Config": w.s3_config()}, "url_forbidden"),
    Case("s3config-loopback-endpoint-output", silence_to(lambda w: f"s3://{w.bucket}/ok/", s3_config=lambda w: w.s3_config()), "url_forbidden"),
    # -- servers that answer badly --
    Case("http-404", audio_at("missing.mp3"), "fetch_failed", LOOPBACK),
    Case("http-403", audio_at("forbidden"), "fetch_failed", LOOPBACK),
    Case("http-500", audio_at("broken"), "fetch_failed", LOOPBACK),
    Case("redirect-loop", audio_at("redirect-loop"), "fetch_failed", LOOPBACK),
    Case("redirect-location-unparseable", audio_at("redirect-octal"), "fetch_failed", LOOPBACK),
    Case("never-answers", audio_at("hang"), "fetch_failed", {**LOOPBACK, "STENOPOD_FETCH_TIMEOUT_S": "0.5"}),
    Case("drips-slower-than-the-read-timeout", audio_at("drip-slow"), "fetch_failed", {**LOOPBACK, "STENOPOD_FETCH_TIMEOUT_S": "0.4"}),
    Case("drips-forever-within-the-read-timeout", audio_at("drip"), "fetch_failed", {**LOOPBACK, "STENOPOD_FETCH_TIMEOUT_S": "0.5", "STENOPOD_FETCH_DEADLINE_S": "1"}),
    Case("content-length-over-cap", audio_at("big"), "too_large", {**LOOPBACK, "STENOPOD_MAX_AUDIO_BYTES": "100000"}),
    Case("chunked-body-grows-past-cap", audio_at("chunked"), "too_large", {**LOOPBACK, "STENOPOD_MAX_AUDIO_BYTES": "100000"}),
    # -- bytes that are not (whole) audio --
    Case("truncated-to-the-header", audio_at("truncated-header.flac"), "not_audio", LOOPBACK),
    Case("truncated-mid-stream", audio_at("truncated-third.flac"), OK_PARTIAL, LOOPBACK),
    Case("corrupt-frames", audio_at("corrupt.flac"), "not_audio", LOOPBACK),
    Case("random-bytes-named-mp3", audio_at("random.mp3"), "not_audio", LOOPBACK),
    Case("html-page", audio_at("page.html"), "not_audio", LOOPBACK),
    Case("jpeg-photo", audio_at("photo.jpg"), "not_audio", LOOPBACK),
    Case("zip-named-mp3", audio_at("episode.mp3"), "not_audio", LOOPBACK),
    Case("zero-bytes", audio_at("empty.mp3"), "not_audio", LOOPBACK),
    Case("pure-silence", audio_at("silence.wav"), OK_EMPTY, LOOPBACK),
    Case("four-hours-over-the-default-cap", audio_at("four-hours-and-8s.mka"), "too_long", LOOPBACK),
    Case("four-hours-over-a-one-hour-cap", audio_at("four-hours.mka"), "too_long", {**LOOPBACK, "STENOPOD_MAX_AUDIO_SECONDS": "3600"}),
    # -- data: URIs --
    Case("data-uri-over-cap", lambda w: {"input": {"audio": _data_uri(_silence_wav(1.0))}}, "too_large", {"STENOPOD_MAX_DATA_URI_BYTES": "1000"}),
    Case("data-uri-bad-base64", audio_url("data:audio/wav;base64,!!!not-base64!!!"), "invalid_input"),
    Case("data-uri-without-payload", audio_url("data:audio/wav;base64"), "invalid_input"),
    # -- models --
    Case("unknown-model", lambda w: {"input": {"audio": _data_uri(_silence_wav(1.0)), "model": "large-v9"}}, "model_unavailable"),
    # -- object storage --
    Case("s3-audio-missing-key", lambda w: {"input": {"audio": f"s3://{w.bucket}/nope.mp3"}}, "fetch_failed"),
    Case("s3-audio-missing-bucket", audio_url("s3://no-such-bucket-catalogue/a.mp3"), "fetch_failed"),
    Case("s3-output-missing-bucket", silence_to(lambda w: "s3://no-such-bucket-catalogue/out/"), "storage_failed"),
    Case(
        "s3-output-bad-credentials",
        silence_to(lambda w: f"s3://{w.bucket}/ok/", s3_config=lambda w: w.s3_config(SECRET_FOR_BAD_CREDENTIALS)),
        "storage_failed",
        LOOPBACK,  # the job's own endpoint is moto on loopback
        iam=True,
    ),
    Case(
        "s3-output-prefix-without-write-permission",
        silence_to(lambda w: f"s3://{w.bucket}/denied/", s3_config=lambda w: w.s3_config()),
        "storage_failed",
        LOOPBACK,
        iam=True,
    ),
]  # fmt: skip


# --- content and routes ----------------------------------------------------------------------------


def _silence_wav(seconds: float, rate: int = 16_000) -> bytes:
    data = np.zeros(int(seconds * rate), dtype="<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += (
        struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data))
    )
    return header + data


def _data_uri(data: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(data).decode()


def _long_silence_mka(seconds: int) -> bytes:
    """A Matroska/FLAC file of `seconds` of silence that takes about 1 MB per hour.

    One 8-second FLAC-encoded block of silence is muxed over and over with advancing timestamps,
    so a real multi-hour file exists in a fraction of a second.
    """
    import av

    rate, block = 8000, 8
    encoder = av.CodecContext.create("flac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(
        np.zeros((1, rate * block), dtype=np.int16), format="s16", layout="mono"
    )
    frame.sample_rate, frame.pts = rate, 0
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("flac", rate=rate)
        stream.layout = "mono"
        stream.codec_context.extradata = encoder.extradata
        for index in range(seconds // block):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts = copy.dts = index * rate * block + (packet.pts or 0)
                copy.duration, copy.time_base, copy.stream = packet.duration, Fraction(1, rate), stream
                out.mux(copy)
    return buf.getvalue()


def _jpeg() -> bytes:
    """A real JPEG image, encoded by PyAV's bundled ffmpeg."""
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = 32, 32, "yuvj420p", Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, dtype=np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in [*codec.encode(frame.reformat(format="yuvj420p")), *codec.encode(None)])


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("episode.txt", "not audio " * 200)
    return buf.getvalue()


def _write_content(root: Path, data_dir: Path) -> None:
    jfk = (data_dir / "jfk.flac").read_bytes()
    rng = np.random.default_rng(6)
    corrupt = bytearray(jfk)
    corrupt[200:] = rng.integers(0, 256, len(jfk) - 200, dtype=np.uint8).tobytes()  # header kept
    files = {
        "jfk.flac": jfk,
        "truncated-header.flac": jfk[:64],
        "truncated-third.flac": jfk[: len(jfk) // 3],
        "corrupt.flac": bytes(corrupt),
        "random.mp3": rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "page.html": b"<!DOCTYPE html><html><head><title>Episode</title></head><body>moved</body></html>"
        * 30,
        "photo.jpg": _jpeg(),
        "episode.mp3": _zip(),
        "empty.mp3": b"",
        "silence.wav": _silence_wav(3.0),
        "four-hours.mka": _long_silence_mka(4 * 3600),
        "four-hours-and-8s.mka": _long_silence_mka(4 * 3600 + 8),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)


def _reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def _hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(3)  # never a status line; the worker gives up first


def _drip(interval_s: float, total_s: float) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        deadline = time.monotonic() + total_s
        try:
            while time.monotonic() < deadline:
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(interval_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker hung up, as it should
        handler.close_connection = True

    return route


def _claims_big(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(50 * 1024**3))
    handler.end_headers()
    try:
        handler.wfile.write(b"x" * 1000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def _chunked_forever(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    piece = b"y" * 16_384
    try:
        for _ in range(1000):  # 16 MB if nobody stops it
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


def _routes(server: AudioHTTPServer) -> dict[str, Route]:
    return {
        "/forbidden": _reply(403, b"no"),
        "/broken": _reply(500, b"oops"),
        "/hang": _hang,
        "/drip-slow": _drip(1.0, 3.0),
        "/drip": _drip(0.05, 4.0),
        "/big": _claims_big,
        "/chunked": _chunked_forever,
        "/redirect-metadata": _reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/redirect-ipv6-loopback": _reply(302, headers={"Location": f"http://[::1]:{server.port}/jfk.flac"}),
        "/redirect-file": _reply(302, headers={"Location": "file:///etc/passwd"}),
        "/redirect-loop": _reply(302, headers={"Location": "/redirect-loop"}),
        "/redirect-octal": _reply(302, headers={"Location": f"http://0177.0.0.1:{server.port}/jfk.flac"}),
        "/redirect-bad-port": _reply(302, headers={"Location": "http://127.0.0.1:99999/jfk.flac"}),
    }


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> EngineRegistry:
    """The real development registry (tiny.en), loaded once: every case runs on the same worker."""
    loaded = registry_from_env()
    assert loaded.available() == ["tiny.en"], loaded.available()
    loaded.load_all()
    return loaded


@pytest.fixture(scope="module")
def world(moto_s3: MotoS3, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("catalogue-content")
    _write_content(root, data_dir)
    server = AudioHTTPServer(root).start()
    server.routes.update(_routes(server))
    bucket = f"catalogue-{uuid.uuid4().hex[:10]}"
    moto_s3.client().create_bucket(Bucket=bucket)
    iam = boto3.client(
        "iam",
        endpoint_url=moto_s3.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    user = f"writer-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/denied/*"},
        ],
    }
    iam.put_user_policy(UserName=user, PolicyName="no-writes-under-denied", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    yield World(server, moto_s3, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    server.stop()


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-tmp")


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[str, str]]:
    """case name -> (code it got, the answer as JSON), filled as the table runs."""
    return {}


def outcome_of(answer: dict[str, Any]) -> str:
    """The case's result in the table's terms: the first item's error code, ok-empty or ok."""
    if "error" in answer:
        return JobError.from_runpod_error(answer["error"]).code.value
    item = answer["items"][0]
    if item["status"] == "error":
        return item["error"]["code"]
    return OK_EMPTY if not item["text"] else OK_PARTIAL


# --- the table -----------------------------------------------------------------------------------------


def test_the_catalogue_has_at_least_40_distinct_cases() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 40
    assert {case.expect for case in CASES} - {OK_EMPTY, OK_PARTIAL} <= {code.value for code in ErrorCode}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(
    case: Case,
    registry: EngineRegistry,
    world: World,
    worker_tmp: Path,
    outcomes: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from moto.core.authorization import enable_iam_authentication

    for name in ("STENOPOD_ALLOW_PRIVATE_URLS", "STENOPOD_ALLOW_LOCAL_OUTPUT", "STENOPOD_MAX_AUDIO_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "STENOPOD_TMP_DIR": str(worker_tmp),
        "STENOPOD_FETCH_RETRIES": "0",
        "STENOPOD_FETCH_BACKOFF_S": "0.01",
        "STENOPOD_FETCH_TIMEOUT_S": "5",
        "S3_ENDPOINT_URL": world.moto.endpoint_url,
        **case.env,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if case.policy_double:
        # TEST DOUBLE of the address policy: no public host is reachable from a test, so it plays
        # "127.0.0.1 is public" for the first hop; every other address keeps the real verdict.
        real_policy = netguard.is_forbidden_address
        monkeypatch.setattr(
            netguard,
            "is_forbidden_address",
            lambda address: str(address) != "127.0.0.1" and real_policy(address),
        )
    job = {"id": f"catalogue-{case.name}", **case.job(world)}
    started = time.monotonic()
    if case.iam:
        with enable_iam_authentication():
            answer = asyncio.run(run_job(job, registry))
    else:
        answer = asyncio.run(run_job(job, registry))
    elapsed = time.monotonic() - started
    text = json.dumps(answer)
    got = outcome_of(answer)
    outcomes[case.name] = (got, text)
    assert got == case.expect, text[:2000]
    assert "Traceback" not in text
    tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert not tracebacks, f"the worker logged a traceback: {tracebacks}"
    assert SECRET_FOR_BAD_CREDENTIALS not in text and world.writer_secret not in text
    if got == "invalid_input":
        error = JobError.from_runpod_error(answer["error"])
        # Refused by the schema: the field's path; refused while fetching (data: URIs): "audio:".
        assert error.fields or "audio:" in error.message, "an invalid_input answer names the field"
    assert elapsed < 60, f"{case.name} took {elapsed:.1f} s: the worker must not hang"
    assert list(worker_tmp.iterdir()) == [], "temp files left behind"


def test_after_the_table_the_same_worker_still_transcribes(
    registry: EngineRegistry,
    world: World,
    worker_tmp: Path,
    outcomes: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if len(outcomes) != len(CASES):
        pytest.skip("runs after the whole table (run the module, not a selection)")
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(worker_tmp))
    answer = asyncio.run(run_job({"id": "after", "input": {"audio": world.url("jfk.flac")}}, registry))
    (item,) = answer["items"]
    assert item["status"] == "ok"
    assert "ask not what your country can do for you" in item["text"].lower()
    assert list(worker_tmp.iterdir()) == []
    assert not any("Traceback" in text for _, text in outcomes.values())
    # Refused ids never became object keys: nothing was written anywhere in the bucket.
    listing = world.moto.client().list_objects_v2(Bucket=world.bucket)
    assert listing.get("KeyCount", 0) == 0, [entry["Key"] for entry in listing.get("Contents", [])]
    by_code: dict[str, int] = {}
    for got, _ in outcomes.values():
        by_code[got] = by_code.get(got, 0) + 1
    record(
        "catalogue",
        {
            "cases": len(CASES),
            "passed": sum(1 for case in CASES if outcomes[case.name][0] == case.expect),
            "by_code": dict(sorted(by_code.items())),
            "cases_by_name": {case.name: case.expect for case in CASES},
        },
    )
    print(f"bad-input catalogue: {len(CASES)} cases, by code: {by_code}")


def test_a_refused_local_output_names_the_switch_that_allows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same refusal answers `python -m handler --test_input` (RunPod's local test mode is left
    # refusing, so it shows what the job would get on RunPod): the message says how to allow it.
    monkeypatch.delenv("STENOPOD_ALLOW_LOCAL_OUTPUT", raising=False)
    job = {"id": "local-output", "input": {"audio": URL, "output": "/tmp/transcripts"}}
    answer = asyncio.run(run_job(job, EngineRegistry([])))
    error = JobError.from_runpod_error(answer["error"])
    assert error.code == ErrorCode.invalid_input and error.fields == ["input.output"]
    assert "STENOPOD_ALLOW_LOCAL_OUTPUT=1" in error.message
