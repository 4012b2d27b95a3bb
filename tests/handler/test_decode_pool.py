"""Decoding and planning in the decode pool's processes: the same samples, errors as values."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from stenopod.schema import ErrorCode

from handler.decode import decode_audio
from handler.decode_pool import DecodePool
from handler.errors import StageError


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    pool = DecodePool(1)
    yield pool
    pool.shutdown()


def test_a_pool_process_decodes_and_plans_as_this_process_would(pool: DecodePool, data_dir: Path) -> None:
    path = data_dir / "multilingual.mp3"
    prepared = asyncio.run(pool.prepare(path, 3600, 30.0))
    assert np.array_equal(prepared.audio, decode_audio(path, 3600))
    assert len(prepared.chunks) > 1 and all(chunk.duration_s <= 30.0 for chunk in prepared.chunks)
    assert prepared.decode_s > 0 and prepared.plan_s > 0
    # No bound: one chunk, the whole audio, and no VAD run.
    whole = asyncio.run(pool.prepare(path, 3600, None))
    assert [(c.start, c.end) for c in whole.chunks] == [(0, prepared.audio.size)]


def test_a_stage_error_in_a_pool_process_keeps_its_code(pool: DecodePool, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(StageError) as caught:
        asyncio.run(pool.prepare(empty, 3600, None))
    assert caught.value.code == ErrorCode.not_audio
    with pytest.raises(StageError) as caught:
        asyncio.run(pool.prepare(Path(__file__), 3600, None))  # not audio at all
    assert caught.value.code == ErrorCode.not_audio
