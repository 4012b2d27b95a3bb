"""OpenAI's transcription API on `stenopod serve`, called through the official `openai` package.

The server is the real CLI (`stenopod serve --api-key ...`) in its own process, with one real
worker transcribing with tiny.en; the client is openai.OpenAI(base_url=.../v1), unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from stenopod.local.openai_api import MAX_FIELD_BYTES, MAX_UPLOAD_BYTES

from tests.local.conftest import wait_until
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(180)

API_KEY = "openai-route-key"
SPEECH = "librispeech_1089-134686-0001.wav"  # 3.3 s: "...stuff it into you, his belly counselled him"


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`stenopod serve` with an API key and one tiny.en worker; yields its base URL."""
    port = free_port()
    logs = tmp_path_factory.mktemp("openai-serve")
    command = [sys.executable, "-c", "import sys; from stenopod.cli import main; sys.exit(main())"]
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--api-key", API_KEY, "--log-dir", str(logs)],
        env={**os.environ, "RUNPOD_PING_INTERVAL": "1000"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def workers_ready() -> bool:
        try:
            health = requests.get(
                f"{base}/v2/local/health", headers={"Authorization": API_KEY}, timeout=5
            ).json()
        except requests.ConnectionError:
            return False
        return health["workers"].get("idle", 0) >= 1

    try:
        wait_until(workers_ready, timeout=120, interval=0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def client(served: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def _completed_jobs(base: str) -> int:
    health = requests.get(f"{base}/v2/local/health", headers={"Authorization": API_KEY}, timeout=5).json()
    return health["jobs"]["completed"]


def test_every_response_format_through_the_workers(
    served: str, client: openai.OpenAI, data_dir: Path
) -> None:
    audio = (data_dir / SPEECH).read_bytes()
    before = _completed_jobs(served)
    answers = {
        fmt: client.audio.transcriptions.create(
            model="whisper-1", file=(SPEECH, audio, "audio/wav"), response_format=fmt
        )
        for fmt in ("json", "text", "srt", "verbose_json", "vtt")
    }
    # Each upload was a job run by the endpoint's worker, not a side path.
    assert _completed_jobs(served) == before + 5

    text = answers["json"].text
    assert "belly" in _normalised(text) and "counsel" in _normalised(text)
    assert answers["text"] == text + "\n"

    verbose = answers["verbose_json"]
    assert verbose.task == "transcribe" and verbose.language == "en"
    assert verbose.duration == pytest.approx(3.275, abs=0.05)
    assert verbose.text == text and verbose.words is None
    assert verbose.segments and " ".join(s.text for s in verbose.segments) == text
    assert all(0 <= s.start < s.end <= verbose.duration + 0.05 for s in verbose.segments)
    # Whisper's own quality measures, as OpenAI's segments have them.
    for segment in verbose.segments:
        assert segment.avg_logprob < 0 and segment.compression_ratio > 0 and 0 <= segment.no_speech_prob <= 1

    srt, vtt = answers["srt"], answers["vtt"]
    assert srt.startswith("1\n00:00:0") and " --> 00:00:0" in srt.splitlines()[1]
    assert vtt.startswith("WEBVTT\n\n00:00:0") and re.search(r"\d\d:\d\d\.\d{3} --> ", vtt)
    for subtitles in (srt, vtt):
        spoken = [
            line for line in subtitles.splitlines() if line and "-->" not in line and not line.isdigit()
        ]
        assert _normalised(" ".join(spoken).removeprefix("WEBVTT")) == _normalised(text)


def test_word_timestamps(client: openai.OpenAI, data_dir: Path) -> None:
    with (data_dir / SPEECH).open("rb") as handle:
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=handle,
            response_format="verbose_json",
            timestamp_granularities=["word"],
            language="en",
        )
    assert verbose.segments is None  # only words were asked for, as with OpenAI
    words = verbose.words
    assert words and _normalised(" ".join(w.word for w in words)) == _normalised(verbose.text)
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= verbose.duration + 0.05 for w in words)


def test_a_file_that_is_not_audio_is_a_400_naming_the_file(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("notes.mp3", b"<html>not audio</html>" * 50)
        )
    error = caught.value.body
    assert caught.value.status_code == 400
    assert (
        error["code"] == "not_audio" and error["param"] == "file" and error["type"] == "invalid_request_error"
    )


def test_a_file_over_the_upload_cap_is_a_413_that_says_what_the_cap_is(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(
            model="whisper-1", file=("long.wav", b"\0" * (MAX_UPLOAD_BYTES + 1))
        )
    assert caught.value.status_code == 413
    error = caught.value.body
    assert error["code"] == "too_large" and error["param"] == "file"
    assert (
        "10,000,000-byte upload limit" in error["message"] and "http(s):// or s3:// URL" in error["message"]
    )


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_refused_like_the_runpod_routes(served: str, key: str | None) -> None:
    # openai.Omit() as a header value makes the official client send no Authorization at all.
    headers = {"Authorization": openai.Omit()} if key is None else {}
    keyless = openai.OpenAI(base_url=f"{served}/v1", api_key=key or "unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        keyless.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"), extra_headers=headers)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    # The RunPod routes apply the same key.
    runpod_headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    assert requests.get(f"{served}/v2/local/health", headers=runpod_headers, timeout=5).status_code == 401


def test_bad_parameters_are_refused_before_any_job_naming_the_field(
    served: str, client: openai.OpenAI
) -> None:
    before = _completed_jobs(served)
    cases = [
        ({"response_format": "docx"}, "response_format"),
        ({"temperature": 3.0}, "temperature"),
        ({"language": "klingon"}, "language"),
        ({"timestamp_granularities": ["char"]}, "timestamp_granularities[]"),
        ({"extra_body": {"chunking_strategy": "auto"}}, "chunking_strategy"),
    ]
    for options, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"), **options)
        assert caught.value.body["param"] == param, options
    assert _completed_jobs(served) == before


def test_translations(client: openai.OpenAI, data_dir: Path) -> None:
    # The served tiny.en is English-only: it cannot translate, and says so naming itself
    # (tests/handler/test_whisper_base.py translates German with the multilingual Whisper base).
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="whisper-1", file=(SPEECH, (data_dir / SPEECH).read_bytes()))
    error = caught.value.body
    assert error["code"] == "invalid_input" and error["param"] == "model"
    assert "tiny.en" in error["message"] and "cannot translate" in error["message"]


