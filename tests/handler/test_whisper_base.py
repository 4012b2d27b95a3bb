"""The second real model: Whisper base, multilingual, loaded through the manifest as the image does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.corpus import BASE_CLIPS, load_clip
from bench.wer import normalize
from handler.engines.base import DecodeOptions, Engine
from handler.engines.registry import registry_from_env
from tests.handler.test_vocabulary import data_uri, run


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


@pytest.fixture(scope="module")
def base_job(whisper_base_models: Path) -> Engine:
    """Whisper base with greedy decoding: language and translation do not need beam search, and
    the tests stay quick on two CPU cores."""
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("whisper-base", whisper_base_models / "whisper-base", beam_size=1)


def test_a_file_in_english_then_german_reports_a_language_per_segment(
    base_job: Engine, data_dir: Path
) -> None:
    answer = run(base_job, {"audio": data_uri(data_dir / "multilingual.mp3"), "id": "mit"})
    (item,) = answer["items"]
    languages = [segment["language"] for segment in item["segments"]]
    first_german = languages.index("de")
    assert (
        first_german > 0
        and set(languages[:first_german]) == {"en"}
        and set(languages[first_german:]) == {"de"}
    )
    assert "permission" in item["segments"][0]["text"].lower()
    # Half English, half German: the item's language is one of them, and not reported as certain.
    assert item["language"] in {"en", "de"} and 0.3 < item["language_probability"] < 0.8


def test_translate_gives_english_text_from_a_german_clip(base: Engine) -> None:
    # Beam search (the worker's default): greedy translation falls back to sampling and is slower.
    german = load_clip(type(BASE_CLIPS[0])("de", "multilingual.mp3", None, 30.0, 42.0, ""))
    (translated,) = base.transcribe([german], options=[DecodeOptions(task="translate")])
    # The language heard is reported (German), the text is English.
    assert translated.language == "de" and 0 < (translated.language_probability or 0) <= 1
    english = set(normalize(translated.text).split())
    assert {"the", "software"} <= english and not {"der", "die", "und"} & english, translated.text


def test_turbo_and_english_only_models_refuse_translation_naming_the_model(base_job: Engine) -> None:
    from handler.engines.whisper import WhisperEngine

    assert isinstance(base_job, WhisperEngine)
    assert base_job.check_options(DecodeOptions(task="translate")) is None
    turbo = object.__new__(WhisperEngine)
    turbo.__dict__.update(base_job.__dict__, model_id="whisper-large-v3-turbo")
    problem = turbo.check_options(DecodeOptions(task="translate"))
    assert problem is not None and problem.field == "task" and "whisper-large-v3-turbo" in problem.message
    unknown = base_job.check_options(DecodeOptions(language="tlh"))
    assert unknown is not None and unknown.field == "language" and "de, " in unknown.message
