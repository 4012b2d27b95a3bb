"""run_job's failures: each per-item and per-job error code, isolated to the item it belongs to, and
never a traceback; the test-double engine fails like a real one would."""

from __future__ import annotations

import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stenopod.schema import ErrorCode

from handler.engines.base import DecodeOptions, Engine, EngineError, Transcript
from tests.handler.job_doubles import (
    POISON_SAMPLES,
    TestDoubleEngine,
    TestDoubleRegistry,
    data_uri,
    job_error,
    run,
    wav_uri,
)
from tests.support.servers import AudioHTTPServer

pytestmark = pytest.mark.usefixtures("job_env")


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


def test_a_bug_becomes_internal_error_not_a_traceback(data_dir: Path) -> None:
    class BrokenTestDoubleRegistry(TestDoubleRegistry):
        def get(self, model_id: str | None) -> Engine:
            raise KeyError("registry bug")

    answer = run({"audio": data_uri(data_dir / "jfk.flac")}, BrokenTestDoubleRegistry())
    assert job_error(answer).code == ErrorCode.internal_error
    assert "Traceback" not in answer["error"] and "registry bug" not in answer["error"]
