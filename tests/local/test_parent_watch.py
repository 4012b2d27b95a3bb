"""A local endpoint's worker ends when the endpoint dies without stopping it (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from handler.parent_watch import PARENT_ENV, parent_gone, watch_parent
from handler.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it no longer runs.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_worker_outlives_its_endpoint_by_at_most_a_few_seconds(tmp_path: Path) -> None:
    # The "endpoint": starts a "worker" as stenopod serve does (own session, its pid in the
    # environment), prints the worker's pid, then waits to be killed.
    worker_code = textwrap.dedent(
        """
        import time
        from handler.settings import WorkerSettings
        from handler.parent_watch import watch_parent
        assert watch_parent(WorkerSettings.from_env().parent_pid, interval_s=0.1) is not None
        time.sleep(120)
        """
    )
    endpoint_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        env = dict(os.environ, {PARENT_ENV}=str(os.getpid()))
        worker = subprocess.Popen([sys.executable, "-c", {worker_code!r}], env=env, start_new_session=True)
        print(worker.pid, flush=True)
        time.sleep(120)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    endpoint = subprocess.Popen(
        [sys.executable, "-c", endpoint_code], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert endpoint.stdout is not None
        worker_pid = int(endpoint.stdout.readline())
        time.sleep(0.5)
        assert _alive(worker_pid)  # the watch leaves a worker with a live endpoint alone

        endpoint.send_signal(signal.SIGKILL)
        endpoint.wait(10)
        deadline = time.monotonic() + 15
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker_pid), "the worker kept running after its endpoint died"
    finally:
        endpoint.kill()
        endpoint.wait(10)


def test_no_watch_without_the_variable_and_a_live_parent_is_not_gone(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(PARENT_ENV, raising=False)
    assert WorkerSettings.from_env().parent_pid is None
    assert watch_parent(None) is None  # RunPod's workers: nothing watches
    assert not parent_gone(os.getppid(), os.getppid())
    assert parent_gone(os.getppid(), os.getppid() + 1)  # re-parented
