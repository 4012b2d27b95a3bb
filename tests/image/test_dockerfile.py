"""The Dockerfile keeps the image's promises (no Docker engine here: the file itself is checked)."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from tests.image.conftest import REPO

PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?==[A-Za-z0-9.!+_-]+(\s*;.*)?$")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[dict] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [item for item in self.instructions if item["instruction"] == kind]


def parse_stages(parser: DockerfileParser) -> list[Stage]:
    # parent_images has each FROM's image with ARG defaults substituted, in order.
    bases = iter(parser.parent_images)
    stages: list[Stage] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            words = [w for w in item["value"].split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            stages.append(Stage(name=name, base=next(bases)))
        elif stages and item["instruction"] != "COMMENT":
            stages[-1].instructions.append(item)
    return stages


def resolve_image(stages: list[Stage], stage: Stage) -> str:
    """Follow FROM <stage alias> chains down to the registry image a stage starts from."""
    by_name = {s.name: s for s in stages}
    base = stage.base
    while base in by_name:
        base = by_name[base].base
    return base


@pytest.fixture(scope="module")
def stages(dockerfile: DockerfileParser) -> list[Stage]:
    return parse_stages(dockerfile)


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in stage.of("ENV"):
        for word in shlex.split(item["value"]):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def test_runtime_stage_is_a_cuda_runtime_image_matching_the_torch_build(
    stages: list[Stage], runtime: Stage
) -> None:
    image = resolve_image(stages, runtime)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", image)
    assert match, f"runtime stage must start from an nvidia/cuda cudnn *runtime* image, not {image}"
    major, minor = match.groups()
    torch_pins = (REPO / "builder" / "requirements-torch-cuda.txt").read_text()
    assert major == "12"
    # torch's CUDA build and the base image's CUDA must agree (e.g. +cu128 on a 12.8 base).
    assert re.search(rf"^torch==[\d.]+\+cu{major}{minor}$", torch_pins, re.MULTILINE), torch_pins
    assert f"/whl/cu{major}{minor}" in torch_pins


def test_every_base_image_is_pinned_to_a_tag_never_latest(stages: list[Stage]) -> None:
    names = {s.name for s in stages}
    for stage in stages:
        if stage.base in names:
            continue
        assert ":" in stage.base.rsplit("/", 1)[-1], f"{stage.base} has no tag"
        assert not stage.base.endswith(":latest"), stage.base


def test_runtime_is_offline_and_points_at_the_models(runtime: Stage) -> None:
    env = env_of(runtime)
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert env.get("STENOPOD_MODELS_DIR") == "/models"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_runtime_has_no_compilers(runtime: Stage) -> None:
    for item in runtime.of("RUN"):
        assert not re.search(r"apt-get install|build-essential|\bgcc\b|\bg\+\+|\bclang\b", item["value"]), (
            item["value"]
        )


def test_models_layer_comes_before_the_project_code(stages: list[Stage], runtime: Stage) -> None:
    copies = [item["value"] for item in runtime.of("COPY")]
    models_at = next(i for i, value in enumerate(copies) if re.match(r"--from=\S+ /models /models$", value))
    code_at = [i for i, value in enumerate(copies) if re.match(r"(client|handler)/", value)]
    assert code_at, "the runtime stage copies the project's code"
    assert models_at < min(code_at)
    venv_at = next(i for i, value in enumerate(copies) if "/opt/venv" in value)
    assert venv_at < models_at, "Python packages change less often than models: their layer goes first"

    # The models stage fetches with the builder script, after the Python install it builds on.
    models_stage = next(s for s in stages if s.name == copies[models_at].split()[0].removeprefix("--from="))
    fetch_runs = [
        item["value"] for item in models_stage.of("RUN") if "builder/fetch_models.py" in item["value"]
    ]
    assert len(fetch_runs) == 1 and '--models "${MODELS}"' in fetch_runs[0]
    assert "MODELS=parakeet-tdt-0.6b-v3" in [item["value"] for item in models_stage.of("ARG")]


def test_models_stage_copies_only_what_fetch_models_needs(stages: list[Stage]) -> None:
    """A code change elsewhere in handler/ must not invalidate the multi-gigabyte models layer."""
    models_stage = next(s for s in stages if s.name == "models")
    sources = [value.split()[:-1] for value in (item["value"] for item in models_stage.of("COPY"))]
    flat = [path for group in sources for path in group]
    assert "handler/" not in flat and "client/" not in flat
    assert all(path.endswith(".py") for path in flat), flat


def _pip_installs(stages: list[Stage]) -> list[tuple[str, list[str], str]]:
    found = []
    for stage in stages:
        for item in stage.of("RUN"):
            for words in _shell_commands(item["value"]):
                if "pip" in words and "install" in words:
                    found.append((stage.name, words[words.index("install") + 1 :], item["value"]))
    return found


def _shell_commands(run: str) -> list[list[str]]:
    """A RUN line's simple commands (split at &&, ||, ; and |), each as its words."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#") and not line.startswith("--"):
            lines.append(line)
    return lines


