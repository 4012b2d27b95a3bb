"""Speaker labels through NeMo for real: a tiny random streaming Sortformer, baked as the image bakes
its diarizer (builder/fetch_models.py, the manifest, the registry), and requests with "diarize"
through the handler function RunPod calls.

The random model's speakers mean nothing (test_speaker_assign.py carries the correctness of who
said what); these tests hold the path: the model's own windows over long audio, batching that
changes nothing, labels on every segment and word, and in every file format.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stenopod.schema import ErrorCode, JobError

from handler.engines.base import SAMPLE_RATE
from handler.engines.registry import EngineRegistry, ModelSpec

LABEL = re.compile(r"SPEAKER_[0-3]")


@pytest.fixture(scope="module")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_sortformer_path: Path, tiny_en_dir: Path
) -> Path:
    """tiny.en and the tiny Sortformer, placed and hashed by fetch_models from <id>/ folders."""
    from builder.fetch_models import main as fetch_models

    source = tmp_path_factory.mktemp("models-src")
    (source / "tiny.en").symlink_to(tiny_en_dir, target_is_directory=True)
    (source / "speakers").mkdir()
    (source / "speakers" / tiny_sortformer_path.name).symlink_to(tiny_sortformer_path)
    dest = tmp_path_factory.mktemp("models")
    assert fetch_models(["--from-dir", str(source), "--dest", str(dest)]) == 0
    return dest


@pytest.fixture(scope="module")
def registry(models_dir: Path) -> EngineRegistry:
    from handler.engines.registry import registry_from_env

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STENOPOD_MODELS_DIR", str(models_dir))
        for name in ("STENOPOD_MODELS", "STENOPOD_DEFAULT_MODEL", "STENOPOD_ENABLE_TEST_ENGINE"):
            patch.delenv(name, raising=False)
        registry = registry_from_env()
    registry.load_all()  # as at worker start: every model loaded and smoke-tested
    return registry


@pytest.fixture(scope="module")
def join(data_dir: Path) -> np.ndarray:
    from faster_whisper import decode_audio

    first = decode_audio(str(data_dir / "jfk.flac"))
    second = decode_audio(str(data_dir / "librispeech_1089-134686-0001.wav"))
    return np.concatenate([first, np.zeros(SAMPLE_RATE // 4, np.float32), second])


@pytest.fixture
def console(registry: EngineRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """RunPod's call into the worker: handler.__main__.handler with the worker's registry."""
    import handler.__main__ as worker

    monkeypatch.setattr(worker, "REGISTRY", registry)
    monkeypatch.setenv("STENOPOD_ALLOW_LOCAL_OUTPUT", "1")
    yield lambda job_input: asyncio.run(worker.handler({"id": "console-1", "input": job_input}))


def wav_data_uri(audio: np.ndarray) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((audio * 32767).clip(-32768, 32767).astype(np.int16).tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_manifest_bakes_the_diarizer_beside_the_asr_model(
    models_dir: Path, registry: EngineRegistry
) -> None:
    from handler.engines.manifest import read_manifest

    manifest = read_manifest(models_dir)
    assert {entry.id: entry.engine for entry in manifest.models} == {
        "speakers": "diarizer",
        "tiny.en": "whisper",
    }
    assert manifest.default == "tiny.en"  # a diarizer is never a job's model
    assert registry.available() == ["tiny.en"] and registry.baked() == ["tiny.en", "speakers"]
    diarizer = registry.diarizer()
    assert (diarizer.model_id, diarizer.max_speakers, diarizer.frame_s) == (
        "speakers",
        4,
        pytest.approx(0.08),
    )
    # The offline-quality streaming windows, not the small ones the checkpoint was saved with.
    assert diarizer.model.sortformer_modules.chunk_len == 340


def test_long_audio_runs_in_the_models_windows_and_batching_changes_nothing(
    registry: EngineRegistry, join: np.ndarray, capfd: pytest.CaptureFixture[str]
) -> None:
    diarizer = registry.diarizer()
    long = np.tile(join, 5)[: 70 * SAMPLE_RATE]  # 70 s: three of the model's 27.2 s streaming chunks
    short = join[: 2 * SAMPLE_RATE]
    capfd.readouterr()
    together = diarizer.activity([long, short, np.zeros(0, np.float32)])
    (alone,) = diarizer.activity([short])
    # No progress bar per call in the worker's log (NeMo draws one over its streaming steps).
    printed = capfd.readouterr()
    assert "Streaming Steps" not in printed.err + printed.out and "it/s" not in printed.err
    assert together[0].probabilities.shape == (875, 4)  # every 80 ms frame of the 70 s
    assert together[1].probabilities.shape == (25, 4) and together[2].probabilities.shape == (0, 4)
    assert np.all((together[0].probabilities >= 0) & (together[0].probabilities <= 1))
    np.testing.assert_allclose(together[1].probabilities, alone.probabilities, atol=1e-5)


def test_a_diarized_request_labels_every_segment_word_and_file(
    console: Any, join: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    answer = console(
        {"id": "talk", "audio": wav_data_uri(join), "diarize": True, "timestamps": "word", "output": str(out)}
    )
    (item,) = answer["items"]
    assert item["status"] == "ok", item
    assert "country" in item["text"].lower()
    segments = item["segments"]
    assert segments and all(LABEL.fullmatch(segment["speaker"]) for segment in segments)
    for segment in segments:
        assert segment["words"] and {word["speaker"] for word in segment["words"]} == {segment["speaker"]}
    in_order = list(dict.fromkeys(segment["speaker"] for segment in segments))
    assert item["speakers"] == in_order and in_order[0] == "SPEAKER_0"
    assert [segment["id"] for segment in segments] == list(range(len(segments)))
    assert item["timings"]["diarize_s"] > 0 and item["timings"]["inference_s"] > 0

    document = json.loads((out / "talk.json").read_text())
    assert document["speakers"] == item["speakers"]
    assert [s["speaker"] for s in document["segments"]] == [s["speaker"] for s in segments]
    assert all(LABEL.fullmatch(word["speaker"]) for word in document["words"])
    paragraphs = (out / "talk.txt").read_text().strip().split("\n\n")
    assert all(re.match(r"SPEAKER_\d: \S", paragraph) for paragraph in paragraphs)
    srt_cues = (out / "talk.srt").read_text().strip().split("\n\n")
    assert len(srt_cues) == len(segments)
    assert [cue.split("\n")[2].split(":")[0] for cue in srt_cues] == [s["speaker"] for s in segments]
    vtt_cues = (out / "talk.vtt").read_text().removeprefix("WEBVTT\n\n").strip().split("\n\n")
    assert [re.match(r"<v (SPEAKER_\d)>", cue.split("\n")[1]).group(1) for cue in vtt_cues] == [
        s["speaker"] for s in segments
    ]


def test_segment_timestamps_keep_the_speakers_and_max_speakers_caps_them(
    console: Any, join: np.ndarray
) -> None:
    answer = console({"audio": wav_data_uri(join), "diarize": True, "max_speakers": 1})
    (item,) = answer["items"]
    assert item["status"] == "ok", item
    assert item["speakers"] == ["SPEAKER_0"]
    assert {segment["speaker"] for segment in item["segments"]} == {"SPEAKER_0"}
    assert all(segment["words"] is None for segment in item["segments"])  # words were not asked for


def test_diarize_without_a_diarizer_names_what_is_baked(tiny_en_dir: Path, join: np.ndarray) -> None:
    from handler.job import run_job

    registry = EngineRegistry([ModelSpec("tiny.en", "whisper", tiny_en_dir)])
    answer = asyncio.run(
        run_job({"id": "j", "input": {"audio": wav_data_uri(join[:SAMPLE_RATE]), "diarize": True}}, registry)
    )
    error = JobError.from_runpod_error(answer["error"])
    assert error.code == ErrorCode.model_unavailable
    assert "diarizer" in error.message and "holds: tiny.en" in error.message
    assert error.items is not None and error.items[0].text is None


def test_more_speakers_than_the_model_tells_apart_is_invalid_input_naming_the_cap(console: Any) -> None:
    answer = console({"audio": "https://example.com/a.mp3", "diarize": True, "max_speakers": 5})
    error = JobError.from_runpod_error(answer["error"])
    assert error.code == ErrorCode.invalid_input and error.fields == ["input.max_speakers"]
    assert "at most 4" in error.message
