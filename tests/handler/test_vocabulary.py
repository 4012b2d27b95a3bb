"""Vocabulary, confidence and refused options, with real speech through the real tiny.en model.

tiny.en alone hears "comfy eye" in hotwords.mp3; with the hotword (or a prompt) it writes "ComfyUI".
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from stenopod.schema import JobError, OutputFormat

from handler.chunking import plan_audio
from handler.engines.base import SAMPLE_RATE, DecodeOptions, Engine
from handler.job import run_job
from handler.longform import transcribe_long
from tests.handler.test_determinism import OneEngineRegistry
from tests.handler.test_formats_cues import _parse

LONG_PROMPT = ("A long tutorial about node based image generation workflows. " * 40)[:1900]


@pytest.fixture(scope="module")
def whisper(tiny_en_dir: Path) -> Engine:
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir)


def data_uri(path: Path) -> str:
    return "data:audio/mpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def run(engine: Engine, job_input: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(run_job({"id": "job", "input": job_input}, OneEngineRegistry(engine)))


def test_hotwords_spell_the_word_for_their_own_item_only(whisper: Engine, data_dir: Path) -> None:
    audio = data_uri(data_dir / "hotwords.mp3")
    answer = run(
        whisper,
        {
            "items": [
                {"id": "boosted", "audio": audio, "hotwords": ["ComfyUI"]},
                {"id": "plain", "audio": audio},
            ],
            "timestamps": "word",
        },
    )
    items = {item["id"]: item for item in answer["items"]}
    assert "ComfyUI" in items["boosted"]["text"], items["boosted"]["text"]
    # The same audio in the same job, without the hotword: its neighbour's vocabulary never leaks.
    assert "ComfyUI" not in items["plain"]["text"] and "comfy" in items["plain"]["text"].lower()
    for item in items.values():
        assert item["language"] == "en"
        assert item["language_probability"] is None  # English-only: nothing was detected
        for segment in item["segments"]:
            # Whisper's confidences, as OpenAI's verbose_json has them.
            assert segment["avg_logprob"] < 0 and 0 <= segment["no_speech_prob"] <= 1
            assert segment["compression_ratio"] > 0 and segment["language"] == "en"
            assert segment["words"] and all(0 < word["probability"] <= 1 for word in segment["words"])


def test_the_prompt_reaches_every_chunk_of_a_long_file(whisper: Engine, data_dir: Path) -> None:
    # 35 s: two chunks, and the "ComfyUI" sentence at the end, in the second one.
    parts = [
        decode_audio(str(data_dir / "jfk.flac")),
        decode_audio(str(data_dir / "ljspeech" / "LJ001-0001.flac")),
        decode_audio(str(data_dir / "ljspeech" / "LJ001-0003.flac")),
        np.zeros(int(0.6 * SAMPLE_RATE), dtype=np.float32),
        decode_audio(str(data_dir / "hotwords.mp3")),
    ]
    audio = np.concatenate(parts).astype(np.float32)
    plan = plan_audio(audio, 30.0)
    assert len(plan) >= 2
    (transcript,) = transcribe_long(
        whisper, [audio], plans=[plan], decode=[DecodeOptions(prompt="Notes on ComfyUI.")]
    )
    late = [segment for segment in transcript.segments if segment.start >= plan[1].start / SAMPLE_RATE]
    assert any("ComfyUI" in segment.text for segment in late), transcript.text
    assert "fellow americans" in transcript.text.lower()  # the prompt did not take over the first chunk


@pytest.mark.parametrize(
    ("job_input", "field", "named"),
    [
        ({"language": "de"}, "input.language", "it knows: en"),
        ({"task": "translate"}, "input.task", "English-only"),
        (
            {
                "items": [
                    {"id": "a", "audio": "data:audio/wav;base64,AA=="},
                    {"id": "b", "audio": "data:audio/wav;base64,AA==", "language": "xx"},
                ]
            },
            "input.items.1.language",
            "'xx'",
        ),
        # Whisper reads 223 tokens of prompt and hotwords before a window: what does not fit is
        # refused, never cut silently.
        ({"hotwords": [f"Word{i}" for i in range(100)]}, "input.hotwords", "at most 223 tokens"),
        ({"prompt": LONG_PROMPT, "hotwords": [f"Word{i}" for i in range(70)]}, "input.prompt", "of the 223"),
        (
            {
                "items": [
                    {"id": "a", "audio": "data:audio/wav;base64,AA==", "hotwords": ["ComfyUI"]},
                    {
                        "id": "b",
                        "audio": "data:audio/wav;base64,AA==",
                        "hotwords": [f"W{i}x" for i in range(90)],
                    },
                ]
            },
            "input.items.1.hotwords",
            "use fewer or shorter hotwords",
        ),
    ],
)
def test_what_the_model_cannot_do_is_invalid_input_naming_field_and_model(
    whisper: Engine, job_input: dict[str, Any], field: str, named: str
) -> None:
    answer = run(
        whisper,
        {"audio": "data:audio/wav;base64,AA==", **job_input} if "items" not in job_input else job_input,
    )
    error = JobError.from_runpod_error(answer["error"])
    assert error.code == "invalid_input" and error.fields == [field]
    assert "tiny.en" in error.message and named in error.message


def test_a_long_prompt_loses_its_start_and_the_hotwords_stay_whole(whisper: Engine) -> None:
    from faster_whisper.tokenizer import Tokenizer

    options = DecodeOptions(prompt=LONG_PROMPT + " The end.", hotwords=("ComfyUI", "Krita"))
    assert whisper.check_options(options) is None
    context = whisper._context(options)
    assert context.endswith("The end. ComfyUI, Krita") and len(context) < len(LONG_PROMPT)
    # What faster-whisper puts before each window: nothing of the hotwords is cut.
    model = whisper.model
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    before = model.get_prompt(tokenizer, [], hotwords=context)
    end = before.index(tokenizer.sot)
    hotwords = tokenizer.encode(" ComfyUI, Krita")
    assert before[end - len(hotwords) : end] == hotwords
    assert tokenizer.decode(before[1:end]).strip() == context


def test_a_runpod_console_request_with_every_option(data_dir: Path, tmp_path: Path) -> None:
    """`python -m handler --test_input`, as RunPod's console sends a request: hotwords, a prompt,
    word times, readable subtitles and the confidences, written to a folder."""
    job = {
        "input": {
            "audio": data_uri(data_dir / "hotwords.mp3"),
            "id": "hot",
            "hotwords": ["ComfyUI"],
            "prompt": "A ComfyUI tutorial.",
            "timestamps": "word",
            "subtitles": {"max_line_width": 20, "max_line_count": 1, "max_duration_s": 2},
            "output": str(tmp_path),
        }
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STENOPOD_", "RUNPOD_"))}
    env |= {"HF_HUB_OFFLINE": "1", "STENOPOD_ALLOW_LOCAL_OUTPUT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "handler", "--test_input", json.dumps(job)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "completed successfully" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    body = json.loads((tmp_path / "hot.json").read_text())
    assert "ComfyUI" in body["text"]
    assert all(0 < word["probability"] <= 1 for word in body["words"])
    assert all(segment["avg_logprob"] < 0 for segment in body["segments"])
    cues = _parse(OutputFormat.vtt, (tmp_path / "hot.vtt").read_text())
    assert len(cues) >= 3 and all("\n" not in text and end - start <= 2000 for start, end, text in cues)
