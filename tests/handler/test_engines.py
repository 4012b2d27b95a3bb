"""The speech engines: real Whisper (tiny.en), the real NeMo code path (tiny TDT), and the registry."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from handler.engines.base import SAMPLE_RATE, Engine, SegmentTiming, Transcript, WordTiming
from handler.engines.instant import INSTANT_MODEL_ID, PACED_MODEL_ID, InstantTestEngine, PacedTestEngine
from handler.engines.manifest import Manifest, ModelEntry, write_manifest
from handler.engines.parakeet import NemoEngine
from handler.engines.registry import EngineRegistry, ModelUnavailable, registry_from_env

JFK_PHRASE = "ask not what your country can do for you"
REGISTRY_ENV = (
    "STENOPOD_MODELS_DIR",
    "STENOPOD_MODELS",
    "STENOPOD_DEFAULT_MODEL",
    "STENOPOD_ENABLE_TEST_ENGINE",
    "STENOPOD_LOCAL_ATTENTION_S",
    "STENOPOD_NEMO_CUDA_GRAPHS",
    "STENOPOD_NEMO_DTYPE",
    "STENOPOD_NEMO_BATCH_SIZE",
)


def decode_16k_mono(path: Path) -> np.ndarray:
    """Test helper: any file PyAV reads -> 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def assert_well_formed(transcript: Transcript, duration: float, words_expected: bool) -> None:
    """Types, keys and time bounds: what the formatters and the job answer rely on."""
    assert isinstance(transcript, Transcript)
    assert isinstance(transcript.text, str)
    for segment in transcript.segments:
        assert isinstance(segment, SegmentTiming)
        assert isinstance(segment.text, str)
        assert 0.0 <= segment.start <= segment.end <= duration
        if not words_expected:
            assert segment.words == []
        for word in segment.words:
            assert isinstance(word, WordTiming)
            assert isinstance(word.text, str) and word.text
            assert 0.0 <= word.start <= word.end <= duration
    starts = [word.start for segment in transcript.segments for word in segment.words]
    assert starts == sorted(starts)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in REGISTRY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def jfk(data_dir: Path) -> np.ndarray:
    return decode_16k_mono(data_dir / "jfk.flac")


@pytest.fixture(scope="module")
def whisper(tiny_en_dir: Path) -> Engine:
    from handler.engines.whisper import WhisperEngine

    return WhisperEngine("tiny.en", tiny_en_dir)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_nemo_path: Path, tiny_en_dir: Path) -> Path:
    """A models directory laid out as the image builder writes it: a nemo and a whisper model."""
    root = tmp_path_factory.mktemp("models")
    (root / "parakeet-tiny").mkdir()
    shutil.copy(tiny_nemo_path, root / "parakeet-tiny" / "model.nemo")
    (root / "tiny.en").symlink_to(tiny_en_dir, target_is_directory=True)
    manifest = Manifest(
        default="parakeet-tiny",
        models=[
            ModelEntry(id="parakeet-tiny", engine="nemo", path="parakeet-tiny/model.nemo"),
            ModelEntry(id="tiny.en", engine="whisper", path="tiny.en"),
        ],
    )
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def nemo_registry(models_dir: Path) -> Iterator[EngineRegistry]:
    """The tiny NeMo model loaded through the registry, exactly as Parakeet v3 loads in the image."""
    with pytest.MonkeyPatch.context() as patch:
        for name in REGISTRY_ENV:
            patch.delenv(name, raising=False)
        patch.setenv("STENOPOD_MODELS_DIR", str(models_dir))
        patch.setenv("STENOPOD_MODELS", "parakeet-tiny")
        registry = registry_from_env()
        registry.load_all()
        yield registry


# --- Whisper ---------------------------------------------------------------------------------


def test_whisper_transcribes_real_speech_with_word_times(whisper: Engine, jfk: np.ndarray) -> None:
    duration = jfk.size / SAMPLE_RATE
    [transcript] = whisper.transcribe([jfk], word_timestamps=True)

    assert JFK_PHRASE in normalise(transcript.text)
    assert transcript.language == "en"
    assert whisper.device == "cpu"
    words = [word for segment in transcript.segments for word in segment.words]
    assert len(words) >= 20
    assert_well_formed(transcript, duration, words_expected=True)
    assert words[-1].end > duration / 2


