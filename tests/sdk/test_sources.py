"""Backlog sources: files, folders, globs, URLs, manifests, s3:// prefixes and podcast feeds -> items."""

from __future__ import annotations

import json
import shutil
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from stenopod.backlog.ids import dedupe_ids, item_id_for
from stenopod.backlog.sources import SourceError, expand_sources
from stenopod.schema import is_valid_item_id
from stenopod.storage import S3Credentials

from tests.sdk.sources_support import ids_valid
from tests.support.servers import AudioHTTPServer, MotoS3

pytestmark = pytest.mark.timeout(120)
# The folder's own audio; its ljspeech/ subfolder holds 16 more clips.
LJSPEECH_FILES = [f"LJ001-{n:04d}.flac" for n in range(1, 17)]
AUDIO_FILES = [
    "hotwords.mp3",
    "jfk.flac",
    "librispeech_1089-134686-0001.wav",
    "multilingual.mp3",
    "stereo_diarization.wav",
]


# --- ids ------------------------------------------------------------------------------------------


def test_item_ids_are_stable_readable_and_distinct_per_folder() -> None:
    first = item_id_for("/podcasts/2023/ep1.mp3")
    assert first == item_id_for("/podcasts/2023/ep1.mp3")
    assert first.startswith("ep1-") and len(first) == len("ep1-") + 10
    assert item_id_for("/podcasts/2024/ep1.mp3") != first
    assert item_id_for("https://cdn.example.com/a/Episode%2042.mp3?sig=x").startswith("Episode-42-")
    assert item_id_for("feed#x", hint="https://example.com/episodes/42").startswith(
        "example.com-episodes-42-"
    )


@pytest.mark.parametrize(
    "source",
    [
        "/x/..mp3",
        "/x/....",
        "/x/é è.wav",
        "/x/" + "a" * 500 + ".mp3",
        "https://h/",
        "/x/-._-.mp3",
        "/x/.hidden",
    ],
)
def test_item_ids_are_key_safe_for_awkward_names(source: str) -> None:
    item_id = item_id_for(source)
    assert is_valid_item_id(item_id), item_id
    assert len(item_id) <= 128


def test_dedupe_ids_resolves_hash_collisions_deterministically() -> None:
    # One hex character of hash: 40 sources with the same slug must collide; all still get unique ids.
    sources = [(f"/folder{n}/ep.mp3", None) for n in range(40)]
    ids = dedupe_ids(sources, hash_chars=1)
    assert len(set(ids)) == 40 and all(is_valid_item_id(i) for i in ids)
    assert ids == dedupe_ids(sources, hash_chars=1)
    assert any(len(i) > len("ep-x") for i in ids)


# --- local files, folders, globs ------------------------------------------------------------------


def test_folder_of_real_audio(data_dir: Path) -> None:
    items = expand_sources([str(data_dir)])
    # ATTRIBUTION.md and transcripts.psv left out; subfolders included.
    assert sorted(item.local_path.name for item in items) == sorted(AUDIO_FILES + LJSPEECH_FILES)
    assert ids_valid(items)
    for item in items:
        assert item.audio is None
        assert item.size_bytes == item.local_path.stat().st_size
        # Readable ids: the file's stem, below the folders under the one named.
        folders = item.local_path.parent.relative_to(data_dir).parts
        assert item.id == "/".join([*folders, item.local_path.stem])
    assert [item.id for item in expand_sources([str(data_dir)])] == [item.id for item in items]


def test_nested_folders_hidden_files_and_same_names(tmp_path: Path, data_dir: Path) -> None:
    for folder in ("2023", "2024", ".trash"):
        (tmp_path / folder).mkdir()
        shutil.copy(data_dir / "jfk.flac", tmp_path / folder / "ep1.flac")
    shutil.copy(data_dir / "jfk.flac", tmp_path / "2023" / "._ep1.flac")  # a macOS resource fork
    (tmp_path / "2023" / "notes.txt").write_text("not audio")
    items = expand_sources([str(tmp_path)])
    assert [item.local_path.parent.name for item in items] == ["2023", "2024"]
    assert [item.id for item in items] == ["2023/ep1", "2024/ep1"]


