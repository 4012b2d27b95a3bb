"""`python -m bench.reliability`: the figures docs/reliability.md quotes, measured again on this machine.

1. Runs tests/reliability (the bad-input catalogue, secrets, faults, the small load run) with
   STENOPOD_RELIABILITY_FIGURES set, and prints what the tests recorded: how many bad inputs were
   tried and the codes they got, which faults were injected and what survived them.
2. Runs the load: N items (default 10,000) through `stenopod serve` (a separate process, its
   worker(s) running the instant TEST DOUBLE engine) driven by `stenopod transcribe` (another
   process), and reports items/s, peak resident memory of the client, the server and the workers,
   and whether anything was lost (manifest lines == N, all ok).

    python -m bench.reliability                 # everything (about 10 minutes on 2 cores)
    python -m bench.reliability --load-only --items 2000 --workers 2
    python -m bench.reliability --tests-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.figures import FIGURES_ENV, read

ROOT = Path(__file__).resolve().parents[1]
INSTANT_MODEL = "instant-test-double"


# --- the load run ------------------------------------------------------------------------------------


def _tone_wav(seconds: float = 0.1) -> bytes:
    import io

    t = np.arange(int(seconds * 16_000)) / 16_000
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


class _OneFileServer:
    """Serves the same short WAV at every path on loopback; counts the requests."""

    def __init__(self, data: bytes) -> None:
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _PeakRSS:
    """Samples the resident memory of the client process and the server's process tree."""

    def __init__(self, client_pid: int, server_pid: int, interval_s: float = 0.1) -> None:
        self.client_pid, self.server_pid, self.interval_s = client_pid, server_pid, interval_s
        self.client_mb = self.server_mb = self.workers_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss_mb(process: psutil.Process) -> float:
        try:
            return process.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = psutil.Process(self.client_pid)
                server = psutil.Process(self.server_pid)
                workers = server.children(recursive=True)
            except psutil.Error:
                workers, client, server = [], None, None
            if client is not None and server is not None:
                self.client_mb = max(self.client_mb, self._rss_mb(client))
                self.server_mb = max(self.server_mb, self._rss_mb(server))
                self.workers_mb = max(self.workers_mb, sum(self._rss_mb(w) for w in workers))
            self._stop.wait(self.interval_s)


@dataclass
class LoadResult:
    items: int
    workers: int
    seconds: float
    items_per_s: float
    manifest_lines: int
    ok_lines: int
    audio_fetches: int
    peak_client_mb: float
    peak_server_mb: float
    peak_workers_mb: float
    jobs: dict[str, Any] = field(default_factory=dict)
    client_exit: int = 0

    @property
    def nothing_lost(self) -> bool:
        return self.client_exit == 0 and self.manifest_lines == self.ok_lines == self.items


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base: str, workers: int, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"stenopod serve exited with {server.returncode}")
        try:
            health = httpx.get(f"{base}/local/health", timeout=5).json()
            if health.get("workers", {}).get("idle", 0) >= workers:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError("the local endpoint's workers did not become ready")


