"""Worker processes: death mid-job, refresh_worker, a worker that ignores stops, logs, shutdown."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest
import requests
from stenopod.local import LocalEndpoint
from stenopod.local.worker_env import WorkerUrls, build_worker_env
from stenopod.local.workers import Worker
from stenopod.schema import ErrorCode, JobError

from tests.local.conftest import ECHO_HANDLER, echo_endpoint, wait_until

pytestmark = pytest.mark.timeout(180)


def _run(endpoint: LocalEndpoint, job_input: dict, **extra: object) -> str:
    response = requests.post(f"{endpoint.url}/run", json={"input": job_input, **extra}, timeout=10)
    response.raise_for_status()
    return response.json()["id"]


def _final(endpoint: LocalEndpoint, job_id: str, timeout: float = 60) -> dict:
    def finished() -> dict | None:
        body = requests.get(f"{endpoint.url}/status/{job_id}", timeout=10).json()
        return body if body["status"] not in ("IN_QUEUE", "IN_PROGRESS") else None

    return wait_until(finished, timeout=timeout)


def _processes_of(worker_id: str) -> list[psutil.Process]:
    """Processes still running with this worker's identity: the worker and its runpod ping child."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(ECHO_HANDLER) in " ".join(proc.info["cmdline"] or []) and (
                proc.environ().get("RUNPOD_POD_ID") == worker_id
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_worker_dying_mid_job_requeues_once_then_fails(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1) as endpoint:
        first_worker = endpoint.pool.workers()[0].id
        job_id = _run(endpoint, {"die": True})

        body = _final(endpoint, job_id)

        assert body["status"] == "FAILED"
        error = JobError.from_runpod_error(body["error"])
        assert error.code is ErrorCode.internal_error
        assert "exited" in error.message and "requeued once" in error.message
        stats = endpoint.stats()
        assert stats["jobs"]["started"] == 2  # the first attempt and the one requeue, no more
        assert endpoint.health()["jobs"]["retried"] == 1
        # Dead workers are replaced, and the dead one's runpod ping process did not outlive it.
        assert stats["workers"]["restarts"] >= 2
        assert _processes_of(first_worker) == []
        assert _final(endpoint, _run(endpoint, {"echo": "alive"}))["output"]["echo"] == "alive"


