"""One job end to end through run_job: real HTTP and S3 servers on loopback, a test-double engine
for the pipeline's logic, and the real tiny.en model for real speech."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stenopod.schema import ErrorCode, JobError
from stenopod.signing import verify

from handler.chunking import DEFAULT_MAX_CHUNK_S
from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    EngineError,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)
from handler.engines.registry import ModelUnavailable
from handler.job import run_job
from tests.support.servers import AudioHTTPServer, MotoS3, free_port

CALLBACK_SECRET = "cb-secret-4f1d9a7c2b6e8d03"
POISON_SAMPLES = 12_345  # the test-double engine fails any batch holding audio of exactly this length


class TestDoubleEngine(Engine):
    """TEST DOUBLE: a fake engine that 'transcribes' by describing the audio's length.

    It records every batch it is given, and can be told to fail like a real engine would.
    """

    __test__ = False
    model_id = "test-double"
    engine_name = "test-double"
    device = "cpu"

    def __init__(self, failure: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.failure = failure

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        self.batches.append([audio.size for audio in audios])
        if self.failure is not None:
            raise self.failure
        if any(audio.size == POISON_SAMPLES for audio in audios):
            raise EngineError("cannot transcribe this batch")
        out = []
        for audio, setting in zip(
            audios, per_audio_options(len(audios), language, word_timestamps, options), strict=True
        ):
            seconds = audio.size / SAMPLE_RATE
            words = [WordTiming(0.0, seconds / 2, " heard"), WordTiming(seconds / 2, seconds, " audio")]
            segment = SegmentTiming(0.0, seconds, " heard audio", words if setting.word_timestamps else [])
            out.append(Transcript(text=" heard audio", segments=[segment], language=setting.language or "en"))
        return out


class TestDoubleRegistry:
    """TEST DOUBLE of EngineRegistry: serves one TestDoubleEngine."""

    __test__ = False

    def __init__(self, engine: TestDoubleEngine | None = None) -> None:
        self.engine = engine or TestDoubleEngine()

    def available(self) -> list[str]:
        return [self.engine.model_id]

    def default_model(self) -> str:
        return self.engine.model_id

    def get(self, model_id: str | None) -> Engine:
        if model_id not in (None, self.engine.model_id):
            raise ModelUnavailable(model_id, self.available())
        return self.engine


def run(job_input: Any, registry: Any = None, **job: Any) -> dict[str, Any]:
    return asyncio.run(run_job({"id": "job-1", "input": job_input, **job}, registry or TestDoubleRegistry()))


def job_error(answer: dict[str, Any]) -> JobError:
    assert set(answer) <= {"error", "refresh_worker"}, answer
    return JobError.from_runpod_error(answer["error"])


def data_uri(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def wav_uri(samples: int, sample: bytes = b"\x00\x01") -> str:
    """wav_of(samples, sample) as a data: URI, inline in the job input."""
    return "data:audio/wav;base64," + base64.b64encode(wav_of(samples, sample)).decode()


def wav_of(samples: int, sample: bytes = b"\x00\x01") -> bytes:
    """A 16 kHz mono 16-bit WAV of `samples` copies of one sample (b"\\0\\0": digital silence)."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(sample * samples)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def job_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Loopback fetches allowed, fast retries, and a temp root the tests can inspect."""
    tmp_root = tmp_path / "worker-tmp"
    tmp_root.mkdir()
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_FETCH_BACKOFF_S", "0.01")
    monkeypatch.setenv("STENOPOD_CALLBACK_BACKOFF_S", "0.01")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(tmp_root))
    for name in ("STENOPOD_ALLOW_LOCAL_OUTPUT", "STENOPOD_MAX_INLINE_BYTES", "STENOPOD_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_root


# --- success -------------------------------------------------------------------------------------


def test_single_audio_inline(data_dir: Path, job_env: Path) -> None:
    answer = run({"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")})
    assert answer["model"] == "test-double"
    assert answer["worker"]["engine"] == "test-double"
    (item,) = answer["items"]
    assert item["status"] == "ok" and item["error"] is None
    assert item["id"] == "audio" and item["text"] == "heard audio"
    assert item["duration_s"] == pytest.approx(3.275, abs=0.01)
    assert item["segments"][0]["end"] == pytest.approx(3.275, abs=0.01)
    assert item["segments"][0]["words"] is None
    assert item["outputs"] == {}
    assert set(item["timings"]) == {"fetch_s", "decode_s", "plan_s", "inference_s", "diarize_s", "write_s"}
    assert item["rtfx"] is None or item["rtfx"] > 0
    assert list(job_env.iterdir()) == []  # temp files gone


