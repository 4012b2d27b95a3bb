"""Where reliability tests leave their figures for `python -m bench.reliability` to print.

A test calls record(name, data); when STENOPOD_RELIABILITY_FIGURES names a file, each record is
appended to it as one JSON line. Without the variable nothing is written (plain test runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES_ENV = "STENOPOD_RELIABILITY_FIGURES"


def record(name: str, data: dict[str, Any]) -> None:
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    with Path(target).open("a", encoding="utf-8") as out:
        out.write(json.dumps({"figure": name, **data}, sort_keys=True) + "\n")


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The records of one run, by figure name (a later record of the same name wins)."""
    figures: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                figures[entry.pop("figure")] = entry
    return figures
