"""Speaker diarization with NVIDIA's streaming Sortformer (NeMo), restored from a baked .nemo file.

Sortformer answers "who spoke when" as per-frame (80 ms) activity probabilities of up to four
speakers, numbered in the order they first speak. The streaming model
(nvidia/diar_streaming_sortformer_4spk-v2) reads audio of any length in chunks, each alongside a
speaker cache of earlier frames (its Arrival-Order Speaker Cache), so speaker 0 of the first
minute is speaker 0 of the last hour: the windows, and the speakers kept consistent across them,
are the model's own. Which frames become which turns is handler.speaker_turns's job.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handler.engines.base import SAMPLE_RATE, BatchLimits, EngineError

log = logging.getLogger(__name__)

# The .nemo file is local; a hub lookup at run time would be a bug, so make it impossible.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The model card's longest-latency streaming setting (30.4 s), its most accurate: a whole file is
# diarized at once, so latency costs nothing. In 80 ms frames: each step reads a 27.2 s chunk with
# 3.2 s of right context, beside a 188-frame speaker cache and a 40-frame FIFO of recent frames.
STREAMING = {
    "chunk_len": 340,
    "chunk_right_context": 40,
    "fifo_len": 40,
    "spkcache_update_period": 300,
    "spkcache_len": 188,
}
# Shorter input than this is padded on the right (and the frames of the padding dropped): the
# encoder's subsampling needs a few frames, and a word-long clip still gets its speaker.
MIN_SAMPLES = SAMPLE_RATE
# Audio seconds per call: the streaming loop holds one chunk per item at a time, but the mel
# features of every item of a call sit on the device at once.
CALL_AUDIO_S = 8 * 3600.0
CALL_ITEMS = 16


@dataclass(frozen=True)
class SpeakerActivity:
    """One audio's diarization: probabilities (frames x speakers) of each speaker talking in each frame."""

    probabilities: np.ndarray
    frame_s: float


class SortformerDiarizer:
    """A Sortformer diarization model, loaded once per worker; activity() is called per batch."""

    engine_name = "sortformer"

    def __init__(self, model_id: str, path: Path, device: str | None = None) -> None:
        import torch
        from nemo.collections.asr.models import SortformerEncLabelModel

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_id = model_id
        self.device = device
        self.path = Path(path)
        self._lock = threading.Lock()
        model: Any = SortformerEncLabelModel.restore_from(str(self.path), map_location=torch.device(device))
        model.eval()
        if not model.streaming_mode:
            raise EngineError(
                f"{self.path.name} is an offline Sortformer (its input is capped at a few minutes); "
                "bake the streaming model, nvidia/diar_streaming_sortformer_4spk-v2"
            )
        for name, value in STREAMING.items():
            setattr(model.sortformer_modules, name, value)
        model.sortformer_modules._check_streaming_parameters()
        self.model = model
        self.max_speakers = int(model.cfg.max_num_of_spks)
        # One output frame per subsampling_factor feature frames of window_stride seconds.
        self.frame_s = float(model.cfg.preprocessor.window_stride) * int(model.cfg.encoder.subsampling_factor)
        _quiet_streaming_progress()

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(max_items=CALL_ITEMS, max_audio_s=CALL_AUDIO_S)

    def activity(self, audios: list[np.ndarray]) -> list[SpeakerActivity]:
        """Each 16 kHz mono array's speaker activity, in order; calls batched by batch_limits()."""
        arrays = [np.ascontiguousarray(audio, dtype=np.float32) for audio in audios]
        results: list[SpeakerActivity | None] = [None] * len(arrays)
        for index, array in enumerate(arrays):
            if array.size == 0:
                results[index] = SpeakerActivity(np.zeros((0, self.max_speakers), np.float32), self.frame_s)
        # Similar lengths side by side, as a batch pads to its longest member.
        pending = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: arrays[i].size)
        for call in self.batch_limits().group([arrays[i].size / SAMPLE_RATE for i in pending]):
            indices = [pending[position] for position in call]
            for index, probabilities in zip(indices, self._run([arrays[i] for i in indices]), strict=True):
                results[index] = SpeakerActivity(probabilities, self.frame_s)
        done = [result for result in results if result is not None]
        if len(done) != len(arrays):
            raise EngineError(f"sortformer returned {len(done)} results for {len(arrays)} inputs")
        return done

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        padded = [np.pad(a, (0, MIN_SAMPLES - a.size)) if a.size < MIN_SAMPLES else a for a in arrays]
        try:
            with self._lock:
                _, predictions = self.model.diarize(
                    audio=padded,
                    sample_rate=SAMPLE_RATE,
                    batch_size=len(padded),
                    include_tensor_outputs=True,
                    num_workers=0,
                    verbose=False,
                )
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            raise EngineError(f"sortformer ran out of GPU memory: {error}") from error
        except RuntimeError as error:
            raise EngineError(f"sortformer failed: {error}", gpu_failed="CUDA" in str(error)) from error
        out = []
        for array, prediction in zip(arrays, predictions, strict=True):
            # The batch is padded to its longest item: keep this item's own frames only.
            frames = max(1, int(np.ceil(array.size / SAMPLE_RATE / self.frame_s)))
            out.append(prediction.squeeze(0)[:frames].float().cpu().numpy())
        return out

    def smoke_test(self) -> None:
        """A second of silence through the model, so a broken GPU or model fails at start-up."""
        self.activity([np.zeros(SAMPLE_RATE, dtype=np.float32)])


def _quiet_streaming_progress() -> None:
    """NeMo's streaming loop draws a tqdm bar per call whenever the model is not training; on a
    worker that is one bar per batch in the log. The loop reads the name from its module and passes
    disable= itself (disable=self.training), so a partial's disable=True would be overridden: the
    wrapper sets it after the caller's arguments."""
    from nemo.collections.asr.models import sortformer_diar_models
    from tqdm import tqdm

    def silent_tqdm(*args: Any, **kwargs: Any) -> tqdm:
        return tqdm(*args, **{**kwargs, "disable": True})

    sortformer_diar_models.tqdm = silent_tqdm  # type: ignore[attr-defined]
