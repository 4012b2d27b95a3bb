"""builder/fetch_models.py builds a models tree the worker loads through its normal manifest path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handler.engines.manifest import MANIFEST_NAME, read_manifest, sha256_of
from tests.image.conftest import REPO

FETCH = REPO / "builder" / "fetch_models.py"


def fetch(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the builder script the way the Dockerfile does: a fresh interpreter, repo on PYTHONPATH."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(FETCH), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, models_source: Path) -> Path:
    dest = tmp_path_factory.mktemp("models")
    result = fetch("--from-dir", models_source, "--dest", dest, "--default", "tiny-tdt")
    assert result.returncode == 0, result.stderr
    return dest


def test_from_dir_writes_a_manifest_with_every_file_hashed(models_dir: Path, models_source: Path) -> None:
    manifest = read_manifest(models_dir)
    assert manifest.default == "tiny-tdt"
    entries = {entry.id: entry for entry in manifest.models}
    assert sorted(entries) == ["tiny-tdt", "tiny.en"]

    nemo = entries["tiny-tdt"]
    assert nemo.engine == "nemo"
    assert nemo.path == "tiny-tdt/tiny-tdt.nemo"
    whisper = entries["tiny.en"]
    assert whisper.engine == "whisper"
    assert whisper.path == "tiny.en"
    assert {f.path for f in whisper.files} >= {
        "tiny.en/model.bin",
        "tiny.en/config.json",
        "tiny.en/tokenizer.json",
    }

    for entry in manifest.models:
        assert entry.source and entry.source.startswith("local:")
        for item in entry.files:
            on_disk = models_dir / item.path
            # Real copies in the tree (the image must hold the bytes), matching the recorded hash and size.
            assert on_disk.is_file() and not on_disk.is_symlink()
            assert on_disk.stat().st_size == item.size
            assert sha256_of(on_disk) == item.sha256
    source_model = (models_source / "tiny.en" / "model.bin").resolve()
    assert next(f for f in whisper.files if f.path == "tiny.en/model.bin").sha256 == sha256_of(source_model)


def test_worker_loads_the_tree_through_its_manifest(models_dir: Path) -> None:
    """The registry reads STENOPOD_MODELS_DIR/manifest.json, loads both engines and smoke-tests each."""
    script = (
        "import json; from handler.engines.registry import registry_from_env; "
        "r = registry_from_env(); r.load_all(); "
        "print(json.dumps({'available': r.available(), 'default': r.default_model()}))"
    )
    env = {**os.environ, "STENOPOD_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1"}
    for name in ("STENOPOD_MODELS", "STENOPOD_DEFAULT_MODEL", "STENOPOD_ENABLE_TEST_ENGINE"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=models_dir
    )
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(loaded["available"]) == ["tiny-tdt", "tiny.en"]
    assert loaded["default"] == "tiny-tdt"


def test_explicit_model_args_and_expected_hash(tmp_path: Path, tiny_en_dir: Path) -> None:
    dest = tmp_path / "models"
    want = sha256_of(tiny_en_dir / "model.bin")
    result = fetch(
        "--model",
        f"whisper-tiny=whisper:{tiny_en_dir}",
        "--dest",
        dest,
        "--expect",
        f"whisper-tiny/model.bin={want}",
    )
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(dest)
    assert [(m.id, m.engine, m.path) for m in manifest.models] == [
        ("whisper-tiny", "whisper", "whisper-tiny")
    ]
    assert manifest.default == "whisper-tiny"
    assert "whisper-tiny: engine whisper" in result.stdout


def test_a_hash_mismatch_fails_the_build_and_writes_no_manifest(tmp_path: Path, tiny_en_dir: Path) -> None:
    dest = tmp_path / "models"
    wrong = "0" * 64
    result = fetch(
        "--model", f"tiny.en=whisper:{tiny_en_dir}", "--dest", dest, "--expect", f"tiny.en/model.bin={wrong}"
    )
    assert result.returncode == 1
    assert "tiny.en/model.bin" in result.stderr and wrong in result.stderr
    assert "Traceback" not in result.stderr
    assert not (dest / MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "no-such-model"], "unknown hub model no-such-model"),
        ([], "name the models"),
        (["--model", "tiny.en=onnx:/nowhere"], "engine must be one of nemo, whisper"),
        (["--model", "tiny.en"], "expected ID=ENGINE:PATH"),
        (["--model", "../escape=whisper:/nowhere"], "must be a plain folder name"),
    ],
)
def test_bad_arguments_are_named_in_the_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = fetch(*args, "--dest", tmp_path / "models")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_default_and_unrecognised_folders_are_refused(tmp_path: Path, tiny_en_dir: Path) -> None:
    result = fetch(
        "--model", f"tiny.en=whisper:{tiny_en_dir}", "--dest", tmp_path / "a", "--default", "large"
    )
    assert result.returncode == 1
    assert "--default 'large' is not among the models: tiny.en" in result.stderr

    source = tmp_path / "src"
    (source / "notes").mkdir(parents=True)
    (source / "notes" / "readme.txt").write_text("not a model")
    result = fetch("--from-dir", source, "--dest", tmp_path / "b")
    assert result.returncode == 1
    assert (
        "model 'notes'" in result.stderr
        and "neither a .nemo file nor a CTranslate2 model.bin" in result.stderr
    )


def test_a_ctranslate2_folder_without_tokenizer_is_refused(tmp_path: Path, tiny_en_dir: Path) -> None:
    """Without tokenizer.json faster-whisper would reach for the hub at run time; the build must fail instead."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.bin", "config.json"):
        (partial / name).symlink_to(tiny_en_dir / name)
    result = fetch("--model", f"partial=whisper:{partial}", "--dest", tmp_path / "models")
    assert result.returncode == 1
    assert "lacks tokenizer.json" in result.stderr


def test_a_nemo_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "src" / "broken" / "broken.nemo"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not a tar archive" * 100)
    result = fetch("--from-dir", tmp_path / "src", "--dest", tmp_path / "models")
    assert result.returncode == 1
    assert "broken.nemo is not a .nemo (tar) archive" in result.stderr


def test_fetch_models_never_imports_torch_or_nemo(tmp_path: Path, tiny_en_dir: Path) -> None:
    script = (
        "import sys, runpy; "
        f"sys.argv = ['fetch_models.py', '--model', 'tiny.en=whisper:{tiny_en_dir}', '--dest', {str(tmp_path)!r}]; "
        "code = 0\n"
        "try:\n"
        f"    runpy.run_path({str(FETCH)!r}, run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "heavy = sorted(m for m in ('torch', 'nemo', 'ctranslate2', 'faster_whisper') if m in sys.modules)\n"
        "print(code, heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []"
