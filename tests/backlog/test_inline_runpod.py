"""RunPod without a bucket: `stenopod transcribe FILES --endpoint ID --output ./folder`.

Against a TEST DOUBLE of a RunPod endpoint (RunPod's cloud cannot run here). Its output_for plays
the worker answering inline: it decodes each item's data: URI and answers a transcript naming the
bytes' SHA-256, so a file that reads right proves the audio arrived intact and its transcript came
back to the right place.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stenopod.backlog.inline_payload import RUN_PAYLOAD_BYTES, inline_file_mb
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.backlog.sources import expand_sources
from stenopod.cli import main

from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)

FORMATS = ("json", "txt", "srt", "vtt")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _inline_worker(fail_first: set[str] | None = None):
    """What a worker without an output answers: each item's text and segments, in the answer."""
    failing = set(fail_first or ())

    def output_for(job_input: dict[str, Any]) -> dict[str, Any]:
        assert "output" not in job_input  # no bucket: nothing may be written on the worker's side
        items = []
        for item in job_input["items"]:
            header, _, payload = item["audio"].partition(",")
            assert header.startswith("data:") and header.endswith(";base64")
            digest = _sha(base64.b64decode(payload))
            if digest in failing:
                failing.discard(digest)
                error = {"code": "inference_failed", "message": "the engine raised"}
                items.append({"id": item["id"], "status": "error", "error": error})
                continue
            segments = [
                {"id": 0, "start": 0.0, "end": 1.5, "text": "ask not", "words": None},
                {"id": 1, "start": 1.5, "end": 3.25, "text": f"audio {digest}", "words": None},
            ]
            text = f"ask not audio {digest}"
            items.append(
                {"id": item["id"], "status": "ok", "model": "double", "language": "en", "duration_s": 3.25}
                | {"text": text, "segments": segments, "outputs": {}}
            )
        return {"items": items, "model": "double"}

    return output_for


def _options(sources: list[str], output: Path, **extra: Any) -> BacklogOptions:
    return BacklogOptions(
        sources=sources,
        output=str(output),
        endpoint="test-endpoint",
        formats=FORMATS,
        poll_initial_s=0.02,
        poll_max_s=0.1,
        price_per_s=0.001,
        **extra,
    )


def _run(options: BacklogOptions, state: Path):
    return asyncio.run(BacklogRunner(options, state=state).run())


def _check_files(output: Path, item_id: str, source: Path) -> None:
    digest = _sha(source.read_bytes())
    assert (output / f"{item_id}.txt").read_text() == f"ask not audio {digest}\n"
    document = json.loads((output / f"{item_id}.json").read_text())
    assert document["text"] == f"ask not audio {digest}" and document["duration"] == 3.25
    assert [segment["end"] for segment in document["segments"]] == [1.5, 3.25]
    srt = (output / f"{item_id}.srt").read_text()
    assert (
        srt
        == f"1\n00:00:00,000 --> 00:00:01,500\nask not\n\n2\n00:00:01,500 --> 00:00:03,250\naudio {digest}\n"
    )
    assert (
        (output / f"{item_id}.vtt")
        .read_text()
        .startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nask not\n")
    )


def test_a_folder_backlog_on_runpod_without_a_bucket(data_dir, tmp_path, runpod_env):
    sources = [data_dir / name for name in ("jfk.flac", "hotwords.mp3", "librispeech_1089-134686-0001.wav")]
    hotwords = _sha(sources[1].read_bytes())
    double = RunPodEndpointTestDouble(output_for=_inline_worker(fail_first={hotwords}), api_key="test-key")
    output, state = tmp_path / "out", tmp_path / "state.sqlite"
    with double:
        runpod_env(double)
        double.fail_next(1, 429, operation="run", retry_after="0")
        # The answer of the status call that saw the job complete is lost: asked again, not redone.
        double.drop_next(1, operation="status", after_processing=True)
        options = _options([str(path) for path in sources], output)
        report = _run(options, state)
        runs_first = len(double.answered("run"))
        again = _run(options, state)  # the same command again: nothing left to do

    assert (report.done, report.failed) == (3, 0) and (again.done, again.failed) == (3, 0)
    by_source = {Path(item.source).name: item for item in report.items}
    for path in sources:
        item = by_source[path.name]
        _check_files(output, item.id, path)
        assert item.outputs == {fmt: (output / f"{item.id}.{fmt}").as_uri() for fmt in FORMATS}
    # hotwords failed once on the worker (retryable) and was done by a second job.
    assert by_source["hotwords.mp3"].attempts == 2 and by_source["jfk.flac"].attempts == 1
    assert runs_first == 2 and len(double.answered("run")) == 2  # the rerun submitted nothing
    manifest = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in manifest) == sorted(item.id for item in report.items)
    assert all(line["status"] == "ok" and line["language"] == "en" for line in manifest)
    for request in double.answered("run"):
        assert len(json.dumps(request.body)) < RUN_PAYLOAD_BYTES