def test_glob_and_duplicates_collapse(data_dir: Path) -> None:
    wavs = expand_sources([str(data_dir / "*.wav")])
    assert sorted(item.local_path.name for item in wavs) == [
        "librispeech_1089-134686-0001.wav",
        "stereo_diarization.wav",
    ]
    # The same file named directly, by glob, by folder and by a relative-looking path: one item each.
    mixed = expand_sources(
        [str(data_dir / "jfk.flac"), str(data_dir / "*.flac"), str(data_dir), f"{data_dir}/./jfk.flac"]
    )
    assert len(mixed) == 5 + len(LJSPEECH_FILES)
    assert mixed[0].local_path == (data_dir / "jfk.flac").resolve()
    assert ids_valid(mixed)


# --- URLs and manifests ---------------------------------------------------------------------------


def test_audio_urls_are_not_fetched(audio_server: AudioHTTPServer) -> None:
    url = audio_server.url("jfk.flac")
    [item] = expand_sources([url, url])
    assert (item.source, item.audio, item.local_path, item.size_bytes) == (url, url, None, None)
    assert item.id == "jfk"
    assert audio_server.requests == []


def test_url_without_extension_is_sniffed(audio_server: AudioHTTPServer, data_dir: Path) -> None:
    audio = (data_dir / "jfk.flac").read_bytes()

    def flac(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "audio/flac")
        handler.send_header("Content-Length", str(len(audio)))
        handler.end_headers()
        handler.wfile.write(audio)

    def html(handler: BaseHTTPRequestHandler) -> None:
        body = b"<html><body>hello</body></html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    audio_server.routes["/download"] = flac
    audio_server.routes["/page"] = html
    [item] = expand_sources([audio_server.url("download")])
    assert item.audio == audio_server.url("download")
    with pytest.raises(SourceError, match=r"/page: neither audio \(Content-Type text/html\)"):
        expand_sources([audio_server.url("page")])


def test_txt_manifest_local_with_relative_paths_urls_and_s3(
    tmp_path: Path, data_dir: Path, audio_server: AudioHTTPServer
) -> None:
    shutil.copy(data_dir / "jfk.flac", tmp_path / "local.flac")
    manifest = tmp_path / "list.txt"
    manifest.write_text(
        "# my backlog\n\n"
        f"{audio_server.url('hotwords.mp3')}\n"
        "local.flac\n"
        "  s3://bucket/talks/t1.mp3  \n"
        f"{audio_server.url('hotwords.mp3')}\n"
    )
    items = expand_sources([str(manifest)])
    assert [item.audio for item in items] == [
        audio_server.url("hotwords.mp3"),
        None,
        "s3://bucket/talks/t1.mp3",
    ]
    assert items[1].local_path == (tmp_path / "local.flac").resolve()
    assert items[1].source == "local.flac"
    assert ids_valid(items)


def test_csv_manifest_with_ids_and_durations(tmp_path: Path, audio_server: AudioHTTPServer) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "URL,id,duration_s,title\n"
        f"{audio_server.url('jfk.flac')},talk-1,11.0,JFK\n"
        f"{audio_server.url('hotwords.mp3')},,,\n"
        "\n"
    )
    first, second = expand_sources([str(manifest)])
    assert (first.id, first.duration_s, first.title) == ("talk-1", 11.0, "JFK")
    assert second.id == "hotwords" and second.duration_s is None and second.title is None


