"""run_job's outputs: transcripts written to S3 (the worker's credentials or the job's s3Config), to
a local folder in local mode, or inline; and submission tokens that answer a resubmitted job with
duplicate_of instead of transcribing it again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from stenopod.schema import ErrorCode

from handler.job import run_job
from tests.handler.job_doubles import TestDoubleRegistry, data_uri, job_error, run
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.usefixtures("job_env")


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
