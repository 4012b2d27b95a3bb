"""NVIDIA NeMo ASR models (Parakeet TDT) restored from a baked .nemo file."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from handler.engines.base import (
    SAMPLE_RATE,
    BatchLimits,
    DecodeOptions,
    Engine,
    EngineError,
    OptionProblem,
    SegmentTiming,
    Transcript,
    WordTiming,
    per_audio_options,
)
from handler.engines.gpu_memory import NEMO_BATCH_DEFAULT, free_gpu_bytes, nemo_batch_for_memory
from handler.engines.nemo_options import nemo_options_problem, phrase_boosting
from handler.settings import NemoSettings

log = logging.getLogger(__name__)

# The .nemo file is local; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOCAL_ATTENTION = "rel_pos_local_attn"
LOCAL_ATTENTION_CONTEXT = [256, 256]
# NeMo pads shorter inputs to 1 s on BOTH sides, which would shift every timestamp; padding on
# the right ourselves keeps times aligned with the caller's audio.
MIN_SAMPLES = SAMPLE_RATE


def _clamp(value: float, duration: float) -> float:
    return min(max(float(value), 0.0), duration)


class NemoEngine(Engine):
    """A NeMo ASR model (TDT or RNNT) decoded greedily in batches, with word and segment times.

    Environment:
      STENOPOD_NEMO_CUDA_GRAPHS=1     use NeMo's CUDA-graph greedy decoder (off by default: it
                                      fails with "CUDA error 35" on hosts whose driver is older
                                      than the image's CUDA).
      STENOPOD_LOCAL_ATTENTION_S      audio longer than this (default 1200 s) is encoded with
                                      local attention, whose memory grows linearly, not
                                      quadratically, with length.
      STENOPOD_NEMO_BATCH_SIZE        arrays per forward pass (default: picked from the free GPU
                                      memory and the longest audio, up to 128; 4 on the CPU).
      STENOPOD_NEMO_DTYPE             the weights of the encoder, decoder and joint: bfloat16
                                      (default on a GPU that has it) or float32 (the default on
                                      the CPU, and a way back to full precision on a GPU).
    """

    engine_name = "nemo"
    # Parakeet reads long context well (full attention up to about 24 minutes on an 80 GB GPU, by
    # its model card): a podcast episode goes in whole, no cut splits a sentence, and the VAD runs
    # only near the cuts of longer recordings (handler.chunking). Shorter 30 s chunks would cost
    # accuracy at every cut and CPU for planning that the GPU waits for.
    max_chunk_s = 1200.0

    def __init__(
        self, model_id: str, path: Path, device: str | None = None, settings: NemoSettings | None = None
    ) -> None:
        import torch
        from nemo.collections.asr.models import ASRModel

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_id = model_id
        self.device = device
        self.path = Path(path)
        self.settings = settings = settings or NemoSettings.from_env()
        self.local_attention_s = settings.local_attention_s
        # A fixed batch size when configured; otherwise picked per call from the free GPU memory
        # and the call's longest audio (gpu_memory), 4 on the CPU.
        self.batch_size: int | None = settings.batch_size
        if self.batch_size is None and device != "cuda":
            self.batch_size = 4
        self.dtype = _weights_dtype(device, settings.dtype)
        self._lock = threading.Lock()

        self.model: Any = ASRModel.restore_from(str(self.path), map_location=torch.device(device))
        self.model.eval()
        self._cast_weights()
        self._prepare_config()
        encoder_cfg = self.model.cfg.encoder
        self._full_attention = (
            str(encoder_cfg.get("self_attention_model", "rel_pos")),
            list(encoder_cfg.get("att_context_size", [-1, -1])),
        )
        self._full_chunking = int(encoder_cfg.get("subsampling_conv_chunking_factor", 1))

    def _prepare_config(self) -> None:
        from omegaconf import open_dict

        cfg = self.model.cfg
        # transcribe() reads validation_ds as a dict; checkpoints saved without one break it.
        if cfg.get("validation_ds") is None:
            with open_dict(cfg):
                cfg.validation_ds = {"use_start_end_token": False, "sample_rate": SAMPLE_RATE}
            self.model.cfg = cfg
        decoding = self.model.cfg.decoding
        with open_dict(decoding):
            decoding.strategy = "greedy_batch"
            if "greedy" not in decoding or decoding.greedy is None:
                decoding.greedy = {}
            decoding.greedy.use_cuda_graph_decoder = self.settings.cuda_graphs
            decoding.compute_timestamps = True
        self.model.change_decoding_strategy(decoding, verbose=False)

    def _cast_weights(self) -> None:
        """bf16 weights: half the memory of float32 (more of the GPU left for batches) and no
        per-call cast under autocast. The mel preprocessor stays float32, as NeMo computes its
        STFT and log in float32 for accuracy; autocast keeps norms and softmax in float32."""
        if self.dtype == "float32":
            return
        import torch

        for module in (self.model.encoder, self.model.decoder, self.model.joint):
            module.to(torch.bfloat16)

    @property
    def attention_model(self) -> str:
        return str(self.model.cfg.encoder.self_attention_model)

    def _use_attention(self, local: bool) -> None:
        wanted = (LOCAL_ATTENTION, LOCAL_ATTENTION_CONTEXT) if local else self._full_attention
        if self.attention_model == wanted[0] and list(self.model.cfg.encoder.att_context_size) == wanted[1]:
            return
        self.model.change_attention_model(wanted[0], wanted[1])
        # Long inputs also overflow the convolutional subsampling; 1 = let NeMo pick a chunking.
        self.model.change_subsampling_conv_chunking_factor(1 if local else self._full_chunking)
        # The switch builds new attention modules, in float32.
        self._cast_weights()

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        import torch

        if self.dtype == "bfloat16":
            return torch.autocast(
                device_type="cuda" if self.device == "cuda" else "cpu", dtype=torch.bfloat16
            )
        return contextlib.nullcontext()

    def check_options(self, options: DecodeOptions) -> OptionProblem | None:
        return nemo_options_problem(self.model_id, options)

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        word_timestamps: bool = False,
        options: Sequence[DecodeOptions] | None = None,
    ) -> list[Transcript]:
        import torch

        arrays = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        settings = per_audio_options(len(arrays), language, word_timestamps, options)
        results: list[Transcript | None] = [None] * len(arrays)
        for index, array in enumerate(arrays):
            if array.size == 0:
                results[index] = Transcript(text="", segments=[], language=None)
        # Sorted by length so each padded batch wastes little compute; long audio gets its own
        # pass with local attention; audios with other hotwords decode with another boosting tree.
        pending = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: arrays[i].size)
        limit = self.local_attention_s * SAMPLE_RATE
        groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        for index in pending:
            groups.setdefault((arrays[index].size > limit, settings[index].hotwords), []).append(index)
        try:
            with self._lock:
                for (local, hotwords), indices in sorted(groups.items()):
                    self._use_attention(local)
                    with phrase_boosting(self.model, hotwords, self.device):
                        hypotheses = list(self._run(arrays, indices))
                    for index, hypothesis in zip(indices, hypotheses, strict=True):
                        duration = arrays[index].size / SAMPLE_RATE
                        results[index] = _to_transcript(hypothesis, duration, settings[index].word_timestamps)
        except torch.cuda.OutOfMemoryError as error:
            # Out of memory leaves the CUDA context usable: fail this batch, keep the worker.
            torch.cuda.empty_cache()
            raise EngineError(f"nemo ran out of GPU memory: {error}") from error
        except RuntimeError as error:
            raise EngineError(f"nemo failed: {error}", gpu_failed="CUDA" in str(error)) from error
        transcripts = [result for result in results if result is not None]
        if len(transcripts) != len(arrays):
            raise EngineError(f"nemo returned {len(transcripts)} transcripts for {len(arrays)} inputs")
        return transcripts

    def batch_limits(self) -> BatchLimits:
        # A few of NeMo's own batches per call, so its duration-sorted batching has room to work.
        items = 4 * (self.batch_size or NEMO_BATCH_DEFAULT)
        return BatchLimits(max_items=items, max_audio_s=items * 30.0)

    def _batch_size_for(self, arrays: list[np.ndarray], indices: list[int]) -> int:
        if self.batch_size is not None:
            return self.batch_size
        longest = max(arrays[i].size for i in indices) / SAMPLE_RATE
        return nemo_batch_for_memory(longest, free_gpu_bytes())

    def _run(self, arrays: list[np.ndarray], indices: list[int]) -> Iterator[Any]:
        batch = [_pad_right(arrays[i]) for i in indices]
        batch_size = self._batch_size_for(arrays, indices)
        with self._autocast():
            hypotheses = self.model.transcribe(batch, batch_size=batch_size, timestamps=True, verbose=False)
        # RNNT models return a list; some versions return (best, n-best).
        if isinstance(hypotheses, tuple):
            hypotheses = hypotheses[0]
        return iter(hypotheses)


def _weights_dtype(device: str, configured: str | None) -> str:
    """bfloat16 on a GPU that supports it, float32 elsewhere, unless STENOPOD_NEMO_DTYPE says."""
    import torch

    gpu_has_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    if configured == "bfloat16" and device == "cuda" and not gpu_has_bf16:
        # An endpoint set up for newer GPUs that lands on an older one still transcribes.
        log.warning("STENOPOD_NEMO_DTYPE=bfloat16, but this GPU has no bf16: using float32")
        return "float32"
    if configured:
        return configured
    return "bfloat16" if gpu_has_bf16 else "float32"


def _pad_right(array: np.ndarray) -> np.ndarray:
    if array.size >= MIN_SAMPLES:
        return array
    return np.pad(array, (0, MIN_SAMPLES - array.size))


def _to_transcript(hypothesis: Any, duration: float, word_timestamps: bool) -> Transcript:
    """NeMo's Hypothesis -> Transcript; NeMo's 'start'/'end' are seconds, clamped to the audio.

    TDT durations can place the last token past the end of the audio, hence the clamp.
    Parakeet reports no language, so language stays None.
    """
    stamps = getattr(hypothesis, "timestamp", None) or {}
    text = (getattr(hypothesis, "text", "") or "").strip()
    words = [
        (
            int(item.get("start_offset", 0)),
            WordTiming(
                start=_clamp(item["start"], duration),
                end=max(_clamp(item["start"], duration), _clamp(item["end"], duration)),
                text=str(item["word"]).strip(),
            ),
        )
        for item in stamps.get("word", [])
    ]
    segments: list[SegmentTiming] = []
    segment_offsets: list[int] = []
    for item in stamps.get("segment", []):
        start = _clamp(item["start"], duration)
        segments.append(
            SegmentTiming(
                start=start, end=max(start, _clamp(item["end"], duration)), text=str(item["segment"]).strip()
            )
        )
        segment_offsets.append(int(item.get("start_offset", 0)))
    if text and not segments:
        segments.append(SegmentTiming(start=0.0, end=duration, text=text))
        segment_offsets.append(0)
    if word_timestamps and segments:
        # A word belongs to the last segment that starts at or before it (frame offsets are exact).
        position = 0
        for offset, word in words:
            while position + 1 < len(segments) and segment_offsets[position + 1] <= offset:
                position += 1
            segments[position].words.append(word)
    return Transcript(text=text, segments=segments, language=None)
