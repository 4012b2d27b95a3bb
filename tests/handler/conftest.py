"""Fixtures for the worker's tests: the tiny NeMo model, built once per test run, and the run_job
tests' environment."""

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


@pytest.fixture
def job_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Loopback fetches allowed, fast retries, and a temp root the tests can inspect.

    The run_job tests (test_job*.py) take it for every test with `pytest.mark.usefixtures`.
    """
    tmp_root = tmp_path / "worker-tmp"
    tmp_root.mkdir()
    monkeypatch.setenv("STENOPOD_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("STENOPOD_FETCH_BACKOFF_S", "0.01")
    monkeypatch.setenv("STENOPOD_CALLBACK_BACKOFF_S", "0.01")
    monkeypatch.setenv("STENOPOD_TMP_DIR", str(tmp_root))
    for name in ("STENOPOD_ALLOW_LOCAL_OUTPUT", "STENOPOD_MAX_INLINE_BYTES", "STENOPOD_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_root
