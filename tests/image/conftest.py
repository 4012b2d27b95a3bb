"""Fixtures for the image tests: the repository's files, and the tiny test models laid out for fetch_models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from bench.tiny_nemo import build_tiny_tdt_nemo

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).parent / "schemas"


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def dockerfile() -> DockerfileParser:
    # The same ARG defaults a plain `docker build .` uses; dockerfile-parse substitutes them.
    return DockerfileParser(str(REPO / "Dockerfile"))


@pytest.fixture(scope="session")
def tiny_nemo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny FastConformer-TDT .nemo, built once for this package's tests (about 15 s)."""
    return build_tiny_tdt_nemo(tmp_path_factory.mktemp("tiny-nemo") / "tiny-tdt.nemo")


@pytest.fixture(scope="session")
def models_source(tmp_path_factory: pytest.TempPathFactory, tiny_nemo_file: Path, tiny_en_dir: Path) -> Path:
    """A --from-dir source: <id>/ folders, one holding a .nemo, one a CTranslate2 model (links, not copies)."""
    root = tmp_path_factory.mktemp("models-src")
    (root / "tiny-tdt").mkdir()
    (root / "tiny-tdt" / tiny_nemo_file.name).symlink_to(tiny_nemo_file)
    (root / "tiny.en").symlink_to(tiny_en_dir, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def tiny_sortformer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny streaming Sortformer .nemo (the diarizer's architecture, random weights)."""
    from tests.support.tiny_sortformer import build_tiny_sortformer_nemo

    return build_tiny_sortformer_nemo(tmp_path_factory.mktemp("tiny-sortformer") / "tiny-sortformer.nemo")
