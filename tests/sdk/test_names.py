"""Readable item ids: the file's own stem in ASCII, its folders kept, a suffix only on a collision,
the same on every run whatever the order of the sources, and never renamed once a state file has them."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from stenopod.backlog.id_book import HASHED, NAMES, keep_id_scheme, read_id_book
from stenopod.backlog.ids import dedupe_ids
from stenopod.backlog.ledger import Ledger
from stenopod.backlog.sources import expand_sources
from stenopod.schema import is_valid_item_id


def _audio(path: Path, data_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_dir / "jfk.flac", path)
    return path


def _ids(sources: list[str], state: Path | None = None) -> dict[str, str]:
    return {item.source: item.id for item in expand_sources(sources, state=state)}


def test_names_are_the_files_own_stems_in_ascii_with_their_folders(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "podcasts"
    _audio(root / "Épisode 2 – Café.mp3", data_dir)
    _audio(root / "Saison 1" / "Привет мир.flac", data_dir)
    _audio(root / "Saison 1" / "東京 ラジオ 🎙.wav", data_dir)
    _audio(root / "2024" / "deep" / "ep1.flac", data_dir)
    items = expand_sources([str(root)])
    assert sorted(item.id for item in items) == [
        "2024/deep/ep1",
        "Episode-2-Cafe",
        "Saison-1/DongJing-rajio",
        "Saison-1/Privet-mir",
    ]
    assert all(is_valid_item_id(item.id) for item in items)
    # A glob keeps the folders below where it starts; a file named directly is its stem alone.
    assert sorted(_ids([f"{root}/**/*.flac"]).values()) == ["2024/deep/ep1", "Saison-1/Privet-mir"]
    assert list(_ids([str(root / "2024" / "deep" / "ep1.flac")]).values()) == ["ep1"]


def test_a_folder_named_like_a_transcript_never_takes_another_items_file(
    tmp_path: Path, data_dir: Path
) -> None:
    # ep.mp3 writes ep.json; a folder ep.json/ beside it could then never be created.
    root = tmp_path / "show"
    _audio(root / "ep.mp3", data_dir)
    _audio(root / "ep.json" / "x.mp3", data_dir)
    ids = sorted(item.id for item in expand_sources([str(root)]))
    assert ids == ["ep", "ep-json/x"] and all(is_valid_item_id(item_id) for item_id in ids)


def test_a_suffix_only_on_a_collision_whatever_the_order(tmp_path: Path, data_dir: Path) -> None:
    sources = [
        str(_audio(tmp_path / "b" / "ep1.flac", data_dir)),
        str(_audio(tmp_path / "a" / "ep1.flac", data_dir)),
        str(_audio(tmp_path / "c" / "EP1.flac", data_dir)),  # the same name on a case-blind disk
        str(_audio(tmp_path / "c" / "ep2.flac", data_dir)),
    ]
    ids = _ids(sources)
    assert ids[sources[1]] == "ep1"  # the first by path keeps the plain name
    assert ids[sources[3]] == "ep2"
    assert ids[sources[0]].startswith("ep1-") and ids[sources[2]].startswith("EP1-")
    assert len({item_id.lower() for item_id in ids.values()}) == 4
    assert _ids(list(reversed(sources))) == ids
    assert _ids(sources[2:] + sources[:2]) == ids
    # The same file named directly and by its folder gets the folder's name, in either order.
    folder_first = _ids([str(tmp_path / "a"), sources[1]])
    assert list(folder_first.values()) == ["ep1"]
    assert list(_ids([sources[1], str(tmp_path)]).values())[0] == "a/ep1"
    assert list(_ids([str(tmp_path), sources[1]]).values())[0] == "a/ep1"


def test_manifest_ids_may_name_folders_and_relative_paths_keep_theirs(tmp_path: Path, data_dir: Path) -> None:
    _audio(tmp_path / "ep004" / "stereo.flac", data_dir)
    _audio(tmp_path / "talks" / "Café.flac", data_dir)
    manifest = tmp_path / "list.csv"
    manifest.write_text("url,id\nep004/stereo.flac,ep004/stereo\ntalks/Café.flac,\n")
    assert [item.id for item in expand_sources([str(manifest)])] == ["ep004/stereo", "talks/Cafe"]


def test_a_state_file_keeps_the_names_it_gave(tmp_path: Path, data_dir: Path) -> None:
    state = tmp_path / "state.sqlite"
    later = str(_audio(tmp_path / "a" / "ep1.flac", data_dir))  # sorts first: would take "ep1"
    first = str(_audio(tmp_path / "b" / "ep1.flac", data_dir))
    with Ledger(state) as ledger:
        keep_id_scheme(ledger)
        ledger.add_items(expand_sources([first], state=state))
    assert _ids([first], state) == {first: "ep1"}
    # A source added later whose name collides: the stored item keeps "ep1", the new one yields.
    ids = _ids([later, first], state)
    assert ids[first] == "ep1" and ids[later].startswith("ep1-")
    with Ledger(state) as ledger:
        assert read_id_book(ledger).scheme == NAMES


# The items table of a state file written before readable names: no identity column.
OLD_ITEMS = """CREATE TABLE items (id TEXT PRIMARY KEY, position INTEGER NOT NULL, source TEXT NOT NULL,
 audio TEXT, local_path TEXT, size_bytes INTEGER, duration_s REAL, title TEXT,
 state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, token TEXT, job_id TEXT,
 error_code TEXT, error_message TEXT, outputs TEXT, model TEXT, language TEXT, result_duration_s REAL,
 updated_at REAL NOT NULL)"""


def test_a_state_file_from_before_readable_names_resumes_with_its_hashed_ids(
    tmp_path: Path, data_dir: Path
) -> None:
    folder = tmp_path / "audio"
    old = str(_audio(folder / "Épisode 1.flac", data_dir).resolve())
    state = tmp_path / "old.sqlite"
    (old_id,) = dedupe_ids([(old, None)])  # what the earlier version named it
    assert old_id.startswith("pisode-1-")
    with sqlite3.connect(state) as db:
        db.execute(OLD_ITEMS)
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "INSERT INTO items(id, position, source, local_path, state, updated_at) VALUES (?, 0, ?, ?, 'done', 0)",
            (old_id, old, old),
        )
    new = str(_audio(folder / "ep2.flac", data_dir).resolve())
    items = expand_sources([str(folder)], state=state)
    assert {item.source: item.id for item in items}[old] == old_id  # not "Episode-1": no second transcription
    with Ledger(state) as ledger:  # the old file gains the identity column and stays hashed
        keep_id_scheme(ledger)
        assert ledger.add_items(items) == 1
        assert read_id_book(ledger).scheme == HASHED
        assert ledger.item(old_id).state == "done"
    assert _ids([str(folder)], state)[new] == dedupe_ids([(new, None)])[0]


@pytest.mark.parametrize("name", ["–—", "🎙", "-_-"])
def test_names_with_nothing_readable_still_get_a_valid_id(tmp_path: Path, data_dir: Path, name: str) -> None:
    [item] = expand_sources([str(_audio(tmp_path / f"{name}.flac", data_dir))])
    assert is_valid_item_id(item.id) and item.id == "item"