def test_every_pip_install_uses_pinned_files(stages: list[Stage]) -> None:
    installs = _pip_installs(stages)
    assert len(installs) >= 3
    for stage_name, args, run in installs:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-r", "-c"):
                path = args[i + 1]
                i += 2
                if arg == "-c" and path.startswith("/tmp/"):
                    # A constraints file derived in the same RUN from one in the repository.
                    assert re.search(rf"builder/constraints\.txt > {re.escape(path)}", run), run
                    continue
                assert path.startswith("builder/"), f"{stage_name}: pip installs from {path}"
                if arg == "-r":
                    for line in _requirement_lines(REPO / path):
                        assert line.startswith("-r ") or PINNED.match(line), f"{path}: {line!r} is not pinned"
            elif arg == ".":
                assert "--no-deps" in args, "the project is installed without resolving anything"
                i += 1
            elif arg.startswith("-"):
                i += 1
            else:
                pytest.fail(f"{stage_name}: loose package {arg!r} in: {run}")


def test_runs_as_a_non_root_user_and_starts_the_worker(dockerfile: DockerfileParser, runtime: Stage) -> None:
    users = [item["value"].split(":")[0] for item in runtime.of("USER")]
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.cmd == '["python", "-m", "handler"]'
    assert not runtime.of("HEALTHCHECK")
    assert not runtime.of("ENTRYPOINT")


def test_the_sdk_wheel_holds_stenopod_only_and_the_image_finds_the_worker(runtime: Stage) -> None:
    import tomllib

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["stenopod*"] and find["where"] == ["client"]
    # The worker is not in the wheel: the runtime copies it beside the SDK and puts it on the path.
    workdirs = [item["value"] for item in runtime.of("WORKDIR")]
    copies = [item["value"].split() for item in runtime.of("COPY")]
    assert ["handler/", "handler/"] in copies
    code_dir = workdirs[workdirs.index("/opt/stenopod")]
    assert env_of(runtime).get("PYTHONPATH") == code_dir


def test_labels_carry_version_and_git_sha(dockerfile: DockerfileParser) -> None:
    labels = dockerfile.labels
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == "unknown"  # the ARG default; builds pass GIT_SHA
    assert "$" not in labels["io.stenopod.models"]


def test_buildkit_cache_mounts_keep_package_caches_out_of_layers(stages: list[Stage]) -> None:
    for stage_name, _, run in _pip_installs(stages):
        assert "--mount=type=cache,target=/root/.cache/pip" in run, f"{stage_name}: {run}"
    apt_runs = [item["value"] for stage in stages for item in stage.of("RUN") if "apt-get" in item["value"]]
    assert apt_runs and all("--mount=type=cache,target=/var/cache/apt" in run for run in apt_runs)
    first_line = (REPO / "Dockerfile").read_text().splitlines()[0]
    assert first_line.startswith("# syntax=docker/dockerfile:1.")


def test_dockerignore_sends_only_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in stages:
        for item in stage.of("COPY"):
            if item["value"].startswith("--from="):
                continue
            for source in item["value"].split()[:-1]:
                top = source.split("/", 1)[0]
                assert top in allowed, f"COPY {source} is not in the build context (.dockerignore)"
                assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"


def test_no_floating_latest_tag_anywhere(repo: Path) -> None:
    files = [
        repo / "Dockerfile",
        repo / "builder" / "build.sh",
        repo / "docs" / "deploy.md",
        *sorted((repo / ".github" / "workflows").glob("*.yml")),
        *sorted((repo / ".runpod").glob("*.json")),
    ]
    for path in files:
        assert not re.search(r":latest\b", path.read_text()), f"{path.relative_to(repo)} uses :latest"


def test_build_script_tags_say_what_is_inside(repo: Path) -> None:
    result = subprocess.run(
        [
            "bash",
            str(repo / "builder" / "build.sh"),
            "--dry-run",
            "--image",
            "registry.test/stenopod-worker",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
    )
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert len(commands) == 3
    tags = [c[i + 1] for c in commands for i, word in enumerate(c) if word == "--tag"]
    variants = {"parakeet": "parakeet-tdt-0.6b-v3", "whisper-turbo": "whisper-large-v3-turbo", "both": "both"}
    for command, (variant, models) in zip(commands, variants.items(), strict=True):
        assert f"MODELS={models}" in command
        assert f"registry.test/stenopod-worker:0.1.0-{variant}-cuda12.8" in command
        assert command[-1] == "."
    assert all(re.fullmatch(r"registry\.test/stenopod-worker:[\w.-]+-cuda12\.8", tag) for tag in tags)
    assert len(tags) == 6  # a version tag and a git-sha tag per variant

    bad = subprocess.run(
        ["bash", str(repo / "builder" / "build.sh"), "--dry-run", "tiny"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown variant 'tiny'" in bad.stderr
