"""docs/architecture.md names only modules that exist, and every handler module is in it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "architecture.md").read_text()


def test_every_module_the_architecture_names_exists() -> None:
    named = set(re.findall(r"`((?:handler|client/stenopod|bench|builder)/[\w/]+\.py)`", DOC))
    assert len(named) > 30
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_worker_and_client_module_is_described() -> None:
    modules = [
        p.relative_to(REPO).as_posix()
        for root in ("handler", "client/stenopod")
        for p in (REPO / root).rglob("*.py")
        if p.name != "__init__.py"
    ]
    undescribed = sorted(module for module in modules if f"`{module}`" not in DOC)
    assert not undescribed, f"add these to docs/architecture.md: {undescribed}"
