"""Fixtures shared by the reliability tests: short tones served on loopback for the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.fault_rig import tone_wav
from tests.support.servers import AudioHTTPServer


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AudioHTTPServer]:
    """Short tones on loopback: clip-0.wav ... clip-59.wav."""
    root = tmp_path_factory.mktemp("fault-audio")
    for n in range(60):
        tone_wav(root / f"clip-{n}.wav", hz=200.0 + 10 * n)
    server = AudioHTTPServer(root).start()
    yield server
    server.stop()
