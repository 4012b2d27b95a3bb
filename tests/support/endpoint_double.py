"""A TEST DOUBLE of a RunPod serverless endpoint's client API, on 127.0.0.1.

RunPod's cloud cannot run in a test, and its failure modes (429 storms, 503s, dropped connections)
cannot be provoked on demand; this double answers /v2/<id>/run, status, cancel, retry, stream,
health and purge-queue the way RunPod documents them, and can be scripted to misbehave. Jobs
finish without any worker: COMPLETED on the first status poll, or after `polls_to_complete`
polls. It records every request and the highest number of requests it was serving at once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import free_port

OPERATIONS = ("run", "status", "cancel", "retry", "stream", "health", "purge-queue")


@dataclass
class RecordedRequest:
    method: str
    path: str
    operation: str | None
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() when the request arrived
    answered: int | None = None  # status code sent; None when the connection was dropped


@dataclass
class Fault:
    """One scripted misbehaviour, used up by the next request for a matching operation."""

    status: int | None  # None: drop the connection without an answer
    retry_after: str | None = None
    operation: str | None = None  # None: any operation
    after_processing: bool = False  # act on the request (e.g. create the job), then fail the answer


@dataclass
class DoubleJob:
    id: str
    input: Any
    status: str = "IN_QUEUE"
    polls: int = 0
    output: Any = None
    error: Any = None
    webhook: str | None = None
    history: list[str] = field(default_factory=list)


class RunPodEndpointTestDouble:
    def __init__(
        self,
        endpoint_id: str = "test-endpoint",
        *,
        api_key: str | None = None,
        polls_to_complete: int = 0,
        response_delay_s: float = 0.0,
        output_for: Callable[[Any], Any] | None = None,
        error_for: Callable[[Any], Any] | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.polls_to_complete = polls_to_complete
        self.response_delay_s = response_delay_s
        self.output_for = output_for or (lambda job_input: {"echo": job_input})
        self.error_for = error_for or (lambda job_input: None)
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, DoubleJob] = {}
        self.faults: deque[Fault] = deque()
        self.max_concurrent = 0
        # Called with (request, answer) once an answer has been sent: a test can act at that
        # instant (kill the client between receiving an answer and acting on it).
        self.on_answered: Callable[[RecordedRequest, Any], None] | None = None
        self._concurrent = 0
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_POST(self) -> None:
                double._handle(self, "POST")

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The endpoint's base URL: http://127.0.0.1:PORT/v2/<endpoint id>."""
        return f"{self.root_url}/v2/{self.endpoint_id}"

    def start(self) -> RunPodEndpointTestDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> RunPodEndpointTestDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- scripting ----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 429,
        *,
        retry_after: str | None = None,
        operation: str | None = None,
        after_processing: bool = False,
    ) -> None:
        """Answer the next `count` matching requests with `status` (and Retry-After when given)."""
        with self._lock:
            self.faults.extend(Fault(status, retry_after, operation, after_processing) for _ in range(count))

    def drop_next(self, count: int, *, operation: str | None = None, after_processing: bool = False) -> None:
        """Close the connection of the next `count` matching requests without answering."""
        with self._lock:
            self.faults.extend(Fault(None, None, operation, after_processing) for _ in range(count))

    # --- inspection ---------------------------------------------------------------------------

    def requests_for(self, operation: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.operation == operation]

    def answered(self, operation: str, status: int = 200) -> list[RecordedRequest]:
        return [request for request in self.requests_for(operation) if request.answered == status]

    # --- serving ------------------------------------------------------------------------------

    def _take_fault(self, operation: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.operation is None or fault.operation == operation:
                    self.faults.remove(fault)
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self._concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            self._serve(handler, method)
        finally:
            with self._lock:
                self._concurrent -= 1

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = handler.path.split("?", 1)[0]
        parts = [part for part in path.split("/") if part]
        operation = parts[2] if len(parts) >= 3 and parts[0] == "v2" else None
        record = RecordedRequest(
            method, handler.path, operation, dict(handler.headers.items()), body, time.monotonic()
        )
        with self._lock:
            self.requests.append(record)
        if self.response_delay_s:
            time.sleep(self.response_delay_s)

        if len(parts) < 3 or parts[0] != "v2" or parts[1] != self.endpoint_id or operation not in OPERATIONS:
            self._send(handler, record, 404, {"error": "not found"})
            return
        if self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._send(handler, record, 401, {"error": "Unauthorized"})
            return
        fault = self._take_fault(operation)
        if fault is not None and not fault.after_processing:
            self._fail(handler, record, fault)
            return
        status, answer = self._operate(method, operation, parts[3:], body)
        if fault is not None:
            self._fail(handler, record, fault)
            return
        self._send(handler, record, status, answer)
        if self.on_answered is not None:
            self.on_answered(record, answer)

    def _operate(self, method: str, operation: str, rest: list[str], body: Any) -> tuple[int, Any]:
        with self._lock:
            if operation == "run":
                if method != "POST" or not isinstance(body, dict) or "input" not in body:
                    return 400, {"error": "a POST with a JSON body holding 'input' is required"}
                job = DoubleJob(id=f"{uuid.uuid4()}-double", input=body["input"], webhook=body.get("webhook"))
                self.jobs[job.id] = job
                return 200, {"id": job.id, "status": job.status}
            if operation == "health":
                counts = {state: 0 for state in ("completed", "failed", "inProgress", "inQueue", "retried")}
                for job in self.jobs.values():
                    key = {"COMPLETED": "completed", "FAILED": "failed", "IN_PROGRESS": "inProgress"}.get(
                        job.status, "inQueue" if job.status == "IN_QUEUE" else None
                    )
                    if key:
                        counts[key] += 1
                return 200, {"jobs": counts, "workers": {"idle": 1, "running": 0}}
            if operation == "purge-queue":
                queued = [job for job in self.jobs.values() if job.status == "IN_QUEUE"]
                for job in queued:
                    job.status = "CANCELLED"
                return 200, {"removed": len(queued), "status": "completed"}
            job = self.jobs.get(rest[0]) if rest else None
            if job is None:
                return 404, {"error": "request does not exist"}
            if operation == "status":
                self._advance(job)
                return 200, self._status_body(job)
            if operation == "cancel":
                if job.status not in ("COMPLETED", "FAILED", "TIMED_OUT"):
                    job.status = "CANCELLED"
                return 200, {"id": job.id, "status": job.status}
            if operation == "retry":
                if job.status not in ("FAILED", "TIMED_OUT", "CANCELLED"):
                    return 400, {"error": f"job is {job.status}; only failed jobs can be retried"}
                job.status, job.polls, job.output, job.error = "IN_QUEUE", 0, None, None
                job.history.append("retried")
                return 200, {"id": job.id, "status": job.status}
            # stream
            return 200, {"status": job.status, "stream": []}

    def _advance(self, job: DoubleJob) -> None:
        if job.status not in ("IN_QUEUE", "IN_PROGRESS"):
            return
        if job.polls < self.polls_to_complete:
            job.polls += 1
            job.status = "IN_PROGRESS"
            return
        error = self.error_for(job.input)
        if error is not None:
            job.status, job.error = "FAILED", error
        else:
            job.status, job.output = "COMPLETED", self.output_for(job.input)

    @staticmethod
    def _status_body(job: DoubleJob) -> dict[str, Any]:
        body: dict[str, Any] = {"id": job.id, "status": job.status, "delayTime": 12, "workerId": "double-w1"}
        if job.status in ("COMPLETED", "FAILED"):
            body["executionTime"] = 345
        if job.output is not None:
            body["output"] = job.output
        if job.error is not None:
            body["error"] = job.error
        return body

    def _fail(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, fault: Fault) -> None:
        if fault.status is None:
            handler.close_connection = True
            return  # no status line: the client sees the connection close mid-request
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        self._send(handler, record, fault.status, {"error": "scripted fault"}, headers)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        record: RecordedRequest,
        status: int,
        answer: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(answer).encode()
        record.answered = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
