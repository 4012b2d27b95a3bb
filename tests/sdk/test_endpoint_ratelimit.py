"""The async endpoint client's pacing: the /run rate limiter (on a test-double clock and on the real
one), full-jitter backoff and Retry-After parsing."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from stenopod.endpoint import EndpointClient, _parse_retry_after
from stenopod.ratelimit import RateLimiter

from tests.sdk.endpoint_helpers import TestDoubleClock, fast_client, run
from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)


# --- rate limits and backoff ----------------------------------------------------------------------


def test_rate_limiter_holds_the_window_on_a_fake_clock() -> None:
    clock = TestDoubleClock()
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
    clock = TestDoubleClock()
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
    clock = TestDoubleClock()

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
