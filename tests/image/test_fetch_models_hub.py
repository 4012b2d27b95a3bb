"""fetch_models.py's hub path, through the real huggingface_hub client, against a loopback test double.

The double (tests/image/fake_hub.py) serves the two catalogue repos with the tiny test models in place
of the real weights, so the whole build-time path runs: describe the repo, download into the hub cache,
copy into the models folder, check sizes and LFS hashes, write the manifest the worker loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handler.engines.manifest import MANIFEST_NAME, read_manifest
from tests.image.conftest import REPO
from tests.image.fake_hub import COMMIT, FakeHub, FakeRepo

FETCH = REPO / "builder" / "fetch_models.py"
CT2_FILES = ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")


@pytest.fixture
def hub(tiny_nemo_file: Path, tiny_en_dir: Path) -> Iterator[FakeHub]:
    server = FakeHub(
        {
            "nvidia/parakeet-tdt-0.6b-v3": FakeRepo(
                # README.md is in the repo but not in the model's patterns: it must not be downloaded.
                {"parakeet-tdt-0.6b-v3.nemo": tiny_nemo_file, "README.md": REPO / "README.md"}
            ),
            "mobiuslabsgmbh/faster-whisper-large-v3-turbo": FakeRepo({n: tiny_en_dir / n for n in CT2_FILES}),
        }
    ).start()
    yield server
    server.stop()


def fetch_from(hub: FakeHub, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, str(FETCH), *args], capture_output=True, text=True, env=env, timeout=180
    )


def test_both_models_come_from_the_hub_with_their_revision_recorded(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    result = fetch_from(hub, tmp_path, "--models", "both", "--dest", str(dest))
    assert result.returncode == 0, result.stderr[-3000:]

    manifest = read_manifest(dest)
    assert manifest.default == "parakeet-tdt-0.6b-v3"
    entries = {entry.id: entry for entry in manifest.models}
    parakeet = entries["parakeet-tdt-0.6b-v3"]
    assert (parakeet.engine, parakeet.path) == ("nemo", "parakeet-tdt-0.6b-v3/parakeet-tdt-0.6b-v3.nemo")
    assert parakeet.source == f"hf:nvidia/parakeet-tdt-0.6b-v3@{COMMIT}"
    assert [f.path for f in parakeet.files] == ["parakeet-tdt-0.6b-v3/parakeet-tdt-0.6b-v3.nemo"]
    whisper = entries["whisper-large-v3-turbo"]
    assert (whisper.engine, whisper.path) == ("whisper", "whisper-large-v3-turbo")
    assert sorted(f.path.split("/", 1)[1] for f in whisper.files) == sorted(CT2_FILES)
    # Only the model's files, no hub bookkeeping, in the folder the image ships.
    assert sorted(p.name for p in (dest / "whisper-large-v3-turbo").iterdir()) == sorted(CT2_FILES)
    assert not any("README.md" in request for request in hub.requests)


def test_a_file_that_differs_from_the_hub_hash_fails_the_build(
    hub: FakeHub, tmp_path: Path, tiny_en_dir: Path
) -> None:
    hub.repos["mobiuslabsgmbh/faster-whisper-large-v3-turbo"].lie_about.add("model.bin")
    dest = tmp_path / "models"
    result = fetch_from(hub, tmp_path, "--models", "whisper-large-v3-turbo", "--dest", str(dest))
    assert result.returncode == 1
    assert "model.bin" in result.stderr and "f" * 64 in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dest / MANIFEST_NAME).exists()


def test_a_missing_repo_is_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    del hub.repos["nvidia/parakeet-tdt-0.6b-v3"]
    result = fetch_from(hub, tmp_path, "--models", "parakeet-tdt-0.6b-v3", "--dest", str(tmp_path / "models"))
    assert result.returncode == 1
    assert (
        "model 'parakeet-tdt-0.6b-v3': download from nvidia/parakeet-tdt-0.6b-v3@main failed" in result.stderr
    )
    assert "Traceback" not in result.stderr
