"""One long file's bar moves before the file is done: the worker reports the audio it has
transcribed chunk by chunk (a RunPod progress update), `stenopod serve` shows it in /status as
RunPod does, and the client counts it on its progress line.

The real worker and the real local endpoint, with the paced TEST DOUBLE engine (Parakeet's chunk
bound and pace, no model): a 22-minute file is two chunks, transcribed one engine call each.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.local import run_in_thread

from handler.engines.instant import PACED_MODEL_ID

pytestmark = pytest.mark.timeout(120)

RATE = 16000
LONG_S = 1320  # past the paced engine's 1200 s chunk bound: two chunks
RTFX = 500.0  # each chunk's engine call takes over a second, so a progress update gets out between


def _long_recording(path: Path) -> Path:
    """A quiet tone with a pause every 30 s, written a minute at a time (it compresses to little)."""
    minute = np.arange(60 * RATE) / RATE
    block = (0.1 * np.sin(2 * np.pi * 220 * minute)).astype(np.float32)
    block[(minute % 30) > 29] = 0.0
    with soundfile.SoundFile(path, "w", RATE, 1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(LONG_S // 60):
            out.write(block)
    return path


def test_a_long_files_progress_line_moves_before_it_is_done(tmp_path: Path) -> None:
    source = _long_recording(tmp_path / "lecture.flac")
    env = {
        "RUNPOD_PING_INTERVAL": "1000",
        "STENOPOD_ENABLE_TEST_ENGINE": "1",
        "STENOPOD_TEST_ENGINE_RTFX": str(RTFX),
        "STENOPOD_BATCH_SIZE": "1",  # one chunk an engine call
    }
    with run_in_thread(workers=1, allow_private_urls=True, env=env, log_dir=tmp_path / "logs") as local:
        options = BacklogOptions(
            sources=[str(source)],
            output=str(tmp_path / "out"),
            endpoint=local.base_url,
            model=PACED_MODEL_ID,
            formats=("json",),
            poll_initial_s=0.2,
        )
        runner = BacklogRunner(options, state=tmp_path / "state.sqlite", show_progress=True)
        lines: list[str] = []

        async def run_and_watch():
            async def watch() -> None:
                while True:
                    if runner.view is not None:
                        lines.append(runner.view.line())
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            try:
                return await runner.run()
            finally:
                watcher.cancel()

        report = asyncio.run(run_and_watch())

    assert (report.done, report.failed) == (1, 0), [(i.error_code, i.error_message) for i in report.items]
    done_hours = [
        float(match.group(1))
        for line in lines
        if "0/1 items" in line and (match := re.search(r"([\d.]+)/[\d.]+ h audio", line))
    ]
    # The first chunk's audio shows while the file, the backlog's one item, is still in flight.
    partial = [hours for hours in done_hours if 0 < hours < LONG_S / 3600]
    assert partial, f"no line counted part of the file: {sorted(set(lines))[:5]}"
    assert any("1 in flight" in line for line in lines)
