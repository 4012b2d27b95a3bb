"""Fixtures for the local endpoint: real worker processes running the unmodified runpod loop."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import runpod
from stenopod.local import LocalEndpoint, run_in_thread

ECHO_HANDLER = Path(__file__).resolve().parents[1] / "support" / "echo_handler.py"
ECHO_COMMAND = [sys.executable, str(ECHO_HANDLER)]
# Short runpod intervals keep the tests quick; the endpoint's own defaults are RunPod's.
FAST_WORKER_ENV = {"RUNPOD_PING_INTERVAL": "1000"}


def echo_endpoint(log_dir: Path | None, **kwargs: Any) -> AbstractContextManager[LocalEndpoint]:
    options: dict[str, Any] = {
        "worker_command": ECHO_COMMAND,
        "log_dir": log_dir,
        "env": dict(FAST_WORKER_ENV),
        "job_poll_s": 5.0,
        "tick_s": 0.1,
    }
    options["env"].update(kwargs.pop("env", {}))
    options.update(kwargs)
    return run_in_thread(**options)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; fail with a message after timeout (generous: CI is slow)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def official_client(monkeypatch: pytest.MonkeyPatch) -> Callable[[LocalEndpoint], runpod.Endpoint]:
    """The official runpod client pointed at an endpoint, as a user sets it up."""

    def connect(endpoint: LocalEndpoint, api_key: str = "local-key") -> runpod.Endpoint:
        monkeypatch.setattr(runpod, "endpoint_url_base", endpoint.base_url)
        monkeypatch.setattr(runpod, "api_key", api_key)
        return runpod.Endpoint(endpoint.endpoint_id)

    return connect


@pytest.fixture(scope="module")
def shared_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    """Two echo workers shared by the tests of one module that do not disturb each other."""
    # A generous stop grace: on a loaded 2-core CI box the runpod loop can take seconds to let go
    # of a cancelled job, and the cancel test asserts the worker was NOT restarted for being slow.
    with echo_endpoint(
        tmp_path_factory.mktemp("logs"), workers=2, model="tiny.en", stop_grace_s=30.0
    ) as endpoint:
        yield endpoint
