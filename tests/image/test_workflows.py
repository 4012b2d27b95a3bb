"""The workflows do what the issue promises: make test on CPU, the linters, and a cached, smoke-tested build."""

from __future__ import annotations

from typing import Any

import yaml

from tests.image.conftest import REPO


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_ci_runs_make_test_on_python_311_and_the_linters() -> None:
    jobs = workflow("ci.yml")["jobs"]
    test = jobs["test"]
    python = next(s for s in test["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    assert any(str(s.get("run", "")).startswith("make test") for s in test["steps"])
    lint = steps_text(jobs["lint-image"])
    assert "hadolint Dockerfile" in lint and "actionlint" in lint


def test_image_builds_every_variant_with_a_registry_cache_and_a_smoke_test() -> None:
    image = workflow("image.yml")
    build = image["jobs"]["build"]
    variants = {item["variant"]: item["models"] for item in build["strategy"]["matrix"]["include"]}
    assert variants == {
        "parakeet": "parakeet-tdt-0.6b-v3",
        "whisper-turbo": "whisper-large-v3-turbo",
        "both": "both",
    }

    step = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@"))
    assert step["with"]["cache-from"].startswith("type=registry,")
    assert "type=registry," in step["with"]["cache-to"]
    assert "MODELS=${{ matrix.models }}" in step["with"]["build-args"]

    text = steps_text(build)
    assert "import torch, nemo.collections.asr, faster_whisper" in text
    assert "registry_from_env()" in text and "load_all()" in text
    push = next(s for s in build["steps"] if s.get("name") == "Push")
    assert "refs/heads/main" in push["if"] and "refs/tags/v" in push["if"]


def test_actions_are_pinned_to_a_major_version_at_least() -> None:
    for name in ("ci.yml", "image.yml"):
        for job in workflow(name)["jobs"].values():
            for step in job["steps"]:
                uses = step.get("uses")
                if uses:
                    ref = uses.partition("@")[2]
                    assert ref and ref not in ("main", "master", "latest"), f"{name}: {uses}"
