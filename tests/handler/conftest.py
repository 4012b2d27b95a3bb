"""Fixtures for the worker's tests: the tiny NeMo model, built once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tiny_nemo import build_tiny_tdt_nemo


@pytest.fixture(scope="session")
def tiny_nemo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised FastConformer-TDT .nemo (same code path as Parakeet v3)."""
    return build_tiny_tdt_nemo(tmp_path_factory.mktemp("tiny-nemo") / "tiny-tdt.nemo")


@pytest.fixture(scope="session")
def tiny_sortformer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised streaming Sortformer .nemo (same code path as the baked diarizer)."""
    from tests.support.tiny_sortformer import build_tiny_sortformer_nemo

    return build_tiny_sortformer_nemo(tmp_path_factory.mktemp("tiny-sortformer") / "tiny-sortformer.nemo")
