"""The backlog runner end to end: a real local endpoint, the real worker, real speech, tiny.en."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
from stenopod import api
from stenopod.backlog.ids import dedupe_ids
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.loop import BacklogRunner
from stenopod.backlog.options import BacklogOptions
from stenopod.backlog.sources import expand_sources
from stenopod.backlog.states import ItemState
from stenopod.endpoint import EndpointClient
from stenopod.storage import S3Credentials

from tests.backlog.conftest import fetches
from tests.sdk.test_names import OLD_ITEMS

pytestmark = pytest.mark.timeout(600)

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
  <channel>
    <title>Test podcast</title>
    <item>
      <title>Episode one</title>
      <guid isPermaLink="false">episode-one</guid>
      <enclosure url="{url}" length="65129" type="audio/mpeg"/>
      <itunes:duration>00:04</itunes:duration>
    </item>
  </channel>
</rss>
"""


def _serve_text(body: str, content_type: str):
    data = body.encode()

    def route(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def _manifest(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def test_folder_manifest_and_feed_become_transcripts_and_a_manifest(
    endpoint, speech_server, tmp_path, data_dir
):
    folder = tmp_path / "folder"
    (folder / "Saison 1").mkdir(parents=True)
    shutil.copyfile(data_dir / "jfk.flac", folder / "Saison 1" / "Épisode 2 – Café.flac")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# one URL a line\n{speech_server.url('librispeech_1089-134686-0001.wav')}\n")
    speech_server.routes["/feed.xml"] = _serve_text(
        FEED.format(url=speech_server.url("hotwords.mp3")), "application/rss+xml"
    )
    output = tmp_path / "out"
    sources = [str(folder), str(manifest), speech_server.url("feed.xml")]

    report = api.transcribe(sources, str(output), endpoint=endpoint.base_url, formats=["json", "txt"])

    assert (report.total, report.done, report.failed) == (3, 3, 0)
    lines = _manifest(output)
    assert len(lines) == 3 and {line["status"] for line in lines} == {"ok"}
    for line in lines:
        assert sorted(line["outputs"]) == ["json", "txt"]
        assert (output / f"{line['id']}.json").is_file() and (output / f"{line['id']}.txt").is_file()
        assert line["model"] == "tiny.en" and line["duration_s"] > 0
    # Readable names: the file's stem in ASCII under its folder, a URL's stem, an episode's title.
    assert sorted(line["id"] for line in lines) == [
        "Episode-one",
        "Saison-1/Episode-2-Cafe",
        "librispeech_1089-134686-0001",
    ]
    assert "country" in (output / "Saison-1" / "Episode-2-Cafe.txt").read_text().lower()
    episode = next(line for line in lines if line["id"] == "Episode-one")
    assert episode["title"] == "Episode one"  # the feed's title, shown in the manifest
    assert "comfy" in (output / "Episode-one.txt").read_text().lower()
    assert json.loads((output / "Saison-1" / "Episode-2-Cafe.json").read_text())["text"]

    # The same command again: everything is done, nothing is submitted or fetched again.
    accepted = endpoint.stats()["jobs"]["accepted"]
    again = api.transcribe(sources, str(output), endpoint=endpoint.base_url, formats=["json", "txt"])
    assert (again.done, again.failed) == (3, 0)
    assert endpoint.stats()["jobs"]["accepted"] == accepted
    assert fetches(speech_server, "librispeech_1089-134686-0001.wav") == 1


def test_a_state_file_of_an_earlier_version_resumes_under_its_hashed_ids(endpoint, speech_server, tmp_path):
    """Its done item is not transcribed again under a new name; its new items get hashed ids too."""
    output = tmp_path / "out"
    done, new = speech_server.url("jfk.flac"), speech_server.url("hotwords.mp3")
    (done_id,) = dedupe_ids([(done, None)])
    output.mkdir()
    with sqlite3.connect(output / ".stenopod-state.sqlite") as db:
        db.execute(OLD_ITEMS)  # the items table before readable names: no identity column, no id_scheme
        db.execute(
            "INSERT INTO items(id, position, source, audio, state, outputs, updated_at)"
            " VALUES (?, 0, ?, ?, 'done', ?, 0)",
            (done_id, done, done, json.dumps({"txt": (output / f"{done_id}.txt").as_uri()})),
        )
    accepted = endpoint.stats()["jobs"]["accepted"]

    report = api.transcribe([done, new], str(output), endpoint=endpoint.base_url, formats=["txt"])

    assert (report.total, report.done, report.failed) == (2, 2, 0)
    assert sorted(item.id for item in report.items) == sorted([done_id, *dedupe_ids([(new, None)])])
    assert endpoint.stats()["jobs"]["accepted"] == accepted + 1  # hotwords only
    assert fetches(speech_server, "jfk.flac") == 0


def test_s3_output_uploads_local_files_and_stores_everything_in_the_bucket(
    endpoint, moto_s3, s3_bucket, speech_server, speech_dir, tmp_path
):
    output = f"s3://{s3_bucket}/runs/one/"
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)
    # Inputs from everywhere: a local file (uploaded), a URL, and an s3:// prefix (presigned).
    moto_s3.client().upload_file(str(speech_dir / "hotwords.mp3"), s3_bucket, "incoming/2024/hotwords.mp3")
    sources = [
        str(speech_dir / "jfk.flac"),
        speech_server.url("librispeech_1089-134686-0001.wav"),
        f"s3://{s3_bucket}/incoming/",
    ]

    report = api.transcribe(
        sources,
        output,
        endpoint=endpoint.base_url,
        formats=["txt", "vtt"],
        state=tmp_path / "state.sqlite",
        s3_credentials=credentials,
    )

    assert (report.done, report.failed) == (3, 0)
    assert sorted(item.id for item in report.items) == [
        "2024/hotwords",
        "jfk",
        "librispeech_1089-134686-0001",
    ]
    keys = {entry["Key"] for entry in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    for item in report.items:
        assert {f"runs/one/{item.id}.txt", f"runs/one/{item.id}.vtt"} <= keys
        assert item.outputs["txt"] == f"s3://{s3_bucket}/runs/one/{item.id}.txt"
    jfk = next(item for item in report.items if item.source.endswith("jfk.flac"))
    # The local file went up once, under the run's own prefix, and was fetched by presigned URL.
    assert f"runs/one/_stenopod/inputs/{jfk.id}.flac" in keys
    manifest = moto_s3.client().get_object(Bucket=s3_bucket, Key="runs/one/manifest.jsonl")["Body"].read()
    assert len(manifest.decode().splitlines()) == 3
    vtt = moto_s3.client().get_object(Bucket=s3_bucket, Key=f"runs/one/{jfk.id}.vtt")["Body"].read()
    assert vtt.startswith(b"WEBVTT")


def test_webhooks_complete_jobs_without_polling(endpoint, speech_server, tmp_path):
    options = BacklogOptions(
        sources=[speech_server.url("hotwords.mp3")],
        output=str(tmp_path / "out"),
        endpoint=endpoint.base_url,
        formats=("txt",),
        webhook_listen="127.0.0.1:0",
        # Polls only once an hour: the job can only be seen finishing through its webhook.
        webhook_poll_s=3600.0,
    )
    runner = BacklogRunner(options, state=tmp_path / "state.sqlite")
    report = asyncio.run(runner.run())
    assert (report.done, report.failed) == (1, 0)
    assert runner.webhooks.received >= 1


def test_failed_items_are_retried_then_reported_with_their_code(endpoint, speech_server, tmp_path):
    speech_server.routes["/page.mp3"] = _serve_text("<html><body>not a podcast</body></html>", "text/html")
    sources = [
        speech_server.url("missing.mp3"),
        speech_server.url("page.mp3"),
        speech_server.url("hotwords.mp3"),
    ]
    state = tmp_path / "state.sqlite"

    report = api.transcribe(
        sources,
        str(tmp_path / "out"),
        endpoint=endpoint.base_url,
        formats=["txt"],
        max_attempts=2,
        state=state,
    )

    assert (report.done, report.failed) == (1, 2)
    with Ledger(state) as ledger:
        by_source = {item.source.rsplit("/", 1)[-1]: item for item in ledger.items()}
    missing, page = by_source["missing.mp3"], by_source["page.mp3"]
    assert (missing.state, missing.error_code, missing.attempts) == (ItemState.FAILED, "fetch_failed", 2)
    # Retrying cannot turn an HTML page into audio: one attempt only.
    assert (page.state, page.error_code, page.attempts) == (ItemState.FAILED, "not_audio", 1)
    assert by_source["hotwords.mp3"].state == ItemState.DONE
    lines = {line["source"].rsplit("/", 1)[-1]: line for line in _manifest(tmp_path / "out")}
    assert lines["page.mp3"]["status"] == "error" and lines["page.mp3"]["error"]["code"] == "not_audio"
    assert lines["hotwords.mp3"]["status"] == "ok"


def test_a_submission_whose_job_id_was_never_recorded_is_not_transcribed_twice(
    endpoint, speech_server, tmp_path
):
    """The client died after POST /run reached the endpoint but before it stored the job id."""
    output = tmp_path / "out"
    state = tmp_path / "state.sqlite"
    url = speech_server.url("jfk.flac")
    options = BacklogOptions(sources=[url], output=str(output), endpoint=endpoint.base_url, formats=("txt",))
    (item,) = expand_sources([url])
    token = uuid.uuid4().hex
    with Ledger(state) as ledger:
        ledger.set_meta("options", options.to_json())
        ledger.add_items([item])
        ledger.create_submission(token, [item.id])

    async def lost_submission() -> str:
        async with EndpointClient(endpoint.base_url) as client:
            job_input = {
                "items": [{"id": item.id, "audio": url}],
                "formats": ["txt"],
                "output": str(output.resolve()),
                "submission": token,
            }
            return await client.run(job_input)

    first_job = asyncio.run(lost_submission())
    report = asyncio.run(BacklogRunner(options, state=state).run())

    assert (report.done, report.failed) == (1, 0)
    assert fetches(speech_server, "jfk.flac") == 1
    assert "country" in (output / f"{item.id}.txt").read_text().lower()
    record = json.loads((output / "_stenopod" / "submissions" / f"{token}.json").read_text())
    assert record["state"] == "done"
    assert record["job_id"] in {first_job, report.items[0].job_id}
