"""One job end to end through run_job: the core flow (batches, overlapping engine calls, timestamps,
progress) with the test-double engine, and the real tiny.en model for real speech; real HTTP and S3
servers on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from handler.job import run_job
from tests.handler.job_doubles import (
    SlowOneAtATimeTestEngine,
    TestDoubleRegistry,
    data_uri,
    run,
    wav_uri,
)
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.usefixtures("job_env")


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
