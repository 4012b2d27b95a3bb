"""Batch sizes from free GPU memory: within the cap, at least one, a default when unknown."""

from __future__ import annotations

import pytest

from handler.engines.gpu_memory import (
    NEMO_BATCH_CAP,
    batch_for_memory,
    nemo_batch_for_memory,
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


def test_nemo_batch_shrinks_for_longer_audio() -> None:
    free = 40 * GIB
    short, long = nemo_batch_for_memory(10.0, free), nemo_batch_for_memory(600.0, free)
    assert long < short <= NEMO_BATCH_CAP
    assert nemo_batch_for_memory(3600.0, 2 * GIB) == 1
