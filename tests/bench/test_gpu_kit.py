"""What travels to an offline GPU host still works: the kit's pins and the benchmark it runs there.

The GPU part of issue 5 runs in one short device call (bench/gpu_device.sh); a kit that names an
unpinned package, or a parakeet_size that cannot read the carried speech, would waste it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import gpu_kit, parakeet_size

ROOT = Path(__file__).resolve().parents[2]
SPEECH = ROOT / "tests" / "data" / "librispeech_1089-134686-0001.wav"  # 16 kHz mono 16-bit, 3.3 s


def test_every_kit_package_is_pinned_to_the_tested_version() -> None:
    pins = gpu_kit.pinned(gpu_kit.KIT)
    assert len(pins) == len(gpu_kit.KIT)
    names = [pin.partition("==")[0] for pin in pins]
    assert names == gpu_kit.KIT and all(pin.partition("==")[2] for pin in pins)
    # NeMo 3.0 wants lightning <= 2.4.0; the image's newer one must be shadowed by the tested pin.
    assert "lightning==2.4.0" in pins


def test_an_unpinned_kit_package_is_named(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("nemo-toolkit==3.0.0\n")
    with pytest.raises(SystemExit, match="hydra-core"):
        gpu_kit.pinned(["nemo-toolkit", "hydra-core"], constraints)


def test_the_carried_paths_never_reach_git() -> None:
    for path in (".whl/nemo_toolkit-3.0.0-py3-none-any.whl", "bench/work/gpu/speech.wav"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


@pytest.mark.timeout(300)
def test_parakeet_size_runs_on_the_carried_speech(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    parakeet_size.main(
        [
            "--device", "cpu", "--size", "tiny", "--batches", "1", "2", "--seconds", "2",
            "--audios", "4", "--long", "20", "--speech", str(SPEECH),
            "--work", str(tmp_path), "--out", str(out), "--no-feed",
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["feed_rows"] == []  # the podcast workload is bench.gpu_feed's (not built here)
    assert [row["batch"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert row["audios"] == 4 and row["audio_s"] == 8.0
        assert row["rtfx"] > 0 and row["encoder_rtfx"] > 0
    (long_row,) = result["long_rows"]
    # 3.3 s of speech repeated to 20 s, transcribed whole.
    assert long_row["long_audio_s"] == 20.0 and long_row["rtfx"] > 0
    assert long_row["attention"] == "rel_pos"


@pytest.mark.timeout(300)
def test_a_failing_row_is_recorded_and_the_rest_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    parakeet_size.main(
        [
            "--device", "cpu", "--size", "tiny", "--batches", "0", "1", "--seconds", "2",
            "--audios", "2", "--long", "--speech", str(SPEECH), "--work", str(tmp_path), "--out", str(out),
            "--no-feed",
        ]
    )  # fmt: skip
    failed, measured = json.loads(out.read_text())["rows"]
    assert failed["batch"] == 0 and "error" in failed and "rtfx" not in failed
    assert measured["batch"] == 1 and measured["rtfx"] > 0


def test_parakeet_size_refuses_speech_it_cannot_read(tmp_path: Path) -> None:
    stereo = ROOT / "tests" / "data" / "stereo_diarization.wav"
    with pytest.raises(SystemExit, match="--speech"):
        parakeet_size._recording(tmp_path, stereo, 2.0)