def test_jsonl_manifest_served_over_http(
    served_dir: tuple[Path, AudioHTTPServer], audio_server: AudioHTTPServer
) -> None:
    root, server = served_dir
    lines = [
        {"url": audio_server.url("jfk.flac"), "id": "jfk", "duration_s": 11},
        {"url": "relative/ep2.mp3"},
        {"url": audio_server.url("multilingual.mp3"), "title": "Many tongues"},
    ]
    (root / "backlog.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    items = expand_sources([server.url("backlog.jsonl")])
    assert [item.id for item in items][:1] == ["jfk"]
    assert items[0].duration_s == 11.0
    assert items[1].audio == server.url("relative/ep2.mp3")  # resolved against the manifest's URL
    assert items[2].title == "Many tongues"
    assert ids_valid(items)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "link,id\nhttp://h/a.mp3,x\n", r"a\.csv: the CSV header must have a 'url' column"),
        ("a.jsonl", '{"url": "http://h/a.mp3"}\nnot json\n', r"a\.jsonl line 2: not valid JSON"),
        ("a.jsonl", '["http://h/a.mp3"]\n', r"a\.jsonl line 1: expected a JSON object"),
        ("a.jsonl", '{"id": "x"}\n', r"a\.jsonl line 1: missing 'url'"),
        ("a.csv", "url,id\nhttp://h/a.mp3,../evil\n", r"a\.csv line 2: id '\.\./evil' must be"),
        (
            "a.csv",
            "url,duration_s\nhttp://h/a.mp3,long\n",
            r"a\.csv line 2: duration_s 'long' is not a number",
        ),
        ("a.txt", "ftp://h/a.mp3\n", r"a\.txt line 1: unsupported scheme"),
        ("a.txt", "missing.mp3\n", r"a\.txt line 1: missing\.mp3: no such file"),
        ("a.txt", "# nothing here\n", r"a\.txt: the manifest lists no entries"),
        ("a.csv", "url,id\nhttp://h/a.mp3,same\nhttp://h/b.mp3,same\n", r"line 3: id 'same' is also used by"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(SourceError, match=message):
        expand_sources([str(tmp_path / name)])


# --- s3 -------------------------------------------------------------------------------------------


def test_s3_prefix_is_listed_with_sizes(moto_s3: MotoS3, s3_bucket: str, data_dir: Path) -> None:
    client = moto_s3.client()
    layout = {
        "podcasts/ep1.mp3": "hotwords.mp3",
        "podcasts/season2/ep2.wav": "stereo_diarization.wav",
        "podcasts/notes.txt": "ATTRIBUTION.md",
        "podcasts/_stenopod/inputs/old.mp3": "hotwords.mp3",
        "podcasts-extra/other.mp3": "hotwords.mp3",
    }
    for key, name in layout.items():
        client.upload_file(str(data_dir / name), s3_bucket, key)
    credentials = S3Credentials(endpoint_url=moto_s3.endpoint_url)

    items = expand_sources([f"s3://{s3_bucket}/podcasts"], s3_credentials=credentials)
    assert [item.audio for item in items] == [
        f"s3://{s3_bucket}/podcasts/ep1.mp3",
        f"s3://{s3_bucket}/podcasts/season2/ep2.wav",
    ]
    assert [item.size_bytes for item in items] == [
        (data_dir / "hotwords.mp3").stat().st_size,
        (data_dir / "stereo_diarization.wav").stat().st_size,
    ]
    assert ids_valid(items) and items[0].local_path is None
    assert [item.id for item in items] == ["ep1", "season2/ep2"]  # the folders below the prefix kept

    [single] = expand_sources([f"s3://{s3_bucket}/podcasts/notes.txt"], s3_credentials=credentials)
    assert single.audio == f"s3://{s3_bucket}/podcasts/notes.txt"  # named exactly: taken as given
    assert single.id == "notes"

    with pytest.raises(SourceError, match=rf"s3://{s3_bucket}/nothing/: no audio or video objects"):
        expand_sources([f"s3://{s3_bucket}/nothing/"], s3_credentials=credentials)
    with pytest.raises(SourceError, match="s3://no-such-bucket-here/x: .*cannot list"):
        expand_sources(["s3://no-such-bucket-here/x"], s3_credentials=credentials)


# --- feeds ----------------------------------------------------------------------------------------


def test_bad_sources_name_themselves(tmp_path: Path, audio_server: AudioHTTPServer) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4")
    cases = {
        str(tmp_path / "missing.mp3"): "missing.mp3: no such file or folder",
        str(tmp_path / "empty"): "empty: no audio or video files in this folder",
        str(tmp_path / "*.ogg"): r"\*\.ogg: the pattern matches no audio or video files",
        str(tmp_path / "doc.pdf"): "doc.pdf: unsupported file type",
        "ftp://example.com/a.mp3": "ftp://example.com/a.mp3: unsupported scheme",
        audio_server.url("nope.txt"): "nope.txt: HTTP 404",
        "": "empty source",
    }
    for source, message in cases.items():
        with pytest.raises(SourceError, match=message):
            expand_sources([source])
    assert issubclass(SourceError, ValueError)


def test_messages_hide_url_credentials_and_tokens() -> None:
    with pytest.raises(SourceError) as caught:
        expand_sources(["https://user:hunter2@127.0.0.1:1/feed?token=s3cr3t"], http_timeout_s=2)
    text = str(caught.value)
    assert "127.0.0.1:1/feed" in text and "hunter2" not in text and "s3cr3t" not in text
