"""Batch sizes picked from the GPU memory a worker has free, with a cap.

A RunPod endpoint may run the same image on a 16 GB or an 80+ GB card; a fixed batch size either
wastes the large one or runs the small one out of memory. The estimates per item are deliberately
on the high side, and only a share of the free memory is planned for: the CUDA allocator, cuDNN
work space and fragmentation need the rest.
"""

from __future__ import annotations

from pathlib import Path

HEADROOM = 0.7  # share of the free memory that batches may plan on
WHISPER_WINDOW_CAP = 32  # windows per CTranslate2 call
WHISPER_WINDOW_DEFAULT = 16  # when the free memory cannot be read
NEMO_BATCH_CAP = 128
NEMO_BATCH_DEFAULT = 16
# Per 30 s window and beam, CTranslate2 keeps the cross-attention keys and values of every decoder
# layer (1,500 frames x d_model x 2 x layers, fp16) plus the self-attention cache; both grow with
# d_model x layers, as the weights do: 0.11 x the fp16 weight bytes per beam is large-v3's ~1.7 GB
# at beam 5, and overestimates smaller models a little.
WHISPER_BYTES_PER_WINDOW_PER_BEAM_OF_WEIGHTS = 0.11
# FastConformer at bf16: the convolutional subsampling of 100 mel frames a second dominates a
# forward pass's transient memory (~1.6 MB per second of audio for Parakeet's 0.6B model, 2.5x
# margin here), attention over the 12.5 encoder frames a second the rest.
NEMO_BYTES_PER_AUDIO_S = 4 * 2**20


def free_gpu_bytes() -> int | None:
    """Free memory on the current CUDA device, or None without torch or a GPU."""
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
    except RuntimeError:
        return None
    return int(free)


def batch_for_memory(free_bytes: int | None, bytes_per_item: float, *, cap: int, default: int) -> int:
    """How many items of bytes_per_item fit in HEADROOM of free_bytes: at least 1, at most cap;
    `default` (within the cap) when the free memory is unknown."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    if free_bytes is None or bytes_per_item <= 0:
        return max(1, min(cap, default))
    return max(1, min(cap, int(free_bytes * HEADROOM // bytes_per_item)))


def whisper_window_bytes(model_dir: Path, beam_size: int) -> float:
    """Estimated GPU memory of one 30 s window in a batched beam search of the model in model_dir."""
    weights = model_dir / "model.bin"
    size = weights.stat().st_size if weights.exists() else 3 * 2**30  # unknown: assume large-v3
    return size * WHISPER_BYTES_PER_WINDOW_PER_BEAM_OF_WEIGHTS * max(1, beam_size)


def windows_for_memory(model_dir: Path, beam_size: int, free_bytes: int | None = None) -> int:
    """Windows per CTranslate2 call on the GPU, from its free memory (read now unless given)."""
    free = free_gpu_bytes() if free_bytes is None else free_bytes
    return batch_for_memory(
        free,
        whisper_window_bytes(model_dir, beam_size),
        cap=WHISPER_WINDOW_CAP,
        default=WHISPER_WINDOW_DEFAULT,
    )


def nemo_batch_for_memory(longest_audio_s: float, free_bytes: int | None) -> int:
    """Parakeet's batch size for a group whose longest audio is longest_audio_s."""
    return batch_for_memory(
        free_bytes,
        NEMO_BYTES_PER_AUDIO_S * max(1.0, longest_audio_s),
        cap=NEMO_BATCH_CAP,
        default=NEMO_BATCH_DEFAULT,
    )
