"""`stenopod serve` in the foreground: answers like RunPod, and Ctrl-C/SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.local.conftest import ECHO_COMMAND, wait_until
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(120)


def test_serve_runs_until_sigterm_then_stops_its_workers(tmp_path: Path) -> None:
    port = free_port()
    script = (
        "import sys; from pathlib import Path; from stenopod.local import serve;"
        f"serve(port={port}, workers=1, worker_command={ECHO_COMMAND!r}, log_dir=Path({str(tmp_path)!r}),"
        " env={'RUNPOD_PING_INTERVAL': '1000'})"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/local"

        def answered() -> dict | None:
            try:
                return requests.post(f"{url}/runsync", json={"input": {"echo": "served"}}, timeout=60).json()
            except requests.ConnectionError:
                return None

        body = wait_until(answered, timeout=60, interval=0.3)
        assert body["status"] == "COMPLETED" and body["output"]["echo"] == "served"
        worker_pid = body["output"]["pid"]

        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert server.returncode == 0, output
    assert f"RUNPOD_ENDPOINT_BASE_URL=http://127.0.0.1:{port}/v2" in output
    assert "Traceback" not in output
    with pytest.raises(ProcessLookupError):  # the worker went with the server
        os.kill(worker_pid, 0)
