"""Batch sizes picked from the GPU memory a worker has free, with a cap.

A RunPod endpoint may run the same image on a 16 GB or an 80+ GB card; a fixed batch size either
wastes the large one or runs the small one out of memory. The estimates per item are deliberately
on the high side, and only a share of the free memory is planned for: the CUDA allocator, cuDNN
work space and fragmentation need the rest.
"""

from __future__ import annotations

HEADROOM = 0.7  # share of the free memory that batches may plan on
NEMO_BATCH_CAP = 128
NEMO_BATCH_DEFAULT = 16
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


def nemo_batch_for_memory(longest_audio_s: float, free_bytes: int | None) -> int:
    """Parakeet's batch size for a group whose longest audio is longest_audio_s."""
    return batch_for_memory(
        free_bytes,
        NEMO_BYTES_PER_AUDIO_S * max(1.0, longest_audio_s),
        cap=NEMO_BATCH_CAP,
        default=NEMO_BATCH_DEFAULT,
    )
