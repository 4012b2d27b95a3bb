"""The load run, small: 500 items through `stenopod serve` and `stenopod transcribe` lose nothing.

The full run (10,000 items, with items/s and peak memory) is `python -m bench.reliability`; this
test asserts behaviour only, never speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.figures import record
from bench.reliability import run_load

pytestmark = pytest.mark.timeout(300)


def test_500_items_through_the_local_endpoint_lose_nothing(tmp_path: Path) -> None:
    result = run_load(500, workers=1, workdir=tmp_path)
    assert result.client_exit == 0
    assert result.manifest_lines == result.ok_lines == 500
    assert result.audio_fetches == 500  # each item fetched (so transcribed) once
    assert len(list((tmp_path / "out").glob("load-*.txt"))) == 500
    assert result.jobs.get("failed") == 0
    record(
        "load_small", {"items": 500, "nothing_lost": result.nothing_lost, "items_per_s": result.items_per_s}
    )