def test_whisper_batch_keeps_order_and_handles_empty(
    whisper: Engine, jfk: np.ndarray, data_dir: Path
) -> None:
    librispeech = decode_16k_mono(data_dir / "librispeech_1089-134686-0001.wav")
    empty = np.zeros(0, dtype=np.float32)

    # An English-only model given another language transcribes (and reports) English.
    transcripts = whisper.transcribe([librispeech, jfk, empty], language="de")

    assert len(transcripts) == 3
    assert "belly" in normalise(transcripts[0].text)
    assert JFK_PHRASE not in normalise(transcripts[0].text)
    assert JFK_PHRASE in normalise(transcripts[1].text)
    assert [transcript.language for transcript in transcripts] == ["en", "en", "en"]
    assert transcripts[2] == Transcript(text="", segments=[], language="en")
    assert_well_formed(transcripts[1], jfk.size / SAMPLE_RATE, words_expected=False)


# --- NeMo (tiny TDT, random weights: types, keys and times, never text) ----------------------


def test_nemo_loads_from_manifest_and_transcribes_with_word_times(
    nemo_registry: EngineRegistry, jfk: np.ndarray
) -> None:
    from handler.engines.parakeet import NemoEngine

    assert nemo_registry.available() == ["parakeet-tiny"]
    assert nemo_registry.default_model() == "parakeet-tiny"
    engine = nemo_registry.get(None)
    assert isinstance(engine, NemoEngine)
    assert (engine.model_id, engine.engine_name, engine.device) == ("parakeet-tiny", "nemo", "cpu")
    # CUDA-graph decoding stays off unless STENOPOD_NEMO_CUDA_GRAPHS=1 asks for it.
    assert engine.model.cfg.decoding.greedy.use_cuda_graph_decoder is False

    noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2) * 0.1).astype(np.float32)
    audios = [jfk, noise]
    transcripts = engine.transcribe(audios, word_timestamps=True)

    assert len(transcripts) == 2
    for transcript, audio in zip(transcripts, audios, strict=True):
        assert transcript.language is None  # Parakeet reports no language
        assert_well_formed(transcript, audio.size / SAMPLE_RATE, words_expected=True)
    # Random weights still emit tokens on 11 s of speech; their words carry times.
    jfk_words = [word for segment in transcripts[0].segments for word in segment.words]
    assert transcripts[0].text and jfk_words
    assert " ".join(word.text for word in jfk_words) == transcripts[0].text


