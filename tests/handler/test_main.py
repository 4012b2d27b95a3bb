"""`python -m handler` in RunPod's local test mode, as a real subprocess with the dev tiny.en model."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "main-test-secret-7c3e91d0a5"


def run_worker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STENOPOD_", "RUNPOD_"))}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "handler", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def flac_of(path: Path) -> bytes:
    """The clip as 16 kHz mono FLAC: small enough for one command-line argument (128 KiB on Linux)."""
    import av
    import numpy as np

    from handler.decode import decode_audio

    samples = (decode_audio(path, 3600) * 32767).clip(-32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def test_test_input_flag_transcribes_real_speech(data_dir: Path) -> None:
    flac = flac_of(data_dir / "librispeech_1089-134686-0001.wav")
    job = {
        "input": {
            "id": "ls",
            "audio": "data:audio/flac;base64," + base64.b64encode(flac).decode(),
            "callback": {"url": "http://127.0.0.1:9/hook", "secret": SECRET},
        }
    }
    proc = run_worker("--test_input", json.dumps(job))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "completed successfully" in out
    assert "stuff it into you" in out.lower()
    assert "'model': 'tiny.en'" in out
    assert SECRET not in out  # neither the job input nor the answer is logged with the secret


def test_repo_test_input_json_runs() -> None:
    example = json.loads((REPO_ROOT / "test_input.json").read_text())
    assert example["input"]["audio"].startswith("data:audio/")
    proc = run_worker()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Using test_input.json" in out and "completed successfully" in out


@pytest.mark.parametrize(
    "bad", [{"input": {"audio": "ftp://x/y.mp3"}}, {"input": {"audio": "https://a/b", "x": 1}}]
)
def test_invalid_test_input_fails_with_invalid_input(bad: dict) -> None:
    proc = run_worker("--test_input", json.dumps(bad))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "invalid_input" in out and "Traceback" not in out


def test_the_cpu_name_comes_from_proc_cpuinfo_without_timing_the_cpu(tmp_path: Path) -> None:
    from handler.cpu_name import processor_name

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.00GHz\n")
    assert processor_name(info) == "Test CPU @ 2.00GHz"
    assert processor_name(tmp_path / "missing") == "Unable to get processor info."
