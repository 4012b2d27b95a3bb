"""Parakeet's side of the job options, on the tiny random TDT model (same NeMo code path as v3):
hotwords as NeMo's phrase boosting, per audio; no echoed language; clear refusals."""

from __future__ import annotations

import asyncio
import base64
import io
import wave
from pathlib import Path

import numpy as np
import pytest
from stenopod.schema import JobError

from handler.engines.base import DecodeOptions, Engine
from handler.job import run_job
from tests.handler.test_determinism import OneEngineRegistry


@pytest.fixture(scope="module")
def parakeet(tiny_nemo_path: Path) -> Engine:
    from handler.engines.parakeet import NemoEngine

    return NemoEngine("parakeet-tdt-0.6b-v3", tiny_nemo_path, device="cpu")


def _noise(seconds: float = 3.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(16_000 * seconds))).astype(np.float32)


def test_hotwords_boost_the_phrase_for_their_own_audio_only(parakeet: Engine) -> None:
    audio = _noise()
    boosted, plain, plain_again = parakeet.transcribe(
        [audio, audio, audio],
        options=[DecodeOptions(hotwords=("hello world",)), DecodeOptions(), DecodeOptions()],
    )
    # A random model hears nothing in particular: the boosting tree alone makes it write the phrase.
    assert boosted.text == "hello world"
    assert plain.text != boosted.text and plain.text == plain_again.text
    (after,) = parakeet.transcribe([audio])
    assert after.text == plain.text  # plain decoding restored after the boosted group


def _wav_uri(audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((audio * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_parakeet_reports_no_language_rather_than_echoing_the_one_asked(parakeet: Engine) -> None:
    job = {"audio": _wav_uri(_noise()), "id": "a", "language": "de", "hotwords": ["hello world"]}
    answer = asyncio.run(run_job({"id": "job", "input": job}, OneEngineRegistry(parakeet)))
    (item,) = answer["items"]
    assert item["status"] == "ok" and item["text"] == "hello world"
    assert item["language"] is None and item["language_probability"] is None
    assert all(s["avg_logprob"] is None and s["language"] is None for s in item["segments"])


@pytest.mark.parametrize(
    ("option", "field", "named"),
    [
        ({"language": "ja"}, "input.language", "it knows: bg, cs, da, de"),
        ({"prompt": "Notes"}, "input.prompt", "takes no prompt"),
        ({"task": "translate"}, "input.task", "cannot translate"),
    ],
)
def test_what_parakeet_cannot_do_is_invalid_input(
    parakeet: Engine, option: dict, field: str, named: str
) -> None:
    job = {"audio": "data:audio/wav;base64,AA==", **option}
    error = JobError.from_runpod_error(
        asyncio.run(run_job({"id": "j", "input": job}, OneEngineRegistry(parakeet)))["error"]
    )
    assert error.code == "invalid_input" and error.fields == [field]
    assert "parakeet-tdt-0.6b-v3" in error.message and named in error.message
