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
from handler.shared_samples import AVAILABLE as SHARED


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


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """250 s of real speech (jfk, over and over): long enough to be decoded in stretches."""
    from bench.corpus import write_audio

    jfk = decode_audio(data_dir / "jfk.flac", 3600)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    write_audio(path, np.tile(jfk, 250 * 16_000 // jfk.size + 1)[: 250 * 16_000])
    return path


def test_a_long_file_decoded_in_stretches_is_the_file_decoded_in_one_pass(
    pool: DecodePool, long_flac: Path
) -> None:
    from handler.decode_segments import plan_segments

    assert plan_segments(long_flac) is not None and len(plan_segments(long_flac).starts) == 2
    prepared = asyncio.run(pool.prepare(long_flac, 3600, 30.0))
    assert np.array_equal(prepared.audio, decode_audio(long_flac, 3600))
    assert all(chunk.duration_s <= 30.0 for chunk in prepared.chunks)
    with pytest.raises(StageError) as caught:
        asyncio.run(pool.prepare(long_flac, 200, None))  # the declared length is over the cap
    assert caught.value.code == ErrorCode.too_long


def test_stretches_that_disagree_at_a_seam_fall_back_to_one_pass(
    long_flac: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import handler.decode_segments

    monkeypatch.setattr(handler.decode_segments, "SEAM_TOLERANCE", -1.0)  # every seam "disagrees"
    threads = DecodePool(0)
    with caplog.at_level("INFO", logger="stenopod.handler.decode_pool"):
        prepared = asyncio.run(threads.prepare(long_flac, 3600, None))
    assert "decoding in one pass" in caplog.text
    assert np.array_equal(prepared.audio, decode_audio(long_flac, 3600))


@pytest.mark.skipif(not SHARED, reason="shared samples are a memfd: Linux only")
def test_a_pool_process_writes_into_shared_samples_only_where_they_fit(pool: DecodePool) -> None:
    from handler.shared_samples import SharedSamples, Target, write_at

    shared = SharedSamples(100)
    ones = np.ones(10, dtype=np.float32)
    assert asyncio.run(pool._run(write_at, shared.target, 5, ones))  # from another process
    assert np.array_equal(shared.array[5:15], ones) and not shared.array[:5].any()
    # Past the end: refused (numpy would grow the file beyond the owner's mapping), nothing written.
    assert not asyncio.run(pool._run(write_at, shared.target, 95, 2 * ones))
    assert not shared.array[15:].any()
    # Another file at the same path (a descriptor number reused) is never written.
    other = Target(shared.target.path, shared.target.device, shared.target.inode + 1)
    assert not write_at(other, 0, ones)
    shared.close()
    assert not write_at(shared.target, 0, 3 * ones)
    assert np.array_equal(shared.array[5:15], ones)  # the array outlives the file


def test_stretches_sent_back_instead_of_written_in_place_join_the_same(
    long_flac: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import handler.decode_segments

    monkeypatch.setattr(handler.decode_segments, "write_at", lambda *args: False)
    prepared = asyncio.run(DecodePool(0).prepare(long_flac, 3600, None))
    assert np.array_equal(prepared.audio, decode_audio(long_flac, 3600))


def test_a_file_longer_than_it_declares_loses_no_stretch_that_finishes_after_its_last(
    long_flac: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last stretch does not fit the shared array and comes back; the first is written in
    place only after that: both must be in the joined file."""
    import dataclasses
    import threading

    import handler.decode_pool
    import handler.decode_segments

    plan, decode = handler.decode_segments.plan_segments, handler.decode_segments.decode_stretch
    last_done = threading.Event()

    def declared_short(path: Path) -> handler.decode_segments.Layout | None:
        layout = plan(path)
        return None if layout is None else dataclasses.replace(layout, seconds=layout.seconds - 5)

    def first_after_last(path: str, layout, index: int, target=None):  # type: ignore[no-untyped-def]
        if index == 0:
            assert last_done.wait(30)
        stretch = decode(path, layout, index, target)
        if index == len(layout.starts) - 1:
            assert stretch.samples.size  # sent back: it did not fit
            last_done.set()
        return stretch

    monkeypatch.setattr(handler.decode_pool, "plan_segments", declared_short)
    monkeypatch.setattr(handler.decode_pool, "decode_stretch", first_after_last)
    prepared = asyncio.run(DecodePool(0).prepare(long_flac, 3600, None))
    assert np.array_equal(prepared.audio, decode_audio(long_flac, 3600))
