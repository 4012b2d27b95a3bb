"""`stenopod serve --workers N` is checked against the machine, and no worker outlives its endpoint."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stenopod.cli import main as cli_main
from stenopod.local.worker_limits import MAX_WORKERS_ENV, check_worker_count, worker_limit
from stenopod.local.workers import GUARD_PATH

from tests.local.conftest import ECHO_COMMAND

pytestmark = pytest.mark.timeout(60)

GB = 2**30
REPO = Path(__file__).resolve().parents[2]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _pids_with_env(marker: bytes) -> list[int]:
    """Running processes whose environment holds marker (a worker's, with its ping process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and _running(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_the_limit_is_two_workers_per_core_and_one_per_1_5_gb_lowered_only_by_the_variable() -> None:
    assert worker_limit(cores=2, memory_bytes=24 * GB, env={})[0] == 4
    assert worker_limit(cores=16, memory_bytes=24 * GB, env={})[0] == 16  # memory binds
    assert worker_limit(cores=2, memory_bytes=1 * GB, env={})[0] == 1  # never below one
    assert worker_limit(cores=2, memory_bytes=1 * GB, loads_model=False, env={})[0] == 4
    assert worker_limit(cores=2, memory_bytes=24 * GB, env={MAX_WORKERS_ENV: "1"})[0] == 1
    assert worker_limit(cores=2, memory_bytes=24 * GB, env={MAX_WORKERS_ENV: "100"})[0] == 4  # not up

    with pytest.raises(ValueError) as raised:
        check_worker_count(1000, cores=2, memory_bytes=24 * GB, env={})
    message = str(raised.value)
    assert "--workers 1000" in message and "limit is 4" in message
    assert "2 core(s) x 2 = 4" in message and "24.0 GB available / 1.5 GB per worker = 16" in message
    check_worker_count(4, cores=2, memory_bytes=24 * GB, env={})


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_max_workers_value_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        worker_limit(cores=2, memory_bytes=24 * GB, env={MAX_WORKERS_ENV: value})
    assert MAX_WORKERS_ENV in str(raised.value) and repr(value) in str(raised.value)


def test_serve_with_too_many_workers_exits_2_naming_the_limit_and_starts_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    limit, _ = worker_limit()
    assert cli_main(["serve", "--workers", str(limit + 1), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--workers {limit + 1}" in err and f"the limit is {limit}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kill_after_s", [0.0, 1.5], ids=["while-starting", "with-ping-processes"])
def test_no_worker_outlives_an_endpoint_killed_while_its_workers_start(
    tmp_path: Path, kill_after_s: float
) -> None:
    # The echo workers do not watch their parent at all: only the endpoint side can end them.
    marker = f"STENOPOD_TEST_MARK={secrets.token_hex(8)}"
    name, value = marker.split("=")
    # Worker output goes to files (as with --log-dir, or the CLI's embedded endpoint): a worker
    # writing into a dead endpoint's pipe would die of SIGPIPE and hide the escape.
    script = (
        "from pathlib import Path; from stenopod.local import serve;"
        f"serve(port=0, workers=2, worker_command={ECHO_COMMAND!r}, log_dir=Path({str(tmp_path)!r}),"
        f" env={{'RUNPOD_PING_INTERVAL': '1000', {name!r}: {value!r}}})"
    )
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'client'}")
    endpoint = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not _pids_with_env(marker.encode()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _pids_with_env(marker.encode()), "no worker started"
        time.sleep(kill_after_s)  # 0: workers are still importing runpod; 1.5: they run, and ping
        endpoint.send_signal(signal.SIGKILL)
        endpoint.wait(10)
        deadline = time.monotonic() + 10
        while _pids_with_env(marker.encode()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _pids_with_env(marker.encode())
    finally:
        endpoint.kill()
        endpoint.wait(10)
        for pid in _pids_with_env(marker.encode()):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} worker process(es) kept running after the endpoint died"


def test_a_worker_started_after_its_endpoint_died_ends_at_once(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)  # the endpoint is gone before the worker starts
    started = time.monotonic()
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", GUARD_PATH, str(read_end), "--", "sleep", "30"],
        pass_fds=(read_end,),
        start_new_session=True,
    )
    os.close(read_end)
    assert guard.wait(10) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_the_guard_passes_sigterm_on_and_exits_as_the_worker_did(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); print('up', flush=True); time.sleep(30)"
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", GUARD_PATH, str(read_end), "--", sys.executable, "-c", code],
        pass_fds=(read_end,),
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert guard.stdout is not None and guard.stdout.readline().strip() == "up"
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(10) == 7
    finally:
        os.close(read_end)
        os.close(write_end)
        if guard.poll() is None:
            guard.kill()
            guard.wait()


def test_a_local_endpoint_refuses_worker_settings_its_workers_would_refuse() -> None:
    # Said once, before any worker starts, not by workers exiting and restarting forever.
    from stenopod.local.server import LocalEndpoint

    with pytest.raises(ValueError, match="STENOPOD_JOBS_AT_ONCE='x': not an integer"):
        LocalEndpoint(workers=1, env={"STENOPOD_JOBS_AT_ONCE": "x"})
