"""run_job's per-item callbacks: signed POSTs to a real HTTP server on loopback, retried, and never
a reason to fail an item that was transcribed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stenopod.signing import verify

from tests.handler.job_doubles import data_uri, run
from tests.support.servers import AudioHTTPServer, free_port

pytestmark = pytest.mark.usefixtures("job_env")

CALLBACK_SECRET = "cb-secret-4f1d9a7c2b6e8d03"


class CallbackReceiver:
    """A real HTTP server on loopback recording the POSTs it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver()
    yield server
    server.stop()


def test_callback_posts_each_item_signed(receiver: CallbackReceiver, audio_server: AudioHTTPServer) -> None:
    job_input = {
        "items": [
            {"id": "good", "audio": audio_server.url("jfk.flac")},
            {"id": "bad", "audio": audio_server.url("missing.flac")},
        ],
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    answer = run(job_input)
    assert [i["status"] for i in answer["items"]] == ["ok", "error"]
    assert answer["items"][0]["error"] is None
    assert len(receiver.posts) == 2
    # Each item's callback goes as it finishes: in any order.
    by_id = {item["id"]: item for item in answer["items"]}
    for headers, body in receiver.posts:
        expected = by_id.pop(json.loads(body)["id"])
        assert verify(CALLBACK_SECRET, headers, body)
        assert headers["X-Stenopod-Job-Id"] == "job-1"
        posted = json.loads(body)
        assert posted["id"] == expected["id"] and posted["status"] == expected["status"]
    assert CALLBACK_SECRET not in json.dumps(answer)
    assert all(CALLBACK_SECRET.encode() not in body for _, body in receiver.posts)


def test_failed_callback_leaves_the_item_ok(receiver: CallbackReceiver, data_dir: Path) -> None:
    receiver.status = 500
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    (item,) = run(job_input)["items"]
    assert item["status"] == "ok" and item["text"] == "heard audio"
    assert item["error"]["code"] == "callback_failed"
    assert "token=abc" not in item["error"]["message"]  # query strings never shown
    assert len(receiver.posts) == 3  # first try and two retries


def test_callback_goes_through_the_ssrf_guard(
    receiver: CallbackReceiver, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STENOPOD_ALLOW_PRIVATE_URLS")
    job_input = {
        "audio": data_uri(data_dir / "librispeech_1089-134686-0001.wav"),
        "callback": {"url": receiver.url, "secret": CALLBACK_SECRET},
    }
    (item,) = run(job_input)["items"]
    assert item["status"] == "ok" and item["error"]["code"] == "callback_failed"
    assert receiver.posts == []
