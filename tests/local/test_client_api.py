"""The official runpod client, unchanged, against `stenopod serve` with real runpod worker loops."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from stenopod.local import LocalEndpoint
from stenopod.schema import ErrorCode, JobError

from tests.local.conftest import wait_until

pytestmark = pytest.mark.timeout(120)


def _status(endpoint: LocalEndpoint, job_id: str) -> dict:
    response = requests.get(f"{endpoint.url}/status/{job_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def test_run_status_output_like_runpod(shared_endpoint: LocalEndpoint, official_client) -> None:
    client = official_client(shared_endpoint)
    job = client.run({"echo": {"hello": "world"}})
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}

    output = job.output(timeout=60)

    assert output["echo"] == {"hello": "world"}
    body = _status(shared_endpoint, job.job_id)
    assert body["status"] == "COMPLETED"
    assert body["workerId"] == output["worker"]
    assert isinstance(body["delayTime"], int) and body["delayTime"] >= 0
    assert isinstance(body["executionTime"], int) and body["executionTime"] >= 0
    assert body["output"] == output


def test_run_sync_returns_the_output(shared_endpoint: LocalEndpoint, official_client) -> None:
    client = official_client(shared_endpoint)
    assert client.run_sync({"echo": 7}, timeout=60)["echo"] == 7


def test_runsync_past_its_wait_answers_in_progress_and_finishes_later(shared_endpoint: LocalEndpoint) -> None:
    response = requests.post(
        f"{shared_endpoint.url}/runsync?wait=1000", json={"input": {"sleep": 3}}, timeout=30
    )
    body = response.json()
    assert response.status_code == 200
    assert body["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    assert body["id"].startswith("sync-")
    assert "output" not in body

    final = wait_until(lambda: (b := _status(shared_endpoint, body["id"]))["status"] == "COMPLETED" and b)
    assert final["output"]["echo"] is None


def test_handler_exception_is_failed_with_runpod_error(
    shared_endpoint: LocalEndpoint, official_client
) -> None:
    client = official_client(shared_endpoint)
    job = client.run({"fail": "boom"})

    assert job.output(timeout=60) is None
    assert job.status() == "FAILED"
    body = _status(shared_endpoint, job.job_id)
    assert json.loads(body["error"])["error_message"] == "boom"  # the runpod loop's own error shape


def test_returned_error_is_failed_with_that_error(shared_endpoint: LocalEndpoint, official_client) -> None:
    message = JobError(code=ErrorCode.not_audio, message="no audio stream").to_runpod_error()
    job = official_client(shared_endpoint).run({"error": message})
    job.output(timeout=60)
    body = _status(shared_endpoint, job.job_id)
    assert body["status"] == "FAILED"
    assert JobError.from_runpod_error(body["error"]).code is ErrorCode.not_audio


def test_progress_updates_show_in_status_while_running(shared_endpoint: LocalEndpoint) -> None:
    job_id = requests.post(
        f"{shared_endpoint.url}/run", json={"input": {"progress": ["half"], "sleep": 2}}, timeout=10
    ).json()["id"]

    running = wait_until(lambda: (b := _status(shared_endpoint, job_id)).get("output") == "half" and b)
    assert running["status"] == "IN_PROGRESS"
    final = wait_until(lambda: (b := _status(shared_endpoint, job_id))["status"] == "COMPLETED" and b)
    assert final["output"]["echo"] is None


def test_cancel_stops_a_running_job_and_frees_its_worker(
    shared_endpoint: LocalEndpoint, official_client
) -> None:
    client = official_client(shared_endpoint)
    restarts = shared_endpoint.stats()["workers"]["restarts"]
    job = client.run({"sleep": 120})
    wait_until(lambda: job.status() == "IN_PROGRESS")
    worker = shared_endpoint.pool.get(_status(shared_endpoint, job.job_id)["workerId"])

    answer = job.cancel()

    assert answer == {"id": job.job_id, "status": "CANCELLED"}
    assert _status(shared_endpoint, job.job_id)["status"] == "CANCELLED"
    # The runpod loop stopped the handler through the job-stop channel: the same worker process
    # lets go of the job (it asks for work again or pings without it) and is not restarted.
    wait_until(lambda: not worker.stop_deadlines, timeout=45.0)
    assert worker.alive and not worker.stopping
    assert shared_endpoint.stats()["workers"]["restarts"] == restarts
    assert client.run_sync({"echo": "after"}, timeout=60)["echo"] == "after"


def test_execution_timeout_gives_timed_out(shared_endpoint: LocalEndpoint) -> None:
    job_id = requests.post(
        f"{shared_endpoint.url}/run",
        json={"input": {"sleep": 120}, "policy": {"executionTimeout": 1500}},
        timeout=10,
    ).json()["id"]

    body = wait_until(lambda: (b := _status(shared_endpoint, job_id))["status"] == "TIMED_OUT" and b)

    assert "output" not in body
    assert body["executionTime"] >= 1500
    worker = shared_endpoint.pool.get(body["workerId"])
    wait_until(lambda: not worker.stop_deadlines, timeout=45.0)  # told to stop, and it did
    assert worker.alive and not worker.stopping


def test_retry_requeues_a_failed_job_and_refuses_a_completed_one(shared_endpoint: LocalEndpoint) -> None:
    url = shared_endpoint.url
    failed_id = requests.post(f"{url}/run", json={"input": {"fail": "again"}}, timeout=10).json()["id"]
    wait_until(lambda: _status(shared_endpoint, failed_id)["status"] == "FAILED")
    retried_before = requests.get(f"{url}/health", timeout=10).json()["jobs"]["retried"]

    answer = requests.post(f"{url}/retry/{failed_id}", timeout=10).json()

    assert answer == {"id": failed_id, "status": "IN_QUEUE"}
    wait_until(lambda: _status(shared_endpoint, failed_id)["status"] == "FAILED")
    assert requests.get(f"{url}/health", timeout=10).json()["jobs"]["retried"] == retried_before + 1

    done_id = requests.post(f"{url}/runsync", json={"input": {"echo": 1}}, timeout=60).json()["id"]
    refused = requests.post(f"{url}/retry/{done_id}", timeout=10)
    assert refused.status_code == 400
    assert "COMPLETED" in refused.json()["error"]


def test_health_counts_jobs_and_workers(shared_endpoint: LocalEndpoint, official_client) -> None:
    client = official_client(shared_endpoint)
    before = client.health()
    client.run_sync({"echo": "count me"}, timeout=60)

    after = client.health()

    assert after["jobs"]["completed"] == before["jobs"]["completed"] + 1
    assert set(after["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert after["workers"]["idle"] + after["workers"]["running"] == 2


def test_stats_count_jobs_and_items(shared_endpoint: LocalEndpoint, official_client) -> None:
    before = shared_endpoint.stats()
    official_client(shared_endpoint).run_sync({"items": [{"id": "ep-1"}, {"id": "ep-2"}]}, timeout=60)

    after = shared_endpoint.stats()

    assert after["jobs"]["accepted"] == before["jobs"]["accepted"] + 1
    assert after["jobs"]["completed"] == before["jobs"]["completed"] + 1
    assert after["items_started"]["ep-1"] == before["items_started"].get("ep-1", 0) + 1
    assert after["items_completed"]["ep-2"] == before["items_completed"].get("ep-2", 0) + 1


def test_workers_get_the_endpoint_environment(shared_endpoint: LocalEndpoint, official_client) -> None:
    names = [
        "RUNPOD_POD_ID",
        "STENOPOD_ALLOW_LOCAL_OUTPUT",
        "STENOPOD_DEFAULT_MODEL",
        "STENOPOD_ALLOW_PRIVATE_URLS",
    ]
    output = official_client(shared_endpoint).run_sync({"env": names}, timeout=60)

    assert output["env"] == {
        "RUNPOD_POD_ID": output["worker"],
        "STENOPOD_ALLOW_LOCAL_OUTPUT": "1",
        "STENOPOD_DEFAULT_MODEL": "tiny.en",
        "STENOPOD_ALLOW_PRIVATE_URLS": None,  # only with --allow-private-urls
    }


def test_bad_requests_answer_json_errors(shared_endpoint: LocalEndpoint) -> None:
    url = shared_endpoint.url
    cases = [
        (requests.post(f"{url}/run", data=b"{not json", timeout=10), 400, "not valid JSON"),
        (requests.post(f"{url}/run", json={"inputs": {}}, timeout=10), 400, "input"),
        (requests.post(f"{url}/run", json=[1, 2], timeout=10), 400, "JSON object"),
        (
            requests.post(f"{url}/run", json={"input": {}, "policy": {"ttl": "soon"}}, timeout=10),
            400,
            "policy.ttl",
        ),
        (requests.post(f"{url}/run", json={"input": {}, "webhook": "ftp://x"}, timeout=10), 400, "webhook"),
        (requests.post(f"{url}/runsync?wait=soon", json={"input": {}}, timeout=10), 400, "wait"),
        (requests.get(f"{url}/status/no-such-job", timeout=10), 404, "does not exist"),
        (requests.post(f"{url}/cancel/no-such-job", timeout=10), 404, "does not exist"),
        (requests.get(f"{shared_endpoint.base_url}/other/health", timeout=10), 404, "other"),
        (requests.get(f"{url}/no-such-route", timeout=10), 404, "Not Found"),
        (requests.get(f"{url}/run", timeout=10), 405, "Method Not Allowed"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert fragment in response.json()["error"]
        assert "Traceback" not in response.text


def test_worker_routes_refuse_callers_without_the_worker_token(shared_endpoint: LocalEndpoint) -> None:
    worker = shared_endpoint.pool.workers()[0]
    url = f"{shared_endpoint.url}/job-take/{worker.id}?gpu=local&job_in_progress=0"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url + "&token=guess", timeout=10).status_code == 401
    done = requests.post(f"{shared_endpoint.url}/job-done/{worker.id}/x?token=guess", data="{}", timeout=10)
    assert done.status_code == 401


def test_official_client_from_the_environment_in_a_fresh_process(shared_endpoint: LocalEndpoint) -> None:
    """RUNPOD_ENDPOINT_BASE_URL is all a user sets: runpod reads it at import."""
    script = (
        "import runpod; e = runpod.Endpoint('local', api_key='any');"
        "print(e.run({'echo': 'from env'}).output(timeout=60)['echo'])"
    )
    env = {**os.environ, "RUNPOD_ENDPOINT_BASE_URL": shared_endpoint.base_url}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from env"


def test_purge_queue_cancels_waiting_jobs_only(tmp_path, official_client) -> None:
    from tests.local.conftest import echo_endpoint

    with echo_endpoint(tmp_path, workers=1) as endpoint:
        client = official_client(endpoint)
        busy = client.run({"sleep": 120})
        wait_until(lambda: busy.status() == "IN_PROGRESS")
        waiting = [client.run({"echo": n}) for n in range(3)]
        assert client.health()["jobs"]["inQueue"] == 3

        assert client.purge_queue() == {"removed": 3, "status": "completed"}

        assert [job.status() for job in waiting] == ["CANCELLED"] * 3
        assert busy.status() == "IN_PROGRESS"
        health = client.health()["jobs"]
        assert (health["inQueue"], health["inProgress"]) == (0, 1)
        busy.cancel()


def test_generator_handler_streams_through_stream_route(tmp_path, official_client) -> None:
    from tests.local.conftest import echo_endpoint

    with echo_endpoint(tmp_path, env={"ECHO_STREAM": "1"}) as endpoint:
        job = official_client(endpoint).run({"parts": 4})

        parts = list(job.stream())

        assert parts == [{"part": i} for i in range(4)]
        assert job.output(timeout=30) == [{"part": i} for i in range(4)]
