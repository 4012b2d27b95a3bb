"""A worker takes its next job while one is still running (STENOPOD_JOBS_AT_ONCE, default 2).

The real handler (`python -m handler`, instant test-double engine) under the unmodified runpod loop
and the local endpoint: the second job's audio is fetched while the first job is still busy, so
on a GPU the engine does not wait on the network between jobs; with 1, jobs run strictly one
after another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stenopod.local import run_in_thread

from tests.support.servers import AudioHTTPServer
from tests.support.tones import tone_wav

SLOW_S = 2.5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AudioHTTPServer]:
    """/slow.wav after SLOW_S, /fast.wav at once; asked_at notes when each was asked for."""
    audio = AudioHTTPServer(tmp_path)
    body = tone_wav(1.0, hz=220.0)
    audio.serve_after("slow.wav", body, SLOW_S)
    audio.serve_after("fast.wav", body, 0.0)
    audio.start()
    yield audio
    audio.stop()


def _two_jobs(server: AudioHTTPServer, tmp_path: Path, jobs_at_once: str) -> dict[str, float]:
    """Submit a slow job then a fast one to one worker; when each ended and each audio was asked for."""
    env = {
        "RUNPOD_PING_INTERVAL": "1000",
        "STENOPOD_ENABLE_TEST_ENGINE": "1",
        "STENOPOD_JOBS_AT_ONCE": jobs_at_once,
    }
    with (
        run_in_thread(workers=1, allow_private_urls=True, env=env, log_dir=tmp_path / "logs") as local,
        httpx.Client(timeout=30) as client,
    ):
        ids = {}
        for name in ("slow", "fast"):
            job = {
                "items": [{"id": name, "audio": server.url(f"{name}.wav")}],
                "model": "instant-test-double",
            }
            response = client.post(f"{local.url}/run", json={"input": job})
            response.raise_for_status()
            ids[name] = response.json()["id"]
        ended: dict[str, float] = {}
        most_in_progress = 0
        deadline = time.perf_counter() + 120
        while len(ended) < 2 and time.perf_counter() < deadline:
            most_in_progress = max(most_in_progress, local.stats()["jobs"]["in_progress"])
            for name, job_id in ids.items():
                status = client.get(f"{local.url}/status/{job_id}").json()
                if name not in ended and status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
                    assert status["status"] == "COMPLETED", status
                    assert status["output"]["items"][0]["status"] == "ok"
                    ended[name] = time.perf_counter()
            time.sleep(0.05)
    assert len(ended) == 2, "the jobs did not finish"
    return {
        "slow_ended": ended["slow"],
        "fast_ended": ended["fast"],
        "fast_asked": server.asked_at["fast.wav"],
        "slow_served": server.asked_at["slow.wav"] + SLOW_S,
        "most_in_progress": most_in_progress,
    }


@pytest.mark.timeout(240)
def test_the_next_job_is_fetched_while_one_is_still_running(server: AudioHTTPServer, tmp_path: Path) -> None:
    times = _two_jobs(server, tmp_path, "2")
    assert times["most_in_progress"] == 2
    # The fast job's audio was asked for, and the job answered, while the slow one's audio was
    # still on its way.
    assert times["fast_asked"] < times["slow_served"]
    assert times["fast_ended"] < times["slow_ended"]


@pytest.mark.timeout(240)
def test_one_job_at_a_time_when_told(server: AudioHTTPServer, tmp_path: Path) -> None:
    times = _two_jobs(server, tmp_path, "1")
    assert times["most_in_progress"] == 1
    assert times["fast_asked"] >= times["slow_served"]  # only once the slow job had its audio
