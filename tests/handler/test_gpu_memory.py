"""Batch sizes from free GPU memory: within the cap, at least one, a default when unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.engines import gpu_memory
from handler.engines.gpu_memory import (
    NEMO_BATCH_CAP,
    WHISPER_WINDOW_CAP,
    WHISPER_WINDOW_DEFAULT,
    batch_for_memory,
    nemo_batch_for_memory,
    whisper_window_bytes,
    windows_for_memory,
)

GIB = 2**30


def test_batch_grows_with_free_memory_up_to_the_cap() -> None:
    assert batch_for_memory(10 * GIB, 1 * GIB, cap=64, default=8) == 7  # 70 % of 10 GiB
    assert batch_for_memory(1000 * GIB, 1 * GIB, cap=64, default=8) == 64
    assert batch_for_memory(GIB // 10, 1 * GIB, cap=64, default=8) == 1  # never zero
    assert batch_for_memory(None, 1 * GIB, cap=64, default=8) == 8
    assert batch_for_memory(None, 1 * GIB, cap=4, default=8) == 4
    with pytest.raises(ValueError, match="cap"):
        batch_for_memory(GIB, GIB, cap=0, default=1)


def test_whisper_windows_follow_the_model_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    large = tmp_path / "large"
    large.mkdir()
    with open(large / "model.bin", "wb") as weights:
        weights.truncate(3 * GIB)  # large-v3 in float16, sparse on disk
    small = tmp_path / "small"
    small.mkdir()
    (small / "model.bin").write_bytes(b"\0" * (75 * 2**20))

    assert whisper_window_bytes(large, 5) > 1.5 * GIB
    on_h100 = windows_for_memory(large, 5, free_bytes=75 * GIB)
    on_t4 = windows_for_memory(large, 5, free_bytes=12 * GIB)
    assert 1 <= on_t4 < on_h100 <= WHISPER_WINDOW_CAP
    assert windows_for_memory(small, 5, free_bytes=12 * GIB) == WHISPER_WINDOW_CAP
    monkeypatch.setattr(gpu_memory, "free_gpu_bytes", lambda: None)  # no GPU to read
    assert windows_for_memory(small, 5) == WHISPER_WINDOW_DEFAULT


def test_nemo_batch_shrinks_for_longer_audio() -> None:
    free = 40 * GIB
    short, long = nemo_batch_for_memory(10.0, free), nemo_batch_for_memory(600.0, free)
    assert long < short <= NEMO_BATCH_CAP
    assert nemo_batch_for_memory(3600.0, 2 * GIB) == 1
