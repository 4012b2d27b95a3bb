"""The async endpoint client against the RunPod endpoint test double: the happy path (run, status,
retry, cancel, health, stream, purge) and how an endpoint id or URL resolves to a base URL."""

from __future__ import annotations

import pytest
from stenopod.endpoint import EndpointClient, JobStatus, resolve_base_url

from tests.sdk.endpoint_helpers import fast_client, run
from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)


# --- happy path -----------------------------------------------------------------------------------


def test_run_then_status_returns_the_output(endpoint_double: RunPodEndpointTestDouble) -> None:
    async def scenario() -> tuple[str, JobStatus]:
        async with fast_client(endpoint_double) as client:
            job_id = await client.run({"audio": "https://example.com/a.mp3"}, webhook="https://hook.test/x")
            return job_id, await client.status(job_id)

    job_id, status = run(scenario)
    assert status.id == job_id
    assert status.status == "COMPLETED" and status.is_final
    assert status.output == {"echo": {"audio": "https://example.com/a.mp3"}}
    assert (status.delay_time_ms, status.execution_time_ms, status.worker_id) == (12, 345, "double-w1")
    assert status.raw["id"] == job_id
    [submitted] = endpoint_double.requests_for("run")
    assert submitted.body == {
        "input": {"audio": "https://example.com/a.mp3"},
        "webhook": "https://hook.test/x",
    }


def test_status_walks_through_in_progress() -> None:
    with RunPodEndpointTestDouble(polls_to_complete=2) as double:

        async def scenario() -> list[str]:
            async with fast_client(double) as client:
                job_id = await client.run({"x": 1})
                return [(await client.status(job_id)).status for _ in range(3)]

        assert run(scenario) == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]


def test_failed_job_carries_its_error_and_can_be_retried() -> None:
    with RunPodEndpointTestDouble(
        error_for=lambda job_input: '{"code":"fetch_failed","message":"404"}'
    ) as double:

        async def scenario() -> tuple[JobStatus, JobStatus, JobStatus]:
            async with fast_client(double) as client:
                job_id = await client.run({"x": 1})
                failed = await client.status(job_id)
                return failed, await client.retry(job_id), await client.cancel(job_id)

        failed, retried, cancelled = run(scenario)
    assert failed.status == "FAILED" and failed.is_final and "fetch_failed" in failed.error
    assert retried.status == "IN_QUEUE" and not retried.is_final
    assert cancelled.status == "CANCELLED"


def test_health_stream_and_purge(endpoint_double: RunPodEndpointTestDouble) -> None:
    async def scenario() -> tuple[dict, dict, dict, dict]:
        async with fast_client(endpoint_double) as client:
            first = await client.run({"n": 1})
            await client.run({"n": 2})
            await client.status(first)
            health = await client.health()
            stream = await client.stream(first)
            purged = await client.purge_queue()
            return health, stream, purged, await client.health()

    health, stream, purged, after = run(scenario)
    assert health["jobs"]["completed"] == 1 and health["jobs"]["inQueue"] == 1
    assert stream["status"] == "COMPLETED"
    assert purged["removed"] == 1
    assert after["jobs"]["inQueue"] == 0


# --- endpoint resolution --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("abc123xyz", "https://api.runpod.ai/v2/abc123xyz"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v2/local"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v2/local"),
        ("http://127.0.0.1:8000/v2", "http://127.0.0.1:8000/v2/local"),
        ("http://127.0.0.1:8000/v2/", "http://127.0.0.1:8000/v2/local"),
        ("http://127.0.0.1:8000/v2/my-ep", "http://127.0.0.1:8000/v2/my-ep"),
        ("https://proxy.example/runpod", "https://proxy.example/runpod/v2/local"),
    ],
)
def test_endpoint_resolution(given: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)
    assert resolve_base_url(given) == expected
    assert EndpointClient(given).base_url == expected


@pytest.mark.parametrize(
    "bad", ["", "has space", "ftp://host/v2", "http://host/v2/ep/run", "http://host/v2/ep?x=1", "../etc"]
)
def test_bad_endpoints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        resolve_base_url(bad)


def test_endpoint_id_uses_runpod_endpoint_base_url(
    endpoint_double: RunPodEndpointTestDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{endpoint_double.root_url}/v2")

    async def scenario() -> JobStatus:
        async with fast_client_by_id(endpoint_double.endpoint_id) as client:
            assert client.base_url == endpoint_double.base_url
            return await client.status(await client.run({"n": 1}))

    assert run(scenario).status == "COMPLETED"
    assert endpoint_double.requests[0].path == f"/v2/{endpoint_double.endpoint_id}/run"


def fast_client_by_id(endpoint_id: str) -> EndpointClient:
    return EndpointClient(endpoint_id, backoff_base_s=0.005, backoff_max_s=0.05)
