"""The bad-input catalogue's table (CASES): each row a hostile or broken job, the environment it runs
under and the code it must get. tests/reliability/test_bad_input_catalogue.py runs every row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.catalogue_content import data_uri, silence_wav
from tests.support.servers import AudioHTTPServer, MotoS3

OK_EMPTY = "ok-empty"  # the item succeeds with an empty transcript
OK_PARTIAL = "ok"  # the item succeeds (a truncated file transcribes what survived)
SECRET_FOR_BAD_CREDENTIALS = "catalogue-wrong-secret-9f3b"


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
            "input": {"audio": data_uri(silence_wav(1.0)), "id": "quiet", "output": output(world)}
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
    Case("data-uri-over-cap", lambda w: {"input": {"audio": data_uri(silence_wav(1.0))}}, "too_large", {"STENOPOD_MAX_DATA_URI_BYTES": "1000"}),
    Case("data-uri-bad-base64", audio_url("data:audio/wav;base64,!!!not-base64!!!"), "invalid_input"),
    Case("data-uri-without-payload", audio_url("data:audio/wav;base64"), "invalid_input"),
    # -- models --
    Case("unknown-model", lambda w: {"input": {"audio": data_uri(silence_wav(1.0)), "model": "large-v9"}}, "model_unavailable"),
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
