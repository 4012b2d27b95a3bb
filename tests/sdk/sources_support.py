"""What the source tests share: a served folder of their own, and the id check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stenopod.backlog.sources import SourceItem
from stenopod.schema import is_valid_item_id

from tests.support.servers import AudioHTTPServer


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Path, AudioHTTPServer]]:
    """A folder of our own (feeds, manifests) served over HTTP on loopback."""
    root = tmp_path / "served"
    root.mkdir()
    server = AudioHTTPServer(root).start()
    yield root, server
    server.stop()


def ids_valid(items: list[SourceItem]) -> bool:
    return all(is_valid_item_id(item.id) for item in items) and len({i.id for i in items}) == len(items)