def test_prompt(client: openai.OpenAI, data_dir: Path) -> None:
    audio = (data_dir / SPEECH).read_bytes()
    answer = client.audio.transcriptions.create(model="whisper-1", file=(SPEECH, audio), prompt="Belly.")
    assert "belly" in _normalised(answer.text)
    # A prompt the job input refuses names the form's field.
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=(SPEECH, audio), prompt="x " * 1500)
    assert caught.value.body["code"] == "invalid_input" and caught.value.body["param"] == "prompt"


def test_a_field_given_twice_or_a_form_over_its_cap_is_refused(served: str) -> None:
    before = _completed_jobs(served)
    url, headers = f"{served}/v1/audio/transcriptions", {"Authorization": f"Bearer {API_KEY}"}
    twice = [("prompt", (None, "a")), ("prompt", (None, "b")), ("file", ("a.wav", b"RIFF"))]
    answer = requests.post(url, files=twice, headers=headers, timeout=30)
    assert answer.status_code == 400
    assert (
        answer.json()["error"]["param"] == "prompt" and "more than once" in answer.json()["error"]["message"]
    )
    # Every field under its own cap, the form over the file's cap plus the fields' allowance.
    fields = [(name, (None, "x" * (MAX_FIELD_BYTES - 10))) for name in ("prompt", "model")]
    big = [*fields, ("file", ("a.wav", b"\0" * (MAX_UPLOAD_BYTES - 1000)))]
    answer = requests.post(url, files=big, headers=headers, timeout=60)
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert (
        error["code"] == "too_large" and error["param"] == "file" and "the form is larger" in error["message"]
    )
    assert _completed_jobs(served) == before
