from __future__ import annotations

import asyncio

import httpx
import pytest
from stenopod.backlog.webhook_listener import WebhookListener, parse_listen


def test_parse_listen():
    assert parse_listen("127.0.0.1:8123") == ("127.0.0.1", 8123)
    assert parse_listen(":0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost")


def test_a_webhook_wakes_its_job_and_a_wrong_secret_is_refused():
    async def scenario() -> None:
        async with WebhookListener("127.0.0.1:0") as listener:
            assert listener.port != 0
            async with httpx.AsyncClient() as http:
                wrong = listener.url.rsplit("/", 1)[0] + "/not-the-secret"
                assert (
                    await http.post(wrong, json={"id": "job-1", "status": "COMPLETED"})
                ).status_code == 404
                waiter = asyncio.create_task(listener.wait("job-1", 30))
                await asyncio.sleep(0.05)
                response = await http.post(listener.url, json={"id": "job-1", "status": "COMPLETED"})
                assert response.status_code == 200
                assert await waiter is True
                # A webhook that comes before anyone waits is remembered, not lost.
                await http.post(listener.url, json={"id": "job-2", "status": "FAILED"})
                assert await listener.wait("job-2", 0.01) is True
                assert (await http.post(listener.url, content=b"not json")).status_code == 400
            assert await listener.wait("job-3", 0.01) is False
            assert listener.received == 2

    asyncio.run(scenario())