def test_items_are_transcribed_in_batches(
    audio_server: AudioHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STENOPOD_BATCH_SIZE", "2")
    registry = TestDoubleRegistry()
    names = ["jfk.flac", "hotwords.mp3", "librispeech_1089-134686-0001.wav"]
    answer = run(
        {"items": [{"id": f"i{n}", "audio": audio_server.url(name)} for n, name in enumerate(names)]},
        registry,
    )
    assert [item["id"] for item in answer["items"]] == ["i0", "i1", "i2"]
    assert all(item["status"] == "ok" for item in answer["items"])
    # Never more than the batch size; the first call takes whatever is ready (the engine is idle).
    sizes = [len(batch) for batch in registry.engine.batches]
    assert sum(sizes) == 3 and max(sizes) <= 2
    assert [item["duration_s"] for item in answer["items"]] == pytest.approx([11.0, 4.0, 3.275], abs=0.05)


class SlowOneAtATimeTestEngine(TestDoubleEngine):
    """TEST DOUBLE: one audio per call, each call taking a while; records how many ran at once."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_items=1, max_audio_s=3600.0)

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.4)
            return super().transcribe(audios, language, word_timestamps, options)
        finally:
            with self.lock:
                self.running -= 1


def test_engine_calls_overlap_two_at_a_time_and_answers_keep_job_order(data_dir: Path) -> None:
    engine = SlowOneAtATimeTestEngine()
    audio = data_uri(data_dir / "librispeech_1089-134686-0001.wav")
    answer = run({"items": [{"id": f"i{n}", "audio": audio} for n in range(5)]}, TestDoubleRegistry(engine))

    assert [item["id"] for item in answer["items"]] == [f"i{n}" for n in range(5)]
    assert all(item["status"] == "ok" and item["text"] == "heard audio" for item in answer["items"])
    assert [len(batch) for batch in engine.batches] == [1] * 5
    # The next call starts while one is still running, never more than two at once.
    assert engine.most_at_once == 2
    worker = answer["worker"]
    # Busy time is the union of the calls, not their sum (5 x 0.4 s, two at a time).
    assert worker["engine_busy_s"] < 5 * 0.4


def test_word_and_no_timestamps(data_dir: Path) -> None:
    audio = data_uri(data_dir / "librispeech_1089-134686-0001.wav")
    words = run({"audio": audio, "timestamps": "word"})["items"][0]
    assert [w["word"] for w in words["segments"][0]["words"]] == ["heard", "audio"]
    none = run({"audio": audio, "timestamps": "none"})["items"][0]
    assert none["segments"] is None and none["text"] == "heard audio"


def test_empty_audio_is_an_empty_transcript_not_an_engine_call(tmp_path: Path) -> None:
    registry = TestDoubleRegistry()
    uri = wav_uri(0)
    (item,) = run({"audio": uri}, registry)["items"]
    assert item["status"] == "ok" and item["text"] == "" and item["segments"] == []
    assert registry.engine.batches == []


def test_progress_is_reported_after_each_stage(data_dir: Path) -> None:
    seen: list[dict[str, Any]] = []
    job = {"id": "job-1", "input": {"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")}}
    answer = asyncio.run(run_job(job, TestDoubleRegistry(), progress=seen.append))
    assert [p["stage"] for p in seen] == ["fetched", "decoded", "transcribed"]
    assert all(p["item"] == "audio" and p["total"] == 1 for p in seen)
    # The audio transcribed so far, which a client's progress line counts before the job ends.
    assert [p["audio_done_s"] for p in seen][:2] == [0.0, 0.0]
    assert seen[-1]["audio_done_s"] == pytest.approx(answer["items"][0]["duration_s"], abs=0.01)


def test_a_failing_progress_callback_never_fails_the_job(data_dir: Path) -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("progress endpoint down")

    job = {"id": "job-1", "input": {"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")}}
    answer = asyncio.run(run_job(job, TestDoubleRegistry(), progress=broken))
    assert answer["items"][0]["status"] == "ok"


# --- outputs -------------------------------------------------------------------------------------


def test_s3_output_writes_every_format(
    audio_server: AudioHTTPServer, moto_s3: MotoS3, s3_bucket: str, s3_env: str, job_env: Path
) -> None:
    answer = run({"audio": audio_server.url("jfk.flac"), "output": f"s3://{s3_bucket}/run1/"})
    (item,) = answer["items"]
    assert item["id"] == "jfk" and item["status"] == "ok"
    keys = sorted(o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["run1/jfk.json", "run1/jfk.srt", "run1/jfk.txt", "run1/jfk.vtt"]
    assert item["outputs"] == {
        fmt: f"s3://{s3_bucket}/run1/jfk.{fmt}" for fmt in ("json", "txt", "srt", "vtt")
    }
    vtt = moto_s3.client().get_object(Bucket=s3_bucket, Key="run1/jfk.vtt")["Body"].read().decode()
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:11.000\nheard audio")
    body = json.loads(moto_s3.client().get_object(Bucket=s3_bucket, Key="run1/jfk.json")["Body"].read())
    assert body["text"] == "heard audio" and body["duration"] == pytest.approx(11.0, abs=0.05)
    assert list(job_env.iterdir()) == []


def test_s3_output_with_runpod_s3config(
    data_dir: Path, moto_s3: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)  # only the job's s3Config points at the store
    s3_config = {"accessId": "testing", "accessSecret": "testing", "endpointUrl": moto_s3.endpoint_url}
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "id": "ls",
        "formats": ["txt"],
    }
    answer = run({**job_input, "output": f"s3://{s3_bucket}/p"}, s3Config=s3_config)
    assert answer["items"][0]["outputs"] == {"txt": f"s3://{s3_bucket}/p/ls.txt"}
    assert moto_s3.client().get_object(Bucket=s3_bucket, Key="p/ls.txt")["Body"].read() == b"heard audio\n"


def test_storage_failed_for_a_missing_bucket(
    data_dir: Path, moto_s3: MotoS3, s3_env: str, job_env: Path
) -> None:
    answer = run(
        {"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"), "output": "s3://no-such-bucket/x/"}
    )
    error = job_error(answer)
    assert error.code == ErrorCode.storage_failed
    assert error.items and error.items[0].error and error.items[0].error.code == ErrorCode.storage_failed
    assert "testing" not in answer["error"]
    assert list(job_env.iterdir()) == []


def test_local_output_only_in_local_mode(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "id": "ls",
        "output": str(tmp_path / "out"),
    }
    refused = job_error(run(job_input))
    assert refused.code == ErrorCode.invalid_input and refused.fields == ["input.output"]

    monkeypatch.setenv("STENOPOD_ALLOW_LOCAL_OUTPUT", "1")
    (item,) = run(job_input)["items"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ls.json", "ls.srt", "ls.txt", "ls.vtt"]
    assert item["outputs"]["srt"] == (tmp_path / "out" / "ls.srt").as_uri()
    (again,) = run({**job_input, "output": (tmp_path / "out2").as_uri()})["items"]
    assert again["status"] == "ok" and (tmp_path / "out2" / "ls.txt").read_text() == "heard audio\n"


def test_output_too_large_inline(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STENOPOD_MAX_INLINE_BYTES", "300")
    error = job_error(run({"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")}))
    assert error.code == ErrorCode.output_too_large
    assert '"output"' in error.message


# --- errors per item -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route_status", "code"),
    [("missing.flac", None, ErrorCode.fetch_failed), ("broken", 500, ErrorCode.fetch_failed)],
)
def test_fetch_failed(
    audio_server: AudioHTTPServer, job_env: Path, path: str, route_status: int | None, code: ErrorCode
) -> None:
    if route_status is not None:
        audio_server.routes[f"/{path}"] = _status_route(route_status)
    error = job_error(run({"audio": audio_server.url(path)}))
    assert error.code == code
    assert list(job_env.iterdir()) == []


def _status_route(status: int):
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def test_one_failed_item_does_not_fail_the_others(audio_server: AudioHTTPServer) -> None:
    answer = run(
        {
            "items": [
                {"id": "good", "audio": audio_server.url("jfk.flac")},
                {"id": "bad", "audio": audio_server.url("missing.flac")},
            ]
        }
    )
    good, bad = answer["items"]
    assert good["status"] == "ok" and good["text"] == "heard audio"
    assert bad["status"] == "error" and bad["error"]["code"] == "fetch_failed"
    assert "404" in bad["error"]["message"]


def test_url_forbidden_without_the_switch(
    audio_server: AudioHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STENOPOD_ALLOW_PRIVATE_URLS")
    assert job_error(run({"audio": audio_server.url("jfk.flac")})).code == ErrorCode.url_forbidden
    assert audio_server.requests == []


def test_too_large_and_too_long_from_env(
    audio_server: AudioHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STENOPOD_MAX_AUDIO_BYTES", "1000")
    assert job_error(run({"audio": audio_server.url("jfk.flac")})).code == ErrorCode.too_large
    monkeypatch.delenv("STENOPOD_MAX_AUDIO_BYTES")
    monkeypatch.setenv("STENOPOD_MAX_AUDIO_SECONDS", "5")
    assert job_error(run({"audio": audio_server.url("jfk.flac")})).code == ErrorCode.too_long


def test_too_large_data_uri(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("STENOPOD_MAX_DATA_URI_BYTES", "1000")
    assert job_error(run({"audio": data_uri(data_dir / "jfk.flac")})).code == ErrorCode.too_large


def test_not_audio(audio_server: AudioHTTPServer, job_env: Path) -> None:
    page = b"<html><body>Sign in to continue</body></html>" * 50

    def html(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(page)))
        handler.end_headers()
        handler.wfile.write(page)

    audio_server.routes["/episode.mp3"] = html
    audio_server.routes["/empty.mp3"] = _status_route(200)
    for path in ("episode.mp3", "empty.mp3"):
        assert job_error(run({"audio": audio_server.url(path)})).code == ErrorCode.not_audio
    assert list(job_env.iterdir()) == []


def test_model_unavailable_lists_the_available_models(data_dir: Path) -> None:
    registry = TestDoubleRegistry()
    error = job_error(run({"audio": data_uri(data_dir / "jfk.flac"), "model": "whisper-huge"}, registry))
    assert error.code == ErrorCode.model_unavailable
    assert error.items and error.items[0].error
    assert "whisper-huge" in error.items[0].error.message and "test-double" in error.items[0].error.message
    assert registry.engine.batches == []


class SlowFirstCallTestEngine(TestDoubleEngine):
    """TEST DOUBLE: the first call takes 1 s, so the items after it are ready as one batch."""

    __test__ = False

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        if not self.batches:
            time.sleep(1.0)
        return super().transcribe(audios, language, word_timestamps, options)


def test_inference_failure_is_isolated_to_the_bad_item(monkeypatch: pytest.MonkeyPatch) -> None:
    # One item prepared at a time, in order: the first call takes "a" alone (and takes 1 s), the
    # next takes the three others, the poisoned one among them, in one batch.
    monkeypatch.setenv("STENOPOD_DECODE_PROCESSES", "0")
    monkeypatch.setenv("STENOPOD_FETCH_CONCURRENCY", "1")
    registry = TestDoubleRegistry(SlowFirstCallTestEngine())
    good = wav_uri(16_000)
    poison = wav_uri(POISON_SAMPLES)
    items = [{"id": "a", "audio": good}, {"id": "b", "audio": poison}, {"id": "c", "audio": good}]
    answer = run({"items": [*items, {"id": "d", "audio": good}]}, registry)
    assert [i["status"] for i in answer["items"]] == ["ok", "error", "ok", "ok"]
    assert answer["items"][1]["error"]["code"] == "inference_failed"
    # The poisoned batch failed whole, then each of its items was tried alone.
    batches = registry.engine.batches
    poisoned = [batch for batch in batches if POISON_SAMPLES in batch]
    assert len(poisoned[0]) > 1 and poisoned[-1] == [POISON_SAMPLES], batches
    assert (
        sum(batch.count(16_000) for batch in batches[batches.index(poisoned[0]) + 1 :])
        >= len(poisoned[0]) - 1
    )


def test_gpu_failure_asks_runpod_for_a_new_worker(data_dir: Path) -> None:
    registry = TestDoubleRegistry(
        TestDoubleEngine(EngineError("CUDA error: an illegal memory access", gpu_failed=True))
    )
    answer = run({"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")}, registry)
    assert answer["refresh_worker"] is True
    assert job_error(answer).code == ErrorCode.gpu_failed


def test_unexpected_engine_exception_is_internal_error_without_traceback(data_dir: Path) -> None:
    registry = TestDoubleRegistry(TestDoubleEngine(ZeroDivisionError("secret internals")))
    answer = run({"audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav")}, registry)
    error = job_error(answer)
    assert error.code == ErrorCode.internal_error
    assert "Traceback" not in answer["error"] and "secret internals" not in answer["error"]


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        (None, "input"),
        ("https://example.com/a.mp3", "input"),
        ({}, "input"),
        ({"audio": "https://a/b.mp3", "items": [{"id": "x", "audio": "https://a/c.mp3"}]}, "input"),
        ({"audio": "https://a/b.mp3", "speed": 2}, "input.speed"),
        ({"audio": "ftp://a/b.mp3"}, "input.audio"),
        ({"audio": "https://a/b.mp3", "formats": ["docx"]}, "input.formats.0"),
        ({"audio": "https://a/b.mp3", "timestamps": "char"}, "input.timestamps"),
        ({"items": [{"id": "../etc", "audio": "https://a/b.mp3"}]}, "input.items.0.id"),
        (
            {"audio": "https://a/b.mp3", "callback": {"url": "https://x", "secret": "short"}},
            "input.callback.secret",
        ),
        ({"audio": "https://a/b.mp3", "output": "gs://bucket/x/"}, "input.output"),
    ],
)
def test_invalid_input_is_refused_before_any_work(job_input: Any, field: str) -> None:
    registry = TestDoubleRegistry()
    answer = run(job_input, registry)
    error = job_error(answer)
    assert error.code == ErrorCode.invalid_input
    assert field in (error.fields or []), error
    assert registry.engine.batches == []
    assert "short" not in answer["error"]  # the secret's value is never echoed


# --- callbacks -------------------------------------------------------------------------------------


class CallbackReceiver:
    """A real HTTP server on loopback recording the POSTs it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.stop()


def test_callback_posts_each_item_signed(receiver: CallbackReceiver, audio_server: AudioHTTPServer) -> None:
    job_input = {
        "items": [
            {"id": "good", "audio": audio_server.url("jfk.flac")},
            {"id": "bad", "audio": audio_server.url("missing.flac")},
        ],
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    answer = run(job_input)
    assert [i["status"] for i in answer["items"]] == ["ok", "error"]
    assert answer["items"][0]["error"] is None
    assert len(receiver.posts) == 2
    # Each item's callback goes as it finishes: in any order.
    by_id = {item["id"]: item for item in answer["items"]}
    for headers, body in receiver.posts:
        expected = by_id.pop(json.loads(body)["id"])
        assert verify(CALLBACK_SECRET, headers, body)
        assert headers["X-Stenopod-Job-Id"] == "job-1"
        posted = json.loads(body)
        assert posted["id"] == expected["id"] and posted["status"] == expected["status"]
    assert CALLBACK_SECRET not in json.dumps(answer)
    assert all(CALLBACK_SECRET.encode() not in body for _, body in receiver.posts)


def test_failed_callback_leaves_the_item_ok(receiver: CallbackReceiver, data_dir: Path) -> None:
    receiver.status = 500
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    (item,) = run(job_input)["items"]
    assert item["status"] == "ok" and item["text"] == "heard audio"
    assert item["error"]["code"] == "callback_failed"
    assert "token=abc" not in item["error"]["message"]  # query strings never shown
    assert len(receiver.posts) == 3  # first try and two retries


def test_callback_goes_through_the_ssrf_guard(
    receiver: CallbackReceiver, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STENOPOD_ALLOW_PRIVATE_URLS")
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    (item,) = run(job_input)["items"]
    assert item["status"] == "ok" and item["error"]["code"] == "callback_failed"
    assert receiver.posts == []


# --- the real model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en_registry():
    from handler.engines.registry import registry_from_env

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STENOPOD_MODELS_DIR", raising=False)
        patch.delenv("STENOPOD_MODELS", raising=False)
        patch.delenv("STENOPOD_DEFAULT_MODEL", raising=False)
        registry = registry_from_env()
    registry.get("tiny.en")
    return registry


def test_real_tiny_en_transcribes_jfk_to_s3(
    tiny_en_registry: Any,
    audio_server: AudioHTTPServer,
    moto_s3: MotoS3,
    s3_bucket: str,
    s3_env: str,
    job_env: Path,
) -> None:
    job_input = {
        "items": [
            {"id": "jfk", "audio": audio_server.url("jfk.flac")},
            {"id": "ls", "audio": audio_server.url("librispeech_1089-134686-0001.wav")},
        ],
        "model": "tiny.en",
        "timestamps": "word",
        "output": f"s3://{s3_bucket}/real/",
    }
    answer = run(job_input, tiny_en_registry)
    jfk, ls = answer["items"]
    assert answer["model"] == "tiny.en"
    assert jfk["status"] == "ok", jfk
    assert "ask not what your country can do for you" in jfk["text"].lower()
    assert "belly" in ls["text"].lower()
    words = [w for seg in jfk["segments"] for w in seg["words"]]
    assert words and all(0 <= w["start"] <= w["end"] <= 11.05 for w in words)
    assert jfk["rtfx"] > 0 and jfk["timings"]["inference_s"] > 0
    srt = moto_s3.client().get_object(Bucket=s3_bucket, Key="real/jfk.srt")["Body"].read().decode()
    assert srt.startswith("1\n00:00:0") and "country" in srt.lower()
    assert list(job_env.iterdir()) == []


def test_a_bug_becomes_internal_error_not_a_traceback(data_dir: Path) -> None:
    class BrokenTestDoubleRegistry(TestDoubleRegistry):
        def get(self, model_id: str | None) -> Engine:
            raise KeyError("registry bug")

    answer = run({"audio": data_uri(data_dir / "jfk.flac")}, BrokenTestDoubleRegistry())
    assert job_error(answer).code == ErrorCode.internal_error
    assert "Traceback" not in answer["error"] and "registry bug" not in answer["error"]


def test_a_resubmitted_token_is_answered_with_duplicate_of(
    data_dir: Path, moto_s3: MotoS3, s3_bucket: str, s3_env: str
) -> None:
    registry = TestDoubleRegistry()
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "id": "ls",
        "output": f"s3://{s3_bucket}/sub/",
        "submission": "token-1",
    }
    first = asyncio.run(run_job({"id": "job-A", "input": job_input}, registry))
    assert first["items"][0]["status"] == "ok" and first["duplicate_of"] is None
    second = asyncio.run(run_job({"id": "job-B", "input": job_input}, registry))
    assert second["duplicate_of"] == "job-A" and second["items"] == []
    assert len(registry.engine.batches) == 1  # transcribed once

    record = json.loads(
        moto_s3.client()
        .get_object(Bucket=s3_bucket, Key="sub/_stenopod/submissions/token-1.json")["Body"]
        .read()
    )
    assert record["job_id"] == "job-A" and record["state"] == "done"
    assert record["items"][0]["outputs"]["txt"] == f"s3://{s3_bucket}/sub/ls.txt"
    assert "text" not in record["items"][0]
    # RunPod retrying the same job goes ahead.
    again = asyncio.run(run_job({"id": "job-A", "input": job_input}, registry))
    assert again["items"][0]["status"] == "ok" and len(registry.engine.batches) == 2


def test_long_audio_reaches_the_engine_in_chunks(audio_server: AudioHTTPServer) -> None:
    registry = TestDoubleRegistry()
    (item,) = run({"audio": audio_server.url("multilingual.mp3")}, registry)["items"]
    assert item["status"] == "ok" and item["duration_s"] == pytest.approx(59.9, abs=0.1)
    chunks = [size for batch in registry.engine.batches for size in batch]
    assert len(chunks) > 1 and max(chunks) <= DEFAULT_MAX_CHUNK_S * SAMPLE_RATE
    ends = [segment["end"] for segment in item["segments"]]
    assert ends == sorted(ends) and ends[-1] <= 60.0


# --- chunks are planned while the audio is prepared ---------------------------------------------


def test_long_audio_is_planned_in_preparation_not_in_the_engine_call(
    audio_server: AudioHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine call gets its chunks ready-made: planning inside the call would leave a GPU
    waiting for the VAD."""
    import handler.longform

    def no_planning_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("planned inside the engine call")

    monkeypatch.setattr(handler.longform, "plan_audio", no_planning_here)
    engine = TestDoubleEngine()
    engine.max_chunk_s = 10.0  # type: ignore[attr-defined]
    answer = run({"audio": audio_server.url("multilingual.mp3")}, TestDoubleRegistry(engine))
    (item,) = answer["items"]
    assert item["status"] == "ok", item
    assert item["timings"]["plan_s"] > 0
    assert len(engine.batches[0]) > 1
    assert all(size <= 10 * SAMPLE_RATE for batch in engine.batches for size in batch)


def test_two_jobs_at_once_share_the_engines_call_slots(data_dir: Path) -> None:
    """Jobs a worker runs side by side take turns at the engine: at most two calls in flight in
    all, and a job's wait for the other job's calls is not counted as waiting for input."""
    engine = SlowOneAtATimeTestEngine()  # one audio per call, 0.4 s each
    registry = TestDoubleRegistry(engine)
    audio = data_uri(data_dir / "librispeech_1089-134686-0001.wav")

    def job(name: str) -> dict[str, Any]:
        return {
            "id": f"job-{name}",
            "input": {"items": [{"id": f"{name}{n}", "audio": audio} for n in range(2)]},
        }

    async def both() -> list[dict[str, Any]]:
        first = asyncio.ensure_future(run_job(job("a"), registry))
        await asyncio.sleep(0.1)  # job a's two calls hold both slots by now
        second = await run_job(job("b"), registry)
        return [await first, second]

    answers = asyncio.run(both())
    assert all(item["status"] == "ok" for answer in answers for item in answer["items"])
    assert len(engine.batches) == 4
    assert engine.most_at_once == 2  # not four: the slots are shared by the two jobs
    # Job b had its audio (data: URIs: milliseconds) long before a slot freed up (0.3 s later):
    # that wait was the engine busy with job a, not input.
    worker_b = answers[1]["worker"]
    assert worker_b["first_input_s"] < 0.2, worker_b
    assert worker_b["critical_io_s"] < 0.2, worker_b


def test_engine_clock_counts_input_only_until_a_call_was_ready() -> None:
    from handler.engine_clock import EngineClock

    clock = EngineClock()
    start = clock.started_at
    time.sleep(0.05)
    ready = time.perf_counter()
    time.sleep(0.1)  # the engine was busy with another job's calls
    clock.call_started(ready_at=ready)
    clock.call_finished()
    assert clock.first_input_s == pytest.approx(ready - start, abs=1e-6)
    time.sleep(0.05)
    clock.call_started()  # ready and started at once: all of the gap was waiting for input
    clock.call_finished()
    assert 0.05 <= clock.wait_s < 0.5
