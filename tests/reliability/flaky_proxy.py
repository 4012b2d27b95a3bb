"""A flaky HTTP proxy on loopback in front of the moto S3 server, for object-store fault tests.

The worker's boto3 client talks to the proxy as if it were S3. PUT requests take the next scripted
fault ("reset": the connection is reset before the request reaches S3; "reset-after": the object
is stored, then the connection is reset, so the client cannot know; "500": an S3 InternalError;
"slow": forwarded after a delay; "pass": forwarded). PUTs whose path contains one of
`always_fail` get a 500 every time. Everything else is forwarded untouched. Every request is
counted in `requests`, so a test can also show that none arrived.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.servers import free_port

FAULTS = ("reset", "reset-after", "500", "slow", "pass")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "expect",
    "content-length",
    "proxy-connection",
}
_S3_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>scripted fault</Message></Error>"
)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets are the point; their tracebacks are noise


class FlakyS3Proxy:
    def __init__(self, upstream_port: int, slow_s: float = 0.3) -> None:
        self.upstream_port = upstream_port
        self.slow_s = slow_s
        self.faults: deque[str] = deque()
        self.always_fail: set[str] = set()
        self.injected: Counter[str] = Counter()  # faults used up, by kind
        self.puts = 0
        self.requests: list[str] = []  # "METHOD /path" of every request that reached the proxy
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_HEAD = do_POST = do_DELETE = do_PUT = do_GET

        self.port = free_port()
        self.httpd = _QuietServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FlakyS3Proxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, faults: list[str]) -> None:
        assert set(faults) <= set(FAULTS), faults
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.always_fail.clear()

    # --- serving --------------------------------------------------------------------------------

    def _next_fault(self, handler: BaseHTTPRequestHandler) -> str:
        if handler.command != "PUT":
            return "pass"
        with self._lock:
            self.puts += 1
            path = handler.path.split("?", 1)[0]
            if any(part in path for part in self.always_fail):
                fault = "500"
            else:
                fault = self.faults.popleft() if self.faults else "pass"
            if fault != "pass":
                self.injected[fault] += 1
        return fault

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(f"{handler.command} {handler.path.split('?', 1)[0]}")
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        fault = self._next_fault(handler)
        if fault == "reset":
            _reset(handler)
            return
        if fault == "500":
            _send(handler, 500, {"Content-Type": "application/xml"}, _S3_ERROR)
            return
        if fault == "slow":
            time.sleep(self.slow_s)
        status, headers, data = self._forward(handler, body)
        if fault == "reset-after":
            _reset(handler)
            return
        _send(handler, status, headers, data)

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(handler.command, handler.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            return response.status, kept, data
        finally:
            upstream.close()


def _send(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close with SO_LINGER 0: the client gets a TCP reset, not an orderly end."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()  # the real close (and the reset) comes once the handler's files close
    except OSError:
        pass
