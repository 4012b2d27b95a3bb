"""How run_job feeds the engine: long audio planned into chunks while it is prepared (not inside the
engine call), engine call slots shared by jobs running side by side, and the engine clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from handler.chunking import DEFAULT_MAX_CHUNK_S
from handler.engines.base import SAMPLE_RATE
from handler.job import run_job
from tests.handler.job_doubles import (
    SlowOneAtATimeTestEngine,
    TestDoubleEngine,
    TestDoubleRegistry,
    data_uri,
    run,
)
from tests.support.servers import AudioHTTPServer

pytestmark = pytest.mark.usefixtures("job_env")


# --- long audio reaches the engine in chunks -----------------------------------------------------


def test_long_audio_reaches_the_engine_in_chunks(audio_server: AudioHTTPServer) -> None:
    registry = TestDoubleRegistry()
    (item,) = run({"audio": audio_server.url("multilingual.mp3")}, registry)["items"]
    assert item["status"] == "ok" and item["duration_s"] == pytest.approx(59.9, abs=0.1)
    chunks = [size for batch in registry.engine.batches for size in batch]
    assert len(chunks) > 1 and max(chunks) <= DEFAULT_MAX_CHUNK_S * SAMPLE_RATE
    ends = [segment["end"] for segment in item["segments"]]
    assert ends == sorted(ends) and ends[-1] <= 60.0


# --- chunks are planned while the audio is prepared ---------------------------------------------


def test_long_audio_is_planned_in_preparation_not_in_the_engine_call(
    audio_server: AudioHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine call gets its chunks ready-made: planning inside the call would leave a GPU
    waiting for the VAD."""
    import handler.longform

    def no_planning_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("planned inside the engine call")

    monkeypatch.setattr(handler.longform, "plan_audio", no_planning_here)
    engine = TestDoubleEngine()
    engine.max_chunk_s = 10.0  # type: ignore[attr-defined]
    answer = run({"audio": audio_server.url("multilingual.mp3")}, TestDoubleRegistry(engine))
    (item,) = answer["items"]
    assert item["status"] == "ok", item
    assert item["timings"]["plan_s"] > 0
    assert len(engine.batches[0]) > 1
    assert all(size <= 10 * SAMPLE_RATE for batch in engine.batches for size in batch)


def test_two_jobs_at_once_share_the_engines_call_slots(data_dir: Path) -> None:
    """Jobs a worker runs side by side take turns at the engine: at most two calls in flight in
    all, and a job's wait for the other job's calls is not counted as waiting for input."""
    engine = SlowOneAtATimeTestEngine()  # one audio per call, 0.4 s each
    registry = TestDoubleRegistry(engine)
    audio = data_uri(data_dir / "librispeech_1089-134686-0001.wav")

    def job(name: str) -> dict[str, Any]:
        return {
            "id": f"job-{name}",
            "input": {"items": [{"id": f"{name}{n}", "audio": audio} for n in range(2)]},
        }

    async def both() -> list[dict[str, Any]]:
        first = asyncio.ensure_future(run_job(job("a"), registry))
        await asyncio.sleep(0.1)  # job a's two calls hold both slots by now
        second = await run_job(job("b"), registry)
        return [await first, second]

    answers = asyncio.run(both())
    assert all(item["status"] == "ok" for answer in answers for item in answer["items"])
    assert len(engine.batches) == 4
    assert engine.most_at_once == 2  # not four: the slots are shared by the two jobs
    # Job b had its audio (data: URIs: milliseconds) long before a slot freed up (0.3 s later):
    # that wait was the engine busy with job a, not input.
    worker_b = answers[1]["worker"]
    assert worker_b["first_input_s"] < 0.2, worker_b
    assert worker_b["critical_io_s"] < 0.2, worker_b


def test_engine_clock_counts_input_only_until_a_call_was_ready() -> None:
    from handler.engine_clock import EngineClock

    clock = EngineClock()
    start = clock.started_at
    time.sleep(0.05)
    ready = time.perf_counter()
    time.sleep(0.1)  # the engine was busy with another job's calls
    clock.call_started(ready_at=ready)
    clock.call_finished()
    assert clock.first_input_s == pytest.approx(ready - start, abs=1e-6)
    time.sleep(0.05)
    clock.call_started()  # ready and started at once: all of the gap was waiting for input
    clock.call_finished()
    assert 0.05 <= clock.wait_s < 0.5
