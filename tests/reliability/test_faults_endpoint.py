"""Faults at the endpoint; the backlog must lose nothing.

(b) the endpoint answers 429 and 503 for a stretch (RunPod's cloud, played by a test double);
(e) a worker process is SIGKILLed while it holds a job (the real handler running the instant TEST
DOUBLE engine, STENOPOD_ENABLE_TEST_ENGINE=1, under a real `stenopod serve` of its own).
The faults around one shared worker, (a), (c) and (d), are in test_faults.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.local import run_in_thread
from stenopod.storage import S3Credentials, S3Store, parse_s3_uri

from bench.figures import record
from tests.reliability.fault_rig import local_options, slow_file, write_manifest
from tests.support.endpoint_double import RunPodEndpointTestDouble
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.timeout(300)


# --- (b) 429 and 503 from the endpoint ----------------------------------------------------------------


def test_a_429_and_503_storm_loses_nothing_and_keeps_the_in_flight_bound(
    moto_s3: MotoS3, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)

    def worker_double(job_input: dict[str, Any]) -> dict[str, Any]:
        """Plays the worker: every format written to the real (moto) bucket, results returned."""
        bucket, prefix = parse_s3_uri(job_input["output"])
        store = S3Store(bucket, prefix, credentials)
        results = []
        for item in job_input["items"]:
            outputs = {fmt: store.put_bytes(f"{item['id']}.{fmt}", b"text") for fmt in job_input["formats"]}
            results.append({"id": item["id"], "status": "ok", "model": "double", "outputs": outputs})
        return {"items": results, "model": "double"}

    max_in_flight = 3
    double = RunPodEndpointTestDouble(polls_to_complete=2, output_for=worker_double, api_key="storm-key")
    items = [(f"storm-{n}", f"https://audio.example.test/ep{n}.mp3") for n in range(24)]
    manifest = write_manifest(tmp_path / "backlog.jsonl", items)
    with double:
        monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{double.root_url}/v2")
        monkeypatch.setenv("RUNPOD_API_KEY", "storm-key")
        double.fail_next(12, 429, operation="run", retry_after="0")
        double.fail_next(8, 503, operation="status", retry_after="0")
        double.fail_next(4, 429, operation="status")  # no Retry-After: the client's own backoff
        double.drop_next(2, operation="status")
        options = BacklogOptions(
            sources=[str(manifest)],
            output=f"s3://{s3_bucket}/storm/",
            endpoint=double.endpoint_id,
            formats=("json", "txt"),
            job_seconds=2.0,
            max_in_flight=max_in_flight,
            poll_initial_s=0.02,
            poll_max_s=0.1,
            price_per_s=0.001,
        )
        report = asyncio.run(
            BacklogRunner(options, state=tmp_path / "state.sqlite", s3_credentials=credentials).run()
        )
    assert (report.done, report.failed, report.pending) == (24, 0, 0)
    assert len(double.answered("run", 429)) == 12
    assert len(double.answered("status", 503)) == 8 and len(double.answered("status", 429)) == 4
    assert double.max_concurrent <= max_in_flight
    completed = [job for job in double.jobs.values() if job.status == "COMPLETED"]
    carried = sorted(item["id"] for job in completed for item in job.input["items"])
    assert carried == sorted(item_id for item_id, _ in items)  # each item in exactly one finished job
    record(
        "endpoint_storm",
        {
            "items": 24,
            "answered_429": 16,
            "answered_503": 8,
            "dropped": 2,
            "max_concurrent": double.max_concurrent,
            "max_in_flight": max_in_flight,
            "done": report.done,
        },
    )


# --- (e) a worker process killed mid-job ---------------------------------------------------------------


def test_a_worker_killed_mid_job_is_requeued_and_the_backlog_finishes(
    audio: AudioHTTPServer, tmp_path: Path
) -> None:
    """SIGKILL the real worker process while it holds a job: the endpoint requeues the job on a
    fresh worker and the client's backlog ends with every item done, in the output once."""
    audio.routes["/slow-kill.wav"] = slow_file(audio.root, "clip-50.wav", 3.0)
    items = [("killed-0", audio.url("slow-kill.wav"))] + [
        (f"killed-{n}", audio.url(f"clip-{50 + n}.wav")) for n in range(1, 4)
    ]
    manifest = write_manifest(tmp_path / "backlog.jsonl", items)
    env = {"RUNPOD_PING_INTERVAL": "1000", "STENOPOD_ENABLE_TEST_ENGINE": "1"}
    with run_in_thread(workers=1, allow_private_urls=True, env=env, log_dir=tmp_path / "logs") as local:
        options = local_options(manifest, str(tmp_path / "out"), local)
        outcome: dict[str, Any] = {}

        def run_backlog() -> None:
            outcome["report"] = asyncio.run(BacklogRunner(options, state=tmp_path / "state.sqlite").run())

        runner = threading.Thread(target=run_backlog)
        runner.start()
        deadline = time.monotonic() + 60
        while local.stats()["jobs"]["in_progress"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert local.stats()["jobs"]["in_progress"] >= 1, "no job ever started"
        assert local.pool is not None
        (victim,) = [worker for worker in local.pool.workers() if worker.jobs]
        assert victim.process is not None
        os.kill(victim.process.pid, signal.SIGKILL)
        runner.join(timeout=120)
        assert not runner.is_alive()
        stats = local.stats()
    report = outcome["report"]
    assert (report.done, report.failed) == (4, 0)
    assert stats["jobs"]["retried"] >= 1 and stats["workers"]["restarts"] >= 1
    assert all(stats["items_completed"].get(item_id) == 1 for item_id, _ in items)
    written = sorted(path.name for path in (tmp_path / "out").glob("killed-*.json"))
    assert written == [f"killed-{n}.json" for n in range(4)]
    record("worker_killed", {"items": 4, "done": report.done, "requeued": stats["jobs"]["retried"]})