def test_packing_keeps_every_run_body_under_runpods_limit(tmp_path, runpod_env):
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        (folder / name).write_bytes(os.urandom(4 * 1000**2))  # 5.3 MB each as base64: one per job
    (folder / "d.wav").write_bytes(os.urandom(1000**2))  # fits beside the last one
    double = RunPodEndpointTestDouble(output_for=_inline_worker())
    with double:
        runpod_env(double)
        report = _run(_options([str(folder)], tmp_path / "out"), tmp_path / "state.sqlite")

    assert (report.done, report.failed) == (4, 0)
    bodies = [len(json.dumps(request.body)) for request in double.answered("run")]
    assert len(bodies) == 3 and max(bodies) < RUN_PAYLOAD_BYTES
    for item in report.items:
        _check_files(tmp_path / "out", item.id, Path(item.source))


def test_a_file_too_large_for_a_run_body_is_a_usage_error_before_anything_is_sent(
    tmp_path, runpod_env, capsys
):
    small, big = tmp_path / "small.wav", tmp_path / "big.wav"
    small.write_bytes(b"RIFF" * 100)
    big.write_bytes(b"\0" * 8 * 1000**2)
    double = RunPodEndpointTestDouble(output_for=_inline_worker())
    with double:
        runpod_env(double)
        code = main(
            [
                "transcribe",
                str(small),
                str(big),
                "--endpoint",
                "test-endpoint",
                "--output",
                str(tmp_path / "out"),
            ]
            + ["--no-progress", "--price-per-s", "0.001"]
        )

    assert code == 2
    message = capsys.readouterr().err
    assert str(big) in message and "8.0 MB" in message
    # The limit as the README gives it, rounded down so a file of that size always fits.
    assert f"files up to about {inline_file_mb()} MB" in message and inline_file_mb() == "7.4"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"up to ~{inline_file_mb()} MB each" in readme
    assert "--output s3://bucket/prefix/" in message and "http(s):// URL" in message
    assert double.requests == []  # nothing submitted, not even a health check
    assert not (tmp_path / "out" / ".stenopod-state.sqlite").exists()


def test_kill_9_between_the_answer_and_the_write(data_dir, tmp_path, runpod_env):
    output, state = tmp_path / "out", tmp_path / "state.sqlite"
    source = data_dir / "hotwords.mp3"
    double = RunPodEndpointTestDouble(output_for=_inline_worker())
    with double:
        runpod_env(double)
        command = [
            sys.executable, "-m", "stenopod.cli", "transcribe", str(source), "--endpoint", "test-endpoint",
            "--output", str(output), "--state", str(state), "--no-progress", "--price-per-s", "0.001",
        ]  # fmt: skip
        client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def kill_on_completed(request, answer) -> None:
            if request.operation == "status" and answer.get("status") == "COMPLETED":
                os.kill(client.pid, signal.SIGKILL)  # the answer is sent; nothing is written yet

        double.on_answered = kill_on_completed
        assert client.wait(timeout=60) == -signal.SIGKILL
        double.on_answered = None
        (job_id,) = double.jobs
        with sqlite3.connect(state) as db:
            assert db.execute("SELECT job_id, state FROM submissions").fetchall() == [(job_id, "submitted")]
            assert db.execute("SELECT state FROM items").fetchall() == [("submitted",)]

        report = _run(_options([str(source)], output), state)

    assert (report.done, report.failed) == (1, 0)
    (item,) = report.items
    assert item.job_id == job_id and item.attempts == 1
    assert len(double.answered("run")) == 1  # the answer was read again, the audio not sent again
    _check_files(output, item.id, source)


def test_a_job_the_endpoint_forgot_is_submitted_again_and_written_once(data_dir, tmp_path, runpod_env):
    """RunPod keeps an answer 30 minutes: a client back later finds the job gone and asks again."""
    output, state = tmp_path / "out", tmp_path / "state.sqlite"
    source = data_dir / "hotwords.mp3"
    options = _options([str(source)], output)
    (found,) = expand_sources([str(source)])
    with Ledger(state) as ledger:  # a run that stopped with one job in flight, long ago
        ledger.set_meta("options", options.to_json())
        ledger.add_items([found])
        ledger.create_submission("token1", [found.id])
        ledger.set_job_id("token1", "expired-job")
    double = RunPodEndpointTestDouble(output_for=_inline_worker())
    with double:
        runpod_env(double)
        report = _run(options, state)

    assert (report.done, report.failed) == (1, 0)
    (item,) = report.items
    assert item.job_id != "expired-job" and item.attempts == 1  # a lost job is not the item's fault
    assert [request.path.rsplit("/", 1)[-1] for request in double.requests_for("status")][0] == "expired-job"
    assert len(double.answered("run")) == 1
    _check_files(output, item.id, source)
