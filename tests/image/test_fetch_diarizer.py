"""The diarizer baked beside the ASR model: fetch_models places, checks and records it.

From the hub (the loopback double serving the tiny Sortformer as nvidia/diar_streaming_sortformer_4spk-v2)
and from local files; a diarizer is never the default model, never alone, and a .nemo of the wrong
kind is refused at build time rather than at the first job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.fetch_models import main as fetch_models
from handler.engines.manifest import read_manifest
from tests.image.fake_hub import COMMIT, FakeHub, FakeRepo
from tests.image.test_fetch_models_hub import fetch_from


def test_the_hub_diarizer_is_baked_beside_parakeet(
    tmp_path: Path, tiny_nemo_file: Path, tiny_sortformer_file: Path
) -> None:
    hub = FakeHub(
        {
            "nvidia/parakeet-tdt-0.6b-v3": FakeRepo({"parakeet-tdt-0.6b-v3.nemo": tiny_nemo_file}),
            "nvidia/diar_streaming_sortformer_4spk-v2": FakeRepo(
                {"diar_streaming_sortformer_4spk-v2.nemo": tiny_sortformer_file}
            ),
        }
    ).start()
    try:
        dest = tmp_path / "models"
        # As the Dockerfile runs it: --models "${MODELS}" --models "${DIARIZER}".
        result = fetch_from(
            hub,
            tmp_path,
            "--models",
            "parakeet-tdt-0.6b-v3",
            "--models",
            "sortformer-4spk-v2",
            "--dest",
            str(dest),
        )
    finally:
        hub.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(dest)
    assert manifest.default == "parakeet-tdt-0.6b-v3"
    diarizer = manifest.find("sortformer-4spk-v2")
    assert diarizer is not None and diarizer.engine == "diarizer"
    assert diarizer.path == "sortformer-4spk-v2/diar_streaming_sortformer_4spk-v2.nemo"
    assert diarizer.source == f"hf:nvidia/diar_streaming_sortformer_4spk-v2@{COMMIT}"
    assert "sortformer-4spk-v2: engine diarizer, 1 files" in result.stdout


def test_local_diarizers_are_checked_for_their_kind(
    tmp_path: Path,
    tiny_en_dir: Path,
    tiny_nemo_file: Path,
    tiny_sortformer_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asr, speakers = f"tiny.en=whisper:{tiny_en_dir}", f"speakers=diarizer:{tiny_sortformer_file}"

    def refused(*args: str) -> str:
        assert fetch_models([*args, "--dest", str(tmp_path / "refused")]) == 1
        return capsys.readouterr().err

    assert "a diarizer needs a speech recognition model beside it" in refused("--model", speakers)
    assert "--default 'speakers' is the diarizer" in refused(
        "--model", asr, "--model", speakers, "--default", "speakers"
    )
    assert "engine diarizer needs a SortformerEncLabelModel" in refused(
        "--model", f"tdt=diarizer:{tiny_nemo_file}"
    )
    assert "engine nemo needs a speech recognition model" in refused(
        "--model", asr, "--model", f"spk=nemo:{tiny_sortformer_file}"
    )

    dest = tmp_path / "models"
    assert fetch_models(["--model", asr, "--model", speakers, "--dest", str(dest)]) == 0
    manifest = read_manifest(dest)
    assert (manifest.default, [(m.id, m.engine) for m in manifest.models]) == (
        "tiny.en",
        [("tiny.en", "whisper"), ("speakers", "diarizer")],
    )


def test_the_dockerfile_bakes_the_diarizer_by_default_and_a_build_arg_leaves_it_out(
    dockerfile: object,
) -> None:
    from builder.hub_catalog import CATALOG
    from tests.image.test_dockerfile import parse_stages

    models = next(stage for stage in parse_stages(dockerfile) if stage.name == "models")
    args = [item["value"] for item in models.of("ARG")]
    assert "DIARIZER=sortformer-4spk-v2" in args and CATALOG["sortformer-4spk-v2"].engine == "diarizer"
    (fetch,) = [item["value"] for item in models.of("RUN") if "builder/fetch_models.py" in item["value"]]
    # ${VAR:+...}: an empty DIARIZER adds no --models at all.
    assert '${DIARIZER:+--models "${DIARIZER}"}' in fetch
    copied = " ".join(item["value"] for item in models.of("COPY"))
    assert "builder/hub_catalog.py" in copied and "builder/nemo_archive.py" in copied
    runtime_labels = " ".join(item["value"] for item in parse_stages(dockerfile)[-1].of("LABEL"))
    assert 'io.stenopod.diarizer="${DIARIZER}"' in runtime_labels


def test_the_hub_listing_never_offers_the_diarizer_as_a_model() -> None:
    """The Hub build bakes the diarizer by default; its presets and model choices stay ASR models."""
    from tests.image.conftest import REPO, load_json

    hub = load_json(REPO / ".runpod" / "hub.json")
    model_input = next(item for item in hub["config"]["env"] if item["key"] == "STENOPOD_DEFAULT_MODEL")
    offered = {option["value"] for option in model_input["input"]["options"]}
    offered |= {preset["defaults"].get("STENOPOD_DEFAULT_MODEL") for preset in hub["config"]["presets"]}
    assert "sortformer-4spk-v2" not in offered and "speaker labels" in hub["description"].lower()
