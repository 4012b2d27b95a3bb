"""hadolint on the Dockerfile and actionlint on the workflows, the pinned binaries from requirements-dev.txt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.image.conftest import REPO


def tool(name: str) -> str:
    # The venv's own copy first (make test runs without activating the venv).
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: make setup installs it from requirements-dev.txt")
    return found


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = run(tool("hadolint"), "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    """The linter is not a no-op here: a Dockerfile with known faults fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install requests\nUSER root\nCMD python -m handler\n")
    result = run(tool("hadolint"), "--no-color", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest
    assert "DL3013" in result.stdout  # unpinned pip package


def test_actionlint_passes_on_the_workflows() -> None:
    workflows = sorted(str(p.relative_to(REPO)) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    assert {".github/workflows/ci.yml", ".github/workflows/image.yml"} <= set(workflows)
    result = run(tool("actionlint"), "-no-color", *workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_is_really_checking(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    result = run(tool("actionlint"), "-no-color", ".github/workflows/bad.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "matrix" in result.stdout
