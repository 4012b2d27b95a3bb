"""The async endpoint client against the RunPod endpoint test double: retries, limits, auth, URLs."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from stenopod.endpoint import (
    EndpointAuthError,
    EndpointClient,
    EndpointError,
    EndpointNotFound,
    JobStatus,
    _parse_retry_after,
    resolve_base_url,
)
from stenopod.ratelimit import RateLimiter

from tests.support.endpoint_double import RunPodEndpointTestDouble
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")
SECRET_KEY = "rpa_TESTSECRET0123456789abcdef"


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_factory())  # type: ignore[arg-type]


def fast_client(double: RunPodEndpointTestDouble, **kwargs: Any) -> EndpointClient:
    """A client whose backoff is short enough for tests but still real."""
    options: dict[str, Any] = {"backoff_base_s": 0.005, "backoff_max_s": 0.05, "max_retries": 50}
    options.update(kwargs)
    return EndpointClient(double.base_url, **options)


async def poll_until_final(client: EndpointClient, job_id: str) -> JobStatus:
    for _ in range(100):
        status = await client.status(job_id)
        if status.is_final:
            return status
    raise AssertionError(f"job {job_id} never finished")


class FakeClock:
    """Time that moves only when someone sleeps on it: rate-limit tests without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


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


# --- auth -----------------------------------------------------------------------------------------


def test_bearer_key_is_sent_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with RunPodEndpointTestDouble(api_key=SECRET_KEY) as double:
        double.fail_next(2, 429, retry_after="0")

        async def good() -> JobStatus:
            async with fast_client(double, api_key=SECRET_KEY) as client:
                assert SECRET_KEY not in repr(client)
                return await client.status(await client.run({"n": 1}))

        assert run(good).status == "COMPLETED"
        assert {request.headers["Authorization"] for request in double.requests} == {f"Bearer {SECRET_KEY}"}

        wrong = SECRET_KEY[::-1]

        async def bad() -> None:
            async with fast_client(double, api_key=wrong) as client:
                await client.run({"n": 1})

        with pytest.raises(EndpointAuthError) as caught:
            run(bad)
    error = caught.value
    assert error.status_code == 401
    for text in (str(error), repr(error), error.message, caplog.text):
        assert SECRET_KEY not in text and wrong not in text


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", SECRET_KEY)
    with RunPodEndpointTestDouble(api_key=SECRET_KEY) as double:

        async def scenario() -> dict:
            async with EndpointClient(double.base_url) as client:
                return await client.health()

        assert "jobs" in run(scenario)
    monkeypatch.delenv("RUNPOD_API_KEY")
    with RunPodEndpointTestDouble(api_key=SECRET_KEY) as double:

        async def keyless() -> None:
            async with EndpointClient(double.base_url) as client:
                await client.health()

        with pytest.raises(EndpointAuthError, match="RUNPOD_API_KEY"):
            run(keyless)
        assert "Authorization" not in double.requests[0].headers


def test_key_echoed_by_a_server_is_scrubbed() -> None:
    # A misbehaving proxy that echoes the request header into its error body.
    with RunPodEndpointTestDouble(api_key="something-else") as double:

        async def scenario() -> None:
            async with fast_client(double, api_key=SECRET_KEY) as client:
                await client.health()

        original_send = double._send

        def echoing_send(handler, record, status, answer, headers=None):  # type: ignore[no-untyped-def]
            if status == 401:
                answer = {"error": f"bad header {handler.headers.get('Authorization')}"}
            original_send(handler, record, status, answer, headers)

        double._send = echoing_send  # type: ignore[method-assign]
        with pytest.raises(EndpointAuthError) as caught:
            run(scenario)
    assert "bad header Bearer ***" in caught.value.message
    assert SECRET_KEY not in str(caught.value)


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


# --- rate limits and backoff ----------------------------------------------------------------------


def test_rate_limiter_holds_the_window_on_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 10.0, clock=clock, sleep=clock.sleep)
    granted: list[float] = []

    async def take() -> None:
        await limiter.acquire()
        granted.append(clock.now)

    async def scenario() -> None:
        await asyncio.gather(*(take() for _ in range(23)))

    run(scenario)
    assert granted == sorted(granted)
    for start in granted:
        assert sum(1 for t in granted if start <= t < start + 10.0) <= 5
    assert granted[-1] == 40.0  # 23 calls at 5 per 10 s: the last waits four full windows
    assert limiter.waits > 0


def test_rate_limiter_counts_only_delayed_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)

    async def scenario() -> list[float]:
        granted = []
        for _ in range(5):
            await limiter.acquire()
            granted.append(clock.now)
        return granted

    assert run(scenario) == [0.0, 0.0, 10.0, 10.0, 20.0]
    assert limiter.waits == 2
    with pytest.raises(ValueError, match="max_calls"):
        RateLimiter(0, 1.0)


def test_client_run_rate_limit_on_a_fake_clock(endpoint_double: RunPodEndpointTestDouble) -> None:
    clock = FakeClock()

    async def scenario() -> list[str]:
        async with fast_client(endpoint_double) as client:
            client.run_limiter = RateLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
            ids = await asyncio.gather(*(client.run({"n": n}) for n in range(7)))
            await asyncio.gather(*(client.status(job_id) for job_id in ids))  # not held by /run's limit
            return list(ids)

    assert len(set(run(scenario))) == 7
    assert clock.now == 30.0  # grants at 0, 0, 10, 10, 20, 20, 30


def test_client_rate_limit_on_the_real_clock(endpoint_double: RunPodEndpointTestDouble) -> None:
    async def scenario() -> float:
        async with fast_client(endpoint_double, run_limit=(3, 0.4)) as client:
            started = time.monotonic()
            await asyncio.gather(*(client.run({"n": n}) for n in range(9)))
            return started

    started = run(scenario)
    arrivals = sorted(request.at for request in endpoint_double.requests_for("run"))
    assert len(arrivals) == 9
    # Requests 4-6 may not leave before one full window, 7-9 before two: lower bounds only.
    assert arrivals[3] - started >= 0.4
    assert arrivals[6] - started >= 0.8


def test_backoff_is_full_jitter_and_respects_retry_after() -> None:
    client = EndpointClient("http://127.0.0.1:1", backoff_base_s=0.5, backoff_max_s=4.0)
    random.seed(7)
    delays = [[client._backoff_delay(attempt, None) for _ in range(200)] for attempt in range(6)]
    for attempt, samples in enumerate(delays):
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert all(0 <= sample <= ceiling for sample in samples)
        assert max(samples) > ceiling * 0.8  # the whole range is used, not a fixed step
    assert all(client._backoff_delay(0, 5.0) >= 5.0 for _ in range(20))
    asyncio.run(client.aclose())


def test_retry_after_parsing() -> None:
    assert _parse_retry_after("2") == 2.0
    assert _parse_retry_after("-3") == 0.0
    assert _parse_retry_after("100000") == 600.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after(None) is None
