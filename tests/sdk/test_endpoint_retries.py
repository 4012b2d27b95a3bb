"""The async endpoint client against the RunPod endpoint test double: 429 and 503 storms, dropped
connections, ambiguous /run failures, giving up, and errors that are never retried."""

from __future__ import annotations

import asyncio

import pytest
from stenopod.endpoint import EndpointClient, EndpointError, EndpointNotFound, JobStatus

from tests.sdk.endpoint_helpers import fast_client, poll_until_final, run
from tests.support.endpoint_double import RunPodEndpointTestDouble
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(120)


# --- storms and failures --------------------------------------------------------------------------


def test_429_storm_on_run_loses_nothing_and_duplicates_nothing(
    endpoint_double: RunPodEndpointTestDouble,
) -> None:
    endpoint_double.fail_next(40, 429, retry_after="0", operation="run")
    endpoint_double.fail_next(25, 503, operation="status")

    async def scenario() -> tuple[list[str], list[JobStatus], dict[str, int]]:
        async with fast_client(endpoint_double, max_in_flight=4) as client:
            ids = await asyncio.gather(*(client.run({"n": n}) for n in range(30)))
            finals = await asyncio.gather(*(poll_until_final(client, job_id) for job_id in ids))
            return list(ids), list(finals), dict(client.stats)

    ids, finals, stats = run(scenario)
    assert len(set(ids)) == 30
    # A refused /run never created a job: exactly one job per call, each with its own input.
    assert sorted(job.input["n"] for job in endpoint_double.jobs.values()) == list(range(30))
    assert [final.output["echo"]["n"] for final in finals] == list(range(30))
    assert all(final.status == "COMPLETED" for final in finals)
    assert len(endpoint_double.answered("run", 429)) == 40
    assert len(endpoint_double.answered("status", 503)) == 25
    assert stats["throttled"] == 65 and stats["retries"] == 65
    assert stats["ambiguous_run_retries"] == 0
    assert endpoint_double.max_concurrent <= 4


def test_never_more_requests_in_flight_than_allowed() -> None:
    with RunPodEndpointTestDouble(response_delay_s=0.03) as double:
        double.fail_next(10, 503)

        async def scenario() -> None:
            async with fast_client(double, max_in_flight=3) as client:
                ids = await asyncio.gather(*(client.run({"n": n}) for n in range(24)))
                await asyncio.gather(*(client.status(job_id) for job_id in ids))

        run(scenario)
        assert len(double.jobs) == 24
        assert 2 <= double.max_concurrent <= 3


def test_retry_after_is_honoured(endpoint_double: RunPodEndpointTestDouble) -> None:
    endpoint_double.fail_next(1, 429, retry_after="0.3", operation="run")

    async def scenario() -> str:
        async with fast_client(endpoint_double) as client:
            return await client.run({"n": 1})

    run(scenario)
    refused, accepted = endpoint_double.requests_for("run")
    assert (refused.answered, accepted.answered) == (429, 200)
    # The second attempt left only after the answer to the first plus the asked-for pause.
    assert accepted.at - refused.at >= 0.3


def test_dropped_connections_are_retried(endpoint_double: RunPodEndpointTestDouble) -> None:
    endpoint_double.drop_next(2, operation="run")
    endpoint_double.drop_next(2, operation="status")

    async def scenario() -> tuple[str, JobStatus, dict[str, int]]:
        async with fast_client(endpoint_double) as client:
            job_id = await client.run({"n": 1})
            return job_id, await client.status(job_id), dict(client.stats)

    job_id, status, stats = run(scenario)
    assert status.status == "COMPLETED" and status.id == job_id
    assert len(endpoint_double.jobs) == 1  # dropped before the job was created
    assert stats["retries"] == 4 and stats["requests"] == 6


def test_ambiguous_run_failure_is_retried_and_counted(endpoint_double: RunPodEndpointTestDouble) -> None:
    # The server creates the job, then the answer is lost: the client cannot know, so it retries;
    # the second job carries the same submission token, which the worker dedupes on.
    endpoint_double.drop_next(1, operation="run", after_processing=True)
    endpoint_double.fail_next(1, 502, operation="run", after_processing=True)
    job_input = {"audio": "https://example.com/a.mp3", "submission": "sub-0001"}

    async def scenario() -> tuple[str, dict[str, int]]:
        async with fast_client(endpoint_double) as client:
            return await client.run(job_input), dict(client.stats)

    job_id, stats = run(scenario)
    assert len(endpoint_double.jobs) == 3
    assert job_id in endpoint_double.jobs
    assert {job.input["submission"] for job in endpoint_double.jobs.values()} == {"sub-0001"}
    assert stats["ambiguous_run_retries"] == 2


def test_gives_up_after_max_retries_with_the_status(endpoint_double: RunPodEndpointTestDouble) -> None:
    endpoint_double.fail_next(10, 503)

    async def scenario() -> None:
        async with fast_client(endpoint_double, max_retries=2) as client:
            await client.run({"n": 1})

    with pytest.raises(EndpointError) as caught:
        run(scenario)
    assert caught.value.status_code == 503
    assert "gave up after 3 attempts" in caught.value.message
    assert len(endpoint_double.requests_for("run")) == 3


def test_unreachable_endpoint_fails_after_retries() -> None:
    client_holder: list[EndpointClient] = []

    async def scenario() -> None:
        async with EndpointClient(
            f"http://127.0.0.1:{free_port()}", max_retries=2, backoff_base_s=0.001, backoff_max_s=0.01
        ) as client:
            client_holder.append(client)
            await client.health()

    with pytest.raises(EndpointError) as caught:
        run(scenario)
    assert caught.value.status_code is None
    assert "cannot connect" in caught.value.message
    assert client_holder[0].stats["requests"] == 3


def test_client_errors_are_not_retried(endpoint_double: RunPodEndpointTestDouble) -> None:
    async def scenario() -> tuple[EndpointClient, str]:
        client = fast_client(endpoint_double)
        async with client:
            job_id = await client.run({"n": 1})
            await client.status(job_id)
            try:
                await client.retry(job_id)  # COMPLETED jobs cannot be retried: 400
            except EndpointError as error:
                assert type(error) is EndpointError and error.status_code == 400
            with pytest.raises(EndpointNotFound) as missing:
                await client.status("no-such-job")
            assert missing.value.status_code == 404
        return client, job_id

    client, _ = run(scenario)
    assert client.stats["retries"] == 0
    assert len(endpoint_double.requests_for("retry")) == 1


def test_wrong_endpoint_id_is_not_found(endpoint_double: RunPodEndpointTestDouble) -> None:
    async def scenario() -> None:
        async with EndpointClient(f"{endpoint_double.root_url}/v2/other-endpoint") as client:
            await client.health()

    with pytest.raises(EndpointNotFound):
        run(scenario)
