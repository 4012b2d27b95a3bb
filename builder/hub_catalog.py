"""The models the image can bake in from the Hugging Face hub, by the ids builder/fetch_models.py takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubModel:
    """A model the image can bake in, and where on the Hugging Face hub it comes from."""

    model_id: str
    engine: str
    repo_id: str
    patterns: tuple[str, ...]
    entry: str | None = None  # the .nemo file the manifest path names; None: the folder itself


# faster-whisper's own name for large-v3-turbo ("large-v3-turbo"/"turbo" in faster_whisper.utils) maps
# to mobiuslabsgmbh's float16 CTranslate2 conversion: the same files `WhisperModel("turbo")` would use.
CATALOG: dict[str, HubModel] = {
    "parakeet-tdt-0.6b-v3": HubModel(
        model_id="parakeet-tdt-0.6b-v3",
        engine="nemo",
        repo_id="nvidia/parakeet-tdt-0.6b-v3",
        patterns=("parakeet-tdt-0.6b-v3.nemo",),
        entry="parakeet-tdt-0.6b-v3.nemo",
    ),
    "whisper-large-v3-turbo": HubModel(
        model_id="whisper-large-v3-turbo",
        engine="whisper",
        repo_id="mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        # faster-whisper's download_model() patterns: the CTranslate2 weights and the tokenizer, so the
        # worker never asks the hub for a tokenizer at run time.
        patterns=("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"),
    ),
    # Speaker diarization, CC-BY-4.0 (v1, diar_sortformer_4spk-v1, is non-commercial: not offered).
    "sortformer-4spk-v2": HubModel(
        model_id="sortformer-4spk-v2",
        engine="diarizer",
        repo_id="nvidia/diar_streaming_sortformer_4spk-v2",
        patterns=("diar_streaming_sortformer_4spk-v2.nemo",),
        entry="diar_streaming_sortformer_4spk-v2.nemo",
    ),
}
ALIASES: dict[str, tuple[str, ...]] = {"both": ("parakeet-tdt-0.6b-v3", "whisper-large-v3-turbo")}
