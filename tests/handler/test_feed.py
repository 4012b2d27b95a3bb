"""The job's prefetch feed: batches sized by audio seconds, in job order, with bounded look-ahead."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from handler.feed import Feed


@dataclass
class Clip:
    name: str
    seconds: float
    prepared: bool = False
    delay_s: float = 0.0


def _feed(
    clips: list[Clip], *, ahead_audio_s: float = 1000.0, ahead_items: int = 100
) -> tuple[Feed[Clip], list[str]]:
    started: list[str] = []

    async def prepare(position: int, clip: Clip) -> None:
        started.append(clip.name)
        await asyncio.sleep(clip.delay_s)
        if clip.name == "broken":
            raise RuntimeError("a bug in a stage")
        clip.prepared = True

    feed: Feed[Clip] = Feed(
        clips,
        prepare,
        lambda clip: clip.seconds if clip.prepared else 0.0,
        concurrency=3,
        ahead_audio_s=ahead_audio_s,
        ahead_items=ahead_items,
    )
    return feed, started


async def _drain(feed: Feed[Clip], max_items: int, max_audio_s: float) -> list[list[str]]:
    batches = []
    while batch := await feed.take(max_items, max_audio_s):
        batches.append([clip.name for clip in batch])
    assert feed.exhausted
    return batches


def test_batches_fill_up_to_the_audio_budget_in_job_order() -> None:
    # Finishing out of order (later clips are quicker) must not reorder a batch.
    clips = [
        Clip(f"c{n}", seconds, delay_s=0.02 * (6 - n)) for n, seconds in enumerate([10, 10, 10, 10, 10, 10])
    ]
    feed, _ = _feed(clips)
    batches = asyncio.run(_drain(feed, max_items=100, max_audio_s=25))
    assert batches == [["c0", "c1"], ["c2", "c3"], ["c4", "c5"]]


def test_item_cap_and_an_item_longer_than_the_budget() -> None:
    clips = [Clip("long", 3600.0), *(Clip(f"s{n}", 5.0) for n in range(5))]
    feed, _ = _feed(clips)
    batches = asyncio.run(_drain(feed, max_items=2, max_audio_s=600))
    assert batches[0] == ["long"]  # alone: it exceeds the budget by itself
    assert [len(batch) for batch in batches[1:]] == [2, 2, 1]
    assert sorted(name for batch in batches for name in batch) == sorted(clip.name for clip in clips)


def test_look_ahead_stops_at_the_decoded_audio_budget() -> None:
    clips = [Clip(f"c{n}", 100.0) for n in range(10)]
    feed, started = _feed(clips, ahead_audio_s=250.0)

    async def first_batch_then_look() -> tuple[list[str], list[str]]:
        batch = await feed.take(max_items=1, max_audio_s=100.0)
        await asyncio.sleep(0.05)  # let preparation run ahead as far as it may
        ahead = list(started)
        await _drain(feed, 1, 100.0)
        return [clip.name for clip in batch], ahead

    batch, ahead = asyncio.run(first_batch_then_look())
    assert batch == ["c0"]
    # 250 s of decoded audio may wait: c1..c3 ready, and at most `concurrency` more in flight.
    assert 3 <= len(ahead) - 1 <= 3 + 3
    assert len(ahead) < len(clips)


def test_look_ahead_runs_on_while_nobody_takes() -> None:
    # The job takes a batch, then waits on its two engine calls without calling take(): the
    # fetches for the next call must still run ahead, up to the item budget, not stop at the
    # `concurrency` already in flight.
    clips = [Clip(f"c{n}", 1.0, delay_s=0.001) for n in range(40)]
    feed, started = _feed(clips, ahead_items=30)

    async def take_then_wait() -> list[str]:
        batch = await feed.take(max_items=1, max_audio_s=1.0)
        assert [clip.name for clip in batch] == ["c0"]
        await asyncio.sleep(0.5)  # the engine is busy; nobody takes
        ahead = list(started)
        await feed.close()
        return ahead

    ahead = asyncio.run(take_then_wait())
    assert len(ahead) == 1 + 30  # the batch taken, and 30 prepared ahead
    assert all(clip.prepared for clip in clips[:31]) and not clips[31].prepared


def test_an_unexpected_failure_still_hands_the_item_out() -> None:
    clips = [Clip("ok", 5.0), Clip("broken", 5.0), Clip("after", 5.0)]
    feed, _ = _feed(clips)
    batches = asyncio.run(_drain(feed, max_items=10, max_audio_s=100))
    assert batches == [["ok", "broken", "after"]]
    assert [clip.prepared for clip in clips] == [True, False, True]


def test_close_cancels_preparation_in_flight() -> None:
    clips = [Clip(f"c{n}", 5.0, delay_s=30.0) for n in range(3)]
    feed, started = _feed(clips)

    async def take_then_close() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(feed.take(10, 100), timeout=0.1)
        await feed.close()

    asyncio.run(take_then_close())
    assert started and not any(clip.prepared for clip in clips)


def test_an_idle_engine_takes_whatever_is_ready_and_a_busy_one_waits_for_a_full_batch() -> None:
    clips = [Clip("quick", 10, delay_s=0.0), Clip("slow", 10, delay_s=0.3)]

    async def scenario(idle: bool) -> tuple[list[str], float]:
        feed, _ = _feed(clips)
        loop = asyncio.get_running_loop()
        started = loop.time()
        batch = await feed.take(2, 1000.0, take_any=lambda: idle)
        taken_after = loop.time() - started
        await feed.close()
        return [clip.name for clip in batch], taken_after

    names, after = asyncio.run(scenario(idle=True))
    assert names == ["quick"] and after < 0.2
    for clip in clips:
        clip.prepared = False
    names, after = asyncio.run(scenario(idle=False))
    assert names == ["quick", "slow"] and after >= 0.25