def test_job_whose_worker_died_once_completes_on_the_requeue(tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    with echo_endpoint(tmp_path / "logs", workers=1) as endpoint:
        body = _final(endpoint, _run(endpoint, {"die_once": str(marker), "echo": "second try"}))

        assert body["status"] == "COMPLETED"
        assert body["output"]["echo"] == "second try"
        assert body["output"]["pid"] != int(marker.read_text())  # a fresh worker process ran it
        assert endpoint.health()["jobs"]["retried"] == 1


def test_refresh_worker_replaces_the_worker_after_the_job(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1) as endpoint:
        refreshed = _final(endpoint, _run(endpoint, {"echo": "a", "refresh": True}))
        assert refreshed["status"] == "COMPLETED"
        assert "refresh_worker" not in refreshed["output"]

        after = _final(endpoint, _run(endpoint, {"echo": "b"}))

        assert after["status"] == "COMPLETED"
        assert after["workerId"] != refreshed["workerId"]
        assert after["output"]["pid"] != refreshed["output"]["pid"]


def test_worker_that_ignores_a_stop_is_restarted(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1, stop_grace_s=1.0) as endpoint:
        job_id = _run(endpoint, {"block": 600}, policy={"executionTimeout": 1000})

        timed_out = _final(endpoint, job_id)
        assert timed_out["status"] == "TIMED_OUT"
        stuck = timed_out["workerId"]

        after = _final(endpoint, _run(endpoint, {"echo": "unblocked"}), timeout=90)

        assert after["status"] == "COMPLETED"
        assert after["workerId"] != stuck
        assert endpoint.stats()["workers"]["restarts"] >= 1


def test_worker_output_goes_to_the_log_dir(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1) as endpoint:
        job_id = _run(endpoint, {"echo": 1})
        _final(endpoint, job_id)

    log = (tmp_path / "worker-1.log").read_text()
    assert "Starting Serverless Worker" in log
    assert job_id in log
    # Worker tokens never reach the log (runpod prints job-take URLs only at DEBUG level).
    assert "token=" not in log


def test_stop_ends_every_worker_process(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=2) as endpoint:
        wait_until(lambda: endpoint.stats()["workers"]["idle"] == 2)
        ids = [worker.id for worker in endpoint.pool.workers()]
        assert all(_processes_of(worker_id) for worker_id in ids)
    assert [p for worker_id in ids for p in _processes_of(worker_id)] == []


def test_worker_environment_is_built_for_production_mode() -> None:
    worker = Worker(slot=1, id="w1-abc", token="tok")
    urls = WorkerUrls.for_worker("http://127.0.0.1:9", "local", worker)
    inherited = {"RUNPOD_REALTIME_PORT": "8000", "STENOPOD_ALLOW_PRIVATE_URLS": "1", "HOME": "/home/x"}

    env = build_worker_env(
        worker,
        urls,
        "local",
        model="m",
        allow_private_urls=False,
        extra={"RUNPOD_PING_INTERVAL": "2000"},
        base=inherited,
    )
    allowed = build_worker_env(
        worker, urls, "local", model=None, allow_private_urls=True, extra=None, base={}
    )

    # RUNPOD_WEBHOOK_GET_JOB is what switches runpod.serverless.start into its production loop.
    assert env["RUNPOD_WEBHOOK_GET_JOB"] == "http://127.0.0.1:9/v2/local/job-take/$ID?gpu=local&token=tok"
    assert env["RUNPOD_WEBHOOK_POST_OUTPUT"].endswith("/job-done/$RUNPOD_POD_ID/$ID?gpu=local&token=tok")
    assert env["RUNPOD_AI_API_KEY"] == "tok" and env["RUNPOD_POD_ID"] == "w1-abc"
    assert env["RUNPOD_PING_INTERVAL"] == "2000" and env["HOME"] == "/home/x"
    assert env["STENOPOD_DEFAULT_MODEL"] == "m"
    assert "RUNPOD_REALTIME_PORT" not in env and "STENOPOD_ALLOW_PRIVATE_URLS" not in env
    assert allowed["STENOPOD_ALLOW_PRIVATE_URLS"] == "1" and "STENOPOD_DEFAULT_MODEL" not in allowed


def test_a_worker_command_that_cannot_start_is_reported_unhealthy(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit('no model here')\n")
    with echo_endpoint(tmp_path, workers=1, worker_command=[sys.executable, str(broken)]) as endpoint:
        health = wait_until(lambda: (h := endpoint.health())["workers"]["unhealthy"] == 1 and h)
        job_id = _run(endpoint, {"echo": 1})
        assert requests.get(f"{endpoint.url}/status/{job_id}", timeout=10).json()["status"] == "IN_QUEUE"
    assert health["workers"]["idle"] == 0
    assert "no model here" in (tmp_path / "worker-1.log").read_text()


def test_a_concurrent_worker_takes_jobs_in_batches(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1, env={"ECHO_CONCURRENCY": "2"}) as endpoint:
        wait_until(lambda: endpoint.stats()["workers"]["idle"] == 1)
        first, second = (_run(endpoint, {"sleep": 5, "echo": n}) for n in range(2))

        # One worker process runs both at once (through runpod's job-take-batch).
        wait_until(lambda: endpoint.stats()["jobs"]["in_progress"] == 2)
        results = [_final(endpoint, job_id) for job_id in (first, second)]

        assert [r["output"]["echo"] for r in results] == [0, 1]
        assert results[0]["workerId"] == results[1]["workerId"]


def test_without_a_log_dir_worker_output_is_relayed_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with echo_endpoint(None, workers=1) as endpoint:
        job_id = _run(endpoint, {"echo": 1})
        worker_id = _final(endpoint, job_id)["workerId"]

    err = capfd.readouterr().err
    assert f"[{worker_id}] --- Starting Serverless Worker" in err
    assert any(line.startswith(f"[{worker_id}]") and job_id in line for line in err.splitlines())
