"""Helpers shared by the endpoint client's tests (tests/sdk/test_endpoint*.py), and the clock TEST
DOUBLE the rate-limit tests run on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from stenopod.endpoint import EndpointClient, JobStatus

from tests.support.endpoint_double import RunPodEndpointTestDouble

T = TypeVar("T")


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


class TestDoubleClock:
    """TEST DOUBLE of the clock: time that moves only when someone sleeps on it, so rate-limit tests
    run without waiting."""

    __test__ = False

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)
