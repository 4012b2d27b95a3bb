"""The second real model: Whisper base, multilingual, loaded through the manifest as the image does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.corpus import BASE_CLIPS, load_clip
from handler.engines.base import Engine
from handler.engines.registry import registry_from_env


@pytest.fixture(scope="module")
def base(whisper_base_models: Path, monkeypatch_module: pytest.MonkeyPatch) -> Engine:
    monkeypatch_module.setenv("STENOPOD_MODELS_DIR", str(whisper_base_models))
    return registry_from_env().get("whisper-base")


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def test_whisper_base_detects_english_and_german(base: Engine) -> None:
    clips = {clip.name: clip for clip in BASE_CLIPS}
    english = load_clip(clips["mit-1"])
    german = load_clip(type(clips["mit-1"])("de", "multilingual.mp3", None, 30.0, 45.0, ""))
    assert getattr(base, "multilingual", False)
    en, de = base.transcribe([english, german])
    assert en.language == "en" and "permission" in en.text.lower()
    assert de.language == "de" and len(de.text.split()) > 10
