"""Webhooks (with RunPod's retries), API keys, result retention and job time-to-live."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from stenopod.local import LocalEndpoint, serve_main

from tests.local.conftest import echo_endpoint, wait_until

pytestmark = pytest.mark.timeout(120)


class WebhookReceiver:
    """A loopback HTTP server that records webhook POSTs; the first `fail_first` answer 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts: list[float] = []
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts.append(time.monotonic())
                if len(receiver.attempts) <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?secret=abc"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    with echo_endpoint(tmp_path_factory.mktemp("logs"), workers=2, webhook_retry_delay_s=0.5) as endpoint:
        yield endpoint


def _submit(endpoint: LocalEndpoint, body: dict) -> str:
    response = requests.post(f"{endpoint.url}/run", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["id"]


def test_webhook_posts_the_status_body_on_completed(
    endpoint: LocalEndpoint, receiver: WebhookReceiver
) -> None:
    job_id = _submit(endpoint, {"input": {"echo": "hooked"}, "webhook": receiver.url})

    wait_until(lambda: receiver.received)

    [body] = receiver.received
    assert body == requests.get(f"{endpoint.url}/status/{job_id}", timeout=10).json()
    assert body["status"] == "COMPLETED" and body["output"]["echo"] == "hooked"


def test_webhook_posts_on_failed(endpoint: LocalEndpoint, receiver: WebhookReceiver) -> None:
    job_id = _submit(endpoint, {"input": {"error": "bad audio"}, "webhook": receiver.url})

    wait_until(lambda: receiver.received)

    assert receiver.received[0]["id"] == job_id
    assert receiver.received[0]["status"] == "FAILED"
    assert receiver.received[0]["error"] == "bad audio"


def test_webhook_is_retried_twice_then_given_up(endpoint: LocalEndpoint) -> None:
    flaky = WebhookReceiver(fail_first=1)
    dead = WebhookReceiver(fail_first=99)
    try:
        failed_before = endpoint.stats()["webhooks"]["failed"]
        _submit(endpoint, {"input": {"echo": 1}, "webhook": flaky.url})
        _submit(endpoint, {"input": {"echo": 2}, "webhook": dead.url})

        wait_until(lambda: flaky.received)
        wait_until(lambda: endpoint.stats()["webhooks"]["failed"] == failed_before + 1)

        assert len(flaky.attempts) == 2
        assert len(dead.attempts) == 3  # the first try and RunPod's two retries
        assert dead.attempts[1] - dead.attempts[0] >= 0.5  # the configured retry delay
    finally:
        flaky.close()
        dead.close()


def test_finished_results_expire_after_the_retention_time(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1, retention_s=1.0) as endpoint:
        job_id = requests.post(f"{endpoint.url}/runsync", json={"input": {"echo": 1}}, timeout=60).json()[
            "id"
        ]
        assert requests.get(f"{endpoint.url}/status/{job_id}", timeout=10).status_code == 200

        def gone() -> dict | None:
            response = requests.get(f"{endpoint.url}/status/{job_id}", timeout=10)
            return response.json() if response.status_code == 404 else None

        assert wait_until(gone) == {"error": "request does not exist"}


def test_a_queued_job_past_its_ttl_is_dropped(tmp_path: Path) -> None:
    with echo_endpoint(tmp_path, workers=1) as endpoint:
        busy = _submit(endpoint, {"input": {"sleep": 120}})
        wait_until(lambda: endpoint.stats()["jobs"]["in_progress"] == 1)
        doomed = _submit(endpoint, {"input": {"echo": 1}, "policy": {"ttl": 1000}})

        wait_until(lambda: requests.get(f"{endpoint.url}/status/{doomed}", timeout=10).status_code == 404)

        assert endpoint.stats()["jobs"]["expired"] == 1
        assert endpoint.stats()["jobs"]["started"] == 1  # the expired job never ran
        requests.post(f"{endpoint.url}/cancel/{busy}", timeout=10)


def test_api_key_is_required_when_set(tmp_path: Path, official_client) -> None:
    with echo_endpoint(tmp_path, workers=1, api_key="s3cret-key") as endpoint:
        health = f"{endpoint.url}/health"
        assert requests.get(health, timeout=10).status_code == 401
        assert requests.get(health, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        assert (
            requests.get(health, headers={"Authorization": "Bearer s3cret-key"}, timeout=10).status_code
            == 200
        )
        assert requests.get(health, headers={"Authorization": "s3cret-key"}, timeout=10).status_code == 200
        refused = requests.post(f"{endpoint.url}/run", json={"input": {}}, timeout=10)
        assert refused.status_code == 401 and "s3cret" not in refused.text

        with pytest.raises(RuntimeError, match="Unauthorized"):
            official_client(endpoint, api_key="wrong").run({"echo": 1})
        # The workers authenticate with their own tokens, so jobs still run.
        assert (
            official_client(endpoint, api_key="s3cret-key").run_sync({"echo": "ok"}, timeout=60)["echo"]
            == "ok"
        )


def test_non_loopback_bind_needs_an_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="API key"):
        LocalEndpoint(host="0.0.0.0")
    LocalEndpoint(host="0.0.0.0", api_key="k")  # allowed with a key (not started)

    class Args:
        host, port, workers, api_key = "0.0.0.0", 0, 1, None

    assert serve_main(Args()) == 2  # type: ignore[arg-type]
    assert "API key" in capsys.readouterr().err