def test_nemo_segment_times_without_words_and_empty_audio(
    nemo_registry: EngineRegistry, jfk: np.ndarray
) -> None:
    engine = nemo_registry.get("parakeet-tiny")
    short = jfk[: SAMPLE_RATE // 4]
    transcripts = engine.transcribe([short, np.zeros(0, dtype=np.float32), jfk])

    assert len(transcripts) == 3
    assert_well_formed(transcripts[0], 0.25, words_expected=False)
    assert transcripts[1] == Transcript(text="", segments=[], language=None)
    assert transcripts[2].segments
    assert_well_formed(transcripts[2], jfk.size / SAMPLE_RATE, words_expected=False)


def test_nemo_long_audio_switches_to_local_attention_and_back(
    clean_env: pytest.MonkeyPatch, tiny_nemo_path: Path, jfk: np.ndarray
) -> None:
    from handler.engines.parakeet import NemoEngine

    clean_env.setenv("STENOPOD_LOCAL_ATTENTION_S", "5")
    engine = NemoEngine("tiny", tiny_nemo_path)
    assert engine.model.cfg.encoder.self_attention_model == "rel_pos"

    [long] = engine.transcribe([jfk], word_timestamps=True)
    assert engine.model.cfg.encoder.self_attention_model == "rel_pos_local_attn"
    assert list(engine.model.cfg.encoder.att_context_size) == [256, 256]
    assert_well_formed(long, jfk.size / SAMPLE_RATE, words_expected=True)

    engine.transcribe([jfk[: 2 * SAMPLE_RATE]])
    assert engine.model.cfg.encoder.self_attention_model == "rel_pos"
    assert list(engine.model.cfg.encoder.att_context_size) == [-1, -1]

    # The switch keeps the trained weights: on 11 s (fewer frames than the 256-frame window)
    # local attention sees everything full attention sees, so the output is the same.
    engine.local_attention_s = 3600.0
    [full] = engine.transcribe([jfk], word_timestamps=True)
    assert engine.model.cfg.encoder.self_attention_model == "rel_pos"
    assert full == long


def test_nemo_bf16_weights_survive_the_attention_switch(
    clean_env: pytest.MonkeyPatch, tiny_nemo_path: Path, jfk: np.ndarray
) -> None:
    import torch

    from handler.engines.parakeet import NemoEngine

    def dtypes(module: torch.nn.Module) -> set[torch.dtype]:
        return {
            tensor.dtype for tensor in [*module.parameters(), *module.buffers()] if tensor.is_floating_point()
        }

    # A GPU's default; on request on the CPU, where autocast runs in bf16 too.
    clean_env.setenv("STENOPOD_NEMO_DTYPE", "bfloat16")
    clean_env.setenv("STENOPOD_LOCAL_ATTENTION_S", "5")
    engine = NemoEngine("tiny", tiny_nemo_path)
    model = engine.model
    assert engine.dtype == "bfloat16"
    for part in (model.encoder, model.decoder, model.joint):
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    assert dtypes(model.preprocessor) == {torch.float32}  # the mel features stay full precision

    [short] = engine.transcribe([jfk[: 4 * SAMPLE_RATE]], word_timestamps=True)
    assert_well_formed(short, 4.0, words_expected=True)
    # Local attention builds new attention modules (in float32): they are cast too.
    [long] = engine.transcribe([jfk], word_timestamps=True)
    assert model.cfg.encoder.self_attention_model == "rel_pos_local_attn"
    assert dtypes(model.encoder) == {torch.bfloat16}
    assert_well_formed(long, jfk.size / SAMPLE_RATE, words_expected=True)


def test_nemo_weights_dtype_defaults_and_refusal(clean_env: pytest.MonkeyPatch, tiny_nemo_path: Path) -> None:
    import torch

    from handler.engines.parakeet import NemoEngine

    engine = NemoEngine("tiny", tiny_nemo_path)  # the CPU: full precision, no autocast
    assert engine.dtype == "float32"
    assert {p.dtype for p in engine.model.encoder.parameters()} == {torch.float32}
    clean_env.setenv("STENOPOD_NEMO_DTYPE", "fp8")
    with pytest.raises(ValueError, match="STENOPOD_NEMO_DTYPE"):
        NemoEngine("tiny", tiny_nemo_path)


def test_nemo_bf16_on_a_gpu_without_it_falls_back(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from handler.engines.parakeet import _weights_dtype

    # No GPU here: what the choice sees of an older GPU (a T4, a V100) is its answer to this.
    clean_env.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert _weights_dtype("cuda", None) == "float32"
    with caplog.at_level("WARNING"):
        assert _weights_dtype("cuda", "bfloat16") == "float32"
    assert "no bf16" in caplog.text
    assert _weights_dtype("cpu", "bfloat16") == "bfloat16"  # on request on the CPU (autocast runs there)
    clean_env.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert _weights_dtype("cuda", None) == "bfloat16"


def test_nemo_cuda_graph_switch(clean_env: pytest.MonkeyPatch, tiny_nemo_path: Path) -> None:
    from handler.engines.parakeet import NemoEngine

    clean_env.setenv("STENOPOD_NEMO_CUDA_GRAPHS", "1")
    engine = NemoEngine("tiny", tiny_nemo_path)
    assert engine.model.cfg.decoding.greedy.use_cuda_graph_decoder is True


# --- Registry ----------------------------------------------------------------------------------


def test_dev_fallback_offers_tiny_en_by_default(clean_env: pytest.MonkeyPatch) -> None:
    registry = registry_from_env()
    assert registry.available() == ["tiny.en"]
    assert registry.default_model() == "tiny.en"


def test_unknown_model_lists_available(clean_env: pytest.MonkeyPatch) -> None:
    registry = registry_from_env()
    with pytest.raises(ModelUnavailable) as caught:
        registry.get("parakeet-tdt-0.6b-v3")
    assert caught.value.model_id == "parakeet-tdt-0.6b-v3"
    assert caught.value.available == ["tiny.en"]
    assert "tiny.en" in str(caught.value)


def test_instant_engine_only_with_env_switch(clean_env: pytest.MonkeyPatch) -> None:
    assert INSTANT_MODEL_ID not in registry_from_env().available()
    with pytest.raises(ModelUnavailable):
        registry_from_env().get(INSTANT_MODEL_ID)

    clean_env.setenv("STENOPOD_ENABLE_TEST_ENGINE", "1")
    registry = registry_from_env()
    assert registry.available() == ["tiny.en", INSTANT_MODEL_ID, PACED_MODEL_ID]
    assert registry.default_model() == "tiny.en"
    engine = registry.get(INSTANT_MODEL_ID)
    assert isinstance(engine, InstantTestEngine)
    assert "test double" in (InstantTestEngine.__doc__ or "").lower()

    [transcript] = engine.transcribe(
        [np.zeros(3 * SAMPLE_RATE, dtype=np.float32)], "de", word_timestamps=True
    )
    assert transcript.language == "de"
    assert [segment.end for segment in transcript.segments] == [3.0]
    assert_well_formed(transcript, 3.0, words_expected=True)


def test_the_paced_engine_takes_audio_seconds_over_rtfx_with_parakeets_limits(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("STENOPOD_ENABLE_TEST_ENGINE", "1")
    clean_env.setenv("STENOPOD_TEST_ENGINE_RTFX", "100")
    engine = registry_from_env().get(PACED_MODEL_ID)
    assert isinstance(engine, PacedTestEngine) and "test double" in (PacedTestEngine.__doc__ or "").lower()
    assert engine.max_chunk_s == NemoEngine.max_chunk_s
    started = time.perf_counter()
    transcripts = engine.transcribe([np.zeros(20 * SAMPLE_RATE, dtype=np.float32)] * 2)
    assert 0.4 <= time.perf_counter() - started < 2.0  # 40 s of audio at 100x
    assert len(transcripts) == 2 and transcripts[0].segments[0].end == 20.0


def test_default_and_restriction_from_env(clean_env: pytest.MonkeyPatch, models_dir: Path) -> None:
    clean_env.setenv("STENOPOD_MODELS_DIR", str(models_dir))
    registry = registry_from_env()
    assert registry.available() == ["parakeet-tiny", "tiny.en"]
    assert registry.default_model() == "parakeet-tiny"

    clean_env.setenv("STENOPOD_DEFAULT_MODEL", "tiny.en")
    assert registry_from_env().default_model() == "tiny.en"

    clean_env.setenv("STENOPOD_DEFAULT_MODEL", "large-v3")
    with pytest.raises(ModelUnavailable) as caught:
        registry_from_env()
    assert caught.value.available == ["parakeet-tiny", "tiny.en"]

    clean_env.delenv("STENOPOD_DEFAULT_MODEL")
    clean_env.setenv("STENOPOD_MODELS", "tiny.en")
    registry = registry_from_env()
    assert registry.available() == ["tiny.en"]
    assert registry.default_model() == "tiny.en"

    clean_env.setenv("STENOPOD_MODELS", "tiny.en,missing")
    with pytest.raises(ModelUnavailable) as caught:
        registry_from_env()
    assert caught.value.model_id == "missing"


def test_manifest_whisper_entry_loads_through_registry(
    clean_env: pytest.MonkeyPatch, models_dir: Path
) -> None:
    from handler.engines.whisper import WhisperEngine

    clean_env.setenv("STENOPOD_MODELS_DIR", str(models_dir))
    clean_env.setenv("STENOPOD_MODELS", "tiny.en")
    registry = registry_from_env()
    registry.load_all()
    engine = registry.get("tiny.en")
    assert isinstance(engine, WhisperEngine)
    assert registry.get(None) is engine  # loaded once, shared


def test_no_models_at_all_is_a_clear_error() -> None:
    registry = EngineRegistry([])
    assert registry.available() == []
    with pytest.raises(ModelUnavailable):
        registry.get(None)
