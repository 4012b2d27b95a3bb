"""The async endpoint client's API key against the RunPod endpoint test double: sent as a bearer
token, read from the environment, and never shown (not even when a server echoes it back)."""

from __future__ import annotations

import logging

import pytest
from stenopod.endpoint import EndpointAuthError, EndpointClient, JobStatus

from tests.sdk.endpoint_helpers import fast_client, run
from tests.support.endpoint_double import RunPodEndpointTestDouble

pytestmark = pytest.mark.timeout(120)
SECRET_KEY = "rpa_TESTSECRET0123456789abcdef"


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
