"""Fixtures for the SDK tests: the RunPod endpoint test double on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.endpoint_double import RunPodEndpointTestDouble


@pytest.fixture
def endpoint_double() -> Iterator[RunPodEndpointTestDouble]:
    with RunPodEndpointTestDouble() as double:
        yield double


# The served folder of the source tests (tests/sdk/sources_support.py).
from tests.sdk.sources_support import served_dir  # noqa: E402, F401
