"""Vocabulary, subtitles and confidence from `stenopod transcribe` flags and from `stenopod.api`,
through a real local endpoint running the real worker on tiny.en."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stenopod import api
from stenopod.backlog.options import BacklogOptions
from stenopod.cli import main

pytestmark = pytest.mark.timeout(600)


def _one(output: Path, fmt: str) -> Path:
    (path,) = output.glob(f"hotwords*.{fmt}")  # a URL's item id carries a hash of the URL
    return path


def test_cli_flags_reach_the_worker(endpoint, speech_server, tmp_path: Path) -> None:
    output = tmp_path / "out"
    argv = [
        "transcribe", speech_server.url("hotwords.mp3"), "--endpoint", endpoint.base_url,
        "--output", str(output), "--state", str(tmp_path / "state.sqlite"), "--formats", "json,srt",
        "--hotwords", "ComfyUI", "--max-line-width", "20", "--max-line-count", "1", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    body = json.loads(_one(output, "json").read_text())
    assert "ComfyUI" in body["text"] and all(s["avg_logprob"] < 0 for s in body["segments"])
    cues = [block.split("\n")[2:] for block in _one(output, "srt").read_text().strip().split("\n\n")]
    assert len(cues) >= 3 and all(len(lines) == 1 and len(lines[0]) <= 20 for lines in cues), cues


def test_api_arguments_reach_the_worker(endpoint, speech_server, tmp_path: Path) -> None:
    output = tmp_path / "out"
    report = api.transcribe(
        [speech_server.url("hotwords.mp3")],
        str(output),
        endpoint=endpoint.base_url,
        state=tmp_path / "state.sqlite",
        formats="vtt,json",
        prompt="A ComfyUI tutorial.",
        subtitles={"max_duration_s": 2},
        timestamps="word",
    )
    assert report.done == 1
    body = json.loads(_one(output, "json").read_text())
    assert "ComfyUI" in body["text"] and all(0 < w["probability"] <= 1 for w in body["words"])
    assert _one(output, "vtt").read_text().startswith("WEBVTT")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-line-width", "5"], "--subtitles max_line_width"),
        (["--task", "summarise"], "invalid choice"),
    ],
)
def test_bad_option_flags_are_usage_errors(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["transcribe", "a.mp3", "--output", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_retry_replays_the_options() -> None:
    options = BacklogOptions(
        sources=["a.mp3"], output="out", task="translate", hotwords=("ComfyUI",), subtitles={}
    )
    again = BacklogOptions.from_json(json.loads(json.dumps(options.to_json())))
    assert again == options and again.job_fields() == {
        "task": "translate",
        "hotwords": ["ComfyUI"],
        "subtitles": {},
    }


def test_without_a_bucket_the_client_cuts_the_same_subtitles_from_the_inline_answer() -> None:
    """RunPod endpoint + folder output: the files are rendered from the answer, subtitles included."""
    from stenopod.backlog.inline_results import render_result, worker_timestamps

    assert worker_timestamps("segment", subtitles=True) == "word"  # cues are cut from words
    words = [{"start": i * 0.4, "end": i * 0.4 + 0.3, "word": f"word{i}"} for i in range(30)]
    text = " ".join(w["word"] for w in words)
    result = {
        "id": "a", "status": "ok", "text": text, "duration_s": 12.0, "language": "en",
        "segments": [{"id": 0, "start": 0.0, "end": 12.0, "text": text, "words": words}],
    }  # fmt: skip
    limits = {"max_line_width": 20, "max_line_count": 1, "max_duration_s": 2.0}
    files = render_result(result, ("srt", "json"), "segment", limits, "translate")
    blocks = files["srt"].decode().strip().split("\n\n")
    assert len(blocks) >= 6 and all(len(block.split("\n")) == 3 for block in blocks)
    assert all(len(block.split("\n")[2]) <= 20 for block in blocks)
    body = json.loads(files["json"])
    assert body["task"] == "translate" and "words" not in body["segments"][0]


def test_without_a_bucket_a_diarized_answer_gives_the_workers_files() -> None:
    """The inline answer of a diarize job: json lists the speakers, srt/txt name them, as a worker writes them."""
    from stenopod.backlog.inline_results import render_result
    from stenopod.formats import TranscriptDocument, render
    from stenopod.schema import ItemResult, OutputFormat

    result = {
        "id": "a", "status": "ok", "text": "Hi there. Hello.", "duration_s": 2.0, "language": "en",
        "speakers": ["SPEAKER_0", "SPEAKER_1"],
        "segments": [
            {"id": 0, "start": 0.0, "end": 1.0, "text": "Hi there.", "speaker": "SPEAKER_0", "avg_logprob": -0.2},
            {"id": 1, "start": 1.0, "end": 2.0, "text": "Hello.", "speaker": "SPEAKER_1"},
        ],
    }  # fmt: skip
    files = render_result(result, ("json", "srt", "txt"), "segment")
    parsed = ItemResult.model_validate(result)
    worker = TranscriptDocument(
        text=parsed.text or "",
        segments=parsed.segments or [],
        language="en",
        duration=2.0,
        speakers=parsed.speakers,
    )
    for fmt in ("json", "srt", "txt"):
        assert files[fmt] == render(OutputFormat(fmt), worker), fmt
    assert json.loads(files["json"])["speakers"] == ["SPEAKER_0", "SPEAKER_1"]
    assert "SPEAKER_1: Hello." in files["srt"].decode()
