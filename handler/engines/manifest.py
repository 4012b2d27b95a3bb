"""The models manifest: which models are baked into the image, written by builder/fetch_models.py.

Layout of STENOPOD_MODELS_DIR:
    manifest.json
    <model id>/...            a .nemo file (engine "nemo"), a CTranslate2 folder (engine "whisper"), or a
                              Sortformer .nemo (engine "diarizer": speaker labels, never a job's `model`)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"
EngineName = Literal["nemo", "whisper", "diarizer"]


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="Relative to the models directory.")
    sha256: str
    size: int


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="What a job's `model` field names, e.g. parakeet-tdt-0.6b-v3.")
    engine: EngineName
    path: str = Field(
        description="The .nemo file or the CTranslate2 folder, relative to the models directory."
    )
    source: str | None = Field(default=None, description="Where it came from (hub repo id or local path).")
    files: list[ModelFile] = Field(default_factory=list)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    default: str
    models: list[ModelEntry]

    def find(self, model_id: str) -> ModelEntry | None:
        return next((entry for entry in self.models if entry.id == model_id), None)


def read_manifest(models_dir: Path) -> Manifest:
    return Manifest.model_validate_json((models_dir / MANIFEST_NAME).read_text())


def write_manifest(models_dir: Path, manifest: Manifest) -> Path:
    path = models_dir / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
