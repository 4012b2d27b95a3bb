from __future__ import annotations

from dataclasses import dataclass

import pytest
from stenopod.backlog.packing import BYTES_PER_SECOND, UNKNOWN_SECONDS, estimated_seconds, pack_items


@dataclass
class Item:
    id: str
    duration_s: float | None = None
    size_bytes: int | None = None


def test_duration_wins_over_size_and_size_is_read_at_128_kbit():
    assert estimated_seconds(Item("a", duration_s=42.0, size_bytes=10**9)) == 42.0
    assert estimated_seconds(Item("a", size_bytes=BYTES_PER_SECOND * 30)) == 30.0
    assert estimated_seconds(Item("a")) == UNKNOWN_SECONDS


def test_short_items_share_jobs_up_to_the_target():
    items = [Item(f"i{n}", duration_s=100) for n in range(13)]
    packs = pack_items(items, job_seconds=600)
    assert [len(pack.item_ids) for pack in packs] == [6, 6, 1]
    assert [item_id for pack in packs for item_id in pack.item_ids] == [item.id for item in items]
    assert all(pack.seconds <= 600 for pack in packs)


def test_long_items_go_alone_and_order_is_kept():
    items = [Item("a", 10), Item("long", 3600), Item("b", 10), Item("c", size_bytes=BYTES_PER_SECOND * 700)]
    packs = pack_items(items, job_seconds=600)
    assert [pack.item_ids for pack in packs] == [["long"], ["c"], ["a", "b"]]


def test_item_cap_splits_packs_of_tiny_items():
    items = [Item(f"i{n}", duration_s=1) for n in range(10)]
    packs = pack_items(items, job_seconds=600, max_items=4)
    assert [len(pack.item_ids) for pack in packs] == [4, 4, 2]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        pack_items([], job_seconds=0)
    with pytest.raises(ValueError):
        pack_items([], max_items=0)
    assert pack_items([]) == []