def run_load(items: int, workers: int, workdir: Path, *, job_seconds: float = 64.0) -> LoadResult:
    """items through `stenopod serve` + `stenopod transcribe` (both real processes); see module doc.

    Each item declares 1 s of audio, so job_seconds items share a job (at most 64, the packer's cap).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    audio = _OneFileServer(_tone_wav())
    manifest = workdir / "backlog.jsonl"
    with manifest.open("w") as out:
        for n in range(items):
            out.write(
                json.dumps({"id": f"load-{n:05d}", "url": f"{audio.base_url}/a/{n}.wav", "duration_s": 1})
            )
            out.write("\n")
    port = _free_port()
    env = dict(os.environ, STENOPOD_ENABLE_TEST_ENGINE="1", PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "stenopod.cli", "serve", "--port", str(port), "--workers", str(workers),
         "--allow-private-urls", "--log-dir", str(workdir / "worker-logs")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v2"
    output = workdir / "out"
    try:
        _wait_ready(base, workers, server)
        started = time.monotonic()
        client = subprocess.Popen(
            [sys.executable, "-m", "stenopod.cli", "transcribe", str(manifest), "--endpoint", base,
             "--model", INSTANT_MODEL, "--output", str(output), "--state", str(workdir / "state.sqlite"),
             "--formats", "txt", "--job-seconds", str(job_seconds), "--max-in-flight", str(2 * workers),
             "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        with _PeakRSS(client.pid, server.pid) as peaks:
            _, stderr = client.communicate()
        seconds = time.monotonic() - started
        jobs = httpx.get(f"{base}/local/health", timeout=10).json().get("jobs", {})
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        audio.stop()
    lines = [
        json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()
    ]
    if client.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-2000:])
    return LoadResult(
        items=items,
        workers=workers,
        seconds=round(seconds, 1),
        items_per_s=round(items / seconds, 1),
        manifest_lines=len(lines),
        ok_lines=sum(1 for line in lines if line.get("status") == "ok"),
        audio_fetches=audio.requests,
        peak_client_mb=round(peaks.client_mb, 1),
        peak_server_mb=round(peaks.server_mb, 1),
        peak_workers_mb=round(peaks.workers_mb, 1),
        jobs=jobs,
        client_exit=client.returncode,
    )


# --- the tests' figures ------------------------------------------------------------------------------


def run_reliability_tests(figures_path: Path) -> int:
    figures_path.unlink(missing_ok=True)
    env = dict(os.environ, **{FIGURES_ENV: str(figures_path)})
    command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def print_test_figures(figures: dict[str, dict[str, Any]]) -> None:
    catalogue = figures.get("catalogue")
    if catalogue:
        print(
            f"bad-input catalogue: {catalogue['passed']} of {catalogue['cases']} cases got their expected code"
        )
        for code, count in catalogue["by_code"].items():
            print(f"  {code:<18} {count}")
    faults = figures.get("store_faults_retried")
    if faults:
        print(
            f"object store faults retried: {faults['faults_injected']} -> {faults['done']}/{faults['items']} done"
        )
    exhausted = figures.get("store_retries_exhausted")
    if exhausted:
        print(f"object store retries exhausted: {exhausted['storage_failed']} item storage_failed, not done")
    storm = figures.get("endpoint_storm")
    if storm:
        print(
            f"endpoint storm: {storm['answered_429']} x 429, {storm['answered_503']} x 503, {storm['dropped']} dropped "
            f"-> {storm['done']}/{storm['items']} done, peak concurrency {storm['max_concurrent']} "
            f"(bound {storm['max_in_flight']})"
        )
    hook = figures.get("webhook_down")
    if hook:
        print(f"webhook listener down: {hook['done']}/{hook['items']} done by polling")
    kill = figures.get("sigkill")
    if kill:
        print(
            f"client SIGKILLed {kill['kills']} times over {kill['items']} items: "
            f"{kill['transcribed_once']} transcribed exactly once"
        )
    load = figures.get("load_small")
    if load:
        print(f"small load (test): {load['items']} items, nothing lost: {load['nothing_lost']}")


def print_load(result: LoadResult) -> None:
    print(
        f"load: {result.items} items, {result.workers} worker(s), {result.seconds} s -> {result.items_per_s} items/s; "
        f"manifest {result.manifest_lines} lines, {result.ok_lines} ok; {result.audio_fetches} audio fetches; "
        f"nothing lost: {result.nothing_lost}"
    )
    print(
        f"  peak RSS: client {result.peak_client_mb} MB, server {result.peak_server_mb} MB, "
        f"workers {result.peak_workers_mb} MB; endpoint jobs: {result.jobs}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="load items (default 10000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the load (default 1)")
    parser.add_argument("--tests-only", action="store_true")
    parser.add_argument("--load-only", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    sys.path.insert(0, str(ROOT))
    if not args.load_only:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "figures.jsonl"
            status = run_reliability_tests(path)
            print()
            print_test_figures(read(path))
    if not args.tests_only:
        with tempfile.TemporaryDirectory(prefix="stenopod-load-") as tmp:
            result = run_load(args.items, args.workers, Path(tmp))
        print_load(result)
        print(json.dumps(asdict(result) | {"nothing_lost": result.nothing_lost}))
        if not result.nothing_lost:
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
