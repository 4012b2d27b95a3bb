"""Webhook delivery, as RunPod does it: POST the status body; on failure retry twice, 10 s apart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_fixed

log = logging.getLogger("stenopod.local")


def is_webhook_url(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


class WebhookSender:
    def __init__(self, *, attempts: int = 3, retry_delay_s: float = 10.0, timeout_s: float = 10.0) -> None:
        self.attempts = attempts
        self.retry_delay_s = retry_delay_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def send(self, url: str, body: dict[str, Any]) -> None:
        """Deliver in the background; the job's state never waits on the receiver."""
        task = asyncio.create_task(self._deliver(url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_fixed(self.retry_delay_s),
            retry=retry_if_result(lambda problem: problem is not None),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else "not sent",
        )
        problem = await retrying(self._post, url, body)
        if problem is None:
            self.delivered += 1
            return
        self.failed += 1
        # The URL may carry the receiver's secret token: log the job, not the address.
        log.warning(
            "webhook for job %s not delivered after %d attempts (%s)", body.get("id"), self.attempts, problem
        )

    async def _post(self, url: str, body: dict[str, Any]) -> str | None:
        """One attempt: None when delivered, else what went wrong."""
        assert self._session is not None
        try:
            async with self._session.post(url, json=body) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return type(error).__name__
