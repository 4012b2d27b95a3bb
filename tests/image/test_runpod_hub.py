"""The RunPod Hub listing (.runpod/hub.json, tests.json) and the console's test_input.json are valid."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from stenopod.schema import JobError, JobInput, parse_job_input

from tests.image.conftest import REPO, SCHEMAS, load_json

HUB = REPO / ".runpod" / "hub.json"
TESTS = REPO / ".runpod" / "tests.json"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = load_json(SCHEMAS / name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(name: str, document: Any) -> list[str]:
    """Every failure, including those under oneOf/anyOf branches, as 'path: message'."""
    found: list[str] = []
    pending = list(validator(name).iter_errors(document))
    while pending:
        error = pending.pop()
        found.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
        pending.extend(error.context or [])
    return found


@pytest.fixture(scope="module")
def hub() -> dict[str, Any]:
    return load_json(HUB)


@pytest.fixture(scope="module")
def hub_tests() -> dict[str, Any]:
    return load_json(TESTS)


def image_cuda() -> tuple[int, int]:
    text = (REPO / "Dockerfile").read_text()
    match = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime", text)
    assert match
    return int(match.group(1)), int(match.group(2))


def test_hub_json_matches_the_schema(hub: dict[str, Any]) -> None:
    assert errors("runpod-hub.schema.json", hub) == []
    assert hub["category"] == "audio" and hub["type"] == "serverless"


def test_tests_json_matches_the_schema(hub_tests: dict[str, Any]) -> None:
    assert errors("runpod-tests.schema.json", hub_tests) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("category"), "category"),
        (lambda d: d.update(category="speech"), "category"),
        (lambda d: d["config"].pop("gpuIds"), "gpuIds"),
        (lambda d: d["config"].update(containerDiskInGb="20"), "containerDiskInGb"),
        (
            lambda d: d["config"]["env"].append(
                {"key": "X", "input": {"name": "x", "type": "boolean", "description": "x"}}
            ),
            "trueValue",
        ),
    ],
)
def test_the_hub_schema_rejects_broken_listings(hub: dict[str, Any], change: Any, field: str) -> None:
    broken = copy.deepcopy(hub)
    change(broken)
    found = errors("runpod-hub.schema.json", broken)
    assert found and any(field in message for message in found), found


def test_the_tests_schema_rejects_broken_test_files(hub_tests: dict[str, Any]) -> None:
    broken = copy.deepcopy(hub_tests)
    broken["config"]["gpuTypeId"] = "RTX 4090"  # a display name, not a GPU id
    broken["tests"][0]["timeout"] = "300s"
    found = errors("runpod-tests.schema.json", broken)
    assert any("gpuTypeId" in message for message in found) and any("timeout" in message for message in found)


def test_presets_and_inputs_are_consistent(hub: dict[str, Any]) -> None:
    env = {item["key"]: item for item in hub["config"]["env"]}
    for preset in hub["config"]["presets"]:
        unknown = set(preset["defaults"]) - set(env)
        assert not unknown, f"preset {preset['name']!r} sets undeclared variables {unknown}"
    for key, item in env.items():
        spec = item.get("input")
        if spec is None:
            continue
        if "options" in spec:
            assert spec["default"] in [option["value"] for option in spec["options"]], key
        if spec["type"] == "number":
            assert spec["min"] <= spec["default"] <= spec["max"], key
    # The bucket and model presets the issue asks for.
    assert {"STENOPOD_DEFAULT_MODEL", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        env
    )
    assert any(p["defaults"].get("S3_ENDPOINT_URL") for p in hub["config"]["presets"])


def test_model_choices_exist_in_the_hub_build(hub: dict[str, Any]) -> None:
    """The Hub builds the Dockerfile with its defaults: only models of that build may be offered."""
    text = (REPO / "Dockerfile").read_text()
    default_models = re.search(r"^ARG MODELS=(\S+)$", text, re.MULTILINE)
    assert default_models
    model_input = next(item for item in hub["config"]["env"] if item["key"] == "STENOPOD_DEFAULT_MODEL")[
        "input"
    ]
    assert {option["value"] for option in model_input["options"]} == {default_models.group(1)}
    for preset in hub["config"]["presets"]:
        assert preset["defaults"].get(
            "STENOPOD_DEFAULT_MODEL", default_models.group(1)
        ) == default_models.group(1)


def test_cuda_versions_are_ones_the_image_runs_on(hub: dict[str, Any], hub_tests: dict[str, Any]) -> None:
    """A host whose driver is older than the image's CUDA cannot start it."""
    need = image_cuda()
    for versions in (hub["config"]["allowedCudaVersions"], hub_tests["config"]["allowedCudaVersions"]):
        for version in versions:
            major, minor = map(int, version.split("."))
            assert (major, minor) >= need, f"CUDA {version} is older than the image's {need}"


def test_hub_test_inputs_are_valid_jobs(hub_tests: dict[str, Any]) -> None:
    for test in hub_tests["tests"]:
        parsed = parse_job_input(test["input"])
        assert isinstance(parsed, JobInput), f"{test['name']}: {parsed}"


def test_console_test_input_is_a_valid_job() -> None:
    path = REPO / "test_input.json"
    if not path.exists():
        pytest.skip("test_input.json is not in the repository yet")
    document = load_json(path)
    assert set(document) == {"input"}, "RunPod's test_input.json wraps the job in {'input': ...}"
    parsed = parse_job_input(document["input"])
    assert isinstance(parsed, JobInput), parsed


def test_an_invalid_job_is_caught() -> None:
    """The same check refuses a broken input, naming the field."""
    parsed = parse_job_input({"audio": "https://example.com/a.mp3", "formats": ["docx"]})
    assert isinstance(parsed, JobError)
    assert "formats" in parsed.message


def test_listing_files_the_hub_needs_are_present() -> None:
    for name in ("Dockerfile", "README.md"):
        assert (REPO / name).is_file() or (REPO / ".runpod" / name).is_file(), name
    assert Path(REPO / ".runpod" / "hub.json").is_file() and TESTS.is_file()
