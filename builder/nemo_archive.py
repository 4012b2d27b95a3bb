"""What a .nemo archive holds, read without NeMo: is it whole, and is it a diarizer or an ASR model.

A .nemo file is a tar archive with a model_config.yaml whose top-level `target:` names the NeMo
class that restores it; builder/fetch_models.py uses this to place and check baked models.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

# The NeMo class a diarizer's model_config.yaml names as its target.
SORTFORMER_CLASS = "SortformerEncLabelModel"


class ArchiveProblem(Exception):
    """The file is not the .nemo archive it should be; the message says what is wrong."""


def nemo_target(path: Path) -> str:
    """The model class a .nemo's model_config.yaml names (its top-level `target:`), or "" when none.

    Read as text, line by line: the builder never imports NeMo or a YAML parser for one key.
    """
    if not tarfile.is_tarfile(path):
        return ""
    with tarfile.open(path) as archive:
        member = next((m for m in archive.getmembers() if Path(m.name).name == "model_config.yaml"), None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            return ""
        for line in handle.read().decode("utf-8", "replace").splitlines():
            if line.startswith("target:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    return ""


def is_diarizer(path: Path) -> bool:
    return nemo_target(path).endswith(SORTFORMER_CLASS)


def check_nemo(path: Path, diarizer: bool) -> None:
    """Raise ArchiveProblem unless path is a .nemo with a model config, of the kind wanted."""
    if not tarfile.is_tarfile(path):
        raise ArchiveProblem(f"{path.name} is not a .nemo (tar) archive")
    with tarfile.open(path) as archive:
        if not any(Path(name).name == "model_config.yaml" for name in archive.getnames()):
            raise ArchiveProblem(f"{path.name} has no model_config.yaml")
    if is_diarizer(path) != diarizer:
        wanted = f"a {SORTFORMER_CLASS}" if diarizer else "a speech recognition model"
        found = nemo_target(path) or "no named model class"
        raise ArchiveProblem(
            f"engine {'diarizer' if diarizer else 'nemo'} needs {wanted}, but {path.name} holds {found}"
        )
